"""Measured latency of every descendant of a pool on this machine, stored in the pool's ``config.json``.

    python -m timm_learngene profile out/finetune/pool                       # CPU, batch 1, fp32, torch's threads
    python -m timm_learngene profile out/finetune/pool --device cuda --dtype bf16 --batch-size 32

A measurement is a *profile*: one device signature (:class:`DeviceSignature`: processor, cores, threads, torch
version, dtype, batch size) and, per descendant, the median time of one forward pass with its spread. Profiles of
several devices sit side by side in config.json under the top-level key ``latency`` (a list, one entry per
signature; measuring the same signature again replaces its entry). Only config.json is rewritten, atomically; the
weights are never touched.

How a number is made (:func:`time_models`): the model is cast to the dtype and put in eval mode under
``torch.inference_mode`` with the thread count fixed; each descendant first runs until it is warm, then the
number of calls per sample is chosen so one sample lasts at least ``min_sample_ms`` (a timer reads a few
microseconds at best, and a 0.3 ms forward pass would be mostly timer); samples are taken in interleaved rounds
(every descendant once per round, the order reversed every other round), so slow drift of the machine (clock
ramps, another process) reaches every descendant alike instead of biasing the ones measured last. Reported per
descendant: median, first and third quartile (the spread: ``iqr_ms``), minimum and the samples' count.
"""
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch

from .pool_writer import load_pool
from .durable import atomic_write_text
from .errors import CheckpointError, ConfigError
from .pool_format import CONFIG_NAME
from .pool_reader import read_pool_config
from .spec import PoolSpec, enumerate_descendants

# progress display: called with the total number of steps and the profile's description, returns an object with
# ``step(n)`` and ``close()`` (timm_learngene.training.progress.Progress fits; the command lines pass one)
ProgressFactory = Callable[[int, str], Any]

__all__ = [
    'PROFILES_KEY', 'DTYPES', 'DeviceSignature', 'Profile', 'NoProfileError', 'device_signature', 'time_models',
    'summarize', 'profile_models', 'profile_pool', 'read_profiles', 'write_profile', 'find_profile',
    'profile_command', 'fixed_threads', 'ProgressFactory',
]

PROFILES_KEY = 'latency'
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
_KINDS = ('cpu', 'cuda')


class NoProfileError(ConfigError):
    """A latency budget was asked for a device that the pool has no measurements of."""


# ---- the device --------------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown cpu'


def _usable_cores() -> int:
    """Logical CPUs this process may run on (its affinity mask where the OS has one: a container's share)."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _torch_version() -> str:
    return torch.__version__.split('+')[0]


@dataclass(frozen=True)
class DeviceSignature:
    """What a latency was measured on and how: two signatures are equal exactly when their numbers compare.

    ``kind`` ``cpu`` or ``cuda``; ``processor`` the CPU model or the GPU's name; ``cores`` the logical CPUs the
    process could use (CPU) or the GPU's multiprocessors (CUDA); ``threads`` torch's intra-op threads during the
    measurement; ``torch`` the torch release; ``dtype`` ``fp32``/``bf16``/``fp16`` (weights and input cast to it);
    ``batch_size`` images per forward pass.
    """
    kind: str
    processor: str
    cores: int
    threads: int
    torch: str
    dtype: str
    batch_size: int

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ConfigError(f'device kind must be one of {", ".join(_KINDS)}, got {self.kind!r}')
        if self.dtype not in DTYPES:
            raise ConfigError(f'dtype must be one of {", ".join(DTYPES)}, got {self.dtype!r}')
        for key in ('cores', 'threads', 'batch_size'):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f'device {key} must be a positive integer, got {v!r}')
        for key in ('processor', 'torch'):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f'device {key} must be a non-empty string, got {getattr(self, key)!r}')

    @property
    def label(self) -> str:
        """``'cpu: AMD EPYC 7B13, 2 cores, 2 threads, torch 2.14.1, fp32, batch 1'``."""
        units = 'SMs' if self.kind == 'cuda' else 'cores'
        return (f'{self.kind}: {self.processor}, {self.cores} {units}, {self.threads} threads, torch {self.torch}, '
                f'{self.dtype}, batch {self.batch_size}')

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> 'DeviceSignature':
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, Mapping) or set(d) != fields:
            got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
            raise ConfigError(f'a device signature has exactly the fields {sorted(fields)}, got {got}')
        return cls(**d)


def _kind(device: Union[str, torch.device]) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r} ({e})") from None
    if dev.type not in _KINDS:
        raise ConfigError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    return dev


def device_signature(device: Union[str, torch.device] = 'cpu', dtype: str = 'fp32', batch_size: int = 1,
                     threads: Optional[int] = None) -> DeviceSignature:
    """This machine's signature for ``device`` (``cpu``, ``cuda``, ``cuda:N``): ``threads`` defaults to torch's
    current intra-op thread count."""
    dev = _kind(device)
    threads = torch.get_num_threads() if threads is None else threads
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ConfigError(f'device {device!r}: no CUDA device on this machine (torch {torch.__version__}); '
                              f"profile on the machine with the GPU, or use --device cpu")
        props = torch.cuda.get_device_properties(dev)
        return DeviceSignature('cuda', props.name, props.multi_processor_count, threads, _torch_version(), dtype,
                               batch_size)
    return DeviceSignature('cpu', _cpu_name(), _usable_cores(), threads, _torch_version(), dtype, batch_size)


@contextmanager
def fixed_threads(threads: Optional[int]) -> Iterator[int]:
    """torch's intra-op threads set to ``threads`` (default: left as they are) for the block, restored after."""
    before = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f'threads must be a positive integer, got {threads!r}')
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# ---- timing -------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_models(fns: Mapping[str, Callable[[], object]], device: Union[str, torch.device] = 'cpu',
                warmup: int = 3, repeats: int = 20, min_sample_ms: float = 20.0,
                progress: Optional[Callable[[int], None]] = None) -> Dict[str, List[float]]:
    """Seconds per call of each function, ``repeats`` samples each.

    Each function runs ``warmup`` times (not timed) and is timed once more to choose its calls per sample
    (``inner``, so one sample lasts at least ``min_sample_ms``); then ``repeats`` interleaved rounds take one sample
    of every function, the order reversed every other round. A sample is the mean of its ``inner`` calls.
    ``progress(n)`` is called after every ``n`` calls (warm-up counted per function, samples per sample).
    """
    device = torch.device(device)
    if warmup < 0 or repeats < 1:
        raise ConfigError(f'warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}')
    inner = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        once = time.perf_counter() - t
        inner[name] = max(1, math.ceil(min_sample_ms / 1000 / max(once, 1e-9)))
        if progress is not None:
            progress(1)
    times: Dict[str, List[float]] = {k: [] for k in fns}
    order = list(fns.items())
    for r in range(repeats):
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            n = inner[name]
            _sync(device)
            t = time.perf_counter()
            for _ in range(n):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - t) / n)
            if progress is not None:
                progress(1)
    return times


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(seconds: Sequence[float], batch_size: int = 1) -> Dict[str, float]:
    """Median, quartiles, spread (``iqr_ms`` = third minus first quartile), minimum, images per second (batch over
    the median) and the samples' count, from per-call times in seconds."""
    if not seconds:
        raise ValueError('summarize needs at least one sample')
    s = sorted(seconds)
    q1, med, q3 = _quantile(s, .25), statistics.median(s), _quantile(s, .75)
    return dict(median_ms=round(med * 1e3, 4), q1_ms=round(q1 * 1e3, 4), q3_ms=round(q3 * 1e3, 4),
                iqr_ms=round((q3 - q1) * 1e3, 4), min_ms=round(s[0] * 1e3, 4),
                img_s=round(batch_size / med, 2), samples=len(s))


# ---- profiles in config.json -------------------------------------------------------------------------------------
@dataclass
class Profile:
    """One device's measurements: ``results[name]`` = :func:`summarize`'s dict; ``settings`` how it was timed
    (warm-up, repeats, minimum sample time, image size); ``measured`` the UTC time it was taken."""
    device: DeviceSignature
    results: Dict[str, Dict[str, float]]
    settings: Dict[str, Any] = dataclasses.field(default_factory=dict)
    measured: str = ''

    def to_dict(self) -> Dict[str, Any]:
        return dict(device=self.device.to_dict(), measured=self.measured, settings=dict(self.settings),
                    descendants={k: dict(v) for k, v in self.results.items()})

    @classmethod
    def from_dict(cls, d: Any, where: str = 'config.json') -> 'Profile':
        if not isinstance(d, dict) or not isinstance(d.get('descendants'), dict):
            raise CheckpointError(f'{where}: each {PROFILES_KEY!r} entry must be an object with "device" and '
                                  f'"descendants"; profile the pool again to rewrite it')
        try:
            device = DeviceSignature.from_dict(d.get('device'))
        except ConfigError as e:
            raise CheckpointError(f'{where}: {PROFILES_KEY!r} entry: {e}') from None
        results = {}
        for name, r in d['descendants'].items():
            ok = isinstance(r, dict) and all(
                isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) and math.isfinite(r[k])
                and r[k] >= 0 for k in ('median_ms', 'q1_ms', 'q3_ms'))
            if not ok:
                raise CheckpointError(f'{where}: {PROFILES_KEY!r} entry for {device.label}: descendant {name!r} '
                                      f'needs non-negative numbers median_ms, q1_ms, q3_ms; profile the pool again')
            results[name] = dict(r)
        settings = d.get('settings') if isinstance(d.get('settings'), dict) else {}
        measured = d.get('measured') if isinstance(d.get('measured'), str) else ''
        return cls(device, results, settings, measured)


def _raw_config(pool_dir: Union[str, Path]) -> Dict[str, Any]:
    """config.json as written (the pool spec a dict), after :func:`read_pool_config` has checked it."""
    path = Path(pool_dir)
    cfg_file = path / CONFIG_NAME if path.is_dir() else path
    read_pool_config(cfg_file)
    return json.loads(cfg_file.read_text())


def read_profiles(config: Union[str, Path, Mapping[str, Any]]) -> List[Profile]:
    """Every profile stored in a pool's config.json (a pool folder, its config.json, or the parsed dict)."""
    if not isinstance(config, Mapping):
        config = _raw_config(config)
    entries = config.get(PROFILES_KEY, [])
    if not isinstance(entries, list):
        raise CheckpointError(f'config.json: {PROFILES_KEY!r} must be a list of profiles, got '
                              f'{type(entries).__name__}; profile the pool again to rewrite it')
    return [Profile.from_dict(e) for e in entries]


def write_profile(pool_dir: Union[str, Path], profile: Profile) -> Path:
    """Store ``profile`` in the pool folder's config.json next to those of other devices (one with the same
    signature is replaced); only config.json is rewritten, atomically. Returns the config.json path."""
    path = Path(pool_dir)
    if not path.is_dir():
        raise CheckpointError(f'{path} is not a pool folder; profiles are stored in a pool folder\'s {CONFIG_NAME}')
    config = _raw_config(path)
    spec_names = {d.name for d in enumerate_descendants(PoolSpec.from_dict(config['model_args']['pool']))}
    unknown = sorted(set(profile.results) - spec_names, key=lambda n: (len(n), n))
    if unknown:
        raise CheckpointError(f'profile has descendants {unknown} that pool {path} does not have')
    kept = [p for p in read_profiles(config) if p.device != profile.device]
    config[PROFILES_KEY] = [p.to_dict() for p in kept] + [profile.to_dict()]
    cfg_file = path / CONFIG_NAME
    atomic_write_text(cfg_file, json.dumps(config, indent=2))
    return cfg_file


def profile_command(pool: Any, sig: DeviceSignature) -> str:
    """The command line that measures ``sig`` for ``pool`` (a pool folder or its config.json)."""
    where = 'POOL_DIR'
    if isinstance(pool, (str, Path)):
        where = str(Path(pool).parent if Path(pool).is_file() else pool)
    return (f'python -m timm_learngene profile {where} --device {sig.kind} --dtype {sig.dtype} '
            f'--batch-size {sig.batch_size} --threads {sig.threads}')


def find_profile(profiles: Sequence[Profile], device: Union[None, str, Mapping[str, Any], DeviceSignature] = None,
                 pool: Any = None) -> Profile:
    """The profile measured on ``device``; :class:`NoProfileError` naming the command that measures it when there
    is none.

    ``device``: a :class:`DeviceSignature` (matched exactly); ``'cpu'``/``'cuda'`` (this machine's processor, torch
    and thread count, fp32, batch 1); or a dict of signature fields, the fields it leaves out taken from this
    machine like that (``{'kind': 'cuda', 'processor': 'NVIDIA H200', 'dtype': 'bf16', 'batch_size': 32}`` selects
    a measurement taken on another machine).
    """
    want = _wanted_signature(device)
    for p in profiles:
        if p.device == want:
            return p
    measured = '; '.join(p.device.label for p in profiles) or 'none'
    raise NoProfileError(f'no latency measured for {want.label}; measure it on that device with: '
                         f'{profile_command(pool, want)} (measured devices: {measured})')


def _wanted_signature(device) -> DeviceSignature:
    if isinstance(device, DeviceSignature):
        return device
    if device is None or isinstance(device, (str, torch.device)):
        return device_signature(device or 'cpu')
    if not isinstance(device, Mapping):
        raise ConfigError(f"device must be 'cpu', 'cuda', a dict of signature fields or a DeviceSignature, "
                          f'got {type(device).__name__}')
    fields = {f.name for f in dataclasses.fields(DeviceSignature)}
    unknown = sorted(set(device) - fields)
    if unknown:
        raise ConfigError(f'unknown device signature fields {unknown}; the fields are {sorted(fields)}')
    given = dict(device)
    kind = given.get('kind', 'cpu')
    if kind == 'cuda' and not torch.cuda.is_available():
        missing = sorted(fields - set(given))
        if missing:  # this machine cannot fill in a GPU's fields
            raise ConfigError(f'no CUDA device on this machine to fill in {missing} of the cuda signature; give '
                              f'every field ({sorted(fields)}) to select by a GPU measured elsewhere')
        return DeviceSignature(**given)
    here = device_signature(_kind(kind), given.get('dtype', 'fp32'), given.get('batch_size', 1),
                            given.get('threads'))
    return dataclasses.replace(here, **given)


# ---- measuring -----------------------------------------------------------------------------------------------------
def profile_models(models: Mapping[str, torch.nn.Module], input_size: Sequence[int], device='cpu',
                   dtype: str = 'fp32', batch_size: int = 1, threads: Optional[int] = None, warmup: int = 3,
                   repeats: int = 20, min_sample_ms: float = 20.0, progress: Optional[ProgressFactory] = None,
                   desc: str = 'profile') -> Profile:
    """Time every model of ``models`` (name -> module) on ``device`` at ``batch_size`` x ``input_size`` (C, H, W),
    weights and input in ``dtype``, in eval mode with ``threads`` intra-op threads (default: torch's current),
    and return the :class:`Profile` (not stored). The models are moved and cast in place. ``progress(total, desc)``
    makes the progress display (see :data:`ProgressFactory`; ``None``: nothing shown)."""
    dev = _kind(device)
    if dtype not in DTYPES:
        raise ConfigError(f'dtype must be one of {", ".join(DTYPES)}, got {dtype!r}')
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f'batch size must be a positive integer, got {batch_size!r}')
    if not models:
        raise ConfigError('nothing to profile: no models given')
    with fixed_threads(threads) as n_threads:
        sig = device_signature(dev, dtype, batch_size, n_threads)
        x = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0)).to(dev, DTYPES[dtype])
        fns = {}
        for name, m in models.items():
            m.to(dev, DTYPES[dtype]).eval()
            fns[name] = (lambda m=m: m(x))
        bar = progress(len(fns) * (1 + repeats), desc) if progress is not None else None
        try:
            with torch.inference_mode():
                times = time_models(fns, dev, warmup, repeats, min_sample_ms,
                                    progress=bar.step if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
    settings = dict(warmup=warmup, repeats=repeats, min_sample_ms=min_sample_ms, input_size=list(input_size))
    return Profile(sig, {k: summarize(v, batch_size) for k, v in times.items()}, settings, now)


def profile_pool(pool_dir: Union[str, Path], device='cpu', dtype: str = 'fp32', batch_size: int = 1,
                 threads: Optional[int] = None, descendants: Optional[Sequence[str]] = None, warmup: int = 3,
                 repeats: int = 20, min_sample_ms: float = 20.0, write: bool = True,
                 progress: Optional[ProgressFactory] = None) -> Profile:
    """Measure every descendant (or those named in ``descendants``) of the pool in folder ``pool_dir`` on this
    machine and, with ``write``, store the profile in its config.json (:func:`write_profile`).

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``fp32``, ``bf16`` or ``fp16``: weights and input cast to it.
        batch_size: images per forward pass (``median_ms`` is per pass; ``img_s`` = batch / median).
        threads: torch intra-op threads while measuring (default: torch's current count); recorded.
        warmup, repeats, min_sample_ms: see :func:`time_models`.
        progress: makes the progress display (:data:`ProgressFactory`); ``None``: nothing shown.
    Returns:
        the :class:`Profile`.
    """
    if Path(pool_dir).is_file():
        raise CheckpointError(f'{pool_dir} is a file; profile takes the pool folder (model.safetensors + '
                              f'{CONFIG_NAME}), whose {CONFIG_NAME} it rewrites')
    spec = read_pool_config(pool_dir)['model_args']['pool']
    infos = enumerate_descendants(spec)
    if descendants:
        names = {d.name for d in infos}
        unknown = [n for n in descendants if n not in names]
        if unknown:
            raise ConfigError(f'unknown descendants {unknown}; pool {spec.name!r} has s1..s{len(infos)}')
        infos = [d for d in infos if d.name in set(descendants)]
    pool = load_pool(pool_dir)
    models = {d.name: pool.descendant(d) for d in infos}
    prof = profile_models(models, (spec.in_chans, spec.img_size, spec.img_size), device, dtype, batch_size,
                          threads, warmup, repeats, min_sample_ms, progress,
                          desc=f'profile {torch.device(device).type} {dtype} batch {batch_size}')
    if write:
        write_profile(pool_dir, prof)
    return prof
