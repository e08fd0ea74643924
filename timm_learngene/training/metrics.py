"""Accuracy over a (possibly distributed) evaluation loader."""
from collections import defaultdict
from typing import Any, Callable, Dict, Optional, Tuple

import torch

__all__ = ['accuracy']


@torch.no_grad()
def accuracy(accelerator, forward: Callable[[torch.Tensor], Dict[str, torch.Tensor]], loader,
             topk: Tuple[int, ...] = (1,), progress: Optional[Callable[[int], Any]] = None) -> Dict[str, float]:
    """Top-k accuracy (percent) of every logits tensor that ``forward(x)`` returns, keyed ``<name>`` for top-1
    and ``<name>_top<k>`` for the others; samples padded by the distributed sampler are dropped
    (``gather_for_metrics``). ``progress(total)``: a display with ``step()`` and ``close()``, stepped per batch."""
    correct: Dict[str, float] = defaultdict(float)
    seen = 0
    bar = progress(len(loader)) if progress is not None else None
    for x, y in loader:
        outs = forward(x)
        y = accelerator.gather_for_metrics(y)
        seen += y.shape[0]
        for name, logits in outs.items():
            k_max = min(max(topk), logits.shape[-1])
            pred = accelerator.gather_for_metrics(logits.topk(k_max, dim=-1).indices)
            hit = pred == y[:, None]
            for k in topk:
                key = name if k == 1 else f'{name}_top{k}'
                correct[key] += hit[:, :min(k, k_max)].any(dim=1).sum().item()
        if bar is not None:
            bar.step()
    if bar is not None:
        bar.close()
    return {k: 100.0 * v / max(1, seen) for k, v in correct.items()}
