#!/usr/bin/env python
"""Print a pool's descendants (name, route, params, GMACs) as a Markdown table, from its spec alone.

    python recipes/describe_pool.py deit_base_l6          # a registered spec
    python recipes/describe_pool.py out/finetune/pool     # a pool folder (adds its measured metrics)
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timm_learngene.checkpoint import read_pool_config  # noqa: E402
from timm_learngene.evaluation import write_markdown  # noqa: E402
from timm_learngene.models.learngene_pool import _metrics  # noqa: E402
from timm_learngene.spec import PoolSpec, enumerate_descendants, pool_params  # noqa: E402
from timm_learngene.training.cli import run_cli  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument('pool', help='registered spec name or pool folder')
    args = p.parse_args(argv)
    if Path(args.pool).is_dir():
        model_args = read_pool_config(args.pool)['model_args']
        spec, metrics = model_args['pool'], _metrics(model_args.get('descendants'))
    else:
        spec, metrics = PoolSpec.from_any(args.pool), {}
    rows = [dict(name=d.name, route=d.route_label, params=f'{d.params:,}', gmacs=round(d.gmacs, 2), **d.metrics)
            for d in enumerate_descendants(spec, metrics)]
    sizes = pool_params(spec)
    print(write_markdown(rows, title=f'{spec.name}: {len(rows)} descendants, {sizes["pool"]:,} stored params '
                                      f'(+ {sizes["transforms"]:,} in distillation transforms)'))
    return rows


if __name__ == '__main__':
    run_cli(main)
