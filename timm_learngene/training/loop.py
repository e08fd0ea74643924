"""The training loop shared by every recipe (ancestry, distillation, finetuning, baselines).

accelerate does the device, data-parallel and mixed-precision work; this module adds what every recipe needs
around it: timm's optimizer (AdamW by default) + cosine with warm-up stepped per optimizer step, gradient accumulation, checkpoints every N
steps with exact resume (data order, RNG, optimizer, schedule), progress on the main process (a tqdm bar on a
terminal, plain lines with the ETA elsewhere: :mod:`.progress`), a JSON-lines log with its curves (``curves.png``)
and accelerate's trackers (``--log-with``),
per-epoch evaluation, a stop with a clear error on a non-finite loss or gradient, and a clean distributed exit.

Resume checkpoints (``checkpoints/step_N``, crash-safe, nothing unpickled) are :mod:`.resume`; ``--resume`` restores
data order, RNG, optimizer, schedule and the loop's own state exactly.
"""
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration

from ..errors import ConfigError
from ..logs import get_logger
from .curves import plot_log
from .preemption import Preempted, StopSignals
from .progress import Progress, check_trackers, tracker_config
from .resume import (  # noqa: F401  (latest_checkpoint, save_checkpoint, load_train_state re-exported)
    complete_checkpoints, discard, latest_checkpoint, load_checkpoint, load_train_state, remove_leftovers,
    save_checkpoint, step_of, trim_log,
)

__all__ = ['make_accelerator', 'make_optimizer', 'cosine_schedule', 'fit', 'finish', 'TrainState', 'PreparedRun',
           'NonFiniteLossError', 'save_checkpoint', 'latest_checkpoint', 'load_train_state']

_logger = get_logger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradient norm became NaN or infinite; the run stops before the optimizer step that
    would spread it into the weights (and from there into the next checkpoint)."""


class TrainState:
    """Optimizer steps taken; saved in every checkpoint so a resumed run continues at the same step."""

    def __init__(self, num_processes: Optional[int] = None):
        self.step = 0
        self.num_processes = num_processes  # of the run that wrote the checkpoint (checked before a resume)

    def state_dict(self):
        return {'step': self.step, **({'num_processes': self.num_processes} if self.num_processes else {})}

    def load_state_dict(self, d):
        step = d['step']
        if type(step) is not int or step < 0:
            raise ValueError(f'step {step!r} is not a step count')
        self.step = step


def make_accelerator(cfg, find_unused_parameters: bool = False) -> Accelerator:
    """An Accelerator for ``cfg.output`` with a seedable sampler (data order is a function of seed and epoch) and
    the trackers of ``cfg.log_with`` (under ``OUTPUT/trackers``; ConfigError if one is not installed).
    ``find_unused_parameters`` for models that run a different subset of parameters each step (descendants)."""
    project = ProjectConfiguration(project_dir=str(cfg.output), logging_dir=str(Path(cfg.output) / 'trackers'))
    log_with = check_trackers(getattr(cfg, 'log_with', None) or [])
    return Accelerator(
        log_with=log_with or None,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
        cpu=cfg.cpu or not torch.cuda.is_available(),
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        project_config=project,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, opt: str = 'adamw',
                   layer_decay: float = 0.0,
                   lr_scale: Optional[Callable[[str], float]] = None) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2`` over ``model``'s trainable parameters: ``opt`` by timm's name, no weight decay
    on 1-d tensors, biases and ``model.no_weight_decay()``; ``layer_decay`` > 0 scales each group's lr by timm's
    layer-wise factor (``model.group_matcher``). ``lr_scale(name)`` multiplies the lr of the parameter ``name``
    (e.g. a higher lr for finetuning's stitch layers); its groups are split out of timm's. The factors are folded
    into each group's lr here, because the cosine schedule (a ``LambdaLR``) scales each group's initial lr and does
    not read timm's ``lr_scale``."""
    from timm.optim import create_optimizer_v2, list_optimizers, param_groups_layer_decay, param_groups_weight_decay

    names = list_optimizers()
    if opt.lower() not in names:
        raise ConfigError(f"--opt {opt!r} is not one of timm's optimizers; use one of: {', '.join(names)}")
    if layer_decay and not hasattr(model, 'group_matcher'):
        raise ConfigError(f'--layer-decay {layer_decay} needs a model with group_matcher(); '
                          f'{type(model).__name__} has none (use --layer-decay 0)')
    # timm's own groups (frozen parameters left out), then split by lr_scale
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_wd = set(getattr(model, 'no_weight_decay', lambda: set())())
    if layer_decay:
        groups = param_groups_layer_decay(model, weight_decay, no_weight_decay_list=no_wd, layer_decay=layer_decay)
    elif weight_decay:
        groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_wd)
    else:
        groups = [{'params': [p for _, p in trainable], 'weight_decay': 0.0}]
    if lr_scale is not None:
        groups = _split_groups(groups, dict((id(p), n) for n, p in trainable), lr_scale)
    optimizer = create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=weight_decay, param_group_fn=lambda _: groups)
    for group in optimizer.param_groups:
        group['lr'] = lr * group.pop('lr_scale', 1.0)
    return optimizer


def _split_groups(groups, names: Dict[int, str], lr_scale: Callable[[str], float]) -> list:
    """Each of timm's parameter groups split by ``lr_scale(name)``; a part's ``lr_scale`` is the group's times it."""
    out = []
    for group in groups:
        parts: Dict[float, list] = {}
        for p in group['params']:
            parts.setdefault(float(lr_scale(names[id(p)])), []).append(p)
        for scale, params in parts.items():
            out.append(dict(group, params=params, lr_scale=group.get('lr_scale', 1.0) * scale))
    return out


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


@dataclass
class PreparedRun:
    """The prepared objects of a training run. ``model``, ``optimizer`` and the loaders are accelerate's wrapped
    ones; ``scheduler`` is not prepared (it counts optimizer steps, whatever the number of processes)."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: torch.utils.data.DataLoader
    eval_loader: Optional[torch.utils.data.DataLoader]
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int
    total_steps: int


def fit(cfg, accelerator: Accelerator, run: PreparedRun, loss_fn: Callable, evaluate: Optional[Callable] = None,
        mixup: Optional[Callable] = None, extra_state: Iterable = (), desc: str = 'train') -> TrainState:
    """Run ``run.total_steps`` optimizer steps of ``loss_fn(run.model, x, y, step) -> {'total': …, …}``.

    ``run`` is what :func:`~timm_learngene.training.setup.prepare_run` returns: its model, optimizer and training
    loader already prepared. ``run.scheduler`` is stepped here once per optimizer step (not prepared, so its
    schedule counts optimizer steps on any number of processes).
    With ``cfg.resume`` the latest checkpoint under ``cfg.resume/checkpoints`` is loaded first (resuming a run
    in its own folder also drops the log records and checkpoints a killed run left after that step, since those
    steps are redone); with ``cfg.stop_after`` the run checkpoints and returns after that many steps (for
    time-limited jobs). ``evaluate(epoch) -> dict`` runs at the end of every epoch and of the run.

    Every log record has ``data_wait``: the fraction of the wall time since the previous record that the host spent
    blocked on the training loader (also ``data`` on the progress line); near 0 the loader keeps up, above ~0.1
    it is worth more ``--num-workers``.

    SIGTERM or SIGINT (:mod:`~timm_learngene.training.preemption`) stops every process after the same optimizer
    step: the checkpoint of that step is written and :class:`~timm_learngene.training.preemption.Preempted` raised.

    A resume is bit-exact when ``train_loader`` was built with its own ``generator``: a DataLoader without one
    draws each iterator's seed from the global torch RNG, and a run resumed mid-epoch starts one iterator more
    than an uninterrupted run did.
    """
    model, train_loader, optimizer, scheduler = run.model, run.train_loader, run.optimizer, run.scheduler
    total_steps = run.total_steps
    state = TrainState(accelerator.num_processes)
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
            load_checkpoint(accelerator, kept, stateful)
            accelerator.print(f'resumed from {kept} at step {state.step}')
        accelerator.wait_for_everyone()  # every process has read the checkpoint before a folder is touched
        if accelerator.is_main_process:
            remove_leftovers(ckpt_dir)
            if Path(cfg.resume).resolve() == Path(cfg.output).resolve():
                # what a killed run logged or saved after the resume point belongs to steps that are redone
                trim_log(log_file, state.step)
                for later in complete_checkpoints(ckpt_dir):
                    if step_of(later) > state.step:
                        discard(later)
        accelerator.wait_for_everyone()
    steps_per_epoch = max(1, len(train_loader) // cfg.grad_accum)
    if getattr(cfg, 'log_with', None):
        accelerator.init_trackers(Path(cfg.output).name or desc, config=tracker_config(cfg))
    progress = Progress(total_steps, state.step, desc, getattr(cfg, 'progress', 'auto'), cfg.log_every,
                        enabled=accelerator.is_main_process)
    t0, seen = time.perf_counter(), 0
    waited, window = 0.0, time.perf_counter()  # host seconds blocked on the loader, since the last log record
    with StopSignals() as signals:  # SIGTERM / SIGINT: stop after the step with a checkpoint
        while state.step < total_steps:
            epoch = state.step // steps_per_epoch
            train_loader.set_epoch(epoch)
            skip = (state.step % steps_per_epoch) * cfg.grad_accum
            if skip and getattr(train_loader, 'generator', None) is None:
                _logger.warning('the training DataLoader has no generator, so the iterator a mid-epoch resume '
                                'starts draws its seed from the global torch RNG and dropout, drop-path and mixup '
                                'then draw other numbers than an uninterrupted run; build it with '
                                'generator=torch.Generator().manual_seed(seed), as timm_learngene.data does')
            loader = train_loader if not skip else train_loader.skip_first_batches(skip) \
                if hasattr(train_loader, 'skip_first_batches') else accelerator.skip_first_batches(train_loader, skip)
            model.train()
            ready = time.perf_counter()
            for x, y in loader:
                waited += time.perf_counter() - ready
                if mixup is not None:
                    x, y = mixup(x, y)
                with accelerator.accumulate(model):
                    losses = loss_fn(model, x, y, state.step)
                    _check_finite(losses, state.step, kept, accelerator)
                    accelerator.backward(losses['total'])
                    if accelerator.sync_gradients:
                        norm = (accelerator.clip_grad_norm_(model.parameters(), cfg.clip_grad) if cfg.clip_grad
                                else None)
                        _check_finite_grads(model, norm, state.step, kept, accelerator)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                seen += x.shape[0] * accelerator.num_processes
                if not accelerator.sync_gradients:
                    ready = time.perf_counter()
                    continue
                scheduler.step()
                state.step += 1
                wait = waited / max(1e-9, time.perf_counter() - window)
                if progress.mode != 'none':
                    rate = seen / max(1e-9, time.perf_counter() - t0)
                    progress.step(1, {'loss': f"{losses['total'].item():.3f}",
                                      'lr': f'{scheduler.get_last_lr()[0]:.2e}', 'img/s': f'{rate:.0f}',
                                      'data': f'{wait:.0%}'})
                if state.step % cfg.log_every == 0 or state.step == total_steps:
                    rec = {'step': state.step, 'epoch': epoch, 'lr': scheduler.get_last_lr()[0],
                           'data_wait': round(wait, 4)}
                    waited, window = 0.0, time.perf_counter()
                    rec.update({k: float(v.detach()) for k, v in losses.items()})
                    if accelerator.is_main_process:
                        with open(log_file, 'a') as f:
                            f.write(json.dumps(rec) + '\n')
                    if getattr(cfg, 'log_with', None):
                        accelerator.log({f'train/{k}': v for k, v in rec.items() if k != 'step'}, step=state.step)
                stopping = bool(cfg.stop_after) and state.step >= cfg.stop_after
                signal_name = signals.agreed(accelerator)
                if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0) or stopping or signal_name:
                    kept = save_checkpoint(accelerator, ckpt_dir, state.step, cfg.keep_checkpoints, stateful)
                if signal_name:
                    progress.close()
                    raise Preempted(signal_name, state.step, kept, cfg.output)
                if state.step >= total_steps or stopping:
                    break
                ready = time.perf_counter()
            if cfg.stop_after and state.step >= cfg.stop_after and state.step < total_steps:
                accelerator.print(f'stopped at step {state.step} (--stop-after); continue with --resume {cfg.output}')
                break
            end_of_epoch = state.step % steps_per_epoch == 0 or state.step >= total_steps
            if evaluate is not None and end_of_epoch:
                metrics = evaluate(epoch)
                if accelerator.is_main_process and metrics:
                    progress.write(f'epoch {epoch} step {state.step}: ' +
                                   ', '.join(f'{k} {v:.2f}' for k, v in metrics.items()))
                    with open(log_file, 'a') as f:
                        f.write(json.dumps({'step': state.step, 'epoch': epoch, 'eval': metrics}) + '\n')
                if metrics and getattr(cfg, 'log_with', None):
                    accelerator.log({f'eval/{k}': v for k, v in metrics.items()}, step=state.step)
    progress.close()
    if accelerator.is_main_process:
        plot_log(log_file)  # OUTPUT/curves.png: loss terms and lr against the step
    return state


def finish(accelerator: Accelerator) -> None:
    """End a run cleanly: every process reaches the barrier, then the process group is torn down (gloo can
    abort at interpreter exit otherwise)."""
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
