"""Evaluate every descendant of a pool: top-1/top-5, params, GMACs, measured throughput and latency.

    python recipes/evaluate.py --pool out/finetune/pool --dataset fashion_mnist --output out/eval
        -> out/eval/descendants.csv, descendants.md, pareto.png; top-1 written into the pool's config.json

Throughput (img/s, batch ``--throughput-batch``) and latency (ms, batch 1) are measured on the current device.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch
from timm.layers import set_fused_attn

from ..checkpoint import load_pool, update_pool_metrics
from ..data import build_dataset, build_loader
from ..errors import ConfigError
from ..evaluation import (
    descendant_rows, measure_latency, measure_throughput, pareto_plot, write_csv, write_markdown,
)
from ..training.loop import finish, make_accelerator
from ..training.metrics import accuracy
from ..training.options import AUGMENTATION, DATA, RUN, Option, OptionTable, pick, save_config

__all__ = ['OPTIONS', 'parse_args', 'run', 'main']


def _check(cfg) -> None:
    if not cfg.pool:
        raise ConfigError('evaluate: pass --pool FOLDER (a pool written by distill.py or finetune.py)')


OPTIONS = OptionTable([
    Option('pool', str, '', 'the pool folder to evaluate (OUTPUT/pool of distill or finetune)', group='model'),
    *pick(DATA, 'dataset', 'data_dir', 'eval_limit', 'num_workers', 'bad_images'),
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
    *pick(RUN, 'output', 'seed', 'mixed_precision', 'cpu', 'fused_attn'),
], __doc__, check=_check, defaults=dict(output='out/eval'))


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


def run(cfg):
    """Evaluate; returns the rows (one dict per descendant)."""
    set_fused_attn(cfg.fused_attn)  # timm's fused SDPA; its CPU backward is slow at small head dims
    accelerator = make_accelerator(argparse.Namespace(**vars(cfg), grad_accum=1))  # no optimizer steps here
    out = Path(cfg.output)
    pool = load_pool(cfg.pool).to(accelerator.device).eval()
    spec = pool.pool_spec
    loader = build_loader(build_dataset(vars(cfg), 'eval', spec.img_size, spec.in_chans, spec.num_classes),
                          cfg.batch_size, False, cfg.num_workers)
    loader = accelerator.prepare(loader)
    descendants = pool.descendants
    with accelerator.autocast():
        acc = accuracy(accelerator, lambda x: {d.name: pool(x, d.route) for d in descendants}, loader, topk=(1, 5))
    speed = {}
    if cfg.throughput and accelerator.is_main_process:
        size = (spec.in_chans, spec.img_size, spec.img_size)
        amp = torch.bfloat16 if cfg.mixed_precision == 'bf16' else None
        for d in descendants:
            model = pool.descendant(d.route)
            speed[d.name] = dict(
                img_s=round(measure_throughput(model, size, cfg.throughput_batch, cfg.repeats, amp_dtype=amp), 1),
                latency_ms=round(measure_latency(model, size, repeats=cfg.repeats * 2), 3))
    rows = descendant_rows(pool, acc, speed)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / 'config.yaml')
        write_csv(rows, out / 'descendants.csv')
        title = cfg.title or f'{spec.name}: {len(rows)} descendants'
        text = write_markdown(rows, out / 'descendants.md', title=title)
        pareto_plot({spec.name: rows}, out / 'pareto.png', title=title)
        if cfg.write_pool:
            update_pool_metrics(cfg.pool, {r['name']: {k: r[k] for k in ('top1', 'top5', 'img_s', 'latency_ms')
                                                      if k in r} for r in rows})
        accelerator.print(text)
        accelerator.print(f'written {out / "descendants.csv"}, {out / "descendants.md"}, {out / "pareto.png"}')
    finish(accelerator)
    return rows


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))
