"""Launcher first: which precision, device and number of processes a run uses, and where each came from.

``accelerate launch`` (its flags, else accelerate's config file, else its own defaults) hands its choices to the
process as environment variables: ``ACCELERATE_MIXED_PRECISION``, ``ACCELERATE_USE_CPU``, ``WORLD_SIZE``. They win
over a recipe's YAML file, a pipeline preset and the option table's defaults; a command-line flag
(``--mixed-precision``, ``--cpu``) wins over the launcher. ``mixed_precision: auto`` (the probe of
:mod:`.precision`) therefore applies only when neither a flag nor the launcher set a precision. The number of
processes is the launcher's alone. :func:`launch_record` writes what was used to ``OUTPUT/launch.json``; the resolved
``mixed_precision`` and ``cpu`` also go into ``config.yaml``.

Note that ``accelerate launch`` sets ``ACCELERATE_MIXED_PRECISION`` even without ``--mixed_precision`` (to its
config file's value, else ``no``) and warns about the defaults it filled in: under the launcher, the launcher's
precision is the run's unless a flag says otherwise.
"""
import json
import os
from pathlib import Path
from typing import Any, Dict

from accelerate import Accelerator

from ..errors import ConfigError
from ..logs import get_logger

__all__ = ['apply_launcher', 'launch_record', 'write_launch_record', 'LAUNCH_FILE', 'LAUNCHER_PRECISIONS']

_logger = get_logger(__name__)

LAUNCH_FILE = 'launch.json'
LAUNCHER_PRECISIONS = ('no', 'fp16', 'bf16')  # accelerate also has fp8, which these recipes do not support
_TRUE, _FALSE = ('1', 'true', 'yes', 'on', 'y', 't'), ('0', 'false', 'no', 'off', 'n', 'f', '')


def _env_flag(name: str):
    value = os.environ.get(name)
    if value is None:
        return None
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f'{name}={value!r} is not a boolean accelerate reads; fix or unset it')


def apply_launcher(cfg) -> Dict[str, str]:
    """Resolve ``cfg.mixed_precision`` and ``cfg.cpu`` in place, launcher first: a flag (``cfg.given``, see
    :class:`~timm_learngene.training.options.RecipeConfig`) keeps its value; otherwise ``accelerate launch`` /
    accelerate's config (the environment) replaces the YAML or default value. Returns option name -> where its
    value came from (``flag``, ``accelerate launch``, ``config``: the YAML file, the preset or the default).

    Raises ConfigError for a launcher precision the recipes cannot run (fp8) or an unreadable variable."""
    given = getattr(cfg, 'given', frozenset())
    sources = {}
    if hasattr(cfg, 'mixed_precision'):
        env = os.environ.get('ACCELERATE_MIXED_PRECISION', '').strip().lower()
        if 'mixed_precision' in given:
            sources['mixed_precision'] = 'flag'
            if env and env != cfg.mixed_precision:
                _logger.warning('--mixed-precision %s wins over the launcher\'s %s', cfg.mixed_precision, env)
        elif env:
            if env not in LAUNCHER_PRECISIONS:
                raise ConfigError(f'accelerate launch asks for mixed precision {env!r} (ACCELERATE_MIXED_PRECISION); '
                                  f'these recipes run {", ".join(LAUNCHER_PRECISIONS)}: launch with '
                                  f'--mixed_precision bf16 (or fix accelerate\'s config)')
            if env != cfg.mixed_precision and cfg.mixed_precision != 'auto':
                _logger.info('mixed precision %s from accelerate launch (the recipe\'s config says %s; '
                             '--mixed-precision overrides the launcher)', env, cfg.mixed_precision)
            cfg.mixed_precision = env
            sources['mixed_precision'] = 'accelerate launch'
        else:
            sources['mixed_precision'] = 'config'
    if hasattr(cfg, 'cpu'):
        env_cpu = _env_flag('ACCELERATE_USE_CPU')
        if 'cpu' in given:
            sources['cpu'] = 'flag'
            if env_cpu and not cfg.cpu:
                # accelerate itself forces the CPU when its launcher asked for it; say so instead of pretending
                _logger.warning('--no-cpu, but accelerate launch --cpu: accelerate runs on the CPU')
                cfg.cpu = True
                sources['cpu'] = 'accelerate launch'
        elif env_cpu is not None:
            cfg.cpu = env_cpu
            sources['cpu'] = 'accelerate launch'
        else:
            sources['cpu'] = 'config'
    return sources


def launch_record(accelerator: Accelerator, cfg, sources: Dict[str, str]) -> Dict[str, Any]:
    """What the run used (precision, device, processes) and where each setting came from, JSON-safe."""
    return {
        'mixed_precision': {'value': accelerator.mixed_precision, 'source': sources.get('mixed_precision', 'config')},
        'cpu': {'value': bool(getattr(cfg, 'cpu', False)), 'source': sources.get('cpu', 'config')},
        'device': str(accelerator.device),
        'num_processes': accelerator.num_processes,
        'distributed_type': str(accelerator.distributed_type.value),
    }


def write_launch_record(accelerator: Accelerator, cfg, sources: Dict[str, str]) -> Dict[str, Any]:
    """:func:`launch_record`, written to ``OUTPUT/launch.json`` on the main process and logged once."""
    record = launch_record(accelerator, cfg, sources)
    if accelerator.is_main_process:
        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / LAUNCH_FILE).write_text(json.dumps(record, indent=2))
    _logger.info('running on %s, %d process(es), mixed precision %s (%s)', record['device'], record['num_processes'],
                 record['mixed_precision']['value'], record['mixed_precision']['source'])
    return record


def launched_main_process() -> bool:
    """Whether this is the main process of the launch, read from the launcher's ``RANK`` (unset: one process),
    for what runs before the Accelerator exists: creating accelerate's ``PartialState()`` there instead would fix
    its distributed state without the recipe's ``cpu`` setting (on a CPU machine under ``accelerate launch
    --multi_gpu``: a run of one process each, not one run of several)."""
    return int(os.environ.get('RANK', '0') or 0) == 0

