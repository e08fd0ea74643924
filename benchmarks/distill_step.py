#!/usr/bin/env python
"""Step time of one-pass distillation (all members share one teacher forward) against distilling each member on
its own (the teacher forward repeated per member), same shapes, same run. Prints the ratio last (target <= 0.8).

    python benchmarks/distill_step.py                       # deit_base_l6 shapes at 64 px on CPU
    python benchmarks/distill_step.py --img-size 224 --batch-size 32 --device cuda
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm_learngene  # noqa: E402,F401
from timm_learngene.distill import DenseDistiller  # noqa: E402
from timm_learngene.spec import PoolSpec  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument('--pool', default='deit_base_l6')
    p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--bf16', action='store_true', help='autocast to bfloat16')
    args = p.parse_args(argv)
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
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = fn()
        loss.backward()
        opt.step()
        if x.device.type == 'cuda':
            torch.cuda.synchronize()

    times = {'one_pass': [], 'separate': []}
    for i in range(args.warmup + args.repeats):  # interleaved so drift hits both alike
        for name, fn in (('one_pass', one_pass), ('separate', separate)):
            t = time.perf_counter()
            step(fn)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f'device {args.device}, pool {spec.name}, img {args.img_size}, batch {args.batch_size}, '
          f'bf16 {args.bf16}, {args.repeats} repeats (median)')
    print(f"one-pass step {med['one_pass'] * 1e3:.1f} ms, per-member step {med['separate'] * 1e3:.1f} ms")
    ratio = med['one_pass'] / med['separate']
    print(f'ratio one_pass / separate = {ratio:.3f}')
    return ratio


if __name__ == '__main__':
    main()
