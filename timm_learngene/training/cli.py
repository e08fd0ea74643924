"""Command-line entry for the recipes: a documented error (bad file, config or dataset, a non-finite loss) is
one ``error:`` line on stderr and exit status 2, not a traceback. ``TIMM_LEARNGENE_TRACEBACK=1`` shows the
traceback too. A run stopped by SIGTERM or SIGINT after writing its checkpoint
(:mod:`~timm_learngene.training.preemption`) prints one line saying how to continue and exits with status 75."""
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..errors import LearngeneError
from ..logs import setup_logging
from .loop import NonFiniteLossError
from .preemption import EXIT_PREEMPTED, Preempted

__all__ = ['run_cli', 'one_line', 'EXIT_BAD_INPUT', 'EXIT_PREEMPTED']

EXIT_BAD_INPUT = 2


def run_cli(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None) -> None:
    """Run ``main(argv)``; exits with status 2 and a one-line message on a :class:`LearngeneError`,
    :class:`NonFiniteLossError` or a missing config file. Logging gets its handler first
    (:func:`~timm_learngene.logs.setup_logging`), so the package's warnings and information show."""
    setup_logging()
    prog = Path(sys.argv[0]).name or 'timm_learngene'
    try:
        main(argv)
    except Preempted as e:  # every process stopped after the same step, the checkpoint is complete
        if _rank() == 0:
            print(f'{prog}: {e}', file=sys.stderr, flush=True)
        _end_process_group()
        sys.exit(EXIT_PREEMPTED)
    except (LearngeneError, NonFiniteLossError, FileNotFoundError) as e:
        if os.environ.get('TIMM_LEARNGENE_TRACEBACK'):
            raise
        if not getattr(e, 'all_ranks', False) or _rank() == 0:  # the same error on every rank: said once
            print(f'{prog}: error: {one_line(e)}', file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get('RANK', 0))


def _end_process_group() -> None:
    """A barrier, then the process group torn down (gloo can abort at interpreter exit otherwise)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def one_line(e: BaseException) -> str:
    """The message of ``e``; for an error re-raised by a DataLoader worker (whose message is the worker's whole
    traceback) only the original message, with the worker named."""
    text = str(e)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith('Caught ') and 'Original Traceback' in text:
        last = lines[-1]
        for prefix in (f'{type(e).__module__}.{type(e).__qualname__}: ', f'{type(e).__qualname__}: '):
            if last.startswith(prefix):
                last = last[len(prefix):]
                break
        where = lines[0][len('Caught '):].rstrip('.').split(' in ', 1)
        return f'{last} (in {where[1]})' if len(where) == 2 else last
    return text
