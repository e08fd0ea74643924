"""Preemption: SIGTERM (what Slurm and Kubernetes send before they kill a job) or SIGINT during training stops the
run at the next optimizer-step boundary with a complete checkpoint, on every process at the same step.

The handler only records the signal; the training loop asks :meth:`StopSignals.agreed` once per optimizer step,
which on several processes gathers every process's signal (one tiny all-gather), so a signal that reached one
rank only, or the ranks at different steps, still stops them all after the same step. The loop then writes its
checkpoint and raises :class:`Preempted`; the recipes' command line (:func:`~timm_learngene.training.cli.run_cli`)
turns that into one line naming the checkpoint and exit status :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``: try
again), and ``--resume OUTPUT`` continues exactly where the run stopped. A second SIGINT (Ctrl-C twice) raises
:class:`KeyboardInterrupt` at once, without a checkpoint. DataLoader workers ignore both signals while
the loop handles them (:mod:`timm_learngene.signals`), so a signal sent to the whole process group does not kill
the loader under the step the loop is finishing.
"""
import signal
import sys
import threading
from typing import Optional

import torch

from ..signals import STOP_SIGNALS, ignore_stop_signals, training_handles_signals  # noqa: F401  (re-exported)

__all__ = ['StopSignals', 'Preempted', 'EXIT_PREEMPTED', 'ignore_stop_signals']

EXIT_PREEMPTED = 75


class Preempted(Exception):
    """The run stopped on a signal after writing the checkpoint of step ``step`` (``checkpoint``)."""

    def __init__(self, signame: str, step: int, checkpoint, output):
        self.signame, self.step, self.checkpoint, self.output = signame, step, checkpoint, output
        super().__init__(f'stopped by {signame} after step {step}; checkpoint {checkpoint} written; continue with '
                         f'--resume {output}')


class StopSignals:
    """Context manager: while inside, SIGTERM and SIGINT set :attr:`received` (the signal's name) instead of ending
    the process; the previous handlers are restored on exit. Installs nothing outside the main thread (Python only
    delivers signals there)."""

    def __init__(self):
        self.received: Optional[str] = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            training_handles_signals(True)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._previous:
            training_handles_signals(False)
        self._previous.clear()
        return False

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.received is None:
            print(f'received {name}: stopping after this optimizer step with a checkpoint (Ctrl-C again to stop at '
                  f'once)', file=sys.stderr, flush=True)
        self.received = self.received or name

    def agreed(self, accelerator) -> Optional[str]:
        """The signal that stops the run after this step, or None. Every process must call it at the same step:
        with several processes every process's signal is gathered and the first process's that got one is the
        answer, the same on all of them."""
        if accelerator.num_processes == 1:
            return self.received
        mine = signal.Signals[self.received].value if self.received else 0
        got = [int(s) for s in accelerator.gather(torch.tensor([mine], device=accelerator.device)).tolist() if s]
        return signal.Signals(got[0]).name if got else None

