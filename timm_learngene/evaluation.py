"""Evaluation of every descendant of a pool: accuracy, size, cost and measured speed; tables and Pareto plots.

Speed columns come from latency profiles (:mod:`timm_learngene.profiling`: warm-up, fixed threads, interleaved
repeats, median and interquartile spread), never from a single timing.
"""
import csv
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .models.learngene_pool import LearngenePool
from .profiling import Profile

__all__ = ['speed_columns', 'latency_series', 'descendant_rows', 'write_csv', 'write_markdown', 'pareto_plot',
           'pareto_front', 'draw_pareto', 'LATENCY_XLABEL']

LATENCY_XLABEL = 'measured latency (ms, median; bars: quartiles)'


def speed_columns(latency: Optional[Profile] = None, throughput: Optional[Profile] = None) -> Dict[str, Dict]:
    """Per descendant name, the table columns of two profiles (:mod:`timm_learngene.profiling`): ``latency_ms``
    (median at the latency profile's batch size, normally 1) with its spread ``latency_iqr_ms`` (interquartile
    range), and ``img_s`` from the throughput profile (its batch over its median). Only measured values: a
    descendant missing from a profile gets no column from it."""
    out: Dict[str, Dict] = {}
    if latency is not None:
        for name, r in latency.results.items():
            out.setdefault(name, {}).update(latency_ms=r['median_ms'], latency_iqr_ms=round(r['q3_ms'] - r['q1_ms'], 4))
    if throughput is not None:
        for name, r in throughput.results.items():
            out.setdefault(name, {})['img_s'] = round(throughput.device.batch_size / (r['median_ms'] / 1e3), 1)
    return out


def latency_series(profiles: Sequence[Profile], accuracy: Mapping[str, float]) -> Dict[str, List[Dict]]:
    """Rows for :func:`pareto_plot` of accuracy against measured latency, one series per profile (device):
    ``name``, ``latency_ms`` (median), ``latency_q1_ms``/``latency_q3_ms`` and ``top1`` = ``accuracy[name]``, for
    the descendants that have both."""
    series = {}
    for p in profiles:
        rows = [dict(name=n, latency_ms=r['median_ms'], latency_q1_ms=r['q1_ms'], latency_q3_ms=r['q3_ms'],
                     top1=accuracy[n]) for n, r in p.results.items() if n in accuracy]
        if rows:
            series[p.device.label] = rows
    return series


def descendant_rows(pool: LearngenePool, accuracies: Optional[Mapping[str, float]] = None,
                    speed: Optional[Mapping[str, Mapping[str, float]]] = None,
                    names: Optional[Sequence[str]] = None) -> List[Dict]:
    """One row per descendant (those in ``names``, default all): name, route, params, GMACs and whatever was
    measured: ``top1``/``top5`` from ``accuracies[name]``/``[name_top5]``, ``val_top1`` from ``[name_val]``
    (the validation split), latency_ms, latency_iqr_ms, img_s ... from ``speed`` (:func:`speed_columns`)."""
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


def draw_pareto(ax, series: Mapping[str, Sequence[Mapping]], title: str = '', x: str = 'gmacs', y: str = 'top1',
                xerr: Optional[Tuple[str, str]] = None, xlabel: Optional[str] = None) -> None:
    """:func:`pareto_plot` onto the matplotlib axes ``ax`` (one panel of a larger figure)."""
    for label, rows in series.items():
        rows = [r for r in rows if r.get(y) is not None]
        if not rows:
            continue
        pts = ax.scatter([r[x] for r in rows], [r[y] for r in rows], s=18, alpha=0.7, label=label)
        if xerr is not None:
            lo, hi = xerr
            ax.errorbar([r[x] for r in rows], [r[y] for r in rows], fmt='none', alpha=0.5, linewidth=0.8,
                        ecolor=pts.get_facecolor()[0],
                        xerr=[[r[x] - r[lo] for r in rows], [r[hi] - r[x] for r in rows]])
        for r in rows:  # which descendant each point is
            if r.get('name'):
                ax.annotate(str(r['name']), (r[x], r[y]), xytext=(3, 3), textcoords='offset points', fontsize=6,
                            alpha=0.8)
        front = pareto_front(rows, x, y)
        ax.plot([r[x] for r in front], [r[y] for r in front], color=pts.get_facecolor()[0], alpha=0.8)
    ax.set_xlabel(xlabel or ('GMACs per image' if x == 'gmacs' else x))
    ax.set_ylabel('top-1 (%)' if y == 'top1' else y)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def pareto_plot(series: Mapping[str, Sequence[Mapping]], path, title: str = '', x: str = 'gmacs',
                y: str = 'top1', xerr: Optional[Tuple[str, str]] = None, xlabel: Optional[str] = None) -> Path:
    """Top-1 against GMACs (or ``x``), one marker set per series (e.g. one per method or device), its Pareto front
    as a line; each point labelled with its row's ``name`` (the descendant). ``xerr``: the keys of each row's
    lower and upper bound of ``x`` (a measured spread), drawn as horizontal bars."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    draw_pareto(ax, series, title, x, y, xerr, xlabel)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
