#!/usr/bin/env python
"""Step time of one-pass distillation (all members share one teacher forward) against distilling each member on
its own (the teacher forward repeated per member), same shapes, same run. Prints the ratio last (target <= 0.8).

    python benchmarks/distill_step.py                       # deit_base_l6 shapes at 64 px, batch 16 on CPU
    python benchmarks/distill_step.py --img-size 112        # what `make bench` runs on CPU
    python benchmarks/distill_step.py --device cuda         # 224 px, batch 32, bf16 autocast, MFU

Both steps end with the same AdamW step over the pool, a fixed cost that pulls the ratio towards 1; the lower
the resolution, the larger its share, so the ratio at 64 px is an upper bound on the one at 224 px.
MFU counts the one-pass step as 2 x teacher MACs + 6 x (member + transform) MACs per image.
"""
import argparse
import sys
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm_learngene  # noqa: E402,F401
from timm_learngene.distill import DenseDistiller  # noqa: E402
from timm_learngene.spec import PoolSpec, route_macs  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    add_device_args, add_pool_args, autocast, format_mfu, medians, paired_ratio, resolve, sync, time_interleaved,
    vit_macs)

CPU = dict(img_size=64, batch_size=16, warmup=2, repeats=5)
CUDA = dict(img_size=224, batch_size=32, warmup=3, repeats=10)
QUICK = dict(img_size=32, batch_size=2, warmup=1, repeats=1)
TARGET = 0.8


def step_flops(spec: PoolSpec, batch_size: int) -> float:
    """FLOPs of one one-pass distillation step: teacher forward, every member's and transform's forward +
    backward."""
    d = spec.distill
    teacher = vit_macs(d.teacher_width, d.teacher_depth, spec.img_size, spec.patch_size, spec.in_chans,
                       spec.num_classes)
    members = sum(route_macs(spec, ((m.name, 0, spec.depth),)) for m in spec.members)
    transforms = sum(2 * len(d.member_blocks) * spec.num_tokens * m.width * d.teacher_width for m in spec.members)
    return batch_size * (2 * teacher + 6 * (members + transforms))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pool_args(p)
    p.add_argument('--bf16', action='store_true', help='same as --dtype bf16')
    add_device_args(p)
    args = p.parse_args(argv)
    if args.bf16:
        args.dtype = 'bf16'
    resolve(args, CPU, CUDA, QUICK)
    torch.manual_seed(0)
    spec = PoolSpec.from_any(args.pool).replace(img_size=args.img_size)
    teacher = timm.create_model(spec.distill.teacher, pretrained=False, img_size=args.img_size,
                                num_classes=spec.num_classes)
    pool = timm.create_model('learngene_pool', pool=spec)
    d = DenseDistiller(pool, teacher).to(args.device).train()
    opt = torch.optim.AdamW([q for q in d.parameters() if q.requires_grad], lr=1e-4)
    x = torch.randn(args.batch_size, spec.in_chans, args.img_size, args.img_size, device=args.device)
    y = torch.randint(0, spec.num_classes, (args.batch_size,), device=args.device)
    members = d.member_names

    def one_pass():
        return d(x, y)['total']

    def separate():
        total = 0
        for m in members:
            t_logits, t_feats = d.teacher_forward(x)
            total = total + d.member_losses(x, y, t_logits, t_feats, [m])['total']
        return total

    def step(fn):
        opt.zero_grad(set_to_none=True)
        with autocast(args.device, args.dtype):
            loss = fn()
        loss.backward()
        opt.step()
        sync(args.device)

    times = time_interleaved({'one_pass': lambda: step(one_pass), 'separate': lambda: step(separate)},
                             args.device, args.warmup, args.repeats, args.inner)
    med = medians(times)
    print(f'device {args.device}, pool {spec.name}, img {args.img_size}, batch {args.batch_size}, {args.dtype}, '
          f'{torch.get_num_threads()} threads; {args.repeats} repeats x {args.inner} steps (median), '
          f'{args.warmup} warm-up')
    print(f"one-pass step {med['one_pass'] * 1e3:.1f} ms "
          f"({format_mfu(step_flops(spec, args.batch_size), med['one_pass'], args.peak_tflops)}), "
          f"per-member step {med['separate'] * 1e3:.1f} ms")
    ratio = paired_ratio(times, 'one_pass', 'separate')
    print(f'ratio one_pass / separate (median of per-round ratios) = {ratio:.3f}')
    return ratio


if __name__ == '__main__':
    main()
