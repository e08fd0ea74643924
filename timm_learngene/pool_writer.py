"""Writing a pool folder: :func:`save_pool` writes ``model.safetensors`` + ``config.json``, :func:`save_descendant`
writes one descendant as a standalone folder of the same kind (only its tensors), :func:`update_pool_metrics`
merges measured values into ``config.json``; :func:`load_pool` is the way back (a model from a folder).

The format is :mod:`timm_learngene.pool_format`, reading and verifying :mod:`timm_learngene.pool_reader`. Writes are durable (:mod:`timm_learngene.durable`): a new pool folder appears complete or not at
all, and each file of an existing folder is replaced atomically.
"""
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import timm
import torch
from safetensors.torch import save_file

from .checksum import checksum
from .durable import atomic_write, atomic_write_text, fsync, fsync_tree, remove_paths
from .errors import CheckpointError
from .logs import get_logger
from .models.learngene_pool import Descendant, LearngenePool
from .pool_format import (
    CONFIG_NAME, FORMAT_VERSION, META_CHECKSUMS, META_DESCENDANT, META_FORMAT, META_SPEC, WEIGHTS_NAME,
)
from .pool_reader import read_pool_config
from .spec import DescendantInfo, enumerate_descendants, find_descendant

logger = get_logger(__name__)

__all__ = ['save_pool', 'save_descendant', 'load_pool', 'update_pool_metrics']


def save_pool(pool: LearngenePool, path: Union[str, Path], metrics: Optional[Mapping[str, Mapping]] = None,
              recipe: Optional[Mapping[str, Any]] = None, data_config: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``pool`` to the folder ``path`` as ``model.safetensors`` + ``config.json``.

    Args:
        pool: the whole pool (``timm.create_model('learngene_pool', …)``).
        path: output folder, created if needed; existing files of the same names are replaced atomically.
        metrics: measured values per descendant name (``{'s3': {'top1': 80.1}}``), merged over ``pool.metrics``.
        recipe: the training config that produced the pool, stored in config.json for the model card.
        data_config: the evaluation preprocessing the pool was trained with (``mean``, ``std``, ``crop_pct``,
            ``interpolation``, ``input_size``; :func:`timm_learngene.data.augment.eval_data_config`), written into
            the pretrained_cfg so ``timm.data.resolve_data_config(model=m)`` reproduces it.
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
    meta = _metadata(spec, state)
    cfg = _pretrained_cfg(pool, spec, data_config)
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
    return _write_folder(path, state, meta, json.dumps(config, indent=2, default=list))


def save_descendant(model: Union[Descendant, LearngenePool], path: Union[str, Path],
                    descendant: Union[str, Sequence, DescendantInfo, None] = None, *,
                    data_config: Optional[Mapping[str, Any]] = None,
                    recipe: Optional[Mapping[str, Any]] = None) -> Path:
    """Write one descendant as a standalone folder: ``model.safetensors`` with only the tensors it runs, under its
    own names (``patch_embed…``, ``blocks.<i>…``, ``stitches.<i>…``, ``norm…``, ``head…``), and a timm
    ``config.json`` that ``timm.create_model('local-dir:PATH', pretrained=True)`` (or ``'hf-hub:ORG/REPO'`` once
    uploaded) builds it from, bit for bit.

    Args:
        model: a :class:`Descendant` (standalone, or ``pool.descendant(...)``), or a whole pool with ``descendant``.
        path: output folder, created if needed; existing files of the same names are replaced atomically.
        descendant: which descendant of a pool (``'s3'``, a route or a :class:`DescendantInfo`); for a
            Descendant, optional and then checked to be that one.
        data_config: the evaluation preprocessing (``mean``, ``std``, ``crop_pct``, ``interpolation``,
            ``input_size``), written into the pretrained_cfg as :func:`save_pool` does; default the model's own.
        recipe: the training config, stored in config.json.
    Returns:
        the folder path.
    """
    if isinstance(model, LearngenePool):
        if descendant is None:
            raise ValueError("save_descendant of a whole pool needs descendant= (a name such as 's3' or a route); "
                             "save the whole pool with save_pool")
        model = model.descendant(descendant)
    elif isinstance(model, Descendant):
        if descendant is not None:
            want = descendant if isinstance(descendant, DescendantInfo) else \
                find_descendant(model.pool_spec, descendant)
            if want.route != model.info.route:
                raise ValueError(f'descendant={want.name!r} but the model is descendant {model.info.name} '
                                 f'({model.info.label}); drop descendant= or pass the pool')
    else:
        raise TypeError(f'save_descendant takes a Descendant or a LearngenePool, got {type(model).__name__}')
    spec, info = model.pool_spec, model.info
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = _metadata(spec, state)
    meta[META_DESCENDANT] = json.dumps({'name': info.name, 'route': [list(seg) for seg in info.route]})
    cfg = _pretrained_cfg(model, spec, data_config)
    cfg.pop('hf_hub_id', None)  # the pool's repo, not this folder's
    cfg.update(first_conv='patch_embed.proj', classifier='head', fixed_input_size=not model.dynamic_img_size)
    args = {'format_version': FORMAT_VERSION, 'pool': spec.to_dict(), 'descendant': info.name,
            'descendants': [info.to_dict()], 'global_pool': model.global_pool}
    if model.dynamic_img_size:
        args['dynamic_img_size'] = True
    config = {'architecture': 'learngene_pool', 'num_classes': model.num_classes,
              'num_features': model.num_features, 'pretrained_cfg': cfg, 'model_args': args}
    if recipe is not None:
        config['recipe'] = dict(recipe)
    return _write_folder(Path(path), state, meta, json.dumps(config, indent=2, default=list))


def _metadata(spec, state: Mapping[str, torch.Tensor]) -> dict:
    """safetensors metadata of a pool or descendant file: format version, pool spec, every tensor's checksum."""
    return {'format': 'pt', META_FORMAT: str(FORMAT_VERSION), META_SPEC: spec.to_json(),
            META_CHECKSUMS: json.dumps({k: checksum(v) for k, v in state.items()}, sort_keys=True)}


def _pretrained_cfg(model: torch.nn.Module, spec, data_config: Optional[Mapping[str, Any]]) -> dict:
    """The model's pretrained cfg as config.json stores it: where it came from dropped, the preprocessing
    (``data_config``) and the spec's classes and input size written in."""
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    for k in ('file', 'source', 'state_dict', 'url', 'hf_hub_filename', 'architecture', 'tag'):
        cfg.pop(k, None)
    for k, v in (data_config or {}).items():
        cfg[k] = list(v) if isinstance(v, tuple) else v
    cfg.update(num_classes=spec.num_classes, input_size=[spec.in_chans, spec.img_size, spec.img_size])
    wrong = [k for k in ('mean', 'std') if isinstance(cfg.get(k), (list, tuple)) and len(cfg[k]) != spec.in_chans]
    if wrong:  # e.g. a pool saved before its data config was recorded: ImageNet's 3-channel values remain
        logger.warning('%s has %d values for a %d-channel model (timm.data.resolve_data_config would give the wrong '
                       'preprocessing); pass data_config= with the mean and std it was trained with',
                       ' and '.join(wrong), len(cfg[wrong[0]]), spec.in_chans)
    cfg.setdefault('license', 'apache-2.0')
    cfg.setdefault('paper_ids', 'arXiv:2312.05743')
    return cfg


def _write_folder(path: Path, state: Mapping[str, torch.Tensor], meta: Mapping[str, str], text: str) -> Path:
    """``model.safetensors`` + ``config.json`` into ``path``, durably (see the module docstring)."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f'{path} exists and is not a folder; pass a folder path')
    _remove_leftovers(path)
    if path.is_dir():
        # an existing folder keeps its other files (model card, results); each file is replaced atomically,
        # config.json last, and a weights file is checked against the config's spec when loaded
        atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata=meta))
        atomic_write_text(path / CONFIG_NAME, text)
        return path
    # a new folder appears complete or not at all: written under a temporary name, then renamed
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp'))
    try:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata=meta)
        (tmp / CONFIG_NAME).write_text(text)
        fsync_tree(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
        os.rename(tmp, path)
        fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _remove_leftovers(path: Path) -> None:
    """Temporary files and folders of an earlier save of ``path`` that was killed before its rename."""
    stale = list(path.parent.glob(f'.{glob.escape(path.name)}.*.tmp'))
    if path.is_dir():
        stale += [p for name in (WEIGHTS_NAME, CONFIG_NAME) for p in path.glob(f'.{name}.*.tmp')]
    remove_paths(stale)


def load_pool(path: Union[str, Path], descendant: Optional[str] = None, **kwargs) -> torch.nn.Module:
    """Load the pool in folder ``path`` (or, with ``descendant='s3'``, only that descendant's tensors).

    Same as ``timm.create_model('local-dir:PATH', pretrained=True, descendant=…)``, with the config checked
    first so a folder of another model gives a clear error.
    """
    read_pool_config(path)
    return timm.create_model(f'local-dir:{path}', pretrained=True, descendant=descendant, **kwargs)


def update_pool_metrics(path: Union[str, Path], metrics: Mapping[str, Mapping[str, float]],
                        remove: Sequence[str] = ()) -> Path:
    """Merge measured values (``{'s3': {'top1': 80.1}}``) into the descendant list of the pool folder's
    config.json, rewriting only that file (atomically); the weights are not touched. ``remove``: keys dropped from
    every descendant first (values that a newer measurement replaces elsewhere)."""
    path = Path(path)
    config = read_pool_config(path)
    if 'descendant' in config['model_args']:
        raise CheckpointError(f'{path} holds one descendant ({config["model_args"]["descendant"]}), not a pool; '
                              f'update_pool_metrics rewrites a pool folder\'s descendant table (save the '
                              f'descendant again with save_descendant to change its config)')
    spec = config['model_args']['pool']
    by_name = {d['name']: d for d in config['model_args'].get('descendants', []) if isinstance(d, dict)}
    valid = {d.name for d in enumerate_descendants(spec)}
    unknown = sorted(set(metrics) - valid)
    if unknown:
        raise CheckpointError(f'metrics for unknown descendants {unknown}; pool {spec.name!r} has s1..s{len(valid)}')
    rows = []
    for d in enumerate_descendants(spec):
        row = d.to_dict()  # structure recomputed from the spec; measured values carried over, then updated
        row.update((k, v) for k, v in by_name.get(d.name, {}).items() if k not in row and k not in remove)
        row.update(metrics.get(d.name, {}))
        rows.append(row)
    config['model_args']['pool'] = spec.to_dict()
    config['model_args']['descendants'] = rows
    text = json.dumps(config, indent=2, default=list)
    atomic_write_text(path / CONFIG_NAME, text)
    return path

