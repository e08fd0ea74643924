"""Recipe configuration: defaults in the recipe, a YAML file over them, command-line flags over both.

Every key of a recipe's defaults becomes a ``--kebab-case`` flag typed like its default (booleans get
``--flag/--no-flag``, lists take comma-separated values). The resolved config is written next to the outputs.
"""
import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from ..errors import ConfigError

__all__ = ['parse_config', 'save_config', 'load_config_file']


def load_config_file(path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'config file {path} not found')
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f'{path} is not valid YAML: {e}') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path} must hold a YAML mapping of option: value, got {type(data).__name__}')
    return data


def _list_type(example: Sequence):
    elem = type(example[0]) if example else str

    def parse(text: str) -> List:
        return [elem(t) for t in text.split(',') if t.strip()] if text else []
    return parse


def _value_type(default):
    if isinstance(default, bool):
        return None
    if isinstance(default, (list, tuple)):
        return _list_type(default)
    if isinstance(default, (int, float)):
        return type(default)
    if isinstance(default, dict):
        return json.loads
    return str


def parse_config(argv: Optional[Sequence[str]], defaults: Mapping[str, Any], description: str,
                 types: Optional[Mapping[str, Any]] = None) -> argparse.Namespace:
    """Resolve ``defaults`` <- ``--config FILE`` <- flags. ``types`` gives the type of keys whose default is None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--config', default=None)
    known, _ = pre.parse_known_args(argv)
    base = dict(defaults)
    if known.config:
        file_cfg = load_config_file(known.config)
        unknown = sorted(set(file_cfg) - set(base))
        if unknown:
            raise ConfigError(f'{known.config}: unknown options {unknown}; valid options are {sorted(base)}')
        base.update(file_cfg)

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--config', default=None, help='YAML file of options (flags override it)')
    for key, default in defaults.items():
        flag = '--' + key.replace('_', '-')
        value = base[key]
        if isinstance(default, bool):
            parser.add_argument(flag, dest=key, default=value, action=argparse.BooleanOptionalAction)
            continue
        kind = (types or {}).get(key) or (_value_type(default) if default is not None else str)
        parser.add_argument(flag, dest=key, default=value, type=kind, metavar=key.upper())
    return parser.parse_args(argv)


def save_config(cfg: argparse.Namespace, path) -> None:
    """Write the resolved config as YAML (``--config`` of it reproduces the run)."""
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items() if k != 'config'}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=True))
