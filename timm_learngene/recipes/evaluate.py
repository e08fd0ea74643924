"""Evaluate every descendant of a pool: top-1/top-5, params, GMACs, measured throughput and latency.

    python recipes/evaluate.py --pool out/finetune/pool --dataset fashion_mnist --output out/eval
        -> out/eval/descendants.csv, descendants.md, pareto.png; top-1 written into the pool's config.json

Top-1/top-5 on the test split (``top1``), and with ``--val-size N`` also on the validation images held out of the
training split (``val_top1``): choices (the best descendant, ``select``) use ``val_top1`` where it exists.

Throughput (img/s, batch ``--throughput-batch``) and latency (ms, batch 1) are measured on the current device.
"""
import argparse
import torch.nn.functional as F
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from timm.layers import set_fused_attn

from ..checkpoint import load_pool, read_pool_config, update_pool_metrics
from ..data import build_dataset, build_loader
from ..errors import ConfigError
from ..logs import get_logger
from ..evaluation import (
    descendant_rows, measure_latency, measure_throughput, pareto_plot, write_csv, write_markdown,
)
from ..training.loop import finish, make_accelerator
from ..training.launch import apply_launcher, write_launch_record
from ..training.setup import check_inputs, resolve_precision
from ..training.metrics import accuracy
from ..training.options import AUGMENTATION, DATA, RUN, Option, OptionTable, pick, save_config

__all__ = ['OPTIONS', 'parse_args', 'run', 'main']

_logger = get_logger(__name__)


def _check(cfg) -> None:
    if not cfg.pool:
        raise ConfigError('evaluate: pass --pool FOLDER (a pool written by distill.py or finetune.py)')


OPTIONS = OptionTable([
    Option('pool', str, '', 'the pool folder to evaluate (OUTPUT/pool of distill or finetune)', group='model'),
    Option('num_classes', int, 0, "classifier outputs (0 = the pool's); another number puts a new, untrained head "
           'on every member: params, GMACs and speed for that many classes, top-1 at chance level (finetune '
           '--num-classes first for accuracy)', group='model'),
    Option('descendants', List[str], [], "the descendants to evaluate, comma-separated names ('' = all)",
           group='model'),
    *pick(DATA, 'dataset', 'data_dir', 'eval_limit', 'val_size', 'val_seed', 'num_workers', 'bad_images'),
    Option('batch_size', int, 256, 'evaluation images per process per batch', group='data'),
    *pick(AUGMENTATION, 'crop_pct', 'interpolation'),
    Option('throughput', bool, True, 'measure every descendant\'s throughput (img/s at --throughput-batch) and '
           'latency (ms at batch 1) on this device, on the main process', group='evaluation'),
    Option('throughput_batch', int, 32, 'batch size of the throughput measurement', group='evaluation'),
    Option('repeats', int, 5, 'timed repeats of each throughput measurement (latency: twice as many)',
           group='evaluation'),
    Option('write_pool', bool, True, "write the measured top-1/top-5, img/s and latency into the pool's "
           'config.json', group='evaluation'),
    Option('title', str, '', "title of descendants.md and pareto.png ('' = '<pool name>: N descendants')",
           group='evaluation'),
    *pick(RUN, 'output', 'seed', 'mixed_precision', 'cpu', 'fused_attn', 'progress'),
], __doc__, check=_check, defaults=dict(output='out/eval'))


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


def run(cfg):
    """Evaluate; returns the rows (one dict per descendant)."""
    check_inputs(cfg, ('eval', 'train') if cfg.val_size else ('eval',))  # the data is there before the pool loads
    set_fused_attn(cfg.fused_attn)  # timm's fused SDPA; its CPU backward is slow at small head dims
    pool = load_pool(cfg.pool, **({'num_classes': cfg.num_classes} if cfg.num_classes else {})).eval()
    spec = pool.pool_spec
    if cfg.num_classes and cfg.num_classes != read_pool_config(cfg.pool)['model_args']['pool'].num_classes:
        _logger.warning('evaluate --num-classes %d: every member has a new, untrained head, so top-1 is at chance '
                        'level; finetune --num-classes %d first to measure accuracy', cfg.num_classes, cfg.num_classes)
    descendants = pool.descendants
    if cfg.descendants:
        unknown = sorted(set(cfg.descendants) - {d.name for d in descendants})
        if unknown:
            raise ConfigError(f'evaluate: unknown descendants {unknown}; pool {spec.name!r} has '
                              f's1..s{len(descendants)}')
        descendants = [d for d in descendants if d.name in cfg.descendants]
    largest = descendants[-1]
    sources = apply_launcher(cfg)
    resolve_precision(cfg, pool, lambda m, b: F.cross_entropy(m(b[0], largest), b[1]), img_size=spec.img_size,
                      in_chans=spec.in_chans, num_classes=spec.num_classes, source=sources['mixed_precision'])
    accelerator = make_accelerator(argparse.Namespace(**vars(cfg), grad_accum=1))  # no optimizer steps here
    write_launch_record(accelerator, cfg, sources)
    out = Path(cfg.output)
    pool = pool.to(accelerator.device).eval()

    def measure(split: str, topk) -> dict:
        loader = build_loader(build_dataset(vars(cfg), split, spec.img_size, spec.in_chans, spec.num_classes),
                              cfg.batch_size, False, cfg.num_workers)
        loader = accelerator.prepare(loader)
        with accelerator.autocast():
            return accuracy(accelerator, lambda x: {d.name: pool(x, d.route) for d in descendants}, loader,
                            topk=topk)

    acc = measure('eval', (1, 5))
    if cfg.val_size:
        acc.update({f'{k}_val': v for k, v in measure('val', (1,)).items()})
    speed = {}
    if cfg.throughput and accelerator.is_main_process:
        size = (spec.in_chans, spec.img_size, spec.img_size)
        amp = torch.bfloat16 if cfg.mixed_precision == 'bf16' else None
        for d in descendants:
            model = pool.descendant(d.route)
            speed[d.name] = dict(
                img_s=round(measure_throughput(model, size, cfg.throughput_batch, cfg.repeats, amp_dtype=amp), 1),
                latency_ms=round(measure_latency(model, size, repeats=cfg.repeats * 2), 3))
    rows = [r for r in descendant_rows(pool, acc, speed, names=[d.name for d in descendants])]
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / 'config.yaml')
        write_csv(rows, out / 'descendants.csv')
        title = cfg.title or f'{spec.name}: {len(rows)} descendants'
        text = write_markdown(rows, out / 'descendants.md', title=title)
        pareto_plot({spec.name: rows}, out / 'pareto.png', title=title)
        if cfg.write_pool:
            update_pool_metrics(cfg.pool, {r['name']: {k: r[k] for k in ('top1', 'top5', 'val_top1', 'img_s',
                                                                       'latency_ms') if k in r} for r in rows})
        accelerator.print(text)
        accelerator.print(f'written {out / "descendants.csv"}, {out / "descendants.md"}, {out / "pareto.png"}')
    finish(accelerator)
    return rows


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))
