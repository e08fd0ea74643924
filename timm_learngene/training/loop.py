"""The training loop shared by every recipe (ancestry, distillation, finetuning, baselines).

accelerate does the device, data-parallel and mixed-precision work; this module adds what every recipe needs
around it: AdamW + cosine with warm-up stepped per optimizer step, gradient accumulation, checkpoints every N
steps with exact resume (data order, RNG, optimizer, schedule), a tqdm bar on the main process, a JSON-lines log,
per-epoch evaluation, a stop with a clear error on a non-finite loss, and a clean distributed exit.
"""
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration

__all__ = ['make_accelerator', 'make_optimizer', 'cosine_schedule', 'fit', 'finish', 'TrainState',
           'NonFiniteLossError', 'save_checkpoint', 'latest_checkpoint']


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the run stops before the optimizer step that would spread it."""


class TrainState:
    """Optimizer steps taken; saved in every checkpoint so a resumed run continues at the same step."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {'step': self.step}

    def load_state_dict(self, d):
        self.step = int(d['step'])


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


def _check_finite(losses: Dict[str, torch.Tensor], step: int) -> None:
    for k, v in losses.items():
        if not torch.isfinite(v.detach()).all():
            raise NonFiniteLossError(
                f'loss term {k!r} is {v.item()} at step {step}; the run stops here and the last saved checkpoint '
                f'is kept. Lower the learning rate or use --mixed-precision no')


def fit(cfg, accelerator: Accelerator, model: torch.nn.Module, train_loader, loss_fn: Callable,
        optimizer, scheduler, total_steps: int, evaluate: Optional[Callable] = None,
        mixup: Optional[Callable] = None, extra_state: Iterable = (), desc: str = 'train') -> TrainState:
    """Run ``total_steps`` optimizer steps of ``loss_fn(model, x, y, step) -> {'total': …, …}``.

    ``model``, ``optimizer`` and ``train_loader`` must already be prepared. ``scheduler`` is stepped here once
    per optimizer step (not prepared, so its schedule counts optimizer steps on any number of processes).
    With ``cfg.resume`` the latest checkpoint under ``cfg.resume/checkpoints`` is loaded first; with
    ``cfg.stop_after`` the run checkpoints and returns after that many steps (for time-limited jobs).
    ``evaluate(epoch) -> dict`` runs at the end of every epoch and of the run.
    """
    state = TrainState()
    accelerator.register_for_checkpointing(state, scheduler, *extra_state)
    ckpt_dir = Path(cfg.output) / 'checkpoints'
    if cfg.resume:
        latest = latest_checkpoint(cfg.resume)
        if latest is None:
            accelerator.print(f'no complete checkpoint under {cfg.resume}/checkpoints; starting from step 0')
        else:
            accelerator.load_state(str(latest))
            accelerator.print(f'resumed from {latest} at step {state.step}')
    steps_per_epoch = max(1, len(train_loader) // cfg.grad_accum)
    log_file = Path(cfg.output) / 'log.jsonl'
    bar = None
    if accelerator.is_main_process:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=state.step, desc=desc, dynamic_ncols=True, smoothing=0.1)
    t0, seen = time.perf_counter(), 0
    while state.step < total_steps:
        epoch = state.step // steps_per_epoch
        train_loader.set_epoch(epoch)
        skip = (state.step % steps_per_epoch) * cfg.grad_accum
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        model.train()
        for x, y in loader:
            if mixup is not None:
                x, y = mixup(x, y)
            with accelerator.accumulate(model):
                losses = loss_fn(model, x, y, state.step)
                _check_finite(losses, state.step)
                accelerator.backward(losses['total'])
                if accelerator.sync_gradients and cfg.clip_grad:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.clip_grad)
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
                save_checkpoint(accelerator, ckpt_dir, state.step, cfg.keep_checkpoints)
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
    """The last complete checkpoint of the run in ``run_dir`` (named by ``checkpoints/latest.json``), or None."""
    pointer = Path(run_dir) / 'checkpoints' / 'latest.json'
    if not pointer.is_file():
        return None
    path = pointer.parent / json.loads(pointer.read_text())['dir']
    return path if path.is_dir() else None


def save_checkpoint(accelerator: Accelerator, ckpt_dir: Path, step: int, keep: int) -> Path:
    """``accelerator.save_state`` into a temporary folder, renamed into place once complete, then
    ``latest.json`` is replaced to point at it: a run killed mid-save never leaves a half checkpoint that resume
    would pick up. Keeps the newest ``keep`` checkpoints."""
    name = f'step_{step:08d}'
    final, tmp = ckpt_dir / name, ckpt_dir / f'.tmp_{name}'
    if accelerator.is_main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer_tmp = ckpt_dir / '.latest.json.tmp'
        pointer_tmp.write_text(json.dumps({'dir': name, 'step': step}))
        os.replace(pointer_tmp, ckpt_dir / 'latest.json')
        done = sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith('step_'))
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def finish(accelerator: Accelerator) -> None:
    """End a run cleanly: every process reaches the barrier, then the process group is torn down (gloo can
    abort at interpreter exit otherwise)."""
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
