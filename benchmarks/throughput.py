#!/usr/bin/env python
"""Inference throughput of every descendant of a pool, with plain timm DeiT-Ti/S/B measured in the same run as
reference points. Prints, last, base6 alone (s16 of deit_base_l6) against DeiT-B: half the blocks, so about
twice the throughput if a descendant runs as fast per MAC as timm's own ViT.

    python benchmarks/throughput.py                        # CPU default: 112 px, batch 8, fp32, 3 repeats
    python benchmarks/throughput.py --img-size 224         # CPU at full resolution (about 4x longer)
    python benchmarks/throughput.py --device cuda          # CUDA: 224 px, batch 32, bf16 autocast, MFU

On CPU the default resolution is 112 px, not 224: every descendant and three DeiTs at 224 px take tens of
minutes on a 2-core machine, and the ranking is what matters there. Rounds are interleaved (each round runs every
model once), the first dropped, medians kept. GMACs are at the measured resolution (linear, conv and attention
matmuls, as the pool's table); MFU = 2 x MACs x img/s over the peak, on a GPU with a known or given peak.
"""
import argparse
import sys
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm_learngene  # noqa: E402,F401
from timm_learngene.spec import PoolSpec, route_macs  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    add_device_args, add_pool_args, autocast, format_mfu, medians, resolve, seeded_pool, time_interleaved, vit_macs)

CPU = dict(img_size=112, batch_size=8, warmup=1, repeats=3)
CUDA = dict(img_size=224, batch_size=32, warmup=3, repeats=10)
QUICK = dict(img_size=32, batch_size=2, warmup=1, repeats=1)
REFERENCES = {  # timm name: (width, depth, patch size)
    'deit_tiny_patch16_224': (192, 12, 16),
    'deit_small_patch16_224': (384, 12, 16),
    'deit_base_patch16_224': (768, 12, 16),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pool_args(p)
    p.add_argument('--no-references', action='store_true', help='skip the timm DeiT reference models')
    add_device_args(p)
    args = p.parse_args(argv)
    resolve(args, CPU, CUDA, QUICK)
    spec, pool, x = seeded_pool(args)
    pool.eval()
    models, rows = {}, {}
    for d in pool.descendants:
        models[d.name] = pool.descendant(d.name)
        rows[d.name] = dict(label=d.route_label, params=d.params, macs=route_macs(spec, d.route))
    if not args.no_references:
        for name, (width, depth, patch) in REFERENCES.items():
            m = timm.create_model(name, pretrained=False, img_size=args.img_size, in_chans=spec.in_chans,
                                  num_classes=spec.num_classes)
            models[name] = m.to(args.device).eval()
            rows[name] = dict(label='timm', params=sum(q.numel() for q in m.parameters()),
                              macs=vit_macs(width, depth, args.img_size, patch, spec.in_chans, spec.num_classes))
    with torch.inference_mode(), autocast(args.device, args.dtype):
        times = time_interleaved({k: (lambda m=m: m(x)) for k, m in models.items()}, args.device, args.warmup,
                                 args.repeats, args.inner)
    med = medians(times)
    note = ' (CPU default: 112 px, not 224; pass --img-size 224 for full resolution)' \
        if args.device.type == 'cpu' and args.img_size == CPU['img_size'] and not args.quick else ''
    print(f'device {args.device}, pool {spec.name}, img {args.img_size}, batch {args.batch_size}, {args.dtype}, '
          f'{torch.get_num_threads()} threads; {args.repeats} repeats x {args.inner} calls (median), '
          f'{args.warmup} warm-up{note}')
    print('| model | route | params | GMACs | img/s | ms/batch | achieved |')
    print('|---|---|---:|---:|---:|---:|---|')
    img_s = {}
    for name, row in rows.items():
        t = med[name]
        img_s[name] = args.batch_size / t
        flops = 2 * row['macs'] * args.batch_size
        print(f"| {name} | {row['label']} | {row['params'] / 1e6:.2f}M | {row['macs'] / 1e9:.3f} | "
              f"{img_s[name]:.1f} | {t * 1e3:.2f} | {format_mfu(flops, t, args.peak_tflops)} |")
    member = next((d.name for d in pool.descendants if d.route == ((spec.members[-1].name, 0, spec.depth),)), None)
    ref = 'deit_base_patch16_224'
    if member and ref in img_s:
        expect = rows[ref]['macs'] / rows[member]['macs']
        print(f'ratio {member} ({rows[member]["label"]}) / {ref} img/s = {img_s[member] / img_s[ref]:.3f} '
              f'(by GMACs {expect:.3f})')
    return img_s


if __name__ == '__main__':
    main()
