"""The pool file format: the names, versions and metadata keys of a pool folder (or Hub repo), and the checks of
its config.json fields. Reading a pool is :mod:`.pool_reader`, writing one :mod:`.pool_writer`; both build on this.

A pool is ``model.safetensors`` + timm-style ``config.json`` in one folder or Hub repo.

- ``model.safetensors`` holds every tensor of the pool under the pool's names and, in its metadata, the format
  version (:data:`META_FORMAT`), the pool spec (:data:`META_SPEC`) and every tensor's checksum
  (:data:`META_CHECKSUMS`, :mod:`.checksum`); a standalone descendant's file also its route
  (:data:`META_DESCENDANT`).
- ``config.json`` is timm's layout (``architecture``, ``num_classes``, ``pretrained_cfg``, ``model_args``) with
  ``model_args`` = ``{pool, descendants, format_version}``, which ``timm.create_model('local-dir:…')`` and
  ``'hf-hub:…'`` feed back to the ``learngene_pool`` entrypoint (:data:`MODEL_ARGS`, :func:`check_model_args`,
  :func:`check_pretrained_cfg`).
"""
import dataclasses
import re
from typing import Any, Dict, List, Optional

from timm.models import PretrainedCfg

from .errors import CheckpointError, FormatVersionError

__all__ = [
    'FORMAT_VERSION', 'WEIGHTS_NAME', 'CONFIG_NAME', 'ARCHITECTURES', 'META_FORMAT', 'META_SPEC', 'META_CHECKSUMS',
    'META_DESCENDANT', 'MODEL_ARGS', 'check_format_version', 'check_model_args', 'check_pretrained_cfg',
    'descendant_metrics', 'is_learngene_architecture',
]

# Version of the checkpoint layout (tensor names + config.json fields). Bump when either changes.
FORMAT_VERSION = 1

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
ARCHITECTURES = ('learngene_pool', 'learngene_pool_l9')
# a config.json's architecture: a whole pool, or a registered descendant (what timm's save_for_hf writes for a model
# made by that name); model_args.pool says which pool either way
_ARCHITECTURE = re.compile(r'learngene_pool(_l9)?(_s[1-9][0-9]*)?')
META_FORMAT = 'learngene_pool_format'
META_SPEC = 'learngene_pool_spec'
META_CHECKSUMS = 'learngene_pool_sum64'  # JSON {tensor name: hex checksum, see checksum}; absent in older files
# a standalone descendant's file (save_descendant): JSON {"name": "s3", "route": [[member, first, end], ...]}
META_DESCENDANT = 'learngene_descendant'
# what a config.json's model_args may hold: every keyword the learngene entrypoints take that is data (save_pool
# writes the first three; timm's save_for_hf also records the factory kwargs and current model traits)
MODEL_ARGS = ('format_version', 'pool', 'descendants', 'descendant', 'num_classes', 'in_chans', 'img_size',
              'global_pool', 'dynamic_img_size', 'drop_rate', 'drop_path_rate')
# the fields of a descendant entry in config.json that describe its structure (recomputed from the spec); every
# other numeric field is a measured value (top1, img_s, ...)
_STRUCTURE = ('name', 'route', 'label', 'params', 'gmacs')


def check_format_version(format_version) -> None:
    """A pool's ``format_version`` must be a positive integer this package reads (None: not recorded)."""
    if format_version is None:
        return
    if isinstance(format_version, bool) or not isinstance(format_version, int) or format_version < 1:
        raise FormatVersionError(f'pool format_version must be a positive integer, got {format_version!r}')
    if format_version > FORMAT_VERSION:
        raise FormatVersionError(
            f'this pool was written in format version {format_version}, newer than the installed timm_learngene '
            f'reads ({FORMAT_VERSION}); upgrade it: pip install -U timm-learngene')


def descendant_metrics(descendants: Optional[List[dict]]) -> Dict[str, Dict[str, float]]:
    """Measured values (``top1`` ...) by descendant name, from a config.json descendant list (entries that are not
    objects with a name, and non-numeric values, are ignored)."""
    out = {}
    for d in descendants or []:
        if isinstance(d, dict) and isinstance(d.get('name'), str):
            out[d['name']] = {k: v for k, v in d.items()
                              if k not in _STRUCTURE and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out


def is_learngene_architecture(name: Any) -> bool:
    """Whether a config.json's ``architecture`` names a learngene model (a pool or a registered descendant)."""
    return isinstance(name, str) and _ARCHITECTURE.fullmatch(name) is not None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_size(v) -> bool:
    return (_is_int(v) and v > 0) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) and x > 0
                                                                                           for x in v))


# the kinds of the optional model_args (the spec and the descendant list are checked where they are read)
_ARG_CHECKS = {
    'descendant': (lambda v: isinstance(v, str) or isinstance(v, list), 'a descendant name such as "s3" or a route'),
    'num_classes': (lambda v: _is_int(v) and v >= 0, 'a non-negative integer'),
    'in_chans': (lambda v: _is_int(v) and v > 0, 'a positive integer'),
    'img_size': (_is_size, 'a positive integer or [height, width]'),
    'global_pool': (lambda v: isinstance(v, str), 'a string'),
    'dynamic_img_size': (lambda v: isinstance(v, bool), 'true or false'),
    'drop_rate': (lambda v: _is_number(v), 'a number'),
    'drop_path_rate': (lambda v: _is_number(v), 'a number'),
}


def check_model_args(args: Any, where: str) -> None:
    """Check a pool config's ``model_args`` (what timm passes to the entrypoint): only ``pool``,
    ``descendants`` and ``format_version``, of the right kinds. The spec itself is checked by PoolSpec."""
    if not isinstance(args, dict) or 'pool' not in args:
        raise CheckpointError(f'{where} has no model_args.pool (the pool spec); it was not written by save_pool')
    unknown = sorted(set(args) - set(MODEL_ARGS))
    if unknown:
        raise CheckpointError(f'{where}: unknown model_args {unknown}; a pool config holds only {list(MODEL_ARGS)}')
    for key, (ok, kind) in _ARG_CHECKS.items():
        if key in args and not ok(args[key]):
            raise CheckpointError(f'{where}: model_args.{key} must be {kind}, got {args[key]!r}')
    check_format_version(args.get('format_version'))
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
    # -1 is timm's 'adapt the head' (train.py --pretrained-path puts it in the overlay); the pool's own head is then
    # loaded only where the checkpoint's spec has the model's classes, as for any other count
    'num_classes': (lambda v: _is_int(v) and v >= -1, 'a non-negative integer (or -1: timm\'s "adapt the head")'),
    'fixed_input_size': (lambda v: isinstance(v, bool), 'true or false'),
    'mean': (lambda v: isinstance(v, (list, tuple)) and all(_is_number(x) for x in v), 'a list of numbers'),
    'std': (lambda v: isinstance(v, (list, tuple)) and all(_is_number(x) for x in v), 'a list of numbers'),
    'crop_pct': (lambda v: _is_number(v) and 0 < v <= 4, 'a number in (0, 4]'),
    'interpolation': (lambda v: isinstance(v, str), 'a string'),
    'pool_size': (lambda v: v is None or (isinstance(v, (list, tuple)) and all(_is_int(x) for x in v)), 'null or integers'),
    'first_conv': (lambda v: v is None or isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v)), 'a string or a list of strings'),
    'classifier': (lambda v: v is None or isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v)), 'a string or a list of strings'),
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
