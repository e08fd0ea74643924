"""What a run shows while it trains: a tqdm bar on a terminal, plain lines elsewhere, and accelerate's trackers.

``--progress auto`` (the default) draws a bar when stdout and stderr are both terminals; otherwise (CI, a batch
scheduler's log file, ``> log.txt``) it prints one plain line every ``--log-every`` optimizer steps, with loss, lr,
images per second and the ETA, instead of a bar's carriage returns. Evaluation lines go through ``tqdm.write``, above
the bar. ``--log-with tensorboard`` (or any accelerate tracker) logs the same numbers to the tracker, under
``OUTPUT/trackers``.
"""
import json
import sys
import time
from typing import Dict, Iterable, List, Mapping, Optional

from ..errors import ConfigError

__all__ = ['PROGRESS_CHOICES', 'TRACKERS', 'Progress', 'check_trackers', 'format_seconds', 'progress_mode',
           'tracker_config']

PROGRESS_CHOICES = ('auto', 'bar', 'lines', 'none')
# accelerate's tracker names (accelerate.utils.LoggerType); 'all' is every one installed
TRACKERS = ('all', 'tensorboard', 'wandb', 'trackio', 'comet_ml', 'aim', 'mlflow', 'clearml', 'dvclive', 'swanlab')
_EXTRA = {'tensorboard': "pip install 'timm-learngene[tensorboard]'"}


def check_trackers(names: Iterable[str]) -> List[str]:
    """``names`` if every one is an accelerate tracker that is installed; ConfigError naming what to install
    otherwise (accelerate itself only drops an unavailable tracker with a debug message)."""
    names = list(names)
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f'--log-with: unknown tracker(s) {unknown}; accelerate has {", ".join(TRACKERS)}')
    from accelerate.tracking import get_available_trackers
    available = {str(getattr(t, 'value', t)) for t in get_available_trackers()}
    missing = [n for n in names if n != 'all' and n not in available]
    if missing:
        how = '; '.join(_EXTRA.get(n, f'pip install {n}') for n in missing)
        raise ConfigError(f'--log-with {",".join(missing)}: not installed ({how}), or drop it from --log-with')
    return names


def tracker_config(cfg) -> Dict[str, object]:
    """The run's options as tracker hyperparameters: numbers, strings and booleans as they are, anything else as
    JSON text (TensorBoard's hparams take scalars only)."""
    out = {}
    for k, v in vars(cfg).items():
        out[k] = v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)
    return out


def progress_mode(requested: str = 'auto') -> str:
    """``bar``, ``lines`` or ``none``: ``auto`` is a bar when stdout and stderr are terminals, else lines."""
    if requested not in PROGRESS_CHOICES:
        raise ConfigError(f'--progress must be one of {", ".join(PROGRESS_CHOICES)}, got {requested!r}')
    if requested != 'auto':
        return requested
    ttys = all(getattr(s, 'isatty', lambda: False)() for s in (sys.stdout, sys.stderr))
    return 'bar' if ttys else 'lines'


def format_seconds(s: float) -> str:
    """``s`` seconds as ``M:SS`` or ``H:MM:SS``."""
    s = int(round(max(0.0, s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f'{h}:{m:02d}:{sec:02d}' if h else f'{m}:{sec:02d}'


class Progress:
    """Progress of ``total`` steps starting at ``initial``, shown on the main process only (``enabled``).

    :meth:`step` after every optimizer step (``losses``: the step's numbers, ``lr``), :meth:`write` for a line
    (an evaluation result), :meth:`close` at the end. ``mode`` as :func:`progress_mode` returns; ``every``: a line
    every N steps in ``lines`` mode (and at the last step)."""

    def __init__(self, total: int, initial: int = 0, desc: str = 'train', mode: str = 'auto', every: int = 20,
                 enabled: bool = True, unit: str = 'step'):
        self.total, self.desc, self.every, self.unit = total, desc, max(1, every), unit
        self.enabled = enabled
        self.mode = progress_mode(mode) if enabled else 'none'
        self.done = self._start_step = initial
        self._t0 = time.perf_counter()
        self.bar = None
        if self.mode == 'bar':
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, smoothing=0.1, unit=unit)

    def eta(self) -> Optional[float]:
        """Seconds left at this run's pace so far, None before the first step."""
        steps = self.done - self._start_step
        if steps <= 0:
            return None
        return (time.perf_counter() - self._t0) / steps * (self.total - self.done)

    def step(self, n: int = 1, postfix: Optional[Mapping[str, str]] = None) -> None:
        self.done += n
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
        elif self.mode == 'lines' and (self.done % self.every == 0 or self.done >= self.total):
            parts = [f'{self.desc} {self.unit} {self.done}/{self.total} ({100 * self.done / max(1, self.total):.0f}%)']
            parts += [f'{k} {v}' for k, v in (postfix or {}).items()]
            eta = self.eta()
            parts.append(f'elapsed {format_seconds(time.perf_counter() - self._t0)}')
            if eta is not None and self.done < self.total:
                parts.append(f'eta {format_seconds(eta)}')
            self.write(', '.join(parts))

    def write(self, line: str) -> None:
        """``line`` on stdout above the bar (main process only; also in ``none`` mode)."""
        if not self.enabled:
            return
        from tqdm.auto import tqdm
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
