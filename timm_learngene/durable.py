"""Durable file writes, used by the pool folder (``checkpoint.save_pool``) and the training-resume checkpoints
(``training.resume``): data is fsynced before the rename that makes it visible, so a crash or a power loss leaves
the old file or the new one, never half of one.

Folders are fsynced too (a folder holds its files' names), except on Windows, which cannot open a folder (NTFS
journals renames), and on filesystems that refuse (some network and FUSE ones; the rename is still atomic).
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Union

__all__ = ['fsync', 'fsync_tree', 'atomic_write', 'atomic_write_text', 'remove_paths']

PathLike = Union[str, Path]


def fsync(path: PathLike) -> None:
    """Flush a file, or a folder's entries, to disk."""
    is_dir = os.path.isdir(path)
    if is_dir and os.name == 'nt':
        return
    fd = os.open(path, os.O_RDONLY | (getattr(os, 'O_DIRECTORY', 0) if is_dir else 0))
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: PathLike) -> None:
    """fsync every file under ``root``, then every folder, deepest first."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync(os.path.join(folder, name))
        fsync(folder)


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a temporary file next to ``path`` (named ``.NAME.*.tmp``), fsync it, give it the mode a
    plain ``open()`` would, rename it over ``path`` and fsync the folder. On any error the temporary file is
    removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        fsync(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync(path.parent)


def atomic_write_text(path: PathLike, text: str) -> None:
    """:func:`atomic_write` of a text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def remove_paths(paths: Iterable[PathLike]) -> None:
    """Remove files and folders (leftovers of a killed write); a symlink is removed, never followed."""
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
