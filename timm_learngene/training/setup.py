"""What every training recipe builds between its model and :func:`~timm_learngene.training.loop.fit`: the
datasets and loaders, the optimizer, one ``accelerator.prepare``, the step counts and the learning-rate schedule."""
from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

import torch
from accelerate import Accelerator

from ..data import build_dataset, build_loader
from .loop import cosine_schedule, make_optimizer

__all__ = ['PreparedRun', 'prepare_run']


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


def prepare_run(cfg, accelerator: Accelerator, model: torch.nn.Module, params: Iterable[Tuple[str, torch.nn.Parameter]],
                no_weight_decay: Iterable[str], *, img_size: int, in_chans: int, num_classes: int) -> PreparedRun:
    """Build the training loader (and, with ``cfg.eval``, the evaluation loader) from ``cfg``'s data and
    augmentation options for ``img_size`` x ``in_chans`` images and ``num_classes`` classes; AdamW over the named
    ``params`` (those with ``requires_grad``; 1-d ones and ``no_weight_decay`` names without decay); prepare
    ``model`` (the module ``fit`` trains: a model, a distiller, a trainer), the optimizer and the loaders in one
    ``accelerator.prepare``; then the cosine schedule over ``cfg.max_steps`` optimizer steps, or ``cfg.epochs``
    epochs of ``len(train_loader) // cfg.grad_accum`` steps when ``max_steps`` is 0."""
    data_cfg = vars(cfg)
    train_loader = build_loader(build_dataset(data_cfg, 'train', img_size, in_chans, num_classes), cfg.batch_size,
                                True, cfg.num_workers, cfg.seed)
    eval_loader = None
    if cfg.eval:
        eval_loader = build_loader(build_dataset(data_cfg, 'eval', img_size, in_chans, num_classes),
                                   cfg.eval_batch_size, False, cfg.num_workers)
    optimizer = make_optimizer(params, cfg.lr, cfg.weight_decay, no_weight_decay)
    if eval_loader is None:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    else:
        model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader,
                                                                          eval_loader)
    steps_per_epoch = max(1, len(train_loader) // cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = cosine_schedule(optimizer, int(cfg.warmup_epochs * steps_per_epoch), total, cfg.min_lr_ratio)
    return PreparedRun(model, optimizer, train_loader, eval_loader, scheduler, steps_per_epoch, total)
