"""Run a recipe's ``main(argv)`` and SIGKILL this process in the middle of writing a chosen file.

    python tests/crash_wrapper.py distill 'checkpoints/.tmp_step_00000003/optimizer.bin' -- --output OUT ...

The pattern (fnmatch, matched against the file's path relative to ``--output``) picks the write. The real
writer runs, the file is cut to half its size (what a kill during the write leaves behind) and the process
kills itself with SIGKILL: no ``finally``, no ``atexit``, no flushed buffers. The fault is injected by patching
the writers the recipe reaches (``torch.save``, safetensors' ``save_file`` as bound in accelerate and in
``timm_learngene.pool_writer``), so production code carries no test hook. Exits with status 3 if no write matched.
"""
import fnmatch
import importlib
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _crashing(real, output: str, pattern: str):
    def write(obj, f, *args, **kwargs):
        result = real(obj, f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)):
            rel = os.path.relpath(os.path.abspath(f), output)
            if fnmatch.fnmatch(rel, pattern):
                os.truncate(f, os.path.getsize(f) // 2)
                print(f'crash_wrapper: killing {os.getpid()} while writing {rel}', flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return result
    return write


def main(argv):
    if len(argv) < 3 or argv[2] != '--':
        raise SystemExit('usage: crash_wrapper.py RECIPE PATTERN -- RECIPE_ARGS...')
    recipe, pattern, args = argv[0], argv[1], argv[3:]
    output = os.path.abspath(args[args.index('--output') + 1])

    import accelerate.utils.other
    import safetensors.torch
    import torch
    import timm_learngene.pool_writer

    torch.save = _crashing(torch.save, output, pattern)
    for module in (safetensors.torch, accelerate.utils.other, timm_learngene.pool_writer):
        for name in ('save_file', 'safe_save_file'):
            if hasattr(module, name):
                setattr(module, name, _crashing(getattr(module, name), output, pattern))

    module = importlib.import_module(f'timm_learngene.recipes.{recipe}')
    module.main(args)
    print(f'crash_wrapper: no write matched {pattern!r}', flush=True)
    sys.exit(3)


if __name__ == '__main__':
    main(sys.argv[1:])
