"""Write docs/options.md: every recipe's options, grouped, with type, default, choices and help, from the recipes'
option tables (``make options-doc``; tests/test_options.py fails when the committed file is out of date).

    python -m timm_learngene.recipes.options_doc > docs/options.md
"""
import importlib

from . import RECIPES

__all__ = ['render']

HEADER = """# Recipe options

<!-- Generated from the recipes' option tables by `make options-doc`
     (python -m timm_learngene.recipes.options_doc > docs/options.md); do not edit by hand. -->

Every recipe reads its options from one table (`OPTIONS` in `timm_learngene/recipes/<recipe>.py`, shared groups in
`timm_learngene/training/options.py`): defaults, then `--config FILE.yaml` (keys with underscores), then flags
(`--kebab-case`). Booleans are `--flag` / `--no-flag`, lists comma-separated, JSON objects JSON text. Unknown keys,
abbreviated flags, values of the wrong type and values outside an option's choices are refused before anything is
loaded or written. The resolved options are written to `config.yaml` next to the outputs. `--help` of each recipe
prints the same.

"""


def render() -> str:
    """The text of docs/options.md."""
    parts = [HEADER + ''.join(f'- [{name}](#{name})\n' for name in RECIPES) + '\n']
    for name in RECIPES:
        table = importlib.import_module(f'{__package__}.{name}').OPTIONS
        parts.append(table.markdown(name, f'python recipes/{name}.py'))
    return '\n'.join(parts).rstrip('\n') + '\n'


if __name__ == '__main__':
    print(render(), end='')
