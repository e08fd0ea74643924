#!/usr/bin/env python
"""``torch.compile`` of a descendant: it compiles as one graph, its output matches eager, and its inference
speed-up over eager. Prints the speed-up last (no target; the check is that it works).

    python benchmarks/compile.py                          # CPU: s9, 224 px, batch 8, fp32, inductor
    python benchmarks/compile.py --device cuda            # CUDA: 224 px, batch 32, bf16 autocast

``fullgraph=True`` by default: a graph break inside the descendant's forward (the per-block stitch lookup,
the route) is a failure here, not a silent slow path. The first compiled call is timed as the compile time.
Outputs are compared with ``torch.testing.assert_close`` (fp32: rtol = atol = 1e-4 relative to the logits'
scale; bf16 autocast: 5e-2), then eager and compiled are timed interleaved.
"""
import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm_learngene  # noqa: E402,F401
from benchmarks.harness import (  # noqa: E402
    add_device_args, add_pool_args, autocast, medians, resolve, seeded_pool, sync, time_interleaved)

CPU = dict(img_size=224, batch_size=8, warmup=2, repeats=5)
CUDA = dict(img_size=224, batch_size=32, warmup=5, repeats=15)
QUICK = dict(img_size=32, batch_size=2, warmup=1, repeats=2)


def unsupported_reason(device) -> Optional[str]:
    """Why ``torch.compile`` (inductor) cannot run here, or ``None`` when it can."""
    if not hasattr(torch, 'compile'):
        return f'torch {torch.__version__} has no torch.compile (needs torch >= 2.0)'
    try:
        from torch._dynamo.eval_frame import is_dynamo_supported
        if not is_dynamo_supported():
            return f'TorchDynamo does not support this platform (Python {sys.version.split()[0]}, {sys.platform})'
    except ImportError as e:
        return f'TorchDynamo is not importable: {e}'
    if torch.device(device).type == 'cuda':
        try:
            from torch.utils._triton import has_triton
            if not has_triton():
                return 'inductor on CUDA needs Triton, which is not installed or does not support this GPU'
        except ImportError:
            return 'inductor on CUDA needs Triton (torch.utils._triton missing)'
    else:
        compilers = [os.environ.get('CXX'), 'g++', 'c++', 'clang++']
        if not any(c and shutil.which(c) for c in compilers):
            return 'inductor on CPU needs a C++ compiler (g++ or clang++, or $CXX); none is on PATH'
    return None


def compile_and_check(model: torch.nn.Module, x: torch.Tensor, dtype: str = 'fp32', fullgraph: bool = True,
                      mode: Optional[str] = None) -> Tuple[torch.nn.Module, float, float]:
    """Compile ``model`` (eval), run it once on ``x`` (B x C x H x W) and check it against eager.

    Returns ``(compiled, compile_seconds, max_abs_diff)``; raises ``AssertionError`` when outputs differ.
    """
    model.eval()
    compiled = torch.compile(model, fullgraph=fullgraph, mode=mode)
    with torch.inference_mode(), autocast(x.device, dtype):
        want = model(x).float()
        sync(x.device)
        start = time.perf_counter()
        got = compiled(x).float()
        sync(x.device)
        seconds = time.perf_counter() - start
    tol = (1e-4 if dtype == 'fp32' else 5e-2) * max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, want, rtol=tol, atol=tol,
                               msg=lambda m: f'compiled descendant output differs from eager: {m}')
    return compiled, seconds, (got - want).abs().max().item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pool_args(p)
    p.add_argument('--descendant', default='s9')
    p.add_argument('--mode', default=None, help='torch.compile mode (default, reduce-overhead, max-autotune)')
    p.add_argument('--no-fullgraph', action='store_true', help='allow graph breaks')
    p.add_argument('--compile-threads', type=int, default=None,
                   help="inductor's compile workers (1 compiles in-process: faster for small graphs on few cores)")
    add_device_args(p)
    args = p.parse_args(argv)
    resolve(args, CPU, CUDA, QUICK)
    reason = unsupported_reason(args.device)
    if reason:
        raise SystemExit(f'torch.compile unsupported: {reason}')
    if args.compile_threads is None and args.quick:
        args.compile_threads = 1
    if args.compile_threads:
        import torch._inductor.config as inductor_config
        inductor_config.compile_threads = args.compile_threads
    spec, pool, x = seeded_pool(args)
    desc = pool.eval().descendant(args.descendant)
    compiled, compile_s, diff = compile_and_check(desc, x, args.dtype, not args.no_fullgraph, args.mode)

    with torch.inference_mode(), autocast(args.device, args.dtype):
        times = time_interleaved({'eager': lambda: desc(x), 'compiled': lambda: compiled(x)}, args.device,
                                 args.warmup, args.repeats, args.inner)
    med = medians(times)
    print(f'device {args.device}, pool {spec.name}, {desc.info.name} {desc.info.route_label}, img {args.img_size}, '
          f'batch {args.batch_size}, {args.dtype}, {torch.get_num_threads()} threads, mode {args.mode or "default"}, '
          f'fullgraph {not args.no_fullgraph}; {args.repeats} repeats x {args.inner} calls (median), '
          f'{args.warmup} warm-up')
    print(f'compiled in {compile_s:.1f} s (first call); output matches eager (max abs diff {diff:.2e})')
    print(f"eager {med['eager'] * 1e3:.2f} ms ({args.batch_size / med['eager']:.1f} img/s), compiled "
          f"{med['compiled'] * 1e3:.2f} ms ({args.batch_size / med['compiled']:.1f} img/s)")
    speedup = med['eager'] / med['compiled']
    print(f'speed-up eager / compiled = {speedup:.3f}')
    return speedup


if __name__ == '__main__':
    main()
