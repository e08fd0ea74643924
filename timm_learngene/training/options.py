"""Recipe options: one table per recipe, from which its parser, its YAML checks, ``--help`` and docs/options.md come.

An :class:`Option` names one setting: its type, default, help text, choices and group. The shared groups
(:mod:`~timm_learngene.training.option_groups`: ``DATA``, ``OPTIMIZATION``, ``AUGMENTATION``, ``DISTILLATION``,
``RUN``, ...) are written once; a recipe's :class:`OptionTable` is the groups it uses plus its own options, with its
own defaults where they differ. This module is the machinery: kinds of value, parsing, checks, help and Markdown.

Values resolve as: the table's defaults <- a YAML file (``--config FILE``) <- command-line flags. The pipeline
resolves a preset's sections through the same table (:meth:`OptionTable.resolve`), so a value means the same
whether it came from a flag, a YAML file or a preset, and is checked the same way: an unknown key is a
:class:`~timm_learngene.errors.ConfigError` with a "did you mean", a value of the wrong kind or outside the
option's choices is refused before the recipe loads or writes anything.

Flags are ``--kebab-case``; booleans are ``--flag/--no-flag``; lists are comma-separated (``--aug-scale 0.08,1``);
JSON objects are JSON text (``--model-args '{"depth": 6}'``). Abbreviated flags are refused (``--epoch`` is not
``--epochs``). The resolved config is written next to the outputs with :func:`save_config`;
``--config`` of that file reproduces the run.

``python -m timm_learngene.recipes.options_doc > docs/options.md`` (``make options-doc``) writes every recipe's
table as Markdown.
"""
import argparse
import copy
import difflib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml

from ..data import DATASETS
from ..data.hf_datasets import is_hf_dataset
from ..data.wds_datasets import is_wds_dataset
from ..errors import ConfigError

__all__ = ['Option', 'OptionTable', 'RecipeConfig', 'Kind', 'GROUPS', 'pick', 'load_config_file', 'save_config']

# group -> the title of its --help section, in the order --help and docs/options.md show them
GROUPS = {
    'data': 'data: which images, how many, how they are loaded',
    'model': 'model: what is built, loaded or trained',
    'optimization': "optimization: timm's optimizers (--opt), cosine schedule with linear warm-up per optimizer step",
    'augmentation': "augmentation: timm's create_transform and Mixup",
    'distillation': 'distillation: the ancestry (teacher) and the loss',
    'finetune': 'finetune: stitch layers and what is trained',
    'evaluation': 'evaluation: measurements and outputs',
    'run': 'run: outputs, checkpoints, devices',
}



class RecipeConfig(argparse.Namespace):
    """A recipe's resolved config: one attribute per option (``vars(cfg)`` is what :func:`save_config` writes).

    ``given`` holds the names of the options set by a command-line flag (not by a ``--config`` file, a preset or a
    default). A slot, so it is not among ``vars(cfg)``: the launcher (``accelerate launch``, accelerate's config)
    decides precision and device unless a flag did (:func:`~timm_learngene.training.launch.apply_launcher`)."""
    __slots__ = ('given',)

    def __init__(self, given=frozenset(), **values):
        super().__init__(**values)
        self.given = frozenset(given)


class _BadValue(ValueError):
    """A value an option cannot take; the caller says where it came from (flag, YAML file, preset)."""


class Kind:
    """How an option's values are read: ``from_text`` converts a flag's text, ``from_value`` a value from YAML or
    a preset (a string there is read as the flag's text would be). Both raise ValueError on a bad value."""

    def __init__(self, name: str, from_text: Callable[[str], Any], from_value: Callable[[Any], Any],
                 to_text: Callable[[Any], str] = str):
        self.name, self.from_text, self.from_value, self.to_text = name, from_text, from_value, to_text

    def __repr__(self):
        return f'Kind({self.name})'


def _yaml_gotcha(v) -> str:
    if isinstance(v, bool):
        return f' (YAML reads no/yes/on/off/true/false as booleans: quote it, "{"yes" if v else "no"}")'
    if v is None:
        return ' (an empty YAML value, null or ~ is no value: write the value, or quote it: "")'
    return ''


def _int_text(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise _BadValue(f'expected an integer, got {s!r}') from None


def _int_value(v) -> int:
    if isinstance(v, str):
        return _int_text(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise _BadValue(f'expected an integer, got {v!r}{_yaml_gotcha(v)}')


def _float_text(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise _BadValue(f'expected a number, got {s!r}') from None


def _float_value(v) -> float:
    if isinstance(v, str):
        return _float_text(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise _BadValue(f'expected a number, got {v!r}{_yaml_gotcha(v)}')


def _str_value(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise _BadValue(f'expected a string, got {v!r}{_yaml_gotcha(v)}')


def _bool_text(s: str) -> bool:
    raise _BadValue('a boolean takes no value: use the flag alone or its --no- form')


def _bool_value(v) -> bool:
    if isinstance(v, bool):
        return v
    raise _BadValue(f'expected true or false, got {v!r}')


def _json_object_text(s: str) -> Dict[str, Any]:
    try:
        v = json.loads(s)
    except ValueError as e:
        raise _BadValue(f'expected a JSON object, got {s!r} ({e})') from None
    if not isinstance(v, dict):
        raise _BadValue(f'expected a JSON object, got {s!r}')
    return v


def _json_object_value(v) -> Dict[str, Any]:
    if isinstance(v, str):
        return _json_object_text(v)
    if isinstance(v, dict):
        return dict(v)
    raise _BadValue(f'expected a mapping, got {v!r}')


def _name_or_json_value(v) -> str:
    # a spec given as a YAML mapping is kept as its JSON text, as the flag would carry it
    return json.dumps(v) if isinstance(v, dict) else _str_value(v)


BOOL = Kind('bool', _bool_text, _bool_value, lambda v: 'true' if v else 'false')
INT = Kind('int', _int_text, _int_value)
FLOAT = Kind('float', _float_text, _float_value)
STR = Kind('str', lambda s: s, _str_value)
JSON_OBJECT = Kind('JSON object', _json_object_text, _json_object_value, json.dumps)
NAME_OR_JSON = Kind('name or JSON', lambda s: s, _name_or_json_value)


def _dataset_text(s: str) -> str:
    if s in DATASETS or is_hf_dataset(s) or is_wds_dataset(s):
        return s
    raise _BadValue(f'{s!r} is not one of {", ".join(DATASETS)}, hfds/NAME (a Hugging Face dataset) or wds/NAME '
                    f'(webdataset shards)')


DATASET = Kind('dataset', _dataset_text, lambda v: _dataset_text(_str_value(v)))


def _list_of(elem: Kind) -> Kind:
    def from_text(s: str) -> list:
        return [elem.from_text(t.strip()) for t in s.split(',') if t.strip()]

    def from_value(v) -> list:
        if isinstance(v, str):
            return from_text(v)
        if isinstance(v, (list, tuple)):
            return [elem.from_value(x) for x in v if not (isinstance(x, str) and not x.strip())]
        raise _BadValue(f'expected a list (or comma-separated text), got {v!r}{_yaml_gotcha(v)}')
    return Kind(f'list of {elem.name}', from_text, from_value, lambda v: ','.join(elem.to_text(x) for x in v))


_KINDS = {bool: BOOL, int: INT, float: FLOAT, str: STR, dict: JSON_OBJECT,
          List[int]: _list_of(INT), List[float]: _list_of(FLOAT), List[str]: _list_of(STR)}


@dataclass(frozen=True)
class Option:
    """One recipe option.

    ``type``: ``bool``, ``int``, ``float``, ``str``, ``dict`` (a JSON object), ``List[int|float|str]``
    (comma-separated on the command line) or a :class:`Kind`. ``default`` None means the option has no value
    unless given (the help says what happens then). ``choices``: the values a ``str`` option may take, checked at
    parse time. ``group``: a key of :data:`GROUPS`. ``positional``: a positional argument instead of a flag.
    ``repeat``: a list option given once per item (``--set a=1 --set b=2``) instead of comma-separated.
    ``metavar``: the value's name in ``--help`` (default: the choices, or the option's name in capitals).
    """
    name: str
    type: Any
    default: Any
    help: str
    choices: Optional[Tuple[str, ...]] = None
    group: str = 'run'
    positional: bool = False
    repeat: bool = False
    metavar: Optional[str] = None

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(f'option {self.name!r}: unknown group {self.group!r}; one of {list(GROUPS)}')
        if not self.help:
            raise ValueError(f'option {self.name!r} has no help text')
        if self.repeat and self.type != List[str]:
            raise ValueError(f'option {self.name!r}: a repeatable option is a List[str]')
        if self.default is not None and self.choices and self.default not in self.choices:
            raise ValueError(f'option {self.name!r}: default {self.default!r} is not one of {self.choices}')

    @property
    def flag(self) -> str:
        return self.name if self.positional else '--' + self.name.replace('_', '-')

    @property
    def kind(self) -> Kind:
        return self.type if isinstance(self.type, Kind) else _KINDS[self.type]

    def convert(self, value, from_text: bool = False):
        """``value`` (a flag's text if ``from_text``, else a YAML or preset value) as this option's type; raises
        ValueError naming what was expected."""
        if value is None and self.default is None:
            return None
        v = self.kind.from_text(value) if from_text else self.kind.from_value(value)
        if self.choices is not None and v not in self.choices:
            close = difflib.get_close_matches(str(v), self.choices, n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            shown = ', '.join(str(c) if c != '' else "''" for c in self.choices)  # '' (e.g. --until: all) shows
            raise _BadValue(f'{v!r} is not one of {shown}{hint}')
        return v

    def text(self, value) -> str:
        """``value`` as it is written on the command line (and in docs/options.md)."""
        return 'none' if value is None else self.kind.to_text(value)


def pick(group: Sequence[Option], *names: str) -> List[Option]:
    """The options of ``group`` named ``names``, in the group's order."""
    unknown = set(names) - {o.name for o in group}
    if unknown:
        raise KeyError(f'no options {sorted(unknown)} in this group')
    return [o for o in group if o.name in names]


def load_config_file(path) -> Dict[str, Any]:
    """The mapping in a YAML file; ConfigError if it is missing, not YAML or not a mapping."""
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


def save_config(cfg: argparse.Namespace, path) -> None:
    """Write the resolved config as YAML (``--config`` of it reproduces the run)."""
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items() if k != 'config'}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=True))


class _Toggle(argparse.Action):
    """``--flag`` sets True, ``--no-flag`` False (argparse's BooleanOptionalAction without its help suffix, which
    differs between Python versions)."""

    def __init__(self, option_strings, dest, **kwargs):
        names = [s for flag in option_strings for s in (flag, '--no-' + flag[2:])]
        super().__init__(names, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith('--no-'))

    def format_usage(self):
        return ' | '.join(self.option_strings)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=118)


def _doc_parts(doc: str) -> Tuple[str, str]:
    """A module docstring as (description: its first paragraph, epilog: the rest)."""
    head, _, rest = (doc or '').strip('\n').partition('\n\n')
    return head.strip(), rest.strip('\n')


class OptionTable:
    """A recipe's options: parse a command line (:meth:`parse`), resolve a mapping (:meth:`resolve`), build the
    parser (:meth:`parser`), render the Markdown table (:meth:`markdown`).

    ``options``: the recipe's :class:`Option` records (no two with one name); ``defaults`` overrides the default
    of some of them (a shared group's option with this recipe's value); ``doc``: the recipe's docstring (its
    first paragraph is the description, the rest the epilog); ``check(cfg)`` raises ConfigError on a combination
    of values the recipe cannot run; ``config_file``: offer ``--config FILE``. With both ``resume`` and
    ``output`` options, ``--resume DIR`` alone continues the run in DIR (``output`` defaults to it).
    """

    def __init__(self, options: Iterable[Option], doc: str, defaults: Optional[Mapping[str, Any]] = None,
                 check: Optional[Callable[[argparse.Namespace], None]] = None, config_file: bool = True):
        table: Dict[str, Option] = {}
        for opt in options:
            if opt.name in table:
                raise ValueError(f'option {opt.name!r} listed twice')
            table[opt.name] = opt
        for name, value in (defaults or {}).items():
            if name not in table:
                raise KeyError(f'default for {name!r}, which is not an option of this table')
            table[name] = replace(table[name], default=value)
        for opt in table.values():  # a bad default fails at import, not in a user's run
            if opt.default is not None:
                opt.convert(opt.default)
        self._options = table
        self.description, self.epilog = _doc_parts(doc)
        self.check = check
        self.config_file = config_file

    # -- the table ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Option]:
        return iter(self._options.values())

    def __contains__(self, name) -> bool:
        return name in self._options

    def __getitem__(self, name: str) -> Option:
        return self._options[name]

    def __len__(self) -> int:
        return len(self._options)

    def defaults(self) -> Dict[str, Any]:
        """Option name -> default (copies: a run may change its lists and mappings)."""
        return {o.name: copy.deepcopy(o.default) for o in self}

    def grouped(self) -> List[Tuple[str, List[Option]]]:
        """(group, its options) in the order of :data:`GROUPS`, the groups this table uses only."""
        return [(g, [o for o in self if o.group == g]) for g in GROUPS if any(o.group == g for o in self)]

    # -- resolving ---------------------------------------------------------------------------------------------
    def resolve(self, values: Mapping[str, Any], source: str = 'options') -> argparse.Namespace:
        """The config from ``values`` (option name -> YAML-like value) over the defaults, checked exactly as a
        ``--config`` file is: ConfigError for an unknown key or a bad value, naming ``source``."""
        cfg = dict(self.defaults(), **self._convert_mapping(values, source))
        return self._finish(cfg, config=None, given=())

    def parse(self, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
        """The config from a command line: defaults <- ``--config FILE`` <- flags. A bad flag or value exits with
        status 2 and one ``error:`` line (argparse); a bad YAML file raises ConfigError. Nothing is loaded or
        written here."""
        base, config = self.defaults(), None
        if self.config_file:
            pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
            pre.add_argument('--config', default=None)
            known, _ = pre.parse_known_args(argv)
            config = known.config
            if config:
                base.update(self._convert_mapping(load_config_file(config), str(config)))
        ns = self.parser(base, prog).parse_args(argv)
        given = [o.name for o in self if hasattr(ns, o.name)]  # flags default to SUPPRESS: present when given
        return self._finish({o.name: getattr(ns, o.name, base[o.name]) for o in self}, config=config, given=given)

    def _convert_mapping(self, values: Mapping[str, Any], source: str) -> Dict[str, Any]:
        out = {}
        for key, value in values.items():
            opt = self._options.get(key)
            if opt is None:
                close = difflib.get_close_matches(str(key), list(self._options), n=1, cutoff=0.6)
                hint = f'did you mean {close[0]!r}? ' if close else ''
                raise ConfigError(f'{source}: unknown option {key!r}; {hint}--help and docs/options.md list the '
                                  f'options of this recipe')
            try:
                out[key] = opt.convert(value)
            except ValueError as e:
                raise ConfigError(f'{source}: {key}: {e}') from None
        return out

    def _finish(self, values: Dict[str, Any], config: Optional[str], given: Iterable[str]) -> RecipeConfig:
        if 'resume' in self and 'output' in self and values['resume'] \
                and values['output'] == self['output'].default:
            values['output'] = values['resume']  # --resume DIR continues the run in DIR
        cfg = RecipeConfig(given, **({'config': config} if self.config_file else {}), **values)
        if self.check is not None:
            self.check(cfg)
        return cfg

    # -- presentation ------------------------------------------------------------------------------------------
    def parser(self, defaults: Optional[Mapping[str, Any]] = None, prog: Optional[str] = None
               ) -> argparse.ArgumentParser:
        """The argparse parser: one argument group per option group, every option with its help, choices and
        default (``defaults``: the values shown as defaults, e.g. the table's over a YAML file's)."""
        shown = dict(self.defaults(), **(defaults or {}))
        # a short usage line: an error prints it above its one error: line, and --help lists every option below
        usage = ' '.join(['%(prog)s [-h]'] + (['[--config FILE]'] if self.config_file else []) + ['[options]']
                         + [o.metavar or o.name.upper() for o in self if o.positional])
        parser = argparse.ArgumentParser(prog=prog, usage=usage, description=self.description,
                                         epilog=self.epilog or None, formatter_class=_Formatter, allow_abbrev=False)
        if self.config_file:
            parser.add_argument('--config', metavar='FILE', default=None,
                                help='YAML file of option: value (keys as in this list, with underscores); flags '
                                     'override it. The config.yaml a run writes is such a file')
        for group, options in self.grouped():
            section = parser.add_argument_group(GROUPS[group])
            for opt in options:
                self._add(section, opt, shown[opt.name])
        return parser

    @staticmethod
    def _add(section, opt: Option, default) -> None:
        text = opt.help.replace('%', '%%')
        if default is not None and not opt.positional and not (opt.repeat and not default):
            shown = opt.text(default)
            text += f' (default: {shown if shown != "" else repr("")})'.replace('%', '%%')
        if opt.kind is BOOL:
            section.add_argument(opt.flag, dest=opt.name, action=_Toggle, default=argparse.SUPPRESS, help=text)
            return

        def convert(s: str):
            try:
                return opt.convert(s, from_text=True)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        convert.__name__ = opt.kind.name  # argparse names the type in its own messages
        metavar = opt.metavar or ('{' + ','.join(opt.choices) + '}' if opt.choices else opt.name.upper())
        if opt.positional:
            section.add_argument(opt.name, type=convert, metavar=metavar, help=text)
        elif opt.repeat:  # each occurrence is one item, taken as it is
            section.add_argument(opt.flag, dest=opt.name, action='append', metavar=metavar,
                                 default=argparse.SUPPRESS, help=text)
        else:
            section.add_argument(opt.flag, dest=opt.name, type=convert, metavar=metavar,
                                 default=argparse.SUPPRESS, help=text)

    def markdown(self, title: str, command: str) -> str:
        """This table as Markdown: a heading, the description, ``command --help`` and one table per group."""
        lines = [f'## {title}', '', ' '.join(self.description.split()), '', f'`{command} --help`', '']
        if self.config_file:
            lines += ['`--config FILE`: a YAML file of `option: value` (the keys below, with underscores); flags '
                      'override it.', '']
        for group, options in self.grouped():
            lines += [f'### {GROUPS[group]}', '', '| option | type | default | choices | help |',
                      '|---|---|---|---|---|']
            for o in options:
                name = f'`{o.flag}`' + (f' / `--no-{o.flag[2:]}`' if o.kind is BOOL else '')
                text = None if o.default is None or (o.repeat and not o.default) else o.text(o.default)
                default = '' if text is None else f'`{text}`' if text else "`''`"
                choices = ', '.join(f'`{c}`' for c in o.choices) if o.choices else ''
                kind = 'str, repeatable' if o.repeat else o.kind.name
                lines.append(f'| {name} | {kind} | {default} | {choices} | {_md(o.help)} |')
            lines.append('')
        return '\n'.join(lines)


def _md(text: str) -> str:
    """Plain help text for a Markdown table cell."""
    for raw, escaped in (('|', '\\|'), ('*', '\\*'), ('<', '&lt;'), ('>', '&gt;')):
        text = text.replace(raw, escaped)
    return text
