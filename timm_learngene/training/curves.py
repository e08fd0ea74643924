"""The loss and learning-rate curves of a training log (``log.jsonl``) as a PNG next to it."""
import json
from pathlib import Path
from typing import Optional

__all__ = ['plot_log', 'CURVES_NAME']

CURVES_NAME = 'curves.png'


def plot_log(log_file, path=None) -> Optional[Path]:
    """Plot every loss term (left) and the learning rate (right) of ``log_file`` against the optimizer step, with the
    evaluation top-1 on the loss axis's twin when logged; written to ``path`` (default ``curves.png`` beside the
    log). Returns the path, or None when the log holds no training record."""
    log_file = Path(log_file)
    records = []
    for line in (log_file.read_text().splitlines() if log_file.is_file() else []):
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a killed run: the curves skip it
            continue
    train = [r for r in records if 'eval' not in r and 'lr' in r]
    if not train:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    path = Path(path) if path is not None else log_file.with_name(CURVES_NAME)
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=110)
    steps = [r['step'] for r in train]
    terms = [k for k in train[-1] if k not in ('step', 'epoch', 'lr', 'data_wait') and not k.startswith('route:')]
    for k in terms:
        loss_ax.plot(steps, [r.get(k, float('nan')) for r in train], label=k, linewidth=1)
    loss_ax.set_xlabel('optimizer step')
    loss_ax.set_ylabel('loss')
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7)
    evals = [r for r in records if isinstance(r.get('eval'), dict) and r['eval']]
    if evals:
        key = next(iter(evals[-1]['eval']))
        twin = loss_ax.twinx()
        twin.plot([r['step'] for r in evals], [r['eval'].get(key, float('nan')) for r in evals], 'k.--',
                  label=f'eval {key}')
        twin.set_ylabel(f'eval {key}')
    lr_ax.plot(steps, [r['lr'] for r in train], color='tab:orange')
    lr_ax.set_xlabel('optimizer step')
    lr_ax.set_ylabel('learning rate')
    lr_ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
