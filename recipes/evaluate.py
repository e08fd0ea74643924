#!/usr/bin/env python
"""Evaluate every descendant of a pool: top-1/top-5, params, GMACs, measured throughput and latency.

    python recipes/evaluate.py --pool out/finetune/pool --dataset fashion_mnist --output out/eval
        -> out/eval/descendants.csv, descendants.md, pareto.png; top-1 written into the pool's config.json

Throughput (img/s, batch ``--throughput-batch``) and latency (ms, batch 1) are measured on the current device.
"""
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from timm.layers import set_fused_attn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm_learngene  # noqa: E402,F401
from timm_learngene.checkpoint import load_pool, update_pool_metrics  # noqa: E402
from timm_learngene.data import build_dataset, build_loader  # noqa: E402
from timm_learngene.evaluation import (  # noqa: E402
    descendant_rows, measure_latency, measure_throughput, pareto_plot, write_csv, write_markdown,
)
from timm_learngene.training.config import parse_config, save_config  # noqa: E402
from timm_learngene.training.loop import finish, make_accelerator  # noqa: E402
from timm_learngene.training.metrics import accuracy  # noqa: E402
from timm_learngene.training.cli import run_cli  # noqa: E402

DEFAULTS = dict(
    pool='', dataset='folder', data_dir='', eval_limit=0, num_workers=4, bad_images='error', batch_size=256,
    crop_pct=0.875, interpolation='bicubic', output='out/eval', throughput=True, throughput_batch=32, repeats=5,
    write_pool=True, mixed_precision='no', cpu=False, fused_attn=True, seed=0, title='',
    # unused by evaluation, kept so make_accelerator sees a complete config
    grad_accum=1, resume='',
)


def main(argv: Optional[Sequence[str]] = None):
    """Evaluate; returns the rows (one dict per descendant)."""
    cfg = parse_config(argv, DEFAULTS, __doc__.splitlines()[1])
    set_fused_attn(cfg.fused_attn)  # timm's fused SDPA; its CPU backward is slow at small head dims
    if not cfg.pool:
        raise SystemExit('evaluate: pass --pool FOLDER (a pool written by distill.py or finetune.py)')
    accelerator = make_accelerator(cfg)
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


if __name__ == '__main__':
    run_cli(main)
