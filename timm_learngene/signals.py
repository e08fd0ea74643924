"""The signals a training run treats as "stop after this step with a checkpoint" (preemption: what Slurm and
Kubernetes send before a kill, and Ctrl-C), and the DataLoader worker side of that: workers ignore them, since the
training process handles them (:mod:`timm_learngene.training.preemption`)."""
import signal

__all__ = ['STOP_SIGNALS', 'ignore_stop_signals']

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def ignore_stop_signals(*_) -> None:
    """``worker_init_fn``: a DataLoader worker ignores SIGTERM and SIGINT (its process stops it)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
