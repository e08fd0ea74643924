#!/usr/bin/env python
"""Is a latency profile repeatable, and does it rise with GMACs? Two profiles of every descendant, taken one after
the other in this process with ``timm_learngene.profiling.profile_models`` (what ``python -m timm_learngene
profile`` runs), for each case below; writes a Markdown report and prints it.

    python benchmarks/profile_repeatability.py                 # CPU, the cases below, ~2-4 min on 2 cores
    python benchmarks/profile_repeatability.py --pool-dir out/demo/finetune/pool    # that pool's spec and weights
    python benchmarks/profile_repeatability.py --quick         # seconds, no meaningful numbers

Cases (``--cases``, comma-separated ``SPEC[@IMG]:BATCH``): the demo's pool ``fashion_mnist_l6`` (32 px) at batch 1
(latency) and batch 32 (throughput), and ``deit_base_l6`` at 112 px, batch 1. Weights are seeded random ones
(the time of a forward pass does not depend on their values) unless ``--pool-dir`` is given, whose folder is only
read (its config.json is not rewritten).

Per case the report gives:
- repeatability: for every descendant the ratio of the two runs' medians (run 2 / run 1) and whether run 2's
  median lies inside run 1's interquartile range; summarised as the largest ratio away from 1;
- order: every pair of descendants with fewer and more GMACs whose latencies are *told apart* (their
  interquartile ranges do not overlap, in both runs), and among those the pairs where the one with more GMACs is
  faster in both runs (an *inversion*: more GMACs, less time, beyond the spread); plus the Spearman rank
  correlation of GMACs and median latency.
Nothing here is asserted: the numbers are reported as measured.
"""
import argparse
import datetime
import math
import os
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Optional

import timm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import timm_learngene  # noqa: E402,F401
from timm_learngene.pool_reader import read_pool_config  # noqa: E402
from timm_learngene.pool_writer import load_pool  # noqa: E402
from timm_learngene.profiling import Profile, device_signature, profile_models  # noqa: E402
from timm_learngene.spec import PoolSpec  # noqa: E402

DEFAULT_CASES = 'fashion_mnist_l6:1,fashion_mnist_l6:32,deit_base_l6@112:1'
QUICK_CASES = 'fashion_mnist_l6:1,fashion_mnist_l6:2'
QUICK = dict(repeats=3, warmup=1, min_sample_ms=1.0)
FULL = dict(repeats=20, warmup=3, min_sample_ms=20.0)


def _parse_case(text: str):
    try:
        pool, batch = text.rsplit(':', 1)
        spec, _, img = pool.partition('@')
        return spec, (int(img) if img else None), int(batch)
    except ValueError:
        raise SystemExit(f'--cases: {text!r} is not SPEC[@IMG]:BATCH (e.g. deit_base_l6@112:1)') from None


def _spearman(xs: List[float], ys: List[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):  # ties share their mean rank
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else float('nan')


def _apart(a: Dict, b: Dict) -> bool:
    """Interquartile ranges that do not overlap."""
    return a['q3_ms'] < b['q1_ms'] or b['q3_ms'] < a['q1_ms']


def analyse(gmacs: Dict[str, float], run1: Profile, run2: Profile) -> Dict:
    """Repeatability and order of two profiles of the same descendants (see the module doc)."""
    names = [n for n in gmacs if n in run1.results and n in run2.results]
    ratios = {n: run2.results[n]['median_ms'] / run1.results[n]['median_ms'] for n in names}
    inside = {n: run1.results[n]['q1_ms'] <= run2.results[n]['median_ms'] <= run1.results[n]['q3_ms']
              for n in names}
    told_apart, inversions = 0, []
    for a, b in combinations(sorted(names, key=lambda n: gmacs[n]), 2):
        if gmacs[a] == gmacs[b]:
            continue
        if all(_apart(r.results[a], r.results[b]) for r in (run1, run2)):
            told_apart += 1
            if all(r.results[b]['median_ms'] < r.results[a]['median_ms'] for r in (run1, run2)):
                inversions.append((a, b))
    lat = [(run1.results[n]['median_ms'] + run2.results[n]['median_ms']) / 2 for n in names]
    return dict(names=names, ratios=ratios, inside=inside, told_apart=told_apart, inversions=inversions,
                pairs=sum(1 for a, b in combinations(names, 2) if gmacs[a] != gmacs[b]),
                spearman=_spearman([gmacs[n] for n in names], lat),
                worst_ratio=max(max(r, 1 / r) for r in ratios.values()))


def _models(spec: PoolSpec, pool_dir: Optional[Path]):
    if pool_dir is not None:
        pool = load_pool(pool_dir)
    else:
        torch.manual_seed(0)
        pool = timm.create_model('learngene_pool', pool=spec)
    return {d.name: pool.descendant(d) for d in pool.descendants}, {d.name: d.gmacs for d in pool.descendants}


def _case_section(title: str, gmacs, run1: Profile, run2: Profile, res: Dict, seconds: float) -> List[str]:
    lines = [f'## {title}', '',
             f'{run1.device.label}; {run1.settings["repeats"]} samples per descendant and run (each at least '
             f'{run1.settings["min_sample_ms"]:g} ms of calls, after {run1.settings["warmup"]} warm-up calls), '
             f'two runs, {seconds:.0f} s.', '',
             '| name | GMACs | run 1 median ms (q1..q3) | run 2 median ms (q1..q3) | run 2 / run 1 | run 2 in run 1 IQR |',
             '|---|---:|---:|---:|---:|---|']
    for n in sorted(res['names'], key=lambda n: gmacs[n]):
        a, b = run1.results[n], run2.results[n]
        lines.append(f"| {n} | {gmacs[n]:.4g} | {a['median_ms']:.3f} ({a['q1_ms']:.3f}..{a['q3_ms']:.3f}) | "
                     f"{b['median_ms']:.3f} ({b['q1_ms']:.3f}..{b['q3_ms']:.3f}) | {res['ratios'][n]:.3f} | "
                     f"{'yes' if res['inside'][n] else 'no'} |")
    inv = ', '.join(f'{a} ({gmacs[a]:.3g} GMACs, {run1.results[a]["median_ms"]:.3f} ms) slower than {b} '
                    f'({gmacs[b]:.3g} GMACs, {run1.results[b]["median_ms"]:.3f} ms)' for a, b in res['inversions'])
    lines += ['',
              f'- repeatability: the two runs\' medians differ by at most {100 * (res["worst_ratio"] - 1):.1f}%; '
              f'run 2\'s median lies in run 1\'s interquartile range for {sum(res["inside"].values())} of '
              f'{len(res["names"])} descendants',
              f'- order: {res["told_apart"]} of {res["pairs"]} pairs with different GMACs are told apart by the '
              f'spread (interquartile ranges apart in both runs); {len(res["inversions"])} of them are inversions '
              f'(more GMACs, faster in both runs){": " + inv if inv else ""}',
              f'- Spearman rank correlation of GMACs and median latency: {res["spearman"]:.3f}', '']
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cases', default=None, help=f'comma-separated SPEC[@IMG]:BATCH (default {DEFAULT_CASES}; '
                   f'--quick: {QUICK_CASES})')
    p.add_argument('--pool-dir', default=None, help='profile this pool folder (its spec and weights, read only) '
                   'instead of the cases\' specs; the batch sizes of --cases are kept')
    p.add_argument('--device', default='cpu')
    p.add_argument('--dtype', choices=('fp32', 'bf16', 'fp16'), default='fp32')
    p.add_argument('--threads', type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument('--repeats', type=int, default=None)
    p.add_argument('--warmup', type=int, default=None)
    p.add_argument('--min-sample-ms', type=float, default=None)
    p.add_argument('--peak-tflops', type=float, default=None, help='ignored (python -m benchmarks passes it)')
    p.add_argument('--quick', action='store_true', help='seconds-long smoke run (no meaningful numbers)')
    p.add_argument('--output', default=str(ROOT / 'benchmarks' / 'profile_repeatability.md'))
    args = p.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for k in settings:
        if getattr(args, k) is not None:
            settings[k] = getattr(args, k)
    threads = args.threads or (1 if args.quick else None)
    cases = [_parse_case(c) for c in (args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)).split(',')
             if c.strip()]
    pool_dir = Path(args.pool_dir) if args.pool_dir else None
    if pool_dir is not None:
        folder_spec = read_pool_config(pool_dir)['model_args']['pool']
        cases = list(dict.fromkeys((str(pool_dir), None, batch) for _, _, batch in cases))

    start = time.perf_counter()
    sections, summary = [], []
    worst = []
    for spec_name, img, batch in cases:
        if pool_dir is not None:
            spec = folder_spec
        else:
            spec = PoolSpec.from_any(spec_name)
            spec = spec.replace(img_size=img) if img else spec
        models, gmacs = _models(spec, pool_dir)
        size = (spec.in_chans, spec.img_size, spec.img_size)
        t0 = time.perf_counter()
        runs = [profile_models(models, size, args.device, args.dtype, batch, threads, **settings)
                for _ in range(2)]
        res = analyse(gmacs, *runs)
        title = f'{spec.name}, {spec.img_size} px, batch {batch}'
        sections += _case_section(title, gmacs, *runs, res, time.perf_counter() - t0)
        summary.append(f'| {title} | {100 * (res["worst_ratio"] - 1):.1f}% | '
                       f'{sum(res["inside"].values())}/{len(res["names"])} | {res["told_apart"]}/{res["pairs"]} | '
                       f'{len(res["inversions"])} | {res["spearman"]:.3f} |')
        worst.append(res['worst_ratio'])
        del models

    sig = device_signature(args.device, args.dtype, 1, threads)
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    load = ', '.join(f'{v:.2f}' for v in os.getloadavg()) if hasattr(os, 'getloadavg') else 'unknown'
    command = 'python benchmarks/profile_repeatability.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    text = '\n'.join([
        '# Latency profiles: repeatability and order', '',
        f'Written by `{command.strip()}` on {now} in {(time.perf_counter() - start) / 60:.1f} min; '
        f'{sig.processor}, {sig.cores} cores, torch {sig.torch}, load average at the end {load}.',
        *(['', '**Quick smoke run: tiny sizes and three samples; these numbers are not measurements.**']
          if args.quick else []), '',
        '| case | run-to-run (worst median) | run 2 in run 1 IQR | pairs told apart | inversions | Spearman |',
        '|---|---:|---:|---:|---:|---:|', *summary, '',
        'Run-to-run: the largest difference between the two runs\' medians of one descendant. Pairs told apart: '
        'pairs with different GMACs whose interquartile ranges do not overlap in either run. Inversions: pairs '
        'told apart where more GMACs ran faster in both runs. Spearman: rank correlation of GMACs and median '
        'latency over all descendants.', '',
        *sections])
    out = Path(args.output)
    out.write_text(text + '\n')
    print(text)
    print(f'\nwrote {out}')
    ratio = max(worst)
    print(f'ratio worst run-to-run median {ratio:.3f} (run 2 / run 1 or its inverse, over all cases)')
    return dict(worst_run_ratio=ratio)


if __name__ == '__main__':
    main()
