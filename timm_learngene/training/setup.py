"""What every training recipe builds between its model and :func:`~timm_learngene.training.loop.fit`: the
datasets and loaders, the optimizer, one ``accelerator.prepare``, the step counts and the learning-rate schedule."""
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from accelerate import Accelerator

from ..data import StreamLoader, build_dataset, build_loader, check_data_source
from ..logs import get_logger
from .launch import apply_launcher, write_launch_record
from .loop import PreparedRun, cosine_schedule, make_accelerator, make_optimizer
from .progress import check_trackers
from .options import save_config
from .precision import make_probe_step, resolve_mixed_precision

__all__ = ['PreparedRun', 'check_inputs', 'prepare_run', 'start_run', 'resolve_precision', 'warmup_steps',
           'PRECISION_FILE']

_logger = get_logger(__name__)

PRECISION_FILE = 'precision.json'


def check_inputs(cfg, splits=None) -> None:
    """What a recipe checks before it loads any model, ancestry or pool: the data (:func:`~timm_learngene.data.
    check_data_source`; ``splits`` default: ``train``, and ``eval`` with ``cfg.eval``) and the ``--log-with``
    trackers. Raises DatasetError or ConfigError."""
    if splits is None:
        splits = ('train', 'eval') if getattr(cfg, 'eval', False) else ('train',)
    check_data_source(vars(cfg), splits)
    check_trackers(getattr(cfg, 'log_with', None) or [])


def resolve_precision(cfg, module: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, Any], Any], *,
                      img_size: int, in_chans: int, num_classes: int, source: str = 'config') -> Dict[str, Any]:
    """Resolve ``cfg.mixed_precision`` in place before the Accelerator is built: ``auto`` becomes the faster of fp32
    and bf16 for a few steps of ``module`` (``loss_fn(module, (x, y))`` on a random batch of ``cfg.batch_size``
    images; see :func:`~timm_learngene.training.precision.resolve_mixed_precision`). Any other value wins over
    ``auto``; call :func:`~timm_learngene.training.launch.apply_launcher` first, so that ``accelerate launch``'s
    precision replaces a value the command line did not set. Returns the record, also written to
    ``OUTPUT/precision.json`` so the run states what it used and why (``source``: where the requested value came
    from, as :func:`~timm_learngene.training.launch.apply_launcher` says).

    Several processes started without accelerate's launcher would each time their own steps and could choose
    differently, so there ``auto`` is fp32 (no probe)."""
    on_cuda = torch.cuda.is_available() and not cfg.cpu
    device = torch.device('cuda') if on_cuda else torch.device('cpu')
    requested = cfg.mixed_precision
    if requested == 'auto' and int(os.environ.get('WORLD_SIZE', '1')) > 1 and \
            'ACCELERATE_MIXED_PRECISION' not in os.environ:
        choice, record = 'no', {'requested': 'auto', 'chosen': 'no', 'reason': 'several processes without '
                                'accelerate launch: no probe (each would time its own steps)'}
    else:
        g = torch.Generator().manual_seed(0)
        batch = (torch.randn(cfg.batch_size, in_chans, img_size, img_size, generator=g),
                 torch.randint(max(1, num_classes), (cfg.batch_size,), generator=g))
        was_training, was_device = module.training, next(module.parameters()).device
        module.train()
        try:
            choice, record = resolve_mixed_precision(requested, make_probe_step(module, batch, loss_fn), device)
        finally:
            module.train(was_training)
            module.to(was_device)
    cfg.mixed_precision = choice
    record['source'] = source
    if requested == 'auto':
        _logger.info('mixed_precision auto -> %s (%s%s)', choice, record.get('reason', ''),
                        f"; seconds per step {record['seconds_per_step']}" if 'seconds_per_step' in record else '')
    out = Path(cfg.output)
    if int(os.environ.get('RANK', '0')) == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / PRECISION_FILE).write_text(json.dumps(record, indent=2))
    return record


def is_stream(loader) -> bool:
    """Whether ``loader`` reads a stream (an IterableDataset, ``wds/``) that shards itself: it is wrapped in
    :class:`~timm_learngene.data.StreamLoader`, never passed to ``accelerate.prepare``."""
    return isinstance(loader.dataset, torch.utils.data.IterableDataset)


def pin_memory(cfg, device) -> bool:
    """``--pin-memory``: on, off, or auto (on when the run's device is a CUDA GPU, where page-locked batches copy
    asynchronously; off on CPU, where pinning only costs)."""
    choice = getattr(cfg, 'pin_memory', 'auto') or 'auto'
    return choice == 'on' or (choice == 'auto' and torch.device(device).type == 'cuda')


def warmup_steps(cfg, steps_per_epoch: int, total: int) -> int:
    """Warm-up steps: ``cfg.warmup_frac`` of the run's ``total`` optimizer steps when it is > 0, else
    ``cfg.warmup_epochs`` epochs; never more than the run. Warns when warm-up is over half the run."""
    frac = getattr(cfg, 'warmup_frac', 0.0) or 0.0
    steps = int(round(frac * total)) if frac > 0 else int(cfg.warmup_epochs * steps_per_epoch)
    steps = min(steps, total)
    if total and steps > total / 2:
        _logger.warning('warm-up is %d of the run\'s %d optimizer steps (over half): the learning rate peaks late; '
                        'lower --warmup-epochs or use --warmup-frac', steps, total)
    return steps


def prepare_run(cfg, accelerator: Accelerator, model: torch.nn.Module, trained: torch.nn.Module, *, img_size: int,
                in_chans: int, num_classes: int, lr_scale: Optional[Callable[[str], float]] = None) -> PreparedRun:
    """Build the training loader (and, with ``cfg.eval``, the evaluation loader) from ``cfg``'s data and
    augmentation options for ``img_size`` x ``in_chans`` images and ``num_classes`` classes; timm's optimizer
    ``cfg.opt`` over ``trained``'s trainable parameters (:func:`~timm_learngene.training.loop.make_optimizer`, with
    ``lr_scale(name)`` multiplying a parameter's lr); prepare
    ``model`` (the module ``fit`` trains: a model, a distiller, a trainer), the optimizer and the loaders in one
    ``accelerator.prepare``; then the cosine schedule over ``cfg.max_steps`` optimizer steps, or ``cfg.epochs``
    epochs of ``len(train_loader) // cfg.grad_accum`` steps when ``max_steps`` is 0."""
    data_cfg = vars(cfg)
    pin = pin_memory(cfg, accelerator.device)
    train_loader = build_loader(build_dataset(data_cfg, 'train', img_size, in_chans, num_classes), cfg.batch_size,
                                True, cfg.num_workers, cfg.seed, pin_memory=pin)
    eval_loader = None
    if cfg.eval:
        eval_loader = build_loader(build_dataset(data_cfg, 'eval', img_size, in_chans, num_classes),
                                   cfg.eval_batch_size, False, cfg.num_workers, pin_memory=pin)
    optimizer = make_optimizer(trained, cfg.lr, cfg.weight_decay, cfg.opt, cfg.layer_decay, lr_scale)
    # a stream (wds/) shards itself by process and worker: accelerate would shard it again, so it is not prepared
    loaders = [ld for ld in (train_loader, eval_loader) if ld is not None and not is_stream(ld)]
    model, optimizer, *prepared = accelerator.prepare(model, optimizer, *loaders)
    ready = iter(prepared)
    train_loader, eval_loader = (None if ld is None else StreamLoader(ld, accelerator.device) if is_stream(ld)
                                 else next(ready) for ld in (train_loader, eval_loader))
    steps_per_epoch = max(1, len(train_loader) // cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = cosine_schedule(optimizer, warmup_steps(cfg, steps_per_epoch, total), total, cfg.min_lr_ratio)
    return PreparedRun(model, optimizer, train_loader, eval_loader, scheduler, steps_per_epoch, total)


def start_run(cfg, module: torch.nn.Module, probe_loss: Callable[[torch.nn.Module, Any], Any], *, img_size: int,
              in_chans: int, num_classes: int, find_unused_parameters: bool = False) -> Accelerator:
    """What every training recipe does once its model is built: launcher first (:func:`~timm_learngene.training.
    launch.apply_launcher`: ``accelerate launch``'s precision and device replace the config's unless a flag set
    them), resolve ``mixed_precision: auto`` on ``module`` (:func:`resolve_precision`, with ``probe_loss``), build
    the Accelerator, and write the resolved config to ``OUTPUT/config.yaml`` and what the run uses (precision,
    device, processes, and where each came from) to ``OUTPUT/launch.json`` (on the main process)."""
    sources = apply_launcher(cfg)
    resolve_precision(cfg, module, probe_loss, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                      source=sources.get('mixed_precision', 'config'))
    accelerator = make_accelerator(cfg, find_unused_parameters=find_unused_parameters)
    write_launch_record(accelerator, cfg, sources)
    if accelerator.is_main_process:
        save_config(cfg, Path(cfg.output) / 'config.yaml')
    return accelerator
