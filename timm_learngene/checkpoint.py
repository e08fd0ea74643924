"""The pool checkpoint: ``model.safetensors`` + timm-style ``config.json`` in one folder (or Hub repo).

``model.safetensors`` holds every tensor of the pool under the pool's names and, in its metadata, the format
version and the pool spec, so a weights file alone can be checked against the model it is loaded into.
``config.json`` is timm's layout (``architecture``, ``num_classes``, ``pretrained_cfg``, ``model_args``) with
``model_args`` = ``{pool, descendants, format_version}``, which ``timm.create_model('local-dir:…')`` and
``'hf-hub:…'`` feed back to the ``learngene_pool`` entrypoint.

Loading a descendant reads only the tensors it runs (``safe_open`` + ``get_tensor`` per key). Nothing is
unpickled. Every tensor's checksum (the sum of its bytes as 64-bit words) is stored in the metadata and checked
when the tensor is read, so a flipped bit or a truncated file is a :class:`CheckpointError`, never silently
different weights. Before a model
is built for a file, the file's recorded spec must match the config's and the file must be large enough to hold
it, so a hostile config cannot make the loader allocate more memory than the file itself backs.
"""
import dataclasses
import glob
import json
import logging
import mmap
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Union

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models import PretrainedCfg

from .errors import CheckpointError, FormatVersionError, PoolSpecError
from .models.learngene_pool import FORMAT_VERSION, LearngenePool, _check_format_version
from .spec import PoolSpec, enumerate_descendants as spec_descendants, pool_params

__all__ = ['save_pool', 'load_pool', 'load_pool_weights', 'check_pool_file', 'check_model_args',
           'check_pretrained_cfg', 'read_pool_config', 'pool_weights_file', 'update_pool_metrics',
           'WEIGHTS_NAME', 'CONFIG_NAME', 'ARCHITECTURES']

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
ARCHITECTURES = ('learngene_pool', 'learngene_pool_l9')
_META_FORMAT = 'learngene_pool_format'
_META_SPEC = 'learngene_pool_spec'
_META_CHECKSUMS = 'learngene_pool_sum64'  # JSON {tensor name: hex checksum, see _checksum}; absent in older files
_MODEL_ARGS = ('format_version', 'pool', 'descendants')


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        _fsync(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_pool(pool: LearngenePool, path: Union[str, Path], metrics: Optional[Mapping[str, Mapping]] = None,
              recipe: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``pool`` to the folder ``path`` as ``model.safetensors`` + ``config.json``.

    Args:
        pool: the whole pool (``timm.create_model('learngene_pool', …)``).
        path: output folder, created if needed; existing files of the same names are replaced atomically.
        metrics: measured values per descendant name (``{'s3': {'top1': 80.1}}``), merged over ``pool.metrics``.
        recipe: the training config that produced the pool, stored in config.json for the model card.
    Returns:
        the folder path.
    """
    if not isinstance(pool, LearngenePool):
        raise TypeError(f'save_pool takes a whole LearngenePool, got {type(pool).__name__}; '
                        f"build one with timm.create_model('learngene_pool', …)")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f'{path} exists and is not a folder; pass a folder path for the pool')
    spec = pool.pool_spec
    merged = {k: dict(v) for k, v in pool.metrics.items()}
    for k, v in (metrics or {}).items():
        merged.setdefault(k, {}).update(v)
    pool.metrics = merged

    state = {k: v.detach().cpu().contiguous() for k, v in pool.state_dict().items()}
    meta = {'format': 'pt', _META_FORMAT: str(FORMAT_VERSION), _META_SPEC: spec.to_json(),
            _META_CHECKSUMS: json.dumps({k: _checksum(v) for k, v in state.items()}, sort_keys=True)}

    cfg = dict(getattr(pool, 'pretrained_cfg', None) or {})
    for k in ('file', 'source', 'state_dict', 'url', 'hf_hub_filename', 'architecture', 'tag'):
        cfg.pop(k, None)
    cfg.update(num_classes=spec.num_classes, input_size=(spec.in_chans, spec.img_size, spec.img_size))
    cfg.setdefault('license', 'apache-2.0')
    cfg.setdefault('paper_ids', 'arXiv:2312.05743')
    config = {
        'architecture': 'learngene_pool',
        'num_classes': spec.num_classes,
        'num_features': pool.num_features,
        'pretrained_cfg': cfg,
        'model_args': {
            'format_version': FORMAT_VERSION,
            'pool': spec.to_dict(),
            'descendants': [d.to_dict() for d in pool.descendants],
        },
    }
    if recipe is not None:
        config['recipe'] = dict(recipe)
    text = json.dumps(config, indent=2, default=list)
    _remove_leftovers(path)
    if path.is_dir():
        # an existing folder keeps its other files (model card, results); each file is replaced atomically,
        # config.json last, and a weights file is checked against the config's spec when loaded
        _atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata=meta))
        _atomic_write(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
        return path
    # a new folder appears complete or not at all: written under a temporary name, then renamed
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp'))
    try:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata=meta)
        (tmp / CONFIG_NAME).write_text(text)
        for f in (tmp / WEIGHTS_NAME, tmp / CONFIG_NAME):
            _fsync(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
        os.rename(tmp, path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _remove_leftovers(path: Path) -> None:
    """Temporary files and folders of an earlier save of ``path`` that was killed before its rename."""
    stale = list(path.parent.glob(f'.{glob.escape(path.name)}.*.tmp'))
    if path.is_dir():
        stale += [p for name in (WEIGHTS_NAME, CONFIG_NAME) for p in path.glob(f'.{name}.*.tmp')]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, so a power loss after a rename finds the data too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass
    finally:
        os.close(fd)


def _checksum(t: torch.Tensor) -> str:
    """A tensor's checksum, as 16 hex digits: the sum modulo 2**64 of its bytes (as stored in safetensors:
    contiguous, little-endian) read as little-endian 64-bit words, the last word zero-padded.

    Any flipped bit, and any damage confined to one word, changes it; random damage to several words goes
    unnoticed with odds of 2**-64. It is not a cryptographic hash (whoever can rewrite the tensors can rewrite
    the metadata too). Chosen for speed: numpy sums ~3.5x faster than zlib's Adler-32 on the dev CPU, which
    keeps verifying a descendant's tensors a small part of loading them."""
    data = (t if t.is_contiguous() and t.device.type == 'cpu' else t.detach().cpu().contiguous())
    return _checksum_bytes(data.reshape(-1).view(torch.uint8).numpy())


def _checksum_bytes(data) -> str:
    """:func:`_checksum` of a buffer of bytes (a uint8 array or anything numpy reads as one)."""
    data = np.frombuffer(data, dtype=np.uint8)
    whole = len(data) // 8 * 8
    total = int(data[:whole].view('<u8').sum(dtype=np.uint64)) if whole else 0
    if whole < len(data):
        total += int.from_bytes(data[whole:].tobytes().ljust(8, b'\0'), 'little')
    return f'{total % 2 ** 64:016x}'


def read_pool_config(path: Union[str, Path]) -> Dict[str, Any]:
    """Read and check a pool folder's ``config.json``; returns the parsed dict with ``model_args['pool']`` as a
    :class:`PoolSpec`. Every field timm or this package reads is checked for presence and type, so a damaged or
    hostile file is a :class:`CheckpointError` here rather than an arbitrary exception later."""
    path = Path(path)
    cfg_file = path / CONFIG_NAME if path.is_dir() else path
    if not cfg_file.is_file():
        raise CheckpointError(f'{cfg_file} not found; a pool folder holds {CONFIG_NAME} and {WEIGHTS_NAME} '
                              f'(written by timm_learngene.save_pool)')
    config = _parse_json(cfg_file, what=str(cfg_file))
    if not isinstance(config, dict):
        raise CheckpointError(f'{cfg_file} must hold a JSON object, got {type(config).__name__}')
    arch = config.get('architecture')
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f'{cfg_file} describes architecture {arch!r}, not a learngene pool ({", ".join(ARCHITECTURES)}); '
            f'load it with timm.create_model directly')
    check_model_args(config.get('model_args'), str(cfg_file))
    for key in ('num_classes', 'num_features'):
        if key in config and not _is_int(config[key]):
            raise CheckpointError(f'{cfg_file}: {key} must be an integer, got {config[key]!r}')
    if not isinstance(config.get('recipe', {}), dict):
        raise CheckpointError(f'{cfg_file}: recipe must be an object (the training config), got '
                              f'{type(config["recipe"]).__name__}')
    if 'pretrained_cfg' not in config:
        raise CheckpointError(f'{cfg_file} has no pretrained_cfg; it was not written by save_pool')
    check_pretrained_cfg(config['pretrained_cfg'], str(cfg_file))
    try:
        config['model_args']['pool'] = PoolSpec.from_dict(config['model_args']['pool'])
    except PoolSpecError as e:
        raise CheckpointError(f'{cfg_file}: invalid pool spec: {e}') from None
    return config


_MAX_CONFIG_BYTES = 16 * 2 ** 20


def _parse_json(source: Union[Path, str], what: str):
    """JSON from a file (at most 16 MiB) or a string; any way it can be unreadable is a CheckpointError."""
    try:
        if isinstance(source, Path):
            size = source.stat().st_size
            if size > _MAX_CONFIG_BYTES:
                raise CheckpointError(f'{what} is {size:,} bytes; a pool config is a few kB (at most '
                                      f'{_MAX_CONFIG_BYTES:,}), this one is damaged or not a pool config')
            source = source.read_text()
        return json.loads(source)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as e:
        reason = type(e).__name__ if isinstance(e, RecursionError) else e
        raise CheckpointError(f'{what} is not readable JSON ({reason}); the pool folder is damaged') from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_model_args(args: Any, where: str) -> None:
    """Check a pool config's ``model_args`` (what timm passes to the entrypoint): only ``pool``,
    ``descendants`` and ``format_version``, of the right kinds. The spec itself is checked by PoolSpec."""
    if not isinstance(args, dict) or 'pool' not in args:
        raise CheckpointError(f'{where} has no model_args.pool (the pool spec); it was not written by save_pool')
    unknown = sorted(set(args) - set(_MODEL_ARGS))
    if unknown:
        raise CheckpointError(f'{where}: unknown model_args {unknown}; a pool config holds only {list(_MODEL_ARGS)}')
    _check_format_version(args.get('format_version'))
    descendants = args.get('descendants', [])
    if not isinstance(descendants, list) or not all(isinstance(d, dict) for d in descendants):
        raise CheckpointError(f'{where}: model_args.descendants must be a list of objects (one per descendant)')


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# what timm reads from a pretrained cfg while building and loading, and the kind each must be
_CFG_CHECKS = {
    'input_size': (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_int(x) and x > 0 for x in v),
                   'three positive integers [C, H, W]'),
    'test_input_size': (lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) == 3
                                                and all(_is_int(x) and x > 0 for x in v)), 'null or [C, H, W]'),
    'num_classes': (lambda v: _is_int(v) and v >= 0, 'a non-negative integer'),
    'fixed_input_size': (lambda v: isinstance(v, bool), 'true or false'),
    'mean': (lambda v: isinstance(v, (list, tuple)) and all(_is_number(x) for x in v), 'a list of numbers'),
    'std': (lambda v: isinstance(v, (list, tuple)) and all(_is_number(x) for x in v), 'a list of numbers'),
    'crop_pct': (lambda v: _is_number(v) and 0 < v <= 4, 'a number in (0, 4]'),
    'interpolation': (lambda v: isinstance(v, str), 'a string'),
    'pool_size': (lambda v: v is None or (isinstance(v, (list, tuple)) and all(_is_int(x) for x in v)), 'null or integers'),
    'first_conv': (lambda v: v is None or isinstance(v, str), 'a string'),
    'classifier': (lambda v: v is None or isinstance(v, str), 'a string'),
}


def check_pretrained_cfg(cfg: Any, where: str) -> None:
    """Check a pool config's ``pretrained_cfg``: an object of timm's PretrainedCfg fields, with the fields
    timm reads of the right kinds."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f'{where}: pretrained_cfg must be an object, got {type(cfg).__name__}')
    unknown = sorted(set(cfg) - {f.name for f in dataclasses.fields(PretrainedCfg)})
    if unknown:
        raise CheckpointError(f'{where}: unknown pretrained_cfg fields {unknown}; timm reads only the fields '
                              f'of timm.models.PretrainedCfg')
    for key, (ok, kind) in _CFG_CHECKS.items():
        if key in cfg and not ok(cfg[key]):
            raise CheckpointError(f'{where}: pretrained_cfg.{key} must be {kind}, got {cfg[key]!r}')


def load_pool(path: Union[str, Path], descendant: Optional[str] = None, **kwargs) -> torch.nn.Module:
    """Load the pool in folder ``path`` (or, with ``descendant='s3'``, only that descendant's tensors).

    Same as ``timm.create_model('local-dir:PATH', pretrained=True, descendant=…)``, with the config checked
    first so a folder of another model gives a clear error.
    """
    import timm
    read_pool_config(path)
    return timm.create_model(f'local-dir:{path}', pretrained=True, descendant=descendant, **kwargs)


def pool_weights_file(pretrained_cfg: Mapping[str, Any], cache_dir=None) -> Path:
    """Where the pool's ``model.safetensors`` is: the cfg's ``file`` (a file or a pool folder), else the
    ``hf_hub_id`` repo (downloaded once into the HF cache; ``repo@revision`` selects a revision).

    For a pool read from the Hub (``source`` ``hf-hub``) only the repo counts: a ``file`` in a downloaded
    config.json cannot send the loader to a path on this machine.
    """
    file = pretrained_cfg.get('file') if pretrained_cfg.get('source') != 'hf-hub' else None
    if file:
        p = Path(file)
        if p.is_dir():
            p = p / WEIGHTS_NAME
        if not p.is_file():
            raise CheckpointError(f'pool weights {p} not found; pass the model.safetensors of a pool saved with '
                                  f'timm_learngene.save_pool, or its folder')
        return p
    repo = pretrained_cfg.get('hf_hub_id')
    if repo:
        from .hub import download_pool_file
        return download_pool_file(repo, WEIGHTS_NAME, cache_dir=cache_dir)
    raise CheckpointError('no pool weights to load: the pretrained cfg names neither a file nor a Hub repo; '
                          "pass pretrained_cfg_overlay=dict(file='…/model.safetensors') or use 'local-dir:…'")


def _open(file: Path):
    try:
        return safe_open(str(file), framework='pt', device='cpu')
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f'{file} is not a readable safetensors file ({e}); pool weights are the model.safetensors written by '
            f'timm_learngene.save_pool') from None


def load_pool_weights(model: torch.nn.Module, pretrained_cfg: Mapping[str, Any], cache_dir=None,
                      file: Optional[Union[str, Path]] = None) -> None:
    """Copy into ``model`` (a pool or a descendant) the pool checkpoint's tensors it uses, and no others.

    A head for a different number of classes is left at its fresh init; position embeddings of another image
    size are resampled. Any other missing tensor or shape difference raises :class:`CheckpointError`. Every
    tensor is read and checked before the first is copied, so a failed load leaves ``model`` as it was.
    """
    file = Path(file) if file is not None else pool_weights_file(pretrained_cfg, cache_dir=cache_dir)
    target = model.state_dict(keep_vars=True)  # one walk: names -> the model's own parameters and buffers
    key_map = model.pool_key_map(target)
    unmapped = [k for k in target if k not in key_map]
    if unmapped:
        raise CheckpointError(f'{type(model).__name__} has tensors with no place in a pool checkpoint: {unmapped}')
    spec = model.pool_spec
    with _open(file) as f:  # safetensors checks the header: offsets in order, within the file
        saved = _fitting_spec(f, file, spec)
        available = set(f.keys())
        checksums = _checksums(f, file)
        mapped = _MappedTensors(file)
        state = {}
        skipped = []
        for key, pool_key in key_map.items():
            if pool_key not in available:
                raise CheckpointError(
                    f'{file} has no tensor {pool_key!r} (needed for {key!r}); the checkpoint is incomplete')
            if _is_head(pool_key) and saved.num_classes != spec.num_classes:
                skipped.append(key)
                continue
            t = mapped[pool_key]
            want = tuple(target[key].shape)
            if pool_key.endswith('pos_embed') and t.shape != want and saved.img_size != spec.img_size:
                g = saved.img_size // saved.patch_size
                t = resample_abs_pos_embed(t, new_size=[spec.img_size // spec.patch_size] * 2, old_size=[g, g],
                                           num_prefix_tokens=1)
            if tuple(t.shape) != want:
                raise CheckpointError(
                    f'{file}: tensor {pool_key!r} has shape {list(t.shape)} but the model expects {list(want)} '
                    f'for {key!r}; the checkpoint does not match its pool spec')
            if not t.is_floating_point():
                raise CheckpointError(f'{file}: tensor {pool_key!r} has dtype {t.dtype}; pool weights are floats')
            _verify(mapped, file, pool_key, checksums)
            state[key] = t
    with torch.no_grad():  # only now, with every tensor read and checked, is the model touched
        for key, t in state.items():
            target[key].copy_(t)
    if skipped:
        _logger.info(f'{file}: heads for {saved.num_classes} classes not loaded into a {spec.num_classes}-class '
                     f'model: {skipped}')


_ST_DTYPES = {'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16, 'F64': torch.float64,
              'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8,
              'BOOL': torch.bool}


class _MappedTensors:
    """Tensors of a safetensors file as views of one copy-on-write memory map: reading a tensor copies nothing,
    so checking its checksum and copying it into the model are the only passes over its bytes (``get_tensor``
    would add a third). Used after ``safe_open`` has validated the header."""

    def __init__(self, file: Path):
        if sys.byteorder != 'little':  # safetensors stores little-endian bytes; views would read them wrongly
            raise CheckpointError(f'{file}: pool files are read as little-endian memory views; this machine is '
                                  f'{sys.byteorder}-endian, which timm_learngene does not support')
        with open(file, 'rb') as fh:
            self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)  # private: the file is never written
        n = int.from_bytes(self.map[:8], 'little')
        self.header = _parse_json(bytes(self.map[8:8 + n]), what=f'{file}: the safetensors header')
        self.start, self.file = 8 + n, file

    def __getitem__(self, key: str) -> torch.Tensor:
        info = self.header.get(key)
        dtype = _ST_DTYPES.get(info.get('dtype')) if isinstance(info, dict) else None
        if dtype is None:
            raise CheckpointError(f'{self.file}: tensor {key!r} has an unknown dtype ({info!r:.80}); the file is '
                                  f'damaged or not written by save_pool')
        a, b = info['data_offsets']
        t = torch.frombuffer(self.map, dtype=torch.uint8, count=b - a, offset=self.start + a) if b > a else \
            torch.empty(0, dtype=torch.uint8)
        return t.view(dtype).reshape(info['shape'])

    def checksum(self, key: str) -> str:
        """:func:`_checksum` of a tensor's bytes, summed straight from the map."""
        a, b = self.header[key]['data_offsets']
        return _checksum_bytes(memoryview(self.map)[self.start + a:self.start + b])


def _saved_spec(f, file: Path) -> PoolSpec:
    """The pool spec recorded in an open checkpoint's metadata, with its format version checked."""
    meta = f.metadata() or {}
    if _META_FORMAT not in meta or _META_SPEC not in meta:
        raise CheckpointError(f'{file} is a safetensors file but not a learngene pool checkpoint '
                              f'(no {_META_FORMAT!r} metadata); save pools with timm_learngene.save_pool')
    try:
        version = int(meta[_META_FORMAT])
    except ValueError:
        raise FormatVersionError(f'{file}: unreadable format version {meta[_META_FORMAT]!r}') from None
    _check_format_version(version)
    try:
        spec = PoolSpec.from_dict(_parse_json(meta[_META_SPEC], what=f'{file}: the pool spec in its metadata'))
    except PoolSpecError as e:
        raise CheckpointError(f'{file}: the pool spec in its metadata is invalid ({e})') from None
    sizes = pool_params(spec)
    smallest = 2 * (sizes['pool'] + sizes['transforms'])  # every stored tensor in bf16/fp16 at the least
    size = Path(file).stat().st_size
    if size < smallest:
        raise CheckpointError(f'{file} is {size:,} bytes, too small for the pool {spec.name!r} its metadata '
                              f'describes (at least {smallest:,}); the file is truncated or its metadata is wrong')
    return spec


def _checksums(f, file: Path) -> Dict[str, str]:
    text = (f.metadata() or {}).get(_META_CHECKSUMS)
    if text is None:
        return {}
    sums = _parse_json(text, what=f'{file}: the tensor checksums in its metadata')
    if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
        raise CheckpointError(f'{file}: the tensor checksums in its metadata are unreadable; the file is damaged')
    return sums


def _verify(mapped: '_MappedTensors', file: Path, key: str, checksums: Mapping[str, str]) -> None:
    """Check one tensor of the file against the file's checksums (files without any load unverified)."""
    if checksums and key not in checksums:
        raise CheckpointError(f'{file}: tensor {key!r} has no checksum in the file\'s list; the file was altered '
                              f'after it was saved, download or save it again')
    if checksums and mapped.checksum(key) != checksums[key]:
        raise CheckpointError(f'{file}: tensor {key!r} does not match its checksum; the file is damaged (a flipped '
                              f'bit or a bad copy), download or save it again')


def check_pool_file(file: Union[str, Path], spec: PoolSpec) -> PoolSpec:
    """Check, from the header alone, that ``file`` is a pool checkpoint whose tensors fit a model built for
    ``spec``; returns the spec recorded in the file. Nothing is allocated for the tensors."""
    file = Path(file)
    with _open(file) as f:
        return _fitting_spec(f, file, spec)


def _fitting_spec(f, file: Path, spec: PoolSpec) -> PoolSpec:
    saved = _saved_spec(f, file)
    diff = saved.same_weights_as(spec)
    if diff:
        raise CheckpointError(f'{file} holds pool {saved.name!r}, which does not fit the model built for pool '
                              f'{spec.name!r}: {diff}')
    return saved


def _is_head(pool_key: str) -> bool:
    parts = pool_key.split('.')
    return len(parts) >= 3 and parts[0] == 'members' and parts[2] == 'head'


def update_pool_metrics(path: Union[str, Path], metrics: Mapping[str, Mapping[str, float]]) -> Path:
    """Merge measured values (``{'s3': {'top1': 80.1, 'img_s': 950.0}}``) into the descendant list of the pool
    folder's config.json, rewriting only that file (atomically); the weights are not touched."""
    path = Path(path)
    config = read_pool_config(path)
    spec = config['model_args']['pool']
    by_name = {d['name']: d for d in config['model_args'].get('descendants', []) if isinstance(d, dict)}
    valid = {d.name for d in spec_descendants(spec)}
    unknown = sorted(set(metrics) - valid)
    if unknown:
        raise CheckpointError(f'metrics for unknown descendants {unknown}; pool {spec.name!r} has s1..s{len(valid)}')
    rows = []
    for d in spec_descendants(spec):
        row = d.to_dict()  # structure recomputed from the spec; measured values carried over, then updated
        row.update((k, v) for k, v in by_name.get(d.name, {}).items() if k not in row)
        row.update(metrics.get(d.name, {}))
        rows.append(row)
    config['model_args']['pool'] = spec.to_dict()
    config['model_args']['descendants'] = rows
    text = json.dumps(config, indent=2, default=list)
    _atomic_write(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
    return path
