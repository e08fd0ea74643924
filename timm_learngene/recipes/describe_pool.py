"""Print a pool's descendants (name, route, params, GMACs) as a Markdown table, from its spec alone.

    python recipes/describe_pool.py deit_base_l6          # a registered spec
    python recipes/describe_pool.py out/finetune/pool     # a pool folder (adds its measured metrics)
"""
from pathlib import Path
from typing import Optional, Sequence

from ..pool_reader import read_pool_config
from ..evaluation import write_markdown
from ..pool_reader import descendant_table
from ..spec import PoolSpec, enumerate_descendants, pool_params
from ..training.options import Option, OptionTable
from ..training.cli import run_cli

__all__ = ['OPTIONS', 'parse_args', 'run', 'main']

OPTIONS = OptionTable([
    Option('pool', str, None, 'a registered spec name (e.g. deit_base_l6) or a pool folder', group='model',
           positional=True),
], __doc__, config_file=False)


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


def run(cfg):
    """Print the table; returns its rows."""
    if Path(cfg.pool).is_dir():
        config = read_pool_config(cfg.pool)
        spec, descendants = config['model_args']['pool'], descendant_table(config)
    else:
        spec = PoolSpec.from_any(cfg.pool)
        descendants = enumerate_descendants(spec)
    rows = [dict(name=d.name, route=d.route_label, params=f'{d.params:,}', gmacs=round(d.gmacs, 2), **d.metrics)
            for d in descendants]
    sizes = pool_params(spec)
    print(write_markdown(rows, title=f'{spec.name}: {len(rows)} descendants, {sizes["pool"]:,} stored params '
                                      f'(+ {sizes["transforms"]:,} in distillation transforms)'))
    return rows


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))


if __name__ == '__main__':  # accelerate launch -m timm_learngene.recipes.describe_pool ...
    run_cli(main)
