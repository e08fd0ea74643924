"""Reading a pool folder (or Hub repo): everything that reads and verifies one lives here, below the models, so
the models, the writer (:mod:`.pool_writer`) and the Hub code all build on it. The format itself (names, metadata
keys, the config checks) is :mod:`.pool_format`.

:func:`read_pool_config` reads and checks config.json; :func:`descendant_table` turns a config into the ranked
descendant list with measured values. A weights file alone can be checked against the model it is loaded into
(its metadata holds the format version, the spec and every tensor's checksum).

Loading (:func:`load_pool_weights`) reads only the tensors a model runs, as views of a memory map, verifies each
one's checksum, and copies nothing into the model until every tensor has been read and checked. Nothing is
unpickled. Before a model is built for a file, :func:`check_pool_file` checks the file's recorded spec against the
config's and that the file is large enough to hold it, so a hostile config cannot make the loader allocate more
memory than the file itself backs.
"""
import json
import math
import mmap
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from timm.layers import resample_abs_pos_embed

from .checksum import checksum_bytes
from .errors import CheckpointError, FormatVersionError, PoolSpecError
from .hub_errors import hub_error
from .logs import get_logger
from .pool_format import (
    ARCHITECTURES, CONFIG_NAME, META_CHECKSUMS, META_DESCENDANT, META_FORMAT, META_SPEC, WEIGHTS_NAME,
    check_format_version, check_model_args, check_pretrained_cfg, descendant_metrics, is_learngene_architecture,
)
from .spec import DescendantInfo, PoolSpec, Route, enumerate_descendants, pool_params, route_params
from .version import __version__

__all__ = [
    'read_pool_config', 'descendant_table', 'pool_weights_file', 'download_pool_file', 'split_revision',
    'check_pool_file', 'check_weights_file', 'load_pool_weights',
]

_logger = get_logger(__name__)


def descendant_table(config: Mapping[str, Any]) -> List[DescendantInfo]:
    """Every descendant of the pool in ``config`` (a config.json as :func:`read_pool_config` returns it, or its
    raw dict), ranked and named, with its measured values. Sizes and routes are recomputed from the spec; only
    measured values come from the stored list."""
    args = config['model_args']
    spec = args['pool'] if isinstance(args['pool'], PoolSpec) else PoolSpec.from_dict(args['pool'])
    return enumerate_descendants(spec, descendant_metrics(args.get('descendants')))


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
    if not is_learngene_architecture(arch):
        raise CheckpointError(
            f'{cfg_file} describes architecture {arch!r}, not a learngene pool ({", ".join(ARCHITECTURES)}) or '
            f'descendant (learngene_pool_sN); load it with timm.create_model directly')
    check_model_args(config.get('model_args'), str(cfg_file))
    for key in ('num_classes', 'num_features'):
        if key in config and not (isinstance(config[key], int) and not isinstance(config[key], bool)):
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
            if not (p / WEIGHTS_NAME).is_file() and (p / 'pytorch_model.bin').is_file():
                raise CheckpointError(
                    f'{p} holds pytorch_model.bin (a pickle, which timm_learngene never loads) and no {WEIGHTS_NAME}; '
                    f'save it again with timm.models.save_for_hf(model, dir, safe_serialization=True) or '
                    f'timm_learngene.save_pool / save_descendant')
            p = p / WEIGHTS_NAME
        if not p.is_file():
            raise CheckpointError(f'pool weights {p} not found; pass the model.safetensors of a pool saved with '
                                  f'timm_learngene.save_pool, or its folder')
        return p
    repo = pretrained_cfg.get('hf_hub_id')
    if repo:
        return download_pool_file(repo, WEIGHTS_NAME, cache_dir=cache_dir)
    raise CheckpointError('no pool weights to load: no learngene pool is published yet, and the pretrained cfg '
                          'names neither a file nor a Hub repo; build a pool (recipes/distill.py, or make demo) and '
                          "load it with timm.create_model('local-dir:POOL_DIR', pretrained=True) or "
                          "'hf-hub:ORG/REPO', or pass pretrained_cfg_overlay=dict(file='…/model.safetensors')")


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
    spec = model.pool_spec
    with _open(file) as f:  # safetensors checks the header: offsets in order, within the file
        saved = _fitting_spec(f, file, spec, getattr(model, 'route', None))
        if _layout(f) == 'pool':
            key_map = model.pool_key_map(target)
            unmapped = [k for k in target if k not in key_map]
            if unmapped:
                raise CheckpointError(
                    f'{type(model).__name__} has tensors with no place in a pool checkpoint: {unmapped}')
        else:  # a standalone descendant's or a timm export's file: the model's own tensor names
            key_map = {k: k for k in target}
            names = set(f.keys())
            if _layout(f) == 'native' and not names.issuperset(key_map):
                # a timm export of a whole pool, read by one of its descendants: the pool's names
                pool_map = model.pool_key_map(target)
                if len(pool_map) == len(target) and names.issuperset(pool_map.values()):
                    key_map = pool_map
        available = set(f.keys())
        checksums = _checksums(f, file)
        mapped = _MappedTensors(file)
        state = {}
        skipped = []
        layout = _layout(f)
        for key, pool_key in key_map.items():
            if pool_key not in available and layout == 'native':
                raise CheckpointError(
                    f'{file} has no tensor {pool_key!r}; a safetensors file without {META_FORMAT!r} metadata is read '
                    f'as a timm export (save_for_hf) of this very model, under its own tensor names. Pool files are '
                    f'written by timm_learngene.save_pool, single descendants by save_descendant')
            if pool_key not in available:
                raise CheckpointError(
                    f'{file} has no tensor {pool_key!r} (needed for {key!r}); the checkpoint is incomplete')
            want = tuple(target[key].shape)
            if _is_head(pool_key) and (saved.num_classes != spec.num_classes if saved is not None
                                       else tuple(mapped.shape(pool_key)) != want):
                skipped.append(key)
                continue
            t = mapped[pool_key]
            if pool_key.endswith('pos_embed') and t.shape != want and t.ndim == 3 and len(want) == 3:
                t = _resampled_pos_embed(t, want)
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
        _logger.info(f'{file}: heads for another number of classes not loaded into a {spec.num_classes}-class '
                     f'model: {skipped}')


def _resampled_pos_embed(t: torch.Tensor, want: Tuple[int, ...]) -> torch.Tensor:
    """A ``1 x (1 + g*g) x D`` position embedding resampled to the square grid of ``want`` (another image size);
    returned unchanged when either is not a class token plus a square grid (the shape check then reports it)."""
    g_old, g_new = math.isqrt(t.shape[1] - 1), math.isqrt(want[1] - 1)
    if g_old * g_old != t.shape[1] - 1 or g_new * g_new != want[1] - 1 or t.shape[2] != want[2]:
        return t
    return resample_abs_pos_embed(t, new_size=[g_new, g_new], old_size=[g_old, g_old], num_prefix_tokens=1)


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

    def shape(self, key: str) -> List[int]:
        info = self.header.get(key)
        return list(info['shape']) if isinstance(info, dict) and isinstance(info.get('shape'), list) else []

    def checksum(self, key: str) -> str:
        """:func:`checksum` of a tensor's bytes, summed straight from the map."""
        a, b = self.header[key]['data_offsets']
        return checksum_bytes(memoryview(self.map)[self.start + a:self.start + b])


def _saved_spec(f, file: Path) -> PoolSpec:
    """The pool spec recorded in an open checkpoint's metadata, with its format version checked."""
    meta = f.metadata() or {}
    if META_FORMAT not in meta or META_SPEC not in meta:
        raise CheckpointError(f'{file} is a safetensors file but not a learngene pool checkpoint '
                              f'(no {META_FORMAT!r} metadata); save pools with timm_learngene.save_pool')
    try:
        version = int(meta[META_FORMAT])
    except ValueError:
        raise FormatVersionError(f'{file}: unreadable format version {meta[META_FORMAT]!r}') from None
    check_format_version(version)
    try:
        spec = PoolSpec.from_dict(_parse_json(meta[META_SPEC], what=f'{file}: the pool spec in its metadata'))
    except PoolSpecError as e:
        raise CheckpointError(f'{file}: the pool spec in its metadata is invalid ({e})') from None
    if META_DESCENDANT not in meta:
        sizes = pool_params(spec)
        _check_size(file, 2 * (sizes['pool'] + sizes['transforms']), f'the pool {spec.name!r} its metadata describes')
    return spec


def _check_size(file: Path, smallest: int, what: str) -> None:
    """A file must hold at least ``smallest`` bytes (every tensor in bf16/fp16 at the least) before a model that
    size is built for it: a hostile config cannot make the loader allocate more memory than the file backs."""
    size = Path(file).stat().st_size
    if size < smallest:
        raise CheckpointError(f'{file} is {size:,} bytes, too small for {what} (at least {smallest:,}); the file is '
                              f'truncated or its metadata is wrong')


def _layout(f) -> str:
    """``pool`` (save_pool: the pool's tensor names), ``descendant`` (save_descendant: one descendant's own names)
    or ``native`` (a timm export, ``save_for_hf``: the model's own names, no learngene metadata)."""
    meta = f.metadata() or {}
    if META_DESCENDANT in meta:
        return 'descendant'
    return 'pool' if META_FORMAT in meta or META_SPEC in meta else 'native'


def _saved_route(f, file: Path) -> Tuple[str, Route]:
    d = _parse_json(f.metadata()[META_DESCENDANT], what=f'{file}: the descendant in its metadata')
    try:
        name, route = d['name'], tuple((str(m), int(a), int(b)) for m, a, b in d['route'])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f'{file}: the descendant in its metadata is unreadable ({d!r:.80}); the file is '
                              f'damaged') from None
    return name, route


def _head_params(spec: PoolSpec, width: int) -> int:
    return width * spec.num_classes + spec.num_classes


def _checksums(f, file: Path) -> Dict[str, str]:
    text = (f.metadata() or {}).get(META_CHECKSUMS)
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
        if _layout(f) != 'pool':
            raise CheckpointError(f'{file} is not a learngene pool checkpoint (no {META_FORMAT!r} metadata, or a '
                                  f'single descendant\'s); save pools with timm_learngene.save_pool')
        return _fitting_spec(f, file, spec)


def check_weights_file(file: Union[str, Path], spec: PoolSpec, route: Optional[Route] = None) -> Optional[PoolSpec]:
    """Check, from the header alone, that ``file`` can fill a model built for ``spec``: the whole pool
    (``route`` None) or the descendant running ``route``. Returns the spec recorded in the file (None for a timm
    export, which records none). Any of the three layouts: a pool file (save_pool), a standalone descendant's
    (save_descendant), a timm export of either (save_for_hf). Nothing is allocated for the tensors."""
    file = Path(file)
    with _open(file) as f:
        saved = _fitting_spec(f, file, spec, route)
        if saved is None:  # a timm export: at least the bytes of every tensor but the heads
            if route is None:
                sizes = pool_params(spec)
                n = sizes['pool'] + sizes['transforms'] - sum(_head_params(spec, m.width) for m in spec.members)
            else:
                n = route_params(spec, route) - _head_params(spec, spec.member(route[-1][0]).width)
            _check_size(file, 2 * n, f'the model its config.json describes ({spec.name!r})')
        return saved


def _fitting_spec(f, file: Path, spec: PoolSpec, route: Optional[Route] = None) -> Optional[PoolSpec]:
    """The spec recorded in an open weights file, checked to fit ``spec`` and, for a standalone descendant's file,
    to hold the descendant ``route`` (None: the whole pool). None for a timm export (no learngene metadata)."""
    layout = _layout(f)
    if layout == 'native':
        return None
    saved = _saved_spec(f, file)
    diff = saved.same_weights_as(spec)
    if diff:
        raise CheckpointError(f'{file} holds pool {saved.name!r}, which does not fit the model built for pool '
                              f'{spec.name!r}: {diff}')
    if layout == 'descendant':
        name, saved_route = _saved_route(f, file)
        if route is None:
            raise CheckpointError(f'{file} holds only descendant {name} of pool {saved.name!r}, not the whole pool; '
                                  f'load it as that descendant (the folder\'s config.json does so), or load the '
                                  f'pool\'s own folder')
        if tuple(route) != saved_route:
            raise CheckpointError(f'{file} holds only descendant {name} of pool {saved.name!r} (route '
                                  f'{[list(s) for s in saved_route]}), not the descendant asked for (route '
                                  f'{[list(s) for s in route]}); load it without descendant=, or load the whole pool')
        head = _head_params(saved, saved.member(saved_route[-1][0]).width)
        _check_size(file, 2 * (route_params(saved, saved_route) - head), f'descendant {name} of {saved.name!r}')
    return saved


def _is_head(pool_key: str) -> bool:
    """A classifier tensor: ``members.<m>.head.…`` in a pool's names, ``head.…`` in a descendant's."""
    parts = pool_key.split('.')
    return parts[0] == 'head' or (len(parts) >= 3 and parts[0] == 'members' and parts[2] == 'head')


def split_revision(repo_id: str, revision: Optional[str] = None) -> Tuple[str, Optional[str]]:
    repo, at, rev = repo_id.partition('@')
    if at and not rev:
        raise ValueError(f'{repo_id!r} ends in "@" without a revision; write ORG/REPO@BRANCH, TAG or COMMIT')
    if rev and revision and rev != revision:
        raise ValueError(f'{repo_id!r} names revision {rev!r} but revision={revision!r} was passed; give one')
    return repo, (rev or revision or None)


def _hint() -> str:
    from huggingface_hub import constants
    return (f"download the repo elsewhere and load the folder with timm.create_model('local-dir:PATH', ...), "
            f"or set HF_ENDPOINT to a reachable mirror (now {constants.ENDPOINT})")


def download_pool_file(repo_id: str, filename: str, cache_dir: Optional[Union[str, Path]] = None,
                       revision: Optional[str] = None) -> Path:
    """Download (or find in the HF cache) one file of the pool repo ``repo_id`` (``org/name[@revision]``).

    Honours ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` like every huggingface_hub download. Hub
    failures become :class:`CheckpointError` naming the file, the repo and what to do, worded by
    :func:`~timm_learngene.hub_errors.hub_error` like every other Hub failure; a repo without the file is not a pool.
    """
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    repo, revision = split_revision(repo_id, revision)
    where = f'{repo}@{revision}' if revision else repo
    try:
        return Path(huggingface_hub.hf_hub_download(
            repo, filename, revision=revision, cache_dir=cache_dir, library_name='timm_learngene',
            library_version=__version__))
    except Exception as e:
        if isinstance(e, EntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError):  # the latter: not cached
            raise CheckpointError(f'Hub repo {where!r} has no {filename}; it is not a learngene pool '
                                  f'(pools hold model.safetensors + config.json written by timm_learngene)') from None
        err = hub_error(e, f'downloading {filename} of Hub repo {where!r}', _hint(), cache_dir and str(cache_dir))
        if err is None:
            raise
        raise CheckpointError(str(err)) from None
