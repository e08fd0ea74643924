"""Evaluate every descendant of a pool: top-1/top-5, params, GMACs, measured throughput and latency.

    python recipes/evaluate.py --pool out/finetune/pool --dataset fashion_mnist --output out/eval
        -> out/eval/descendants.csv, descendants.md, pareto.png, pareto_latency.png; top-1 and the latency
           profiles written into the pool's config.json

Top-1/top-5 on the test split (``top1``), and with ``--val-size N`` also on the validation images held out of the
training split (``val_top1``): choices (the best descendant, ``select``) use ``val_top1`` where it exists.

Latency (``latency_ms``: median ms at batch 1, ``latency_iqr_ms``: its interquartile spread) and throughput
(``img_s`` at ``--throughput-batch``) are two profiles of the current device, measured as
``python -m timm_learngene profile`` measures (warm-up, torch's thread count fixed and recorded, ``--repeats``
interleaved samples per descendant) and stored in the pool's config.json under the device's signature, where
``select(..., max_latency_ms=...)`` finds them. ``pareto_latency.png`` plots top-1 against the batch-1 latency of
every device the pool has been profiled on.
"""
import argparse
import torch.nn.functional as F
from pathlib import Path
from typing import List, Optional, Sequence

from timm.layers import set_fused_attn

from ..pool_reader import read_pool_config
from ..pool_writer import load_pool, update_pool_metrics
from ..data import StreamLoader, build_dataset, build_loader
from ..errors import ConfigError
from ..logs import get_logger
from ..evaluation import (
    LATENCY_XLABEL, descendant_rows, latency_series, pareto_plot, speed_columns, write_csv, write_markdown,
)
from ..profiling import profile_models, read_profiles, write_profile
from ..training.loop import finish, make_accelerator
from ..training.launch import apply_launcher, write_launch_record
from ..training.setup import check_inputs, is_stream, pin_memory, resolve_precision
from ..training.metrics import accuracy
from ..training.progress import Progress
from ..training.option_groups import AUGMENTATION, DATA, RUN
from ..training.options import Option, OptionTable, pick, save_config
from ..training.cli import run_cli

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
    Option('throughput', bool, True, 'profile every descendant on this device (main process): latency (median ms '
           'at batch 1, with its spread) and throughput (img/s at --throughput-batch)', group='evaluation'),
    Option('throughput_batch', int, 32, 'batch size of the throughput profile', group='evaluation'),
    Option('repeats', int, 15, 'timed samples per descendant in each profile (interleaved rounds; the median and '
           'quartiles are reported)', group='evaluation'),
    Option('write_pool', bool, True, "write the measured top-1/top-5 and the latency profiles into the pool's "
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
                              cfg.batch_size, False, cfg.num_workers,
                              pin_memory=pin_memory(cfg, accelerator.device))
        loader = StreamLoader(loader, accelerator.device) if is_stream(loader) else accelerator.prepare(loader)
        with accelerator.autocast():
            return accuracy(accelerator, lambda x: {d.name: pool(x, d.route) for d in descendants}, loader,
                            topk=topk, progress=lambda total: Progress(
                                total, desc=f'evaluate {split} ({len(descendants)} descendants)', mode=cfg.progress,
                                unit='batch', every=max(1, total // 10), enabled=accelerator.is_main_process))

    acc = measure('eval', (1, 5))
    if cfg.val_size:
        acc.update({f'{k}_val': v for k, v in measure('val', (1,)).items()})
    speed, profiles = {}, []
    if cfg.throughput and accelerator.is_main_process:
        size = (spec.in_chans, spec.img_size, spec.img_size)
        dtype = 'bf16' if cfg.mixed_precision == 'bf16' else 'fp32'
        models = {d.name: pool.descendant(d) for d in descendants}
        profiles = [profile_models(models, size, accelerator.device, dtype, batch, repeats=cfg.repeats,
                                   progress=lambda total, desc: Progress(total, desc=desc, mode=cfg.progress,
                                                                         unit='sample', every=max(1, total // 20)),
                                   desc=f'profile batch {batch}')
                    for batch in (1, cfg.throughput_batch)]
        speed = speed_columns(*profiles)
    rows = [r for r in descendant_rows(pool, acc, speed, names=[d.name for d in descendants])]
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / 'config.yaml')
        write_csv(rows, out / 'descendants.csv')
        title = cfg.title or f'{spec.name}: {len(rows)} descendants'
        text = write_markdown(rows, out / 'descendants.md', title=title)
        pareto_plot({spec.name: rows}, out / 'pareto.png', title=title)
        if cfg.write_pool:
            # img_s / latency_ms of evaluations before latency profiles were single timings: dropped
            update_pool_metrics(cfg.pool, {r['name']: {k: r[k] for k in ('top1', 'top5', 'val_top1') if k in r}
                                           for r in rows}, remove=('img_s', 'latency_ms'))
            for p in profiles:
                write_profile(cfg.pool, p)
        written = [out / 'descendants.csv', out / 'descendants.md', out / 'pareto.png']
        # every device the pool has been profiled on (this one included), at batch 1
        measured = [p for p in (read_profiles(cfg.pool) if cfg.write_pool else profiles)
                    if p.device.batch_size == 1]
        series = latency_series(measured, {r['name']: r['top1'] for r in rows})
        if series:
            pareto_plot(series, out / 'pareto_latency.png', title=f'{spec.name}: top-1 vs measured latency',
                        x='latency_ms', xerr=('latency_q1_ms', 'latency_q3_ms'), xlabel=LATENCY_XLABEL)
            written.append(out / 'pareto_latency.png')
        accelerator.print(text)
        accelerator.print(f'written {", ".join(str(p) for p in written)}')
    finish(accelerator)
    return rows


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))


if __name__ == '__main__':  # accelerate launch -m timm_learngene.recipes.evaluate ...
    run_cli(main)
