"""Logging: accelerate's multi-process logger, and the handler the command lines install.

:func:`get_logger` is ``accelerate.logging.get_logger``: a message is logged once, by the main process, unless
``main_process_only=False``. Two differences, both so that library code can log anywhere: before any
``Accelerator``/``PartialState`` exists the launcher's ``RANK`` says which process is the main one (accelerate's
own adapter raises there), and the ``[RANK n]`` prefix is only added when there are several processes.

:func:`setup_logging` gives the package's loggers a handler (INFO and above; ``LOG_LEVEL``/``ACCELERATE_LOG_LEVEL``
change it) that writes through ``tqdm.write``, so a message never tears a progress bar. The recipes' and the push
command line's entry points call it; a program that configured logging itself keeps its own configuration.
"""
import logging
import os
import sys

from accelerate.logging import MultiProcessAdapter
from accelerate.state import PartialState

__all__ = ['get_logger', 'setup_logging', 'PACKAGE_LOGGER']

PACKAGE_LOGGER = 'timm_learngene'


class _Adapter(MultiProcessAdapter):
    def log(self, level, msg, *args, **kwargs):
        if PartialState._shared_state == {}:
            main_process_only = kwargs.pop('main_process_only', True)
            kwargs.pop('in_order', None)
            if self.isEnabledFor(level) and (not main_process_only or int(os.environ.get('RANK', '0') or 0) == 0):
                kwargs.setdefault('stacklevel', 2)
                self.logger.log(level, msg, *args, **kwargs)
            return
        super().log(level, msg, *args, **kwargs)

    def process(self, msg, kwargs):
        kwargs.setdefault('stacklevel', 2)
        if PartialState().num_processes > 1:
            msg = f'[RANK {PartialState().process_index}] {msg}'
        return msg, kwargs


def get_logger(name: str) -> logging.LoggerAdapter:
    """accelerate's logger for ``name`` (see the module doc): ``logger.warning(...)`` logs once, on the main
    process; ``main_process_only=False`` logs on every process."""
    return _Adapter(logging.getLogger(name), {})


class _TqdmHandler(logging.Handler):
    """Writes each record with ``tqdm.write`` to the current ``sys.stderr``, above any progress bar."""

    def emit(self, record):
        try:
            from tqdm.auto import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record):
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f'{record.levelname.lower()}: {text}'


def setup_logging(level=None) -> None:
    """Give the ``timm_learngene`` loggers a handler (once; none when the root logger already has one, so an
    application's own configuration wins). ``level`` default: ``LOG_LEVEL`` or ``ACCELERATE_LOG_LEVEL``, else
    INFO. Warnings read ``warning: ...``, information is the message alone."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    level = level or os.environ.get('LOG_LEVEL') or os.environ.get('ACCELERATE_LOG_LEVEL') or 'INFO'
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    if logging.getLogger().handlers or any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        return
    handler = _TqdmHandler()
    handler.setFormatter(_Formatter('%(message)s'))
    logger.addHandler(handler)
