"""What every benchmark measures with: interleaved timing with medians, the device and dtype flags, the machine
description written into the results, and model-FLOP utilisation (MFU) against a GPU's peak.

Timing: every candidate runs once per round, rounds repeat, the first ``warmup`` rounds are dropped and the
median of the rest is kept, so slow drift (thermal, another process) hits all candidates alike.
"""
import contextlib
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Mapping, Optional

import torch

__all__ = ['add_device_args', 'resolve', 'sync', 'autocast', 'time_interleaved', 'medians', 'machine_info',
           'peak_tflops', 'mfu', 'format_mfu', 'vit_macs', 'PEAK_BF16_TFLOPS']

# Dense bf16 tensor-core peak (no sparsity) in TFLOP/s, by a substring of torch.cuda.get_device_name();
# the first match wins, so the more specific names come first. Vendor datasheet figures.
PEAK_BF16_TFLOPS = (
    ('H100 NVL', 835.0),
    ('H100 PCIe', 756.0),
    ('H100', 989.0),        # SXM ('NVIDIA H100 80GB HBM3')
    ('H200', 989.0),        # also GH200
    ('B200', 2250.0),
    ('A100', 312.0),
    ('L40S', 362.0),
    ('L40', 181.0),
    ('L4', 121.0),
    ('A10G', 70.0),
    ('A10', 125.0),
    ('RTX 4090', 165.0),
    ('RTX 3090', 71.0),
)

_DEFAULT_THREADS = torch.get_num_threads()


def add_device_args(p) -> None:
    """``--device``, ``--dtype``, ``--warmup``, ``--repeats``, ``--inner``, ``--threads``, ``--peak-tflops``,
    ``--quick``.

    Size and repeat flags default to ``None`` and are filled by :func:`resolve` from the benchmark's CPU, CUDA
    or quick profile, so one script has sensible defaults on both kinds of machine.
    """
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', choices=('fp32', 'bf16'), default=None,
                   help='compute dtype (bf16 = autocast); default bf16 on CUDA, fp32 on CPU (bf16 is slow there)')
    p.add_argument('--warmup', type=int, default=None, help='rounds dropped before timing')
    p.add_argument('--repeats', type=int, default=None, help='timed rounds (median kept)')
    p.add_argument('--inner', type=int, default=None, help='calls per timed sample (default 1 on CPU, 10 on CUDA)')
    p.add_argument('--threads', type=int, default=None,
                   help="torch intra-op threads (default: torch's own; the quick profile uses 1)")
    p.add_argument('--peak-tflops', type=float, default=None,
                   help='peak dense bf16 TFLOP/s of the device for MFU (default: looked up by GPU name)')
    p.add_argument('--quick', action='store_true', help='a seconds-long smoke run at reduced sizes')


def resolve(args, cpu: Mapping, cuda: Mapping, quick: Mapping) -> None:
    """Fill in place every flag left at ``None`` from the profile that applies (``quick`` over the device's),
    then ``dtype`` and the MFU peak. Profiles also set ``warmup``, ``repeats`` and ``inner``."""
    args.device = torch.device(args.device)
    base = dict(cuda, inner=10) if args.device.type == 'cuda' else dict(cpu, inner=1)
    profile = dict(base, threads=1, **quick) if args.quick else base
    for key, value in profile.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    # tiny quick-run tensors are far slower on several threads (the OpenMP hand-off costs more than the work)
    torch.set_num_threads(args.threads or _DEFAULT_THREADS)
    if args.dtype is None:
        args.dtype = 'bf16' if args.device.type == 'cuda' else 'fp32'
    if args.peak_tflops is None and args.dtype == 'bf16':
        args.peak_tflops = peak_tflops(args.device)


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast (mixed precision, as the recipes train) or nothing for fp32."""
    if dtype == 'bf16':
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_interleaved(fns: Mapping[str, Callable[[], object]], device: torch.device, warmup: int,
                     repeats: int, inner: int = 1) -> Dict[str, List[float]]:
    """Seconds per call of each function: ``warmup + repeats`` rounds, each round calls every function
    ``inner`` times back to back (one sample = their mean; > 1 on a GPU, where one call is too short to time
    alone); returns the ``repeats`` timed samples per name. Odd rounds run the functions in reverse order
    (A B, B A, ...), so neither side of a comparison always runs first (warm caches, clock ramps)."""
    times = {k: [] for k in fns}
    order = list(fns.items())
    for i in range(warmup + repeats):
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            sync(device)
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            sync(device)
            if i >= warmup:
                times[name].append((time.perf_counter() - t) / inner)
    return times


def add_pool_args(p, pool_help: str = 'pool spec name or JSON') -> None:
    """``--pool``, ``--img-size`` and ``--batch-size`` (the sizes default to the benchmark's device settings)."""
    p.add_argument('--pool', default='deit_base_l6', help=pool_help)
    p.add_argument('--img-size', type=int, default=None)
    p.add_argument('--batch-size', type=int, default=None)


def seeded_pool(args):
    """``(spec, pool, images)``: the pool ``args.pool`` at ``args.img_size`` with seed-0 random weights on
    ``args.device``, and a random batch of ``args.batch_size`` images for it."""
    import timm
    from timm_learngene.spec import PoolSpec
    torch.manual_seed(0)
    spec = PoolSpec.from_any(args.pool).replace(img_size=args.img_size)
    pool = timm.create_model('learngene_pool', pool=spec).to(args.device)
    x = torch.randn(args.batch_size, spec.in_chans, args.img_size, args.img_size, device=args.device)
    return spec, pool, x


def medians(times: Mapping[str, List[float]]) -> Dict[str, float]:
    return {k: statistics.median(v) for k, v in times.items()}


def paired_ratio(times: Mapping[str, List[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num][i] / times[den][i]``: the two ran back to back in each round of
    :func:`time_interleaved`, so the machine's drift between rounds cancels (on a shared 2-core VM it moved
    ratios of medians by +-5% from run to run)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def _cpu_model() -> str:
    """``'AMD EPYC (family 25, model 1)'`` from /proc/cpuinfo (virtual machines often name only the line)."""
    fields = {}
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(':')
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get('model name') or platform.processor() or platform.machine()
    if 'cpu family' in fields and 'model' in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def _memory() -> str:
    try:
        with open('/proc/meminfo') as f:
            kb = int(f.readline().split()[1])
        return f'{kb / 2 ** 20:.1f} GiB'
    except (OSError, ValueError, IndexError):
        return 'unknown'


def machine_info(device: Optional[torch.device] = None) -> Dict[str, str]:
    """CPU model, cores, torch/timm versions, threads and the accelerator, for the results file."""
    import timm
    from timm.layers import use_fused_attn
    info = {
        'cpu': _cpu_model(),
        'cores': str(os.cpu_count()),
        'memory': _memory(),
        'load average at start (1, 5, 15 min)': ', '.join(f'{v:.2f}' for v in os.getloadavg())
        if hasattr(os, 'getloadavg') else 'unknown',
        'torch threads': str(torch.get_num_threads()),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'timm': timm.__version__,
        'fused attention (SDPA)': str(use_fused_attn()),
    }
    if device is not None and torch.device(device).type == 'cuda':
        info['device'] = f'cuda: {torch.cuda.get_device_name(device)}'
        info['cuda'] = str(torch.version.cuda)
    else:
        info['device'] = 'cpu'
    return info


def peak_tflops(device: torch.device) -> Optional[float]:
    """The dense bf16 peak of a known GPU, else ``None`` (CPU, unknown GPU: pass ``--peak-tflops``)."""
    if torch.device(device).type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value
    return None


def mfu(flops: float, seconds: float, peak: Optional[float]) -> Optional[float]:
    """Achieved FLOP/s over the peak (both dense); ``None`` without a peak."""
    if not peak or seconds <= 0:
        return None
    return flops / seconds / (peak * 1e12)


def format_mfu(flops: float, seconds: float, peak: Optional[float]) -> str:
    """``'412.3 TFLOP/s, MFU 41.7% of 989'`` (GFLOP/s below one TFLOP/s; no MFU without a peak)."""
    achieved = flops / seconds
    text = f'{achieved / 1e12:.1f} TFLOP/s' if achieved >= 1e12 else f'{achieved / 1e9:.1f} GFLOP/s'
    m = mfu(flops, seconds, peak)
    return text + (f', MFU {m:.1%} of {peak:g} TFLOP/s' if m is not None else '')


def vit_macs(width: int, depth: int, img_size: int, patch_size: int = 16, in_chans: int = 3,
             num_classes: int = 1000, mlp_ratio: float = 4.0) -> int:
    """Multiply-adds per image of a plain ViT (class token; linear, conv and attention matmuls), by the same
    count as the pool's descendants (``timm_learngene.spec.route_macs``). FLOPs = 2 x MACs forward, 6 x MACs for
    a training step (forward + backward)."""
    from timm_learngene.spec import MemberSpec, PoolSpec, route_macs
    spec = PoolSpec(name='plain_vit', members=(MemberSpec('vit', width, 1, depth, mlp_ratio),), img_size=img_size,
                    patch_size=patch_size, in_chans=in_chans, num_classes=num_classes)
    return route_macs(spec, (('vit', 0, depth),))
