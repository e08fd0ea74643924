"""The signals a training run treats as "stop after this step with a checkpoint" (preemption: what Slurm and
Kubernetes send before a kill, and Ctrl-C), and the DataLoader worker side of that.

A signal sent to the whole process group (Ctrl-C, Slurm's ``scancel``) reaches the loader's worker processes too;
killed, they would fail the step the training process is finishing. So while a training loop is handling the
signals (:func:`training_handles_signals`, set by :class:`~timm_learngene.training.preemption.StopSignals`), a
worker ignores them; at any other time (the run is over, the loader is being shut down and its workers terminated)
a worker stops on SIGTERM as usual. The flag is shared with workers started by ``fork`` (Linux); workers started by
``spawn`` see it unset and keep the default behaviour.
"""
import multiprocessing
import os
import signal

__all__ = ['STOP_SIGNALS', 'ignore_stop_signals', 'training_handles_signals']

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_TRAINING = multiprocessing.RawValue('b', 0)  # 1 while a training loop handles the stop signals


def training_handles_signals(on: bool) -> None:
    """Say whether a training loop is handling SIGTERM / SIGINT now (loader workers then ignore them)."""
    _TRAINING.value = 1 if on else 0


def _worker_stop(signum, frame) -> None:
    if _TRAINING.value:
        return  # the training process stops after its step and shuts the loader down itself
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def ignore_stop_signals(*_) -> None:
    """``worker_init_fn``: a DataLoader worker ignores SIGINT (Ctrl-C reaches the whole foreground group; the
    training process handles it) and ignores SIGTERM while a training loop handles it; otherwise SIGTERM stops it,
    as a loader shutting down its workers expects."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_stop)
