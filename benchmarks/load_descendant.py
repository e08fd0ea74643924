#!/usr/bin/env python
"""Loading one descendant from a whole pool checkpoint against loading a checkpoint of that descendant alone:
wall time and peak memory of the load, each in a fresh process. Prints the ratios last (target <= 1.3 each).

    python benchmarks/load_descendant.py                 # descendant s1 of a deit_base_l6-sized pool file
    python benchmarks/load_descendant.py --descendant s9 --repeats 9

Setup (once, in a temporary folder): a ``deit_base_l6`` pool with random weights written by
``timm_learngene.save_pool`` (every member, stitch layer and distillation transform: 52.3M parameters,
199 MiB), and ``s1.safetensors``, the state dict of descendant s1 alone (3.0M parameters, 12 MiB).

Each measurement is a fresh Python process that imports torch, timm and timm_learngene, builds the descendant
with ``timm.create_model`` (no weights), then times only the load: ``load_pool_weights(model, file=pool)`` (what
``create_model('local-dir:…', descendant=…, pretrained=True)`` runs: ``safe_open`` + one ``get_tensor`` per tensor
the descendant uses, each checked against its checksum) against ``model.load_state_dict(safetensors.torch.load_file(standalone))``. The page cache
holds both files (they were just written, and a dropped first round re-reads them), so this is the warm-cache
case; the pool file is 17x larger, which is what a loader that reads more than it needs would pay for.

Memory: the process's resident-set high-water mark (``VmHWM``) is reset right before the load
(``/proc/self/clear_refs``), so ``peak extra = VmHWM after the load - VmRSS before it``: what the load adds on
top of a process that has only imported the libraries and built the model (whose own peak is printed too).
The peak of the process before the load (imports and the built model) is printed for scale.
``getrusage(RUSAGE_SELF).ru_maxrss`` is not used on Linux: after ``exec`` it starts from the spawning parent's
high-water mark (the parent here holds torch and wrote the pool), which would hide the load entirely. Where
``/proc`` is missing it falls back to ``ru_maxrss`` minus the value just before the load.
Both loads map the file and copy the tensors out, so mapped pages touched count for both alike.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import timm_learngene  # noqa: E402
from timm_learngene.pool_format import WEIGHTS_NAME  # noqa: E402
from timm_learngene.pool_reader import load_pool_weights  # noqa: E402
from benchmarks.harness import add_device_args, resolve  # noqa: E402

CPU = dict(warmup=1, repeats=9)
CUDA = dict(warmup=1, repeats=5)
QUICK = dict(warmup=0, repeats=1)
TARGET = 1.3


def _status_kb(field: str):
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _child(mode: str, pool: str, descendant: str, file: str) -> dict:
    """Runs in a fresh process: build the descendant, then load its weights from the pool file (``mode`` pool)
    or from its own file (standalone)."""
    model = timm.create_model('learngene_pool', pool=pool, descendant=descendant)
    out = {'build_peak_kb': _status_kb('VmHWM') or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    proc = _reset_peak() and _status_kb('VmRSS') is not None
    before = _status_kb('VmRSS') if proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == 'pool':
        load_pool_weights(model, {}, file=file)
    else:
        model.load_state_dict(load_file(file))
    wall = time.perf_counter() - start
    after = _status_kb('VmHWM') if proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.update(wall_s=wall, extra_kb=after - before, hwm_source='VmHWM' if proc else 'ru_maxrss')
    return out


def _run_child(mode: str, pool: str, descendant: str, file: Path, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), '--child', mode, '--pool', pool, '--descendant',
           descendant, '--file', str(file)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if res.returncode:
        raise RuntimeError(f'{mode} load process failed ({res.returncode}):\n{res.stderr[-3000:]}')
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_files(folder: Path, pool: str, descendant: str):
    """The pool checkpoint (random weights) and the descendant's own state dict; returns both file paths."""
    torch.manual_seed(0)
    lgp = timm.create_model('learngene_pool', pool=pool)
    timm_learngene.save_pool(lgp, folder / 'pool')
    desc = lgp.descendant(descendant)
    solo = folder / f'{descendant}.safetensors'
    save_file({k: v.detach().contiguous() for k, v in desc.state_dict().items()}, str(solo))
    return folder / 'pool' / WEIGHTS_NAME, solo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--pool', default='deit_base_l6')
    p.add_argument('--descendant', default='s1')
    p.add_argument('--workdir', default=None, help='where to write the files (default: a temporary folder)')
    p.add_argument('--child', choices=('pool', 'standalone'), help=argparse.SUPPRESS)
    p.add_argument('--file', help=argparse.SUPPRESS)
    add_device_args(p)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.pool, args.descendant, args.file)))
        return None
    resolve(args, CPU, CUDA, QUICK)
    if args.device.type != 'cpu':
        print(f'loading is measured on the CPU (checkpoints load to host memory); --device {args.device} ignored')
    threads = args.threads or torch.get_num_threads()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        pool_file, solo_file = write_files(Path(tmp), args.pool, args.descendant)
        sizes = {k: f.stat().st_size / 2 ** 20 for k, f in (('pool', pool_file), ('standalone', solo_file))}
        runs = {'pool': [], 'standalone': []}
        pairs = (('pool', pool_file), ('standalone', solo_file))
        for i in range(args.warmup + args.repeats):  # interleaved, alternating order, first rounds dropped
            for mode, file in (pairs if i % 2 == 0 else pairs[::-1]):
                r = _run_child(mode, args.pool, args.descendant, file, threads)
                if i >= args.warmup:
                    runs[mode].append(r)

    med = {m: {k: statistics.median(r[k] for r in rs) for k in ('wall_s', 'extra_kb', 'build_peak_kb')}
           for m, rs in runs.items()}
    print(f'pool {args.pool}, descendant {args.descendant}; files: pool {sizes["pool"]:.1f} MiB, standalone '
          f'{sizes["standalone"]:.1f} MiB; {args.repeats} fresh processes each (median), {args.warmup} dropped; '
          f'peak from {runs["pool"][0]["hwm_source"]}')
    print(f'process that only imported torch, timm, timm_learngene and built the model: peak RSS '
          f'{med["standalone"]["build_peak_kb"] / 1024:.1f} MiB')
    for m in ('pool', 'standalone'):
        print(f'{m:>10} load: {med[m]["wall_s"] * 1e3:.1f} ms, peak RSS +{med[m]["extra_kb"] / 1024:.1f} MiB')
    # a load that adds nothing measurable counts as one page, so the ratio stays defined
    page_kb = resource.getpagesize() / 1024
    # each round's two loads ran back to back: the median of the per-round ratios is robust to the machine's
    # drift between rounds (the ratio of the medians is printed too)
    wall_ratio = statistics.median(p['wall_s'] / q['wall_s'] for p, q in zip(runs['pool'], runs['standalone']))
    print(f'ratio of the median times: {med["pool"]["wall_s"] / med["standalone"]["wall_s"]:.3f}')
    rss_ratio = max(med['pool']['extra_kb'], page_kb) / max(med['standalone']['extra_kb'], page_kb)
    print(f'ratio pool / standalone: wall time = {wall_ratio:.3f} (median of the rounds), peak RSS = {rss_ratio:.3f}')
    return {'wall_ratio': wall_ratio, 'rss_ratio': rss_ratio}


if __name__ == '__main__':
    main()
