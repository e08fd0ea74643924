"""Pick the best descendant of a pool under a budget."""
from pathlib import Path
from typing import Optional, Union

from .errors import LearngeneError
from .models.learngene_pool import LearngenePool
from .pool_file import descendant_table, read_pool_config
from .spec import PoolSpec, enumerate_descendants

__all__ = ['select', 'BudgetError']


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


def select(pool: Union[str, Path, LearngenePool, PoolSpec], max_gmacs: Optional[float] = None,
           max_params: Optional[float] = None, max_latency_ms: Optional[float] = None) -> str:
    """Name of the most accurate descendant within every given budget.

    Accuracy is the measured validation top-1 ``val_top1`` (``recipes/evaluate.py --val-size N``: images held out
    of the training split) when every candidate has one, else the test ``top1`` when every candidate has one (a
    choice made on the test set: evaluate with a validation split to avoid that); otherwise the largest (most
    GMACs) candidate is taken. ``max_params`` counts parameters (``3e7``); ``max_latency_ms``
    uses the measured ``latency_ms`` and needs it. Raises :class:`BudgetError` when nothing fits.
    """
    infos = _descendants(pool)
    fits = []
    for d in infos:
        if max_gmacs is not None and d.gmacs > max_gmacs:
            continue
        if max_params is not None and d.params > max_params:
            continue
        if max_latency_ms is not None:
            if 'latency_ms' not in d.metrics:
                raise BudgetError(f'max_latency_ms needs measured latencies and descendant {d.name!r} has none; '
                                  f'run recipes/evaluate.py on this pool first')
            if d.metrics['latency_ms'] > max_latency_ms:
                continue
        fits.append(d)
    if not fits:
        smallest = min(infos, key=lambda d: d.macs)
        raise BudgetError(
            f'no descendant fits max_gmacs={max_gmacs}, max_params={max_params}, max_latency_ms={max_latency_ms}; '
            f'the smallest is {smallest.name} ({smallest.gmacs:.3f} GMACs, {smallest.params / 1e6:.2f}M params'
            + (f", {smallest.metrics['latency_ms']:.2f} ms" if 'latency_ms' in smallest.metrics else '') + ')')
    key = next((k for k in ('val_top1', 'top1') if all(k in d.metrics for d in fits)), None)
    if key is not None:
        best = max(fits, key=lambda d: (d.metrics[key], -d.macs))
    else:
        best = max(fits, key=lambda d: (d.macs, d.params))
    return best.name
