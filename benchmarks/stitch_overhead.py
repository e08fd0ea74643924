#!/usr/bin/env python
"""Inference cost of stitching: a descendant against its own modules run as plain timm ViT chains without the
stitch layer, same widths, batch and resolution. Prints the ratio last (target >= 0.97).

    python benchmarks/stitch_overhead.py                       # CPU: 224 px, batch 8, fp32
    python benchmarks/stitch_overhead.py --device cuda         # CUDA: 224 px, batch 32, bf16 autocast, MFU

Baseline. A descendant runs ``front embedding + front blocks -> stitch Linear(d_front -> d_end) -> end blocks,
norm, head``. Without the stitch there is no runnable single model (the widths differ across it) and no width
change of zero cost, so the baseline runs the *same modules* as two plain timm ``VisionTransformer`` chains,
timed as one call: the front chain on the images (``forward_features``: ``patch_embed``, ``_pos_embed``, the
blocks as an ``nn.Sequential``; no final norm), then the end chain (blocks, ``norm``, ``forward_head``) on a
fixed tensor of the end width and the same shape (B x N x d_end: the stitch's output on these images, computed
once outside the timing). That is exactly the descendant's work minus the stitch layer, run through timm's own
forward code. ``ratio = time(baseline) / time(descendant)`` is the descendant's relative throughput; the
compute-only expectation ``1 - stitch MACs / descendant MACs`` is printed beside it (0.3-1.4% of a deit_base_l6
descendant is the stitch), so what the ratio charges beyond that is our forward's overhead (the per-block
stitch lookup, the Python loop instead of ``nn.Sequential``).

Rejected alternative: a pool of two equal-width members whose stitch is swapped for ``nn.Identity``. It is one
chain and exact, but measures a shape deit_base_l6 does not have. The headline is the worst descendant measured
(default s2, the smallest stitched one and so the largest stitch share, s9 and s17).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm_learngene  # noqa: E402,F401
from timm_learngene.spec import PoolSpec, route_macs  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    add_device_args, add_pool_args, autocast, format_mfu, medians, paired_ratio, resolve, seeded_pool, time_interleaved)
from benchmarks.reference import split_at_stitches  # noqa: E402

CPU = dict(img_size=224, batch_size=8, warmup=2, repeats=12)
CUDA = dict(img_size=224, batch_size=32, warmup=5, repeats=15)
QUICK = dict(img_size=32, batch_size=2, warmup=1, repeats=2)
TARGET = 0.97


def _stitch_macs(spec: PoolSpec, route) -> int:
    """MACs per image of a route's stitch layers alone."""
    return sum(spec.num_tokens * spec.member(fa).width * spec.member(ea).width
               for (fa, _, _), (ea, _, _) in zip(route, route[1:]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pool_args(p)
    p.add_argument('--descendants', default='s2,s9,s17', help='comma-separated stitched descendants')
    add_device_args(p)
    args = p.parse_args(argv)
    resolve(args, CPU, CUDA, QUICK)
    spec, pool, x = seeded_pool(args)
    pool.eval()

    fns, cases = {}, []
    with torch.inference_mode(), autocast(args.device, args.dtype):
        for name in args.descendants.split(','):
            desc = pool.descendant(name.strip())
            if not desc.stitches:
                raise SystemExit(f'{desc.info.name} ({desc.info.route_label}) has no stitch layer; '
                                 f'pass stitched descendants to --descendants')
            chains = split_at_stitches(desc)
            # the later chains' inputs: the stitch outputs on these images, computed once
            h = chains[0].forward_features(x)
            inputs = []
            for chain, i in zip(chains[1:], sorted(int(k) for k in desc.stitches)):
                h = desc.stitches[str(i)](h)
                inputs.append(h.clone())
                h = chain.blocks(h)

            def baseline(chains=chains, inputs=inputs):
                chains[0].forward_features(x)
                for chain, h in zip(chains[1:-1], inputs):
                    chain.blocks(h)
                last = chains[-1]
                return last.forward_head(last.norm(last.blocks(inputs[-1])))

            fns[f'{desc.info.name}/descendant'] = desc
            fns[f'{desc.info.name}/baseline'] = baseline
            cases.append(desc)

        def call(fn):
            return lambda: fn(x) if isinstance(fn, torch.nn.Module) else fn()

        times = time_interleaved({k: call(f) for k, f in fns.items()}, args.device, args.warmup, args.repeats,
                                 args.inner)
    med = medians(times)
    print(f'device {args.device}, pool {spec.name}, img {args.img_size}, batch {args.batch_size}, {args.dtype}, '
          f'{torch.get_num_threads()} threads; {args.repeats} repeats x {args.inner} calls (median), '
          f'{args.warmup} warm-up')
    ratios = {}
    for desc in cases:
        n = desc.info.name
        t_d, t_b = med[f'{n}/descendant'], med[f'{n}/baseline']
        macs = route_macs(spec, desc.route)
        expect = 1 - _stitch_macs(spec, desc.route) / macs
        ratios[n] = paired_ratio(times, f'{n}/baseline', f'{n}/descendant')
        print(f'{n} {desc.info.route_label}: descendant {t_d * 1e3:.2f} ms '
              f'({args.batch_size / t_d:.1f} img/s, {format_mfu(2 * macs * args.batch_size, t_d, args.peak_tflops)}),'
              f' baseline without stitch {t_b * 1e3:.2f} ms; ratio {ratios[n]:.3f} (compute-only {expect:.3f})')
    worst = min(ratios, key=ratios.get)
    ratio = ratios[worst]
    print(f'ratio baseline / descendant (worst: {worst}; median of per-round ratios) = {ratio:.3f}')
    return ratio


if __name__ == '__main__':
    main()
