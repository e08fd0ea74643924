"""Run every benchmark on this machine and write ``benchmarks/results.md``: the machine, a table of benchmark,
measured value, target and whether it was met, and each benchmark's printed lines.

    python -m benchmarks                  # make bench: every benchmark at its CPU defaults (~10-15 min, 2 cores)
    python -m benchmarks --quick          # seconds-long smoke run of each (no meaningful numbers)
    python -m benchmarks --only stitch_overhead,finetune_step
    python -m benchmarks --device cuda --only stitch_overhead,distill_step,finetune_step,throughput \\
        --output benchmarks/results_gpu.md                # what benchmarks/gpu.sh runs

Benchmarks run one after another in this process (each builds and frees its own models); one that fails is
reported as failed and the others still run; the exit status is 1 if any failed. One that cannot run here
(``torch.compile`` without a C++ compiler, say) is reported as not run, with the reason.
"""
import argparse
import contextlib
import datetime
import gc
import importlib
import io
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.harness import machine_info  # noqa: E402


def _ratio(v) -> str:
    return f'{v:.3f}'


@dataclass
class Bench:
    name: str
    what: str
    target: str
    met: Callable[[Any], Optional[bool]]
    value: Callable[[Any], str] = _ratio
    cpu_args: List[str] = field(default_factory=list)  # non-quick CPU runs only
    dtype_flags: bool = True  # takes --dtype and --peak-tflops


def _throughput_value(img_s) -> str:
    desc = [k for k in img_s if not k.startswith('deit_')]
    refs = ', '.join(f"{k.split('_')[1]} {img_s[k]:.1f}" for k in img_s if k.startswith('deit_'))
    text = f'{desc[0]} {img_s[desc[0]]:.1f} ... {desc[-1]} {img_s[desc[-1]]:.1f} img/s'
    return text + (f' (DeiT {refs})' if refs else '')


BENCHMARKS = [
    Bench('stitch_overhead', 'descendant inference vs the same blocks as plain timm ViT chains without the stitch '
          '(baseline / descendant time, worst route)', '>= 0.97', lambda v: v >= 0.97),
    Bench('distill_step', 'one-pass distillation step vs one teacher forward per member (step-time ratio)',
          '<= 0.8', lambda v: v <= 0.8, cpu_args=['--img-size', '112']),
    Bench('load_descendant', 'loading s1 from a deit_base_l6 pool file vs its own checkpoint (fresh processes)',
          '<= 1.3 (wall, peak RSS)', lambda v: v['wall_ratio'] <= 1.3 and v['rss_ratio'] <= 1.3,
          value=lambda v: f"wall {v['wall_ratio']:.3f}, RSS {v['rss_ratio']:.3f}"),
    Bench('finetune_step', 'finetune step through the pool vs the same network as a plain timm ViT '
          '(baseline / descendant time, worst route)', '>= 0.95', lambda v: v >= 0.95),
    Bench('throughput', 'inference img/s of every descendant, with timm DeiT-Ti/S/B as reference points',
          'reported', lambda v: None, value=_throughput_value),
    Bench('cpu_training', "the demo ancestry's training step under fp32/bf16 x explicit/fused attention "
          '(speed relative to fp32 + explicit)', 'reported (picks the demo settings)', lambda v: None,
          value=lambda v: ', '.join(f"{'bf16' if bf16 else 'fp32'} {'SDPA' if fused else 'explicit'} {r:.2f}"
                                    for (fused, bf16), r in v.items()), dtype_flags=False),
    Bench('profile_repeatability', 'two latency profiles of every descendant (python -m timm_learngene profile): '
          'worst run-to-run difference of a median; the order against GMACs is in its output',
          'reported (<= 1.10 on an idle machine)', lambda v: None,
          value=lambda v: f"worst run-to-run median ratio {v['worst_run_ratio']:.3f}",
          cpu_args=['--output', str(ROOT / 'benchmarks' / 'profile_repeatability.md')]),
    # last: inductor's compile workers and caches stay behind in this process
    Bench('compile', 'torch.compile of a descendant (fullgraph, output checked against eager): speed-up',
          'compiles, matches eager', lambda v: True, value=lambda v: f'speed-up {v:.3f}'),
]


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.buffer = stream, io.StringIO()

    def write(self, s):
        self.stream.write(s)
        self.stream.flush()
        return self.buffer.write(s)


def run(bench: Bench, argv: List[str]):
    """Import and run one benchmark; returns (value, printed text, error, skip reason, seconds), value ``None``
    when it failed (error) or could not run here (a ``SystemExit`` with a message, e.g. no torch.compile)."""
    tee = _Tee(sys.stdout)
    start = time.perf_counter()
    value, error, skipped = None, None, None
    with contextlib.redirect_stdout(tee):
        print(f'$ python benchmarks/{bench.name}.py {" ".join(argv)}')
        try:
            value = importlib.import_module(f'benchmarks.{bench.name}').main(argv)
        except SystemExit as e:
            if isinstance(e.code, str):
                skipped = e.code
                print(skipped)
            else:  # argparse's usage errors
                error = f'exit status {e.code}'
        except Exception as e:  # noqa: BLE001 -- one failing benchmark must not hide the others
            traceback.print_exc(file=tee)
            error = f'{type(e).__name__}: {e}'
    seconds = time.perf_counter() - start
    _release()
    return value, tee.buffer.getvalue(), error, skipped, seconds


def _release() -> None:
    """Free what a finished benchmark left (models, compiled graphs) before the next one is timed."""
    import torch
    if 'torch._dynamo' in sys.modules:
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _cell(text: str) -> str:
    """One line of text that cannot break a Markdown table row."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ''
    return line.replace('|', '\\|')


def _finite(value) -> bool:
    values = value.values() if isinstance(value, dict) else [value]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def write_results(path: Path, info, rows, outputs, argv, total_s, quick: bool) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    command = f'python -m benchmarks {" ".join(argv)}'.rstrip()
    lines = [
        '# Benchmarks', '',
        f'Written by `{command}` on {now}, {total_s / 60:.1f} min. '
        'Each benchmark: interleaved warm-up and repeats, medians; its own lines below say sizes and repeats.', '',
        *(['**Quick smoke run: reduced sizes and one or two repeats; these numbers are not measurements.**', '']
          if quick else []),
        '## Machine', '', '| | |', '|---|---|',
        *[f'| {k} | {v} |' for k, v in info.items()], '',
        '## Summary', '', '| benchmark | what | measured | target | met? |', '|---|---|---|---|---|',
        *rows, '',
        '## Output', '',
    ]
    for name, text in outputs:
        lines += [f'### {name}', '', '```text', text.rstrip(), '```', '']
    path.write_text('\n'.join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='seconds-long smoke runs')
    p.add_argument('--only', default=None, help='comma-separated benchmark names (default: all)')
    p.add_argument('--device', default=None, help='passed to every benchmark (default: theirs: cuda if present)')
    p.add_argument('--dtype', choices=('fp32', 'bf16'), default=None, help='passed to every benchmark')
    p.add_argument('--peak-tflops', type=float, default=None, help='device peak for MFU, passed through')
    p.add_argument('--output', default=str(ROOT / 'benchmarks' / 'results.md'))
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [b.name for b in BENCHMARKS]
    chosen = names if not args.only else [n.strip() for n in args.only.split(',')]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f'unknown benchmarks {unknown}; choose from {names}')

    import torch
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    info = machine_info(torch.device(device))
    common = ['--device', device] + (['--quick'] if args.quick else [])
    dtype_flags = (['--dtype', args.dtype] if args.dtype else []) + \
        (['--peak-tflops', str(args.peak_tflops)] if args.peak_tflops else [])

    rows, outputs, failed = [], [], []
    start = time.perf_counter()
    for bench in BENCHMARKS:
        if bench.name not in chosen:
            continue
        extra = bench.cpu_args if device == 'cpu' and not args.quick else []
        bench_argv = common + (dtype_flags if bench.dtype_flags else []) + extra
        value, text, error, skipped, seconds = run(bench, bench_argv)
        if error is None and skipped is None and not _finite(value):
            error = f'returned {value!r}, not finite numbers'
        if skipped:
            rows.append(f'| {bench.name} | {bench.what} | not run: {_cell(skipped)} | {bench.target} | — |')
        elif error:
            failed.append(bench.name)
            rows.append(f'| {bench.name} | {bench.what} | failed: {_cell(error)} | {bench.target} | no |')
        else:
            met = bench.met(value)
            mark = '—' if met is None else ('yes' if met else 'no')
            rows.append(f'| {bench.name} | {bench.what} | {bench.value(value)} | {bench.target} | {mark} |')
        outputs.append((f'{bench.name} ({seconds:.0f} s)', text))
    out = Path(args.output)
    write_results(out, info, rows, outputs, argv, time.perf_counter() - start, args.quick)
    print(f'\nwrote {out}' + (f'; failed: {", ".join(failed)}' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
