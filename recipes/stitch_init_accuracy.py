#!/usr/bin/env python
"""How good is each stitch init before any finetuning? Validation top-1 of every descendant of a distilled pool
right after its stitch layers are set by each init method (the members alone are untouched by it).

    python recipes/stitch_init_accuracy.py out/demo/distill/pool --methods lstsq,learngene

Fashion-MNIST by default (the demo's validation split: ``--val-size`` training images held out with
``--val-seed``, the ones the demo never trains on); ``--dataset folder --data-dir DIR`` for an ImageFolder tree with
a ``val`` split. The lstsq fit uses ``--init-images`` un-augmented training images drawn with ``--seed``, as
``recipes/finetune.py`` does. Prints one Markdown table: descendant, route, then top-1 (%) per method.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timm_learngene import load_pool  # noqa: E402
from timm_learngene.data import build_dataset, build_loader  # noqa: E402
from timm_learngene.errors import ConfigError  # noqa: E402
from timm_learngene.stitch_init import STITCH_INITS, init_stitches  # noqa: E402
from timm_learngene.training.cli import run_cli  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('pool', help='a distilled pool folder (distill OUTPUT/pool)')
    p.add_argument('--methods', default='lstsq,learngene', help=f'comma-separated, of {", ".join(STITCH_INITS)}')
    p.add_argument('--dataset', default='fashion_mnist')
    p.add_argument('--data-dir', default='/usr/share/datasets/fashion-mnist')
    p.add_argument('--val-size', type=int, default=5000)
    p.add_argument('--val-seed', type=int, default=0)
    p.add_argument('--crop-pct', type=float, default=1.0)
    p.add_argument('--init-images', type=int, default=100)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--batch-size', type=int, default=500)
    p.add_argument('--bf16', action='store_true', help='evaluate under bf16 autocast (as the demo on a bf16 CPU)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    methods = [m for m in args.methods.split(',') if m]
    bad = [m for m in methods if m not in STITCH_INITS]
    if bad:
        raise ConfigError(f'unknown stitch init {", ".join(bad)}; choose from {", ".join(STITCH_INITS)}')
    data = dict(dataset=args.dataset, data_dir=args.data_dir, val_size=args.val_size, val_seed=args.val_seed,
                crop_pct=args.crop_pct)
    spec = load_pool(args.pool).pool_spec
    shape = (spec.img_size, spec.in_chans, spec.num_classes)
    calib = build_dataset(data, 'train', *shape, augment=False)
    idx = torch.randperm(len(calib), generator=torch.Generator().manual_seed(args.seed))[:args.init_images]
    images = torch.stack([calib[int(i)][0] for i in idx])
    loader = build_loader(build_dataset(data, 'val', *shape, augment=False), args.batch_size, False)
    table = {}
    for method in methods:
        pool = load_pool(args.pool).eval()
        init_stitches(pool, method, images if method == 'lstsq' else None)
        correct = {d.name: 0 for d in pool.descendants}
        seen = 0
        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.bf16):
            for x, y in loader:
                seen += len(y)
                for d in pool.descendants:
                    correct[d.name] += int((pool(x, d.route).argmax(-1) == y).sum())
        table[method] = {k: 100 * v / seen for k, v in correct.items()}
    print(f'val top-1 (%) on {seen} images right after the stitch init, before finetuning ({args.pool})\n')
    print('| name | route | ' + ' | '.join(methods) + ' |')
    print('|---|---|' + '---|' * len(methods))
    for d in pool.descendants:
        print(f'| {d.name} | {d.route_label} | ' + ' | '.join(f'{table[m][d.name]:.2f}' for m in methods) + ' |')


if __name__ == '__main__':
    run_cli(main)  # a bad pool folder, data or method: one error line, exit status 2
