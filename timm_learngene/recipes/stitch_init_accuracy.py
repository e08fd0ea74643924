"""How good is each stitch init before any finetuning? Validation top-1 of every descendant of a distilled pool
right after its stitch layers are set by each init method (the members alone are untouched by it).

    timm-learngene stitch-init-accuracy out/demo/distill/pool --methods lstsq,learngene
    python recipes/stitch_init_accuracy.py out/demo/distill/pool --methods lstsq,learngene   # from a checkout

Fashion-MNIST by default (the demo's validation split: ``--val-size`` training images held out with
``--val-seed``, the ones the demo never trains on); ``--dataset folder --data-dir DIR`` for an ImageFolder tree with
a ``val`` split. The lstsq fit uses ``--init-images`` un-augmented training images drawn with ``--seed``, as
the finetune recipe does. Prints one Markdown table: descendant, route, then top-1 (%) per method.
"""
from typing import List, Optional, Sequence

import torch

from ..pool_writer import load_pool
from ..data import build_dataset, build_loader
from ..errors import ConfigError
from ..stitch_init import STITCH_INITS, init_stitches
from ..training.cli import run_cli
from ..training.option_groups import DATA
from ..training.options import Option, OptionTable, pick

__all__ = ['OPTIONS', 'parse_args', 'run', 'main']

OPTIONS = OptionTable([
    Option('pool', str, None, 'a distilled pool folder (distill OUTPUT/pool)', positional=True, group='model'),
    Option('methods', List[str], ['lstsq', 'learngene'],
           f'stitch inits to compare, comma-separated, of {", ".join(STITCH_INITS)}', group='model'),
    *pick(DATA, 'dataset', 'data_dir', 'val_size', 'val_seed'),
    Option('crop_pct', float, 1.0, 'evaluation centre crop: resize to img_size / crop_pct, then crop img_size',
           group='augmentation'),
    Option('init_images', int, 100, 'un-augmented training images the lstsq fit uses', group='model'),
    Option('seed', int, 0, 'seed of which training images the lstsq fit uses'),
    Option('batch_size', int, 500, 'images per evaluation batch', group='optimization'),
    Option('bf16', bool, False, 'evaluate under bf16 autocast (as the demo on a bf16 CPU)'),
], __doc__, defaults=dict(dataset='fashion_mnist', val_size=5000), config_file=False)


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


def run(cfg):
    """Print the table; returns ``{method: {descendant name: validation top-1}}``."""
    bad = [m for m in cfg.methods if m not in STITCH_INITS]
    if bad or not cfg.methods:
        raise ConfigError(f'unknown stitch init {", ".join(bad) or "(none given)"}; choose from '
                          f'{", ".join(STITCH_INITS)}')
    data = dict(dataset=cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size, val_seed=cfg.val_seed,
                crop_pct=cfg.crop_pct)
    spec = load_pool(cfg.pool).pool_spec
    shape = (spec.img_size, spec.in_chans, spec.num_classes)
    calib = build_dataset(data, 'train', *shape, augment=False)
    idx = torch.randperm(len(calib), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.init_images]
    images = torch.stack([calib[int(i)][0] for i in idx])
    loader = build_loader(build_dataset(data, 'val', *shape, augment=False), cfg.batch_size, False)
    table = {}
    for method in cfg.methods:
        pool = load_pool(cfg.pool).eval()
        init_stitches(pool, method, images if method == 'lstsq' else None)
        correct = {d.name: 0 for d in pool.descendants}
        seen = 0
        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=cfg.bf16):
            for x, y in loader:
                seen += len(y)
                for d in pool.descendants:
                    correct[d.name] += int((pool(x, d.route).argmax(-1) == y).sum())
        table[method] = {k: 100 * v / seen for k, v in correct.items()}
    print(f'val top-1 (%) on {seen} images right after the stitch init, before finetuning ({cfg.pool})\n')
    print('| name | route | ' + ' | '.join(cfg.methods) + ' |')
    print('|---|---|' + '---|' * len(cfg.methods))
    for d in pool.descendants:
        print(f'| {d.name} | {d.route_label} | ' + ' | '.join(f'{table[m][d.name]:.2f}' for m in cfg.methods) + ' |')
    return table


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))


if __name__ == '__main__':
    run_cli(main)
