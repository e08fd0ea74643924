"""Evaluation of every descendant of a pool: accuracy, size, cost and measured speed; tables and a Pareto plot."""
import csv
import statistics
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from .models.learngene_pool import LearngenePool

__all__ = ['measure_throughput', 'measure_latency', 'descendant_rows', 'write_csv', 'write_markdown',
           'pareto_plot', 'pareto_front']


def _sync(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_throughput(model: torch.nn.Module, input_size: Sequence[int], batch_size: int = 32, repeats: int = 5,
                       warmup: int = 2, amp_dtype: Optional[torch.dtype] = None) -> float:
    """Images per second of ``model`` in eval mode on its device: median over ``repeats`` timed batches."""
    device = next(model.parameters()).device
    x = torch.randn(batch_size, *input_size, device=device)
    was = model.training
    model.eval()
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            model(x)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    model.train(was)
    return batch_size / statistics.median(times)


def measure_latency(model: torch.nn.Module, input_size: Sequence[int], repeats: int = 10, warmup: int = 3) -> float:
    """Milliseconds for one image (batch 1), median."""
    return 1000.0 / measure_throughput(model, input_size, 1, repeats, warmup)


def descendant_rows(pool: LearngenePool, accuracies: Optional[Mapping[str, float]] = None,
                    speed: Optional[Mapping[str, Mapping[str, float]]] = None,
                    names: Optional[Sequence[str]] = None) -> List[Dict]:
    """One row per descendant (those in ``names``, default all): name, route, params, GMACs and whatever was
    measured: ``top1``/``top5`` from ``accuracies[name]``/``[name_top5]``, ``val_top1`` from ``[name_val]``
    (the validation split), img_s, latency_ms ... from ``speed``."""
    rows = []
    for d in pool.descendants:
        if names is not None and d.name not in names:
            continue
        row = dict(name=d.name, route=d.route_label, params=d.params, gmacs=round(d.gmacs, 4))
        if accuracies is not None:
            row['top1'] = round(accuracies[d.name], 3)
            if f'{d.name}_top5' in accuracies:
                row['top5'] = round(accuracies[f'{d.name}_top5'], 3)
            if f'{d.name}_val' in accuracies:
                row['val_top1'] = round(accuracies[f'{d.name}_val'], 3)
        row.update((speed or {}).get(d.name, {}))
        rows.append(row)
    return rows


def write_csv(rows: Sequence[Mapping], path) -> Path:
    path = Path(path)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


def _fmt(key, v):
    if v is None or v == '':
        return ''
    if key == 'params' and isinstance(v, int):
        return f'{v / 1e6:.2f}M'
    if key == 'gmacs' and isinstance(v, float):
        return f'{v:.3g}' if v < 1 else f'{v:.2f}'
    if isinstance(v, float):
        return f'{v:.2f}'
    return str(v)


def write_markdown(rows: Sequence[Mapping], path=None, title: Optional[str] = None) -> str:
    """A Markdown table of ``rows`` (params shown in millions); written to ``path`` when given."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [f'## {title}', ''] if title else []
    lines += ['| ' + ' | '.join(keys) + ' |', '|' + '|'.join('---' for _ in keys) + '|']
    lines += ['| ' + ' | '.join(_fmt(k, r.get(k)) for k in keys) + ' |' for r in rows]
    text = '\n'.join(lines) + '\n'
    if path is not None:
        Path(path).write_text(text)
    return text


def pareto_front(rows: Sequence[Mapping], x: str = 'gmacs', y: str = 'top1') -> List[Mapping]:
    """Rows not beaten by a cheaper-or-equal row with higher-or-equal accuracy, sorted by ``x``."""
    front, best = [], float('-inf')
    for r in sorted(rows, key=lambda r: (r[x], -r[y])):
        if r[y] > best:
            front.append(r)
            best = r[y]
    return front


def pareto_plot(series: Mapping[str, Sequence[Mapping]], path, title: str = '', x: str = 'gmacs',
                y: str = 'top1') -> Path:
    """Top-1 against GMACs, one marker set per series (e.g. one per method), its Pareto front as a line; each point
    labelled with its row's ``name`` (the descendant)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, rows in series.items():
        rows = [r for r in rows if r.get(y) is not None]
        if not rows:
            continue
        pts = ax.scatter([r[x] for r in rows], [r[y] for r in rows], s=18, alpha=0.7, label=label)
        for r in rows:  # which descendant each point is
            if r.get('name'):
                ax.annotate(str(r['name']), (r[x], r[y]), xytext=(3, 3), textcoords='offset points', fontsize=6,
                            alpha=0.8)
        front = pareto_front(rows, x, y)
        ax.plot([r[x] for r in front], [r[y] for r in front], color=pts.get_facecolor()[0], alpha=0.8)
    ax.set_xlabel('GMACs per image' if x == 'gmacs' else x)
    ax.set_ylabel('top-1 (%)' if y == 'top1' else y)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
