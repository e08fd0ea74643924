"""Pick the best descendant of a pool under a budget: GMACs, parameters, and latency measured on a device."""
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .errors import LearngeneError
from .models.learngene_pool import LearngenePool
from .pool_reader import descendant_table, read_pool_config
from .profiling import DeviceSignature, NoProfileError, find_profile, profile_command, read_profiles
from .spec import PoolSpec, enumerate_descendants

__all__ = ['select', 'BudgetError', 'NoProfileError']


class BudgetError(LearngeneError):
    """No descendant of the pool fits the budget."""


def _descendants(pool) -> list:
    if isinstance(pool, LearngenePool):
        return pool.descendants
    if isinstance(pool, (str, Path)):
        return descendant_table(read_pool_config(pool))
    if isinstance(pool, PoolSpec):
        return enumerate_descendants(pool)
    raise TypeError(f'select takes a pool folder, a LearngenePool or a PoolSpec, got {type(pool).__name__}')


def _latencies(pool, device) -> tuple:
    """``(median ms by descendant name, the profile)`` measured on ``device``, from the pool folder's config.json."""
    if not isinstance(pool, (str, Path)):
        raise NoProfileError(f'max_latency_ms needs latencies measured on the device, and they are stored in a pool '
                             f'folder: pass the folder (or its config.json), not a {type(pool).__name__}; measure '
                             f'them with: python -m timm_learngene profile POOL_DIR')
    profile = find_profile(read_profiles(pool), device, pool=Path(pool))
    return {name: r['median_ms'] for name, r in profile.results.items()}, profile


def select(pool: Union[str, Path, LearngenePool, PoolSpec], max_gmacs: Optional[float] = None,
           max_params: Optional[float] = None, max_latency_ms: Optional[float] = None,
           device: Union[None, str, Mapping[str, Any], DeviceSignature] = None) -> str:
    """Name of the most accurate descendant within every given budget.

    Accuracy is the measured validation top-1 ``val_top1`` (``recipes/evaluate.py --val-size N``: images held out
    of the training split) when every candidate has one, else the test ``top1`` when every candidate has one (a
    choice made on the test set: evaluate with a validation split to avoid that); equal accuracy goes to the
    faster descendant (lower measured latency under a latency budget, else fewer GMACs). Without accuracy the
    largest (most GMACs) candidate is taken. ``max_params`` counts parameters (``3e7``).

    ``max_latency_ms`` is the median forward time measured on ``device`` by ``python -m timm_learngene profile``
    (:func:`timm_learngene.profiling.profile_pool`) and stored in the pool folder's config.json; ``device`` is
    ``'cpu'`` (default) or ``'cuda'`` for this machine's processor, torch and thread count at fp32, batch 1, or a
    dict of signature fields / a :class:`~timm_learngene.profiling.DeviceSignature` for another (see
    :func:`~timm_learngene.profiling.find_profile`). :class:`NoProfileError` when the pool has no measurement for
    that device (it says the command that takes one). Raises :class:`BudgetError` when nothing fits.
    """
    infos = _descendants(pool)
    latency, profile = _latencies(pool, device) if max_latency_ms is not None else ({}, None)
    fits = [d for d in infos if (max_gmacs is None or d.gmacs <= max_gmacs)
            and (max_params is None or d.params <= max_params)]
    if profile is not None:
        unmeasured = [d.name for d in fits if d.name not in latency]
        if unmeasured:
            raise NoProfileError(
                f'descendants {unmeasured} have no latency measured on {profile.device.label}; measure every '
                f'descendant with: {profile_command(pool, profile.device)}')
        fits = [d for d in fits if latency[d.name] <= max_latency_ms]
    if not fits:
        smallest = min(infos, key=lambda d: d.macs)
        measured = f', {latency[smallest.name]:.2f} ms on {profile.device.label}' \
            if smallest.name in latency else ''
        raise BudgetError(
            f'no descendant fits max_gmacs={max_gmacs}, max_params={max_params}, max_latency_ms={max_latency_ms}; '
            f'the smallest is {smallest.name} ({smallest.gmacs:.3f} GMACs, {smallest.params / 1e6:.2f}M params'
            f'{measured})')
    key = next((k for k in ('val_top1', 'top1') if all(k in d.metrics for d in fits)), None)
    if key is None:
        return max(fits, key=lambda d: (d.macs, d.params)).name
    cost = (lambda d: latency[d.name]) if latency else (lambda d: d.macs)
    return max(fits, key=lambda d: (d.metrics[key], -cost(d))).name
