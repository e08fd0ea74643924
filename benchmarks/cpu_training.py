#!/usr/bin/env python
"""Training step speed of the demo's ancestry ViT (192 wide, 12 blocks, 32 px, patch 8) under the settings the
demo preset chooses between: fp32 vs bf16 autocast, timm's fused attention (SDPA) vs the explicit matmuls.
Same run, interleaved repeats, medians; prints each setting's img/s and its ratio to fp32 + explicit attention.

    python benchmarks/cpu_training.py [--heads 3] [--batch-size 128] [--device cpu] [--quick]
"""
import argparse
import statistics
import time

import timm
import torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--width', type=int, default=192)
    p.add_argument('--depth', type=int, default=12)
    p.add_argument('--heads', type=int, default=3)
    p.add_argument('--batch-size', type=int, default=None, help='default 128 (quick: 8)')
    p.add_argument('--repeats', type=int, default=None, help='default 5 (quick: 1)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--quick', action='store_true', help='a seconds-long smoke run (batch 8, one repeat, one thread)')
    args = p.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 8 if args.quick else 128
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    threads = torch.get_num_threads()
    if args.quick:  # tiny tensors are far slower on several threads
        torch.set_num_threads(1)
    settings = [(fused, bf16) for bf16 in (False, True) for fused in (False, True)]
    models = {}
    for fused, bf16 in settings:
        timm.layers.set_fused_attn(fused)
        torch.manual_seed(0)
        m = timm.create_model('vit_tiny_patch16_224', embed_dim=args.width, depth=args.depth, num_heads=args.heads,
                              img_size=32, patch_size=8, in_chans=1, num_classes=10).to(args.device)
        models[(fused, bf16)] = (m, torch.optim.AdamW(m.parameters(), 1e-3))
    x = torch.randn(args.batch_size, 1, 32, 32, device=args.device)
    y = torch.randint(0, 10, (args.batch_size,), device=args.device)

    def step(key):
        m, opt = models[key]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=key[1]):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if x.device.type == 'cuda':
            torch.cuda.synchronize()

    times = {k: [] for k in settings}
    for i in range(1 + args.repeats):  # first round is warm-up
        for k in settings:
            t = time.perf_counter()
            step(k)
            if i:
                times[k].append(time.perf_counter() - t)
    base = statistics.median(times[(False, False)])
    print(f'{args.width} wide, {args.depth} blocks, {args.heads} heads, batch {args.batch_size}, {args.device}, '
          f'{torch.get_num_threads()} threads; {args.repeats} repeats (median)')
    for k in settings:
        med = statistics.median(times[k])
        print(f"{'bf16' if k[1] else 'fp32'} {'fused SDPA' if k[0] else 'explicit attention'}: "
              f'{args.batch_size / med:.0f} img/s, ratio {base / med:.2f}')
    torch.set_num_threads(threads)
    return {k: base / statistics.median(v) for k, v in times.items()}


if __name__ == '__main__':
    main()
