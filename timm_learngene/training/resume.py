"""Training-resume checkpoints: ``OUTPUT/checkpoints/step_N`` folders written during a run and read by
``--resume`` (not to be confused with the pool file, :mod:`timm_learngene.pool_reader`).

A checkpoint folder ``checkpoints/step_N`` exists only once it is complete: accelerate writes into
``checkpoints/.tmp_step_N``, every file and the folder are fsynced, then it is renamed into place and
``latest.json`` is replaced to name it. An old checkpoint is renamed back to ``.tmp_…`` before it is deleted. So
a run killed (or a machine losing power) at any instant leaves only complete ``step_*`` folders, and
``.tmp_*`` leftovers that the next save or resume removes.

accelerate saves the model, optimizer, data sampler and RNG states (read back with ``weights_only=True``); the
loop's own state (step, schedule, and any ``extra_state`` such as the route sampler) goes into
``train_state.json``, so resuming never unpickles anything (accelerate would read registered objects with
``weights_only=False``). A checkpoint that cannot be read back (a damaged file, another model) raises
:class:`~timm_learngene.errors.ResumeError` naming the folder, whatever torch, safetensors or the zip reader
raised underneath.
"""
import base64
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, List, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import RNG_STATE_NAME, load

from ..durable import atomic_write_text, fsync, fsync_tree, remove_paths
from ..errors import ResumeError
from ..logs import get_logger

__all__ = ['latest_checkpoint', 'save_checkpoint', 'load_checkpoint', 'load_train_state', 'check_process_count',
           'remove_leftovers',
           'complete_checkpoints', 'discard', 'trim_log', 'step_of', 'POINTER_NAME', 'STATE_NAME']

_logger = get_logger(__name__)

POINTER_NAME = 'latest.json'
STATE_NAME = 'train_state.json'
_TMP_PREFIX = '.tmp_'
_STEP_DIR = re.compile(r'step_(\d+)')


def latest_checkpoint(run_dir) -> Optional[Path]:
    """The last complete checkpoint of the run in ``run_dir``, or None if it has none.

    ``checkpoints/latest.json`` names it. If that file is missing, empty, not valid JSON or names a folder that
    is not there (a copy that lost it, a hand edit), the newest ``checkpoints/step_N`` folder is taken instead:
    such a folder only ever appears complete (see the module docstring). ``.tmp_*`` folders are never taken.
    """
    ckpt_dir = Path(run_dir) / 'checkpoints'
    pointer = ckpt_dir / POINTER_NAME
    problem = None
    if pointer.is_file():
        try:
            name = json.loads(pointer.read_text())['dir']
            if not isinstance(name, str) or not _STEP_DIR.fullmatch(name):
                problem = f'names {name!r}, not a step_N folder'
            elif not (ckpt_dir / name).is_dir():
                problem = f'names {name}, which is not there'
            else:
                return ckpt_dir / name
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
            problem = f'is unreadable ({type(e).__name__}: {e})'
    found = complete_checkpoints(ckpt_dir)
    if problem is not None:
        _logger.warning(f'{pointer} {problem}; ' +
                        (f'using the newest complete checkpoint {found[-1]}' if found else 'no checkpoint to use'))
    elif found:
        _logger.warning(f'{pointer} is missing; using the newest complete checkpoint {found[-1]}')
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, ckpt_dir: Path, step: int, keep: int,
                    stateful: Sequence[Any] = ()) -> Path:
    """``accelerator.save_state`` into ``.tmp_step_N``; every file and the folder fsynced; renamed to ``step_N``;
    then ``latest.json`` replaced (written and fsynced the same way) to name it. A run killed, or a machine that
    loses power, at any point leaves the previous checkpoint or this one, complete, never a half one that resume
    would pick up. Leftover ``.tmp_*`` folders of an earlier killed save are removed first. Keeps the newest
    ``keep`` checkpoints (all if ``keep <= 0``). ``stateful`` objects (``state_dict``/``load_state_dict``,
    the same on every process) are written to ``train_state.json`` in the same folder."""
    name = f'step_{step:08d}'
    final, tmp = ckpt_dir / name, ckpt_dir / f'{_TMP_PREFIX}{name}'
    if accelerator.is_main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(ckpt_dir)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_NAME).write_text(json.dumps([_encode(obj.state_dict()) for obj in stateful]))
        fsync_tree(tmp)  # the data is on disk before the name that says it is complete
        if final.exists():  # same step saved by a run killed before it moved latest.json
            discard(final)
        os.replace(tmp, final)
        fsync(ckpt_dir)
        atomic_write_text(ckpt_dir / POINTER_NAME, json.dumps({'dir': name, 'step': step}))
        done = complete_checkpoints(ckpt_dir)
        for old in done[:-keep] if keep > 0 else []:
            if old != final:
                discard(old)
    accelerator.wait_for_everyone()
    return final


def load_train_state(checkpoint: Path, stateful: Sequence[Any]) -> None:
    """Restore ``stateful`` objects from a checkpoint's ``train_state.json`` (plain JSON, never unpickled)."""
    file = Path(checkpoint) / STATE_NAME
    try:
        states = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ResumeError(f'{file} is missing or unreadable ({type(e).__name__}: {_short(e)}); the checkpoint '
                              f'{checkpoint} was not written by this version of timm_learngene, or it is damaged. '
                              f'{_WHAT_TO_DO}') from None
    if not isinstance(states, list) or len(states) != len(stateful):
        raise ResumeError(f'{file} holds {len(states) if isinstance(states, list) else "no"} states, the run '
                              f'expects {len(stateful)}; resume with the same recipe that wrote it')
    for i, (obj, st) in enumerate(zip(stateful, states)):
        try:
            obj.load_state_dict(_decode(st))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError, OverflowError,
                RecursionError) as e:
            raise ResumeError(f'{file}: state {i} ({type(obj).__name__}) is damaged ({type(e).__name__}: '
                                  f'{_short(e)}). {_WHAT_TO_DO}') from None


_WHAT_TO_DO = 'Delete that checkpoint folder to resume from an earlier one, or pass another --resume'


def _short(e: BaseException, limit: int = 300) -> str:
    text = str(e)
    return text if len(text) <= limit else text[:limit] + '…'


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, stateful: Sequence[Any]) -> None:
    """Load accelerate's files and ``train_state.json`` (``stateful[0]`` is fit's TrainState) from ``checkpoint``
    and check its step is the folder's. Whatever a damaged or foreign file makes torch, safetensors or the zip
    reader raise becomes a :class:`ResumeError` naming the folder. A checkpoint written by a run of another
    number of processes is refused first (:func:`check_process_count`)."""
    check_process_count(checkpoint, accelerator.num_processes)
    try:
        accelerator.load_state(str(checkpoint))
    except torch.cuda.OutOfMemoryError:  # not damage
        raise
    except Exception as e:  # UnpicklingError, RuntimeError (zip, shapes), EOFError, SafetensorError, KeyError, …
        raise ResumeError(
            f'cannot resume from {checkpoint}: accelerate could not load it ({type(e).__name__}: {_short(e)}). It '
            f'is damaged, or was written for another model or optimizer. {_WHAT_TO_DO}') from e
    _check_rng_restored(accelerator, checkpoint)
    load_train_state(checkpoint, stateful)
    step = step_of(checkpoint)
    state = stateful[0]  # fit's TrainState
    if state.step != step:
        raise ResumeError(f'{checkpoint / STATE_NAME} says step {state.step}, the folder is step {step}; the '
                              f'file is damaged or was copied from another checkpoint. {_WHAT_TO_DO}')


def check_process_count(checkpoint: Path, num_processes: int) -> None:
    """Refuse to resume ``checkpoint`` with ``num_processes`` processes when the run that wrote it had another
    number: the global batch (per-process batch x processes x accumulation), the data order and its sharding, and
    the per-process RNG states all depend on it, so the run would continue as another run, silently. Checkpoints
    from before the count was recorded are not checked (``train_state.json`` problems are reported later)."""
    try:
        saved = json.loads((Path(checkpoint) / STATE_NAME).read_text())[0].get('num_processes')
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return  # load_train_state reports a damaged file
    if isinstance(saved, int) and saved != num_processes:
        raise ResumeError(
            f'cannot resume from {checkpoint}: it was written by a run of {saved} process(es) and this run has '
            f'{num_processes}; the global batch, the data order and the random streams would all change. Resume '
            f'with {saved} process(es) (accelerate launch --num_processes {saved} ...), or start a new run without '
            f'--resume', all_ranks=True)


def _check_rng_restored(accelerator: Accelerator, checkpoint: Path) -> None:
    """accelerate logs and ignores a random-state file it cannot read, and the resumed run then draws other
    dropout, drop-path and mixup numbers than a straight run. Read the file back the same way (weights_only) and
    check the torch generator holds its state. A file missing for this process (a run resumed on more
    processes than wrote it) is only warned about: its data order and sharding differ anyway."""
    file = checkpoint / f'{RNG_STATE_NAME}_{accelerator.process_index}.pkl'
    if not file.is_file():
        _logger.warning(f'{file} is missing; random draws after the resume differ from an uninterrupted run')
        return
    try:
        restored = torch.equal(load(file, weights_only=True)['torch_manual_seed'], torch.get_rng_state())
    except Exception as e:  # the same errors accelerate swallowed
        raise ResumeError(f'cannot resume from {checkpoint}: {file.name} is unreadable ({type(e).__name__}: '
                              f'{_short(e)}). {_WHAT_TO_DO}') from e
    if not restored:
        raise ResumeError(f'cannot resume from {checkpoint}: the random state in {file.name} was not restored. '
                              f'{_WHAT_TO_DO}')


_DTYPES = {str(t).split('.')[-1]: t for t in (torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64)}


def _encode(obj):
    """JSON-ready copy of a state dict: tensors become ``{"__tensor__": dtype, "shape": …, "data": base64}``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        name = str(t.dtype).split('.')[-1]
        if name not in _DTYPES:
            raise TypeError(f'cannot save a {t.dtype} tensor in {STATE_NAME}')
        return {'__tensor__': name, 'shape': list(t.shape),
                'data': base64.b64encode(t.reshape(-1).view(torch.uint8).numpy().tobytes()).decode()}
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f'cannot save {type(obj).__name__} in {STATE_NAME}')


def _decode(obj):
    """Inverse of :func:`_encode`. Anything ``_encode`` would not have written raises ValueError, TypeError or
    KeyError. A tensor's stated shape must account for exactly its decoded bytes, so a damaged file can make this
    allocate no more than the file holds."""
    if isinstance(obj, dict) and '__tensor__' in obj:
        name, shape, data = obj['__tensor__'], obj['shape'], obj['data']
        dtype = _DTYPES.get(name) if isinstance(name, str) else None
        if dtype is None:
            raise ValueError(f'unknown tensor dtype {name!r}; expected one of {sorted(_DTYPES)}')
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f'tensor shape {shape!r} is not a list of sizes')
        if not isinstance(data, str):
            raise TypeError(f'tensor data is a {type(data).__name__}, not a base64 string')
        raw = bytearray(base64.b64decode(data, validate=True))
        if math.prod(shape) * dtype.itemsize != len(raw):
            raise ValueError(f'a {name} tensor of shape {shape} needs {math.prod(shape) * dtype.itemsize} bytes, '
                             f'the data holds {len(raw)}')
        if not raw:  # no elements
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(raw, dtype=dtype).reshape(shape).clone()
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def complete_checkpoints(ckpt_dir: Path) -> List[Path]:
    """The ``step_N`` folders under ``ckpt_dir``, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir()
             if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def discard(path: Path) -> None:
    """Delete a checkpoint folder by first renaming it to ``.tmp_…``: a kill during the delete leaves a leftover
    the next save removes, never a half ``step_N`` folder."""
    doomed = path.parent / f'{_TMP_PREFIX}del_{path.name}'
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_leftovers(ckpt_dir: Path) -> None:
    """Remove the ``.tmp_*`` folders and files a killed save or delete left under ``ckpt_dir``."""
    if not ckpt_dir.is_dir():
        return
    # .tmp_* checkpoint folders, and the temporary file of a killed latest.json replacement (durable.atomic_write)
    remove_paths(p for p in ckpt_dir.iterdir()
                 if p.name.startswith(_TMP_PREFIX) or (p.name.startswith(f'.{POINTER_NAME}.') and p.suffix == '.tmp'))


def trim_log(log_file: Path, step: int) -> None:
    """Drop the log records of steps after ``step`` (a killed run logged them; the resumed run redoes them) and
    any half-written line, so the log of a resumed run reads like one straight run."""
    if not log_file.is_file():
        return
    kept, dropped = [], 0
    for line in log_file.read_text().splitlines():
        try:
            rec = json.loads(line)
            if rec['step'] <= step:
                kept.append(line)
                continue
        except (ValueError, TypeError, KeyError):
            pass
        dropped += 1
    if dropped:
        tmp = log_file.with_name(f'.{log_file.name}.tmp')
        tmp.write_text(''.join(line + '\n' for line in kept))
        os.replace(tmp, log_file)


def step_of(checkpoint: Path) -> int:
    """The step of a ``step_N`` checkpoint folder."""
    return int(_STEP_DIR.fullmatch(Path(checkpoint).name).group(1))
