#!/usr/bin/env python
"""Initialise the stitch layers of a pool and finetune all its descendants jointly, then write the pool folder.

    accelerate launch recipes/finetune.py --pool out/distill/pool --stitch-init learngene --data-dir /data/imagenet
    python recipes/finetune.py --config recipes/configs/fashion_mnist_finetune.yaml
    # SN-Net baseline, same harness: a pool of independently trained anchors, lstsq stitches
    accelerate launch recipes/finetune.py --anchors deit_tiny_patch16_224,deit_small_patch16_224,deit_base_patch16_224 \
        --stitch-init lstsq --teacher deit_base_patch16_224 --data-dir /data/imagenet

One descendant per step, drawn from a seeded generator (the same on every process); loss
``ce_weight * CE + kd_weight * KD`` from the ancestry. ``--train all`` trains blocks and stitch layers (the paper),
``--train stitches`` only the stitch layers (the pool's blocks stay the distilled learngenes).
Outputs under ``--output``: config.yaml, log.jsonl, checkpoints/, pool/.
"""
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import timm
import torch
from accelerate.utils import set_seed
from timm.layers import set_fused_attn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm_learngene  # noqa: E402,F401
from timm_learngene.ancestry import load_ancestry  # noqa: E402
from timm_learngene.checkpoint import load_pool, read_pool_config, save_pool  # noqa: E402
from timm_learngene.data import build_dataset, build_loader, build_mixup  # noqa: E402
from timm_learngene.errors import ConfigError  # noqa: E402
from timm_learngene.finetune import DescendantTrainer, RouteSampler, set_trainable  # noqa: E402
from timm_learngene.snnet import anchor_pool  # noqa: E402
from timm_learngene.stitch_init import init_stitches  # noqa: E402
from timm_learngene.training.config import parse_config, save_config  # noqa: E402
from timm_learngene.training.loop import latest_checkpoint, cosine_schedule, finish, fit, make_accelerator, make_optimizer  # noqa
from timm_learngene.training.metrics import accuracy  # noqa: E402
from timm_learngene.training.cli import run_cli  # noqa: E402

DEFAULTS = dict(
    # what is finetuned
    pool='',                 # a pool folder (distill output) ...
    anchors=[''],            # ... or SN-Net anchors: timm names / model folders, comma-separated
    stitch_init='lstsq',     # lstsq | learngene | transpose | none (keep the pool's stitch layers)
    init_images=100, ridge_lambda=0.01,
    train='all',             # all | stitches
    # ancestry for KD ('' = the teacher recorded in the pool's distill recipe)
    teacher='', teacher_checkpoint='', ce_weight=0.5, kd_weight=0.5, temperature=1.0,
    # data
    dataset='folder', data_dir='', train_limit=0, eval_limit=0, num_workers=4, bad_images='error',  # or 'skip'
    # optimisation (paper: 50 epochs, no mixup)
    epochs=50, max_steps=0, batch_size=128, eval_batch_size=256, grad_accum=1, lr=1e-4, weight_decay=0.05,
    warmup_epochs=5.0, min_lr_ratio=0.01, clip_grad=0.0,
    mixup=0.0, cutmix=0.0, smoothing=0.1, aug_scale=[0.08, 1.0], hflip=0.5, color_jitter=0.0,
    auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25, crop_pct=0.875, interpolation='bicubic',
    # run
    output='out/finetune', resume='', seed=0, mixed_precision='no', cpu=False, fused_attn=True,
    checkpoint_every=1000, keep_checkpoints=2, log_every=20, eval=False, stop_after=0,
)


def parse_args(argv: Optional[Sequence[str]] = None):
    cfg = parse_config(argv, DEFAULTS, __doc__.splitlines()[1])
    set_fused_attn(cfg.fused_attn)  # timm's fused SDPA; its CPU backward is slow at small head dims
    cfg.anchors = [a for a in cfg.anchors if a]
    if bool(cfg.pool) == bool(cfg.anchors):
        raise SystemExit('finetune: pass exactly one of --pool FOLDER (a distilled pool) or --anchors A,B,C (SN-Net)')
    if cfg.resume and cfg.output == DEFAULTS['output']:
        cfg.output = cfg.resume
    return cfg


def _teacher(cfg, recipe):
    """The KD ancestry: --teacher/--teacher-checkpoint, else the timm model the pool's recipe names.

    A path recorded in a pool's config.json is never opened (the pool may come from a stranger): it is only
    shown as a hint, and a recorded model name is used only if it is in timm's registry."""
    if not cfg.kd_weight:
        return None
    name, ckpt = cfg.teacher, cfg.teacher_checkpoint
    if not name and not ckpt:
        distill = recipe.get('distill') if isinstance(recipe, dict) else None
        distill = distill if isinstance(distill, dict) else {}
        recorded, hint = distill.get('teacher'), distill.get('teacher_checkpoint')
        if isinstance(recorded, str) and timm.is_model(recorded) and not hint:
            name = recorded
        else:
            where = f' (the pool was distilled from {hint!r})' if isinstance(hint, str) and hint else ''
            raise ConfigError(f'finetune: KD needs the ancestry{where}; pass --teacher NAME or --teacher-checkpoint '
                              f'PATH, or --kd-weight 0 for labels only')
    return load_ancestry(name, ckpt or None)


def main(argv: Optional[Sequence[str]] = None):
    """Run the recipe; returns the finetuned pool (the folder is OUTPUT/pool)."""
    cfg = parse_args(argv)
    accelerator = make_accelerator(cfg, find_unused_parameters=True)
    set_seed(cfg.seed)
    out = Path(cfg.output)
    if accelerator.is_main_process:
        save_config(cfg, out / 'config.yaml')

    if cfg.pool:
        recipe = read_pool_config(cfg.pool).get('recipe') or {}
        pool = load_pool(cfg.pool)
    else:
        recipe = {}
        pool = anchor_pool(cfg.anchors)
    spec = pool.pool_spec
    data_cfg = vars(cfg)
    # a resumed run restores the stitch layers from its checkpoint; one killed before its first checkpoint
    # starts over and initialises them like a fresh run
    if cfg.stitch_init != 'none' and not (cfg.resume and latest_checkpoint(cfg.resume) is not None):
        images = None
        if cfg.stitch_init == 'lstsq':
            calib = build_dataset(data_cfg, 'train', spec.img_size, spec.in_chans, spec.num_classes, augment=False)
            idx = torch.randperm(len(calib), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.init_images]
            images = torch.stack([calib[int(i)][0] for i in idx])
        solved = init_stitches(pool, cfg.stitch_init, images, lam=cfg.ridge_lambda)
        accelerator.print(f'stitch layers initialised by {cfg.stitch_init}: {solved} positions')
    routes = set_trainable(pool, cfg.train)
    trainer = DescendantTrainer(pool, _teacher(cfg, recipe), cfg.ce_weight, cfg.kd_weight, cfg.temperature,
                                smoothing=0.0 if (cfg.mixup or cfg.cutmix) else cfg.smoothing)
    sampler = RouteSampler(routes, seed=cfg.seed)

    train_loader = build_loader(build_dataset(data_cfg, 'train', spec.img_size, spec.in_chans, spec.num_classes),
                                cfg.batch_size, True, cfg.num_workers, cfg.seed)
    named = [(n, p) for n, p in pool.named_parameters() if p.requires_grad]
    optimizer = make_optimizer(named, cfg.lr, cfg.weight_decay, pool.no_weight_decay())
    eval_loader = None
    if cfg.eval:
        eval_loader = build_loader(build_dataset(data_cfg, 'eval', spec.img_size, spec.in_chans, spec.num_classes),
                                   cfg.eval_batch_size, False, cfg.num_workers)
        trainer, optimizer, train_loader, eval_loader = accelerator.prepare(
            trainer, optimizer, train_loader, eval_loader)
    else:
        trainer, optimizer, train_loader = accelerator.prepare(trainer, optimizer, train_loader)
    steps_per_epoch = max(1, len(train_loader) // cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = cosine_schedule(optimizer, int(cfg.warmup_epochs * steps_per_epoch), total, cfg.min_lr_ratio)
    core = accelerator.unwrap_model(trainer)

    current = {}

    def loss_fn(model, x, y, step):
        # one route per optimizer step: drawn on the first micro-batch, kept through the accumulation
        if step not in current:
            current.clear()
            current[step] = sampler.draw()
        return model(x, y, current[step])

    def evaluate(epoch):
        if eval_loader is None:
            return {}
        trainer.eval()
        with accelerator.autocast():
            return accuracy(accelerator, lambda x: {d.name: core.pool(x, d.route) for d in core.pool.descendants},
                            eval_loader)

    accelerator.print(f'finetuning {len(routes)} descendants of {spec.name!r} ({cfg.train}), {total} steps, '
                      f'{accelerator.num_processes} process(es)')
    fit(cfg, accelerator, trainer, train_loader, loss_fn, optimizer, scheduler, total, evaluate=evaluate,
        mixup=build_mixup(data_cfg, spec.num_classes), extra_state=[sampler], desc='finetune')
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        recipe = dict(recipe, finetune=json.loads(json.dumps(vars(cfg), default=str)))
        core.pool.metrics = {}  # accuracies measured before finetuning no longer hold
        save_pool(core.pool, out / 'pool', recipe=recipe)
        accelerator.print(f'pool written to {out / "pool"}')
    finish(accelerator)
    return core.pool


if __name__ == '__main__':
    run_cli(main)
