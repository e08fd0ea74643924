#!/usr/bin/env python
"""Finetuning step of a descendant through the pool against the same network as a plain timm ViT, same shapes,
same run. Prints the ratio last (relative speed baseline / descendant, target >= 0.95).

    python benchmarks/finetune_step.py                       # CPU: 224 px, batch 8, fp32
    python benchmarks/finetune_step.py --device cuda         # CUDA: 224 px, batch 32, bf16 autocast, MFU

Descendant step: what ``recipes/finetune.py --train all`` runs per step, without the ancestry (so both sides
do the same work): ``DescendantTrainer(pool)(x, y, route)`` (``pool(x, route)`` + cross-entropy), backward, an
AdamW step over every trainable parameter of the pool (``make_optimizer``, timm's weight-decay groups as the recipe),
``zero_grad(set_to_none=True)``. Parameters the route does not use have no gradient and AdamW skips them.

Baseline step: a timm ``VisionTransformer`` holding a copy of the same modules (the blocks as one
``nn.Sequential`` with the stitch layer in its place; embedding of the front member, norm and head of the end
member; see ``benchmarks/reference.py``), the same loss, backward and optimizer construction over its own
parameters. Identical compute, so ``ratio = time(baseline) / time(descendant)`` charges the pool's machinery
(route lookup and descendant assembly per step, the optimizer walking the whole pool's parameter list) and
nothing else. The headline is the worst of the routes measured (default s2, s9, s17: small, middle, large).
MFU counts a training step as 6 x MACs per image.
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm_learngene  # noqa: E402,F401
from timm_learngene.finetune import DescendantTrainer, set_trainable  # noqa: E402
from timm_learngene.spec import route_macs  # noqa: E402
from timm_learngene.training.loop import make_optimizer  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    add_device_args, add_pool_args, autocast, format_mfu, medians, paired_ratio, resolve, seeded_pool, time_interleaved)
from benchmarks.reference import as_plain_vit  # noqa: E402

CPU = dict(img_size=224, batch_size=8, warmup=1, repeats=5)
CUDA = dict(img_size=224, batch_size=32, warmup=3, repeats=10)
QUICK = dict(img_size=32, batch_size=2, warmup=1, repeats=2)
TARGET = 0.95


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pool_args(p)
    p.add_argument('--descendants', default='s2,s9,s17', help='comma-separated descendants')
    p.add_argument('--lr', type=float, default=1e-5)
    add_device_args(p)
    args = p.parse_args(argv)
    resolve(args, CPU, CUDA, QUICK)
    spec, pool, x = seeded_pool(args)
    set_trainable(pool, 'all')
    trainer = DescendantTrainer(pool, None, ce_weight=1.0, kd_weight=0.0).train()
    pool_opt = make_optimizer(pool, args.lr, 0.05)
    y = torch.randint(0, spec.num_classes, (args.batch_size,), device=args.device)

    def step(opt, loss_fn):
        with autocast(args.device, args.dtype):
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    fns, infos = {}, []
    for name in args.descendants.split(','):
        info = pool.descendant(name.strip()).info
        vit = as_plain_vit(pool.descendant(info.route), copy_modules=True).to(args.device).train()
        vit_opt = make_optimizer(vit, args.lr, 0.05)
        fns[f'{info.name}/descendant'] = (
            lambda route=info.route: step(pool_opt, lambda: trainer(x, y, route)['total']))
        fns[f'{info.name}/baseline'] = (
            lambda vit=vit, opt=vit_opt: step(opt, lambda: F.cross_entropy(vit(x), y)))
        infos.append(info)

    times = time_interleaved(fns, args.device, args.warmup, args.repeats, args.inner)
    med = medians(times)
    print(f'device {args.device}, pool {spec.name}, img {args.img_size}, batch {args.batch_size}, {args.dtype}, '
          f'{torch.get_num_threads()} threads; {args.repeats} repeats x {args.inner} steps (median), '
          f'{args.warmup} warm-up')
    ratios = {}
    for info in infos:
        n = info.name
        t_d, t_b = med[f'{n}/descendant'], med[f'{n}/baseline']
        flops = 6 * route_macs(spec, info.route) * args.batch_size
        ratios[n] = paired_ratio(times, f'{n}/baseline', f'{n}/descendant')
        print(f'{n} {info.route_label}: descendant step {t_d * 1e3:.1f} ms '
              f'({format_mfu(flops, t_d, args.peak_tflops)}), plain timm ViT step {t_b * 1e3:.1f} ms; '
              f'ratio {ratios[n]:.3f}')
    worst = min(ratios, key=ratios.get)
    print(f'ratio baseline / descendant (worst: {worst}; median of per-round ratios) = {ratios[worst]:.3f}')
    return ratios[worst]


if __name__ == '__main__':
    main()
