#!/usr/bin/env python
"""Data-parallel scaling of a distillation and a finetuning step: run under ``accelerate launch`` with 1 process and
with N; each run appends one JSON line (stage, processes, images per second over all processes, per-process batch,
MFU) to ``--output``; ``--report`` turns the lines into a table with each N-process run's efficiency against the
1-process run of the same stage (``img/s(N) / (N x img/s(1))``).

    accelerate launch --num_processes 1 benchmarks/scaling.py --output s.jsonl            # on a GPU machine
    accelerate launch --multi_gpu --num_processes 8 benchmarks/scaling.py --output s.jsonl
    python benchmarks/scaling.py --report s.jsonl                                          # Markdown table

What a step is: the recipes' own (``DenseDistiller`` over the pool with one ancestry forward; ``DescendantTrainer``
over ``--routes-per-step`` routes with the sandwich rule and one ancestry forward), wrapped by
``accelerator.prepare`` (DDP, gradient all-reduce), AdamW, bf16 autocast on CUDA; synthetic images, so the
loader is not measured. Per-process batch fixed (weak scaling), as a user adding GPUs keeps it. ``--quick``: a
smoke run on CPU (2 processes under ``--multi_gpu`` use gloo).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm_learngene  # noqa: E402,F401
from timm_learngene.distill import DenseDistiller  # noqa: E402
from timm_learngene.finetune import DescendantTrainer, RouteSampler, sandwich_routes  # noqa: E402
from timm_learngene.spec import PoolSpec, enumerate_descendants, route_macs  # noqa: E402
from benchmarks.distill_step import step_flops as distill_flops  # noqa: E402
from benchmarks.harness import mfu, peak_tflops, vit_macs  # noqa: E402

CUDA = dict(img_size=224, batch_size=32, warmup=5, steps=20)
CPU = dict(img_size=32, batch_size=4, warmup=1, steps=3)


def _teacher(spec: PoolSpec):
    return timm.create_model(spec.distill.teacher, pretrained=False, img_size=spec.img_size,
                             num_classes=spec.num_classes)


def build(stage: str, spec: PoolSpec, routes_per_step: int, seed: int = 0):
    """``(module, step_fn(module, x, y, i) -> loss, flops_per_image)`` of one stage's training step."""
    torch.manual_seed(seed)
    pool = timm.create_model('learngene_pool', pool=spec)
    teacher = _teacher(spec)
    d = spec.distill
    teacher_macs = vit_macs(d.teacher_width, d.teacher_depth, spec.img_size, spec.patch_size, spec.in_chans,
                            spec.num_classes)
    if stage == 'distill':
        return DenseDistiller(pool, teacher), (lambda m, x, y, i: m(x, y)['total']), distill_flops(spec, 1)
    routes = [r.route for r in enumerate_descendants(spec)]
    sampler = RouteSampler(routes, seed=seed, per_step=routes_per_step, always=sandwich_routes(spec))
    costs = [route_macs(spec, r) for r in routes]
    flops = 2 * teacher_macs + 6 * (sum(route_macs(spec, r) for r in sandwich_routes(spec)) +
                                    (routes_per_step - 2) * statistics.mean(costs))
    trainer = DescendantTrainer(pool, teacher, 0.5, 0.5)
    return trainer, (lambda m, x, y, i: m(x, y, sampler.routes_for(i))['total']), flops


def measure(args) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    cpu = args.device == 'cpu'
    # a finetune step leaves the routes it did not draw without gradients, as the recipe's DDP allows
    ddp = DistributedDataParallelKwargs(find_unused_parameters=args.stage == 'finetune')
    acc = Accelerator(cpu=cpu, mixed_precision='no' if cpu else 'bf16', kwargs_handlers=[ddp])
    spec = PoolSpec.from_any(args.pool).replace(img_size=args.img_size)
    module, step, flops_per_image = build(args.stage, spec, args.routes_per_step)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    model, opt = acc.prepare(module, opt)
    g = torch.Generator().manual_seed(acc.process_index)
    x = torch.randn(args.batch_size, spec.in_chans, spec.img_size, spec.img_size, generator=g).to(acc.device)
    y = torch.randint(0, spec.num_classes, (args.batch_size,), generator=g).to(acc.device)
    model.train()
    times = []
    for i in range(args.warmup + args.steps):
        if acc.device.type == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        with acc.autocast():
            loss = step(model, x, y, i)
        acc.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if acc.device.type == 'cuda':
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    # the slowest process sets the pace of a synchronous step
    med = torch.tensor([statistics.median(times)], device=acc.device)
    slowest = float(acc.gather(med).max())
    n = acc.num_processes
    images = args.batch_size * n / slowest
    peak = args.peak_tflops or (peak_tflops(acc.device) if acc.device.type == 'cuda' else None)
    row = {'stage': args.stage, 'processes': n, 'img_s': images, 'batch_per_process': args.batch_size,
           'img_size': spec.img_size, 'pool': spec.name, 'device': torch.cuda.get_device_name()
           if acc.device.type == 'cuda' else 'cpu', 'seconds_per_step': slowest,
           'mfu': mfu(flops_per_image * args.batch_size, slowest, peak) if peak else None}
    acc.wait_for_everyone()
    if acc.is_main_process:
        with open(args.output, 'a') as f:
            f.write(json.dumps(row) + '\n')
        print(json.dumps(row), flush=True)
    acc.wait_for_everyone()
    acc.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return row


def report(path) -> str:
    """A Markdown table of the JSON lines in ``path``: per stage, each run's img/s, MFU and efficiency against
    the same stage's 1-process run."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    lines = ['| stage | processes | img/s (all) | img/s per process | MFU | efficiency vs 1 process |',
             '|---|---|---|---|---|---|']
    for r in sorted(rows, key=lambda r: (r['stage'], r['processes'])):
        one = [o for o in rows if o['stage'] == r['stage'] and o['processes'] == 1]
        eff = f"{r['img_s'] / (r['processes'] * one[-1]['img_s']):.2f}" if one else 'no 1-process run'
        m = f"{100 * r['mfu']:.1f}%" if r.get('mfu') else '-'
        lines.append(f"| {r['stage']} | {r['processes']} | {r['img_s']:.0f} | {r['img_s'] / r['processes']:.0f} | "
                     f"{m} | {eff} |")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--stage', choices=('distill', 'finetune'), default='distill')
    p.add_argument('--pool', default='deit_base_l6')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--img-size', type=int, default=None)
    p.add_argument('--batch-size', type=int, default=None, help='per process')
    p.add_argument('--routes-per-step', type=int, default=3)
    p.add_argument('--warmup', type=int, default=None)
    p.add_argument('--steps', type=int, default=None, help='timed steps (median kept)')
    p.add_argument('--peak-tflops', type=float, default=None)
    p.add_argument('--output', default='scaling.jsonl', help='JSON lines, one per run, appended')
    p.add_argument('--report', default='', help='print the Markdown table of this JSON-lines file and exit')
    p.add_argument('--quick', action='store_true', help='smoke run: tiny sizes')
    args = p.parse_args(argv)
    if args.report:
        print(report(args.report))
        return
    profile = CPU if args.quick or args.device == 'cpu' else CUDA
    for k, v in profile.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    measure(args)


if __name__ == '__main__':
    main()
