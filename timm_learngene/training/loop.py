"""The training loop shared by every recipe (ancestry, distillation, finetuning, baselines).

accelerate does the device, data-parallel and mixed-precision work; this module adds what every recipe needs
around it: AdamW + cosine with warm-up stepped per optimizer step, gradient accumulation, checkpoints every N
steps with exact resume (data order, RNG, optimizer, schedule), a tqdm bar on the main process, a JSON-lines log,
per-epoch evaluation, a stop with a clear error on a non-finite loss or gradient, and a clean distributed exit.

A checkpoint folder ``checkpoints/step_N`` exists only once it is complete: accelerate writes into
``checkpoints/.tmp_step_N``, every file and the folder are fsynced, then it is renamed into place and
``latest.json`` is replaced to name it. An old checkpoint is renamed back to ``.tmp_…`` before it is deleted. So
a run killed (or a machine losing power) at any instant leaves only complete ``step_*`` folders, and
``.tmp_*`` leftovers that the next save or resume removes.

accelerate saves the model, optimizer, data sampler and RNG states (read back with ``weights_only=True``); the
loop's own state (step, schedule, and any ``extra_state`` such as the route sampler) goes into
``train_state.json``, so resuming never unpickles anything (accelerate would read registered objects with
``weights_only=False``). A checkpoint that cannot be read back (a damaged file, another model) raises
:class:`~timm_learngene.errors.CheckpointError` naming the folder, whatever torch, safetensors or the zip reader
raised underneath.
"""
import base64
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration

from ..errors import CheckpointError

__all__ = ['make_accelerator', 'make_optimizer', 'cosine_schedule', 'fit', 'finish', 'TrainState',
           'NonFiniteLossError', 'save_checkpoint', 'latest_checkpoint', 'load_train_state']

_logger = logging.getLogger(__name__)

POINTER_NAME = 'latest.json'
STATE_NAME = 'train_state.json'
_TMP_PREFIX = '.tmp_'
_STEP_DIR = re.compile(r'step_(\d+)')


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradient norm became NaN or infinite; the run stops before the optimizer step that
    would spread it into the weights (and from there into the next checkpoint)."""


class TrainState:
    """Optimizer steps taken; saved in every checkpoint so a resumed run continues at the same step."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {'step': self.step}

    def load_state_dict(self, d):
        step = d['step']
        if type(step) is not int or step < 0:
            raise ValueError(f'step {step!r} is not a step count')
        self.step = step


def make_accelerator(cfg, find_unused_parameters: bool = False) -> Accelerator:
    """An Accelerator for ``cfg.output`` with a seedable sampler (data order is a function of seed and epoch).
    ``find_unused_parameters`` for models that run a different subset of parameters each step (descendants)."""
    project = ProjectConfiguration(project_dir=str(cfg.output))
    return Accelerator(
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
        cpu=cfg.cpu or not torch.cuda.is_available(),
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        project_config=project,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )


def make_optimizer(named_params: Iterable, lr: float, weight_decay: float, no_decay: Iterable[str] = ()):
    """AdamW; biases, norms (1-d tensors) and the names in ``no_decay`` get no weight decay."""
    skip = set(no_decay)
    decay, rest = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (rest if p.ndim <= 1 or name in skip or name.endswith(tuple('.' + s for s in skip)) else decay).append(p)
    return torch.optim.AdamW([{'params': decay, 'weight_decay': weight_decay},
                              {'params': rest, 'weight_decay': 0.0}], lr=lr)


def cosine_schedule(optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.01):
    """Linear warm-up to the base lr, then cosine down to ``min_ratio`` of it; stepped once per optimizer step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _check_finite(losses: Dict[str, torch.Tensor], step: int, kept: Optional[Path],
                  accelerator: Optional[Accelerator] = None) -> None:
    """Raise :class:`NonFiniteLossError` naming every non-finite term; ``step`` is the 0-based index of the
    optimizer step being computed (``loss_fn``'s ``step``), ``kept`` the checkpoint a resume would load.

    With several processes the verdict is shared (one small all-reduce), so every process stops at the same
    step instead of the others waiting in the gradient all-reduce for one that has already raised."""
    ok = torch.stack([torch.isfinite(v.detach()).all() for v in losses.values()])
    where = _kept(kept)
    if accelerator is not None and accelerator.num_processes > 1:
        flags = torch.zeros(accelerator.num_processes, device=ok.device)
        flags[accelerator.process_index] = (~ok).any().float()
        flags = accelerator.reduce(flags, reduction='sum').tolist()  # the step's one host sync for this check
        if not any(flags):
            return
        others = [i for i, f in enumerate(flags) if f and i != accelerator.process_index]
        if not flags[accelerator.process_index]:
            raise NonFiniteLossError(
                f'a loss became non-finite on process{"es" if len(others) > 1 else ""} {others} at step index '
                f'{step}; every process stops and {where}. See that process\'s error for the term')
    elif bool(ok.all()):  # one host sync for all terms
        return
    bad = []
    for (k, v), good in zip(losses.items(), ok.tolist()):
        if not good:
            v = v.detach()
            bad.append(f'{k!r} = {v.item()}' if v.numel() == 1 else f'{k!r} (non-finite entries)')
    if bad:
        raise NonFiniteLossError(
            f'loss term{"s" if len(bad) > 1 else ""} {", ".join(bad)} at step index {step} (after {step} completed '
            f'optimizer steps); the run stops before the optimizer step and {where}. Lower the learning rate or '
            f'use --mixed-precision no, then continue with --resume')


def _check_finite_grads(model: torch.nn.Module, norm: Optional[torch.Tensor], step: int, kept: Optional[Path],
                        accelerator: Accelerator) -> None:
    """Raise :class:`NonFiniteLossError` if the gradient norm is NaN or infinite (a finite loss can still have
    such gradients); ``norm`` is what ``clip_grad_norm_`` returned, or None to compute it here.

    Called on a sync step after ``backward``: DDP has all-reduced the gradients by then, so every process sees the
    same norm and stops at the same step without a collective. With fp16 the GradScaler already skips a step
    whose gradients overflow (and lowers its scale), so nothing is checked there."""
    if accelerator.scaler is not None:
        return
    if norm is None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        total_norm = getattr(torch.nn.utils, 'get_total_norm', None)  # torch >= 2.6
        norm = total_norm(grads) if total_norm is not None else \
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads]))
    if not torch.isfinite(norm):
        raise NonFiniteLossError(
            f'gradient norm = {norm.item()} at step index {step} (after {step} completed optimizer steps), with '
            f'finite loss terms; the run stops before the optimizer step and {_kept(kept)}. Lower the learning '
            f'rate or use --mixed-precision no, then continue with --resume')


def _kept(kept: Optional[Path]) -> str:
    return f'the last checkpoint {kept} is kept' if kept is not None else 'no checkpoint was saved yet'


def fit(cfg, accelerator: Accelerator, model: torch.nn.Module, train_loader, loss_fn: Callable,
        optimizer, scheduler, total_steps: int, evaluate: Optional[Callable] = None,
        mixup: Optional[Callable] = None, extra_state: Iterable = (), desc: str = 'train') -> TrainState:
    """Run ``total_steps`` optimizer steps of ``loss_fn(model, x, y, step) -> {'total': …, …}``.

    ``model``, ``optimizer`` and ``train_loader`` must already be prepared. ``scheduler`` is stepped here once
    per optimizer step (not prepared, so its schedule counts optimizer steps on any number of processes).
    With ``cfg.resume`` the latest checkpoint under ``cfg.resume/checkpoints`` is loaded first (resuming a run
    in its own folder also drops the log records and checkpoints a killed run left after that step, since those
    steps are redone); with ``cfg.stop_after`` the run checkpoints and returns after that many steps (for
    time-limited jobs). ``evaluate(epoch) -> dict`` runs at the end of every epoch and of the run.

    A resume is bit-exact when ``train_loader`` was built with its own ``generator``: a DataLoader without one
    draws each iterator's seed from the global torch RNG, and a run resumed mid-epoch starts one iterator more
    than an uninterrupted run did.
    """
    state = TrainState()
    stateful = [state, scheduler, *extra_state]  # saved as JSON next to accelerate's files
    ckpt_dir = Path(cfg.output) / 'checkpoints'
    log_file = Path(cfg.output) / 'log.jsonl'
    if accelerator.is_main_process:
        Path(cfg.output).mkdir(parents=True, exist_ok=True)
    kept = None
    if cfg.resume:
        kept = latest_checkpoint(cfg.resume)
        if kept is None:
            accelerator.print(f'no complete checkpoint under {cfg.resume}/checkpoints; starting from step 0')
        else:
            _load_checkpoint(accelerator, kept, stateful)
            accelerator.print(f'resumed from {kept} at step {state.step}')
        accelerator.wait_for_everyone()  # every process has read the checkpoint before a folder is touched
        if accelerator.is_main_process:
            _remove_leftovers(ckpt_dir)
            if Path(cfg.resume).resolve() == Path(cfg.output).resolve():
                # what a killed run logged or saved after the resume point belongs to steps that are redone
                _trim_log(log_file, state.step)
                for later in _complete_checkpoints(ckpt_dir):
                    if int(_STEP_DIR.fullmatch(later.name).group(1)) > state.step:
                        _discard(later)
        accelerator.wait_for_everyone()
    steps_per_epoch = max(1, len(train_loader) // cfg.grad_accum)
    bar = None
    if accelerator.is_main_process:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=state.step, desc=desc, dynamic_ncols=True, smoothing=0.1)
    t0, seen = time.perf_counter(), 0
    while state.step < total_steps:
        epoch = state.step // steps_per_epoch
        train_loader.set_epoch(epoch)
        skip = (state.step % steps_per_epoch) * cfg.grad_accum
        if skip and getattr(train_loader, 'generator', None) is None:
            _logger.warning('the training DataLoader has no generator, so the iterator a mid-epoch resume starts '
                            'draws its seed from the global torch RNG and dropout, drop-path and mixup then draw '
                            'other numbers than an uninterrupted run; build it with generator=torch.Generator()'
                            '.manual_seed(seed), as timm_learngene.data does')
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        model.train()
        for x, y in loader:
            if mixup is not None:
                x, y = mixup(x, y)
            with accelerator.accumulate(model):
                losses = loss_fn(model, x, y, state.step)
                _check_finite(losses, state.step, kept, accelerator)
                accelerator.backward(losses['total'])
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(model.parameters(), cfg.clip_grad) if cfg.clip_grad else None
                    _check_finite_grads(model, norm, state.step, kept, accelerator)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            seen += x.shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.step += 1
            if bar is not None:
                rate = seen / max(1e-9, time.perf_counter() - t0)
                bar.set_postfix(loss=f"{losses['total'].item():.3f}", img_s=f'{rate:.0f}', refresh=False)
                bar.update(1)
            if accelerator.is_main_process and (state.step % cfg.log_every == 0 or state.step == total_steps):
                rec = {'step': state.step, 'epoch': epoch, 'lr': scheduler.get_last_lr()[0]}
                rec.update({k: float(v.detach()) for k, v in losses.items()})
                with open(log_file, 'a') as f:
                    f.write(json.dumps(rec) + '\n')
            stopping = bool(cfg.stop_after) and state.step >= cfg.stop_after
            if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0) or stopping:
                kept = save_checkpoint(accelerator, ckpt_dir, state.step, cfg.keep_checkpoints, stateful)
            if state.step >= total_steps or stopping:
                break
        if cfg.stop_after and state.step >= cfg.stop_after and state.step < total_steps:
            accelerator.print(f'stopped at step {state.step} (--stop-after); continue with --resume {cfg.output}')
            break
        end_of_epoch = state.step % steps_per_epoch == 0 or state.step >= total_steps
        if evaluate is not None and end_of_epoch:
            metrics = evaluate(epoch)
            if accelerator.is_main_process and metrics:
                accelerator.print(f'epoch {epoch} step {state.step}: ' +
                                  ', '.join(f'{k} {v:.2f}' for k, v in metrics.items()))
                with open(log_file, 'a') as f:
                    f.write(json.dumps({'step': state.step, 'epoch': epoch, 'eval': metrics}) + '\n')
    if bar is not None:
        bar.close()
    return state


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
    found = _complete_checkpoints(ckpt_dir)
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
        _remove_leftovers(ckpt_dir)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_NAME).write_text(json.dumps([_encode(obj.state_dict()) for obj in stateful]))
        _fsync_tree(tmp)  # the data is on disk before the name that says it is complete
        if final.exists():  # same step saved by a run killed before it moved latest.json
            _discard(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
        pointer_tmp = ckpt_dir / f'{_TMP_PREFIX}{POINTER_NAME}'
        with open(pointer_tmp, 'w') as f:
            f.write(json.dumps({'dir': name, 'step': step}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer_tmp, ckpt_dir / POINTER_NAME)
        _fsync_dir(ckpt_dir)
        done = _complete_checkpoints(ckpt_dir)
        for old in done[:-keep] if keep > 0 else []:
            if old != final:
                _discard(old)
    accelerator.wait_for_everyone()
    return final


def load_train_state(checkpoint: Path, stateful: Sequence[Any]) -> None:
    """Restore ``stateful`` objects from a checkpoint's ``train_state.json`` (plain JSON, never unpickled)."""
    file = Path(checkpoint) / STATE_NAME
    try:
        states = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f'{file} is missing or unreadable ({type(e).__name__}: {_short(e)}); the checkpoint '
                              f'{checkpoint} was not written by this version of timm_learngene, or it is damaged. '
                              f'{_WHAT_TO_DO}') from None
    if not isinstance(states, list) or len(states) != len(stateful):
        raise CheckpointError(f'{file} holds {len(states) if isinstance(states, list) else "no"} states, the run '
                              f'expects {len(stateful)}; resume with the same recipe that wrote it')
    for i, (obj, st) in enumerate(zip(stateful, states)):
        try:
            obj.load_state_dict(_decode(st))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError, OverflowError,
                RecursionError) as e:
            raise CheckpointError(f'{file}: state {i} ({type(obj).__name__}) is damaged ({type(e).__name__}: '
                                  f'{_short(e)}). {_WHAT_TO_DO}') from None


_WHAT_TO_DO = 'Delete that checkpoint folder to resume from an earlier one, or pass another --resume'


def _short(e: BaseException, limit: int = 300) -> str:
    text = str(e)
    return text if len(text) <= limit else text[:limit] + '…'


def _load_checkpoint(accelerator: Accelerator, checkpoint: Path, stateful: Sequence[Any]) -> None:
    """Load accelerate's files and ``train_state.json`` (``stateful[0]`` is fit's TrainState) from ``checkpoint``
    and check its step is the folder's. Whatever a damaged or foreign file makes torch, safetensors or the zip
    reader raise becomes a :class:`CheckpointError` naming the folder."""
    try:
        accelerator.load_state(str(checkpoint))
    except torch.cuda.OutOfMemoryError:  # not damage
        raise
    except Exception as e:  # UnpicklingError, RuntimeError (zip, shapes), EOFError, SafetensorError, KeyError, …
        raise CheckpointError(
            f'cannot resume from {checkpoint}: accelerate could not load it ({type(e).__name__}: {_short(e)}). It '
            f'is damaged, or was written for another model or optimizer. {_WHAT_TO_DO}') from e
    _check_rng_restored(accelerator, checkpoint)
    load_train_state(checkpoint, stateful)
    step = int(_STEP_DIR.fullmatch(checkpoint.name).group(1))
    state = stateful[0]  # fit's TrainState
    if state.step != step:
        raise CheckpointError(f'{checkpoint / STATE_NAME} says step {state.step}, the folder is step {step}; the '
                              f'file is damaged or was copied from another checkpoint. {_WHAT_TO_DO}')


def _check_rng_restored(accelerator: Accelerator, checkpoint: Path) -> None:
    """accelerate logs and ignores a random-state file it cannot read, and the resumed run then draws other
    dropout, drop-path and mixup numbers than a straight run. Read the file back the same way (weights_only) and
    check the torch generator holds its state. A file missing for this process (a run resumed on more
    processes than wrote it) is only warned about: its data order and sharding differ anyway."""
    from accelerate.utils import RNG_STATE_NAME, load
    file = checkpoint / f'{RNG_STATE_NAME}_{accelerator.process_index}.pkl'
    if not file.is_file():
        _logger.warning(f'{file} is missing; random draws after the resume differ from an uninterrupted run')
        return
    try:
        restored = torch.equal(load(file, weights_only=True)['torch_manual_seed'], torch.get_rng_state())
    except Exception as e:  # the same errors accelerate swallowed
        raise CheckpointError(f'cannot resume from {checkpoint}: {file.name} is unreadable ({type(e).__name__}: '
                              f'{_short(e)}). {_WHAT_TO_DO}') from e
    if not restored:
        raise CheckpointError(f'cannot resume from {checkpoint}: the random state in {file.name} was not restored. '
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


def _complete_checkpoints(ckpt_dir: Path) -> List[Path]:
    """The ``step_N`` folders under ``ckpt_dir``, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir()
             if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _discard(path: Path) -> None:
    """Delete a checkpoint folder by first renaming it to ``.tmp_…``: a kill during the delete leaves a leftover
    the next save removes, never a half ``step_N`` folder."""
    doomed = path.parent / f'{_TMP_PREFIX}del_{path.name}'
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_leftovers(ckpt_dir: Path) -> None:
    """Remove the ``.tmp_*`` folders and files a killed save or delete left under ``ckpt_dir``."""
    if not ckpt_dir.is_dir():
        return
    for p in ckpt_dir.iterdir():
        if p.name.startswith(_TMP_PREFIX):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every folder, deepest first (a folder holds its files' names)."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(folder)


def _fsync_dir(path) -> None:
    """Make a rename or new name in ``path`` durable. Windows cannot open a folder; NTFS journals renames."""
    if os.name == 'nt':
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    try:
        os.fsync(fd)
    except OSError:  # some network and FUSE filesystems cannot fsync a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _trim_log(log_file: Path, step: int) -> None:
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


def finish(accelerator: Accelerator) -> None:
    """End a run cleanly: every process reaches the barrier, then the process group is torn down (gloo can
    abort at interpreter exit otherwise)."""
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
