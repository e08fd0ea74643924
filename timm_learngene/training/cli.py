"""Command-line entry for the recipes: a documented error (bad file, config or dataset, a non-finite loss) is
one ``error:`` line on stderr and exit status 2, not a traceback. ``TIMM_LEARNGENE_TRACEBACK=1`` shows the
traceback too."""
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import LearngeneError
from ..logs import setup_logging
from .loop import NonFiniteLossError

__all__ = ['run_cli', 'one_line', 'EXIT_BAD_INPUT']

EXIT_BAD_INPUT = 2


def run_cli(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None) -> None:
    """Run ``main(argv)``; exits with status 2 and a one-line message on a :class:`LearngeneError`,
    :class:`NonFiniteLossError` or a missing config file. Logging gets its handler first
    (:func:`~timm_learngene.logs.setup_logging`), so the package's warnings and information show."""
    setup_logging()
    try:
        main(argv)
    except (LearngeneError, NonFiniteLossError, FileNotFoundError) as e:
        if os.environ.get('TIMM_LEARNGENE_TRACEBACK'):
            raise
        prog = Path(sys.argv[0]).name or 'timm_learngene'
        print(f'{prog}: error: {one_line(e)}', file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


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
