#!/usr/bin/env python
"""Distill an ancestry ViT into every member of a learngene pool, in one pass, and write the pool folder.

    accelerate launch recipes/distill.py --config recipes/configs/deit_base_l6.yaml --data-dir /data/imagenet
    python recipes/distill.py --config recipes/configs/fashion_mnist.yaml --teacher-checkpoint out/ancestry
    python recipes/distill.py --config ... --resume out/distill      # continue a stopped run

Outputs under ``--output``: ``config.yaml`` (the resolved config), ``log.jsonl``, ``checkpoints/`` and ``pool/``
(model.safetensors + config.json, loadable with ``timm.create_model('local-dir:OUT/pool', descendant='s3',
pretrained=True)``).
"""
import sys
from pathlib import Path
from typing import Optional, Sequence

import timm
import torch
from accelerate.utils import set_seed
from timm.layers import set_fused_attn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm_learngene  # noqa: E402  (registers the models)
from timm_learngene.ancestry import load_ancestry  # noqa: E402
from timm_learngene.checkpoint import save_pool  # noqa: E402
from timm_learngene.data import build_dataset, build_loader, build_mixup  # noqa: E402
from timm_learngene.distill import DenseDistiller  # noqa: E402
from timm_learngene.spec import PoolSpec  # noqa: E402
from timm_learngene.training.config import parse_config, save_config  # noqa: E402
from timm_learngene.training.loop import cosine_schedule, finish, fit, make_accelerator, make_optimizer  # noqa
from timm_learngene.training.metrics import accuracy  # noqa: E402
from timm_learngene.training.cli import run_cli  # noqa: E402

DEFAULTS = dict(
    # what is distilled into what
    pool='deit_base_l6',             # registered spec name, or the spec as JSON
    teacher='deit_base_patch16_224',  # timm name, local-dir:PATH or hf-hub:REPO
    teacher_checkpoint='',           # timm model folder or .safetensors overriding the teacher's weights
    img_size=0, num_classes=0, in_chans=0,  # 0 = the pool spec's
    # data
    dataset='folder', data_dir='', train_limit=0, eval_limit=0, num_workers=4, bad_images='error',  # or 'skip'
    # loss (SPEC step 3)
    alpha=0.1, temperature=1.0, beta_block=1.0, beta_attn=1.0,
    # optimisation
    epochs=100, max_steps=0, batch_size=128, eval_batch_size=256, grad_accum=1, lr=5e-4, weight_decay=0.05,
    warmup_epochs=5.0, min_lr_ratio=0.01, clip_grad=0.0, drop_path=0.1,
    # augmentation (DeiT)
    mixup=0.8, cutmix=1.0, smoothing=0.1, aug_scale=[0.08, 1.0], hflip=0.5, color_jitter=0.0,
    auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25, crop_pct=0.875, interpolation='bicubic',
    # run
    output='out/distill', resume='', seed=0, mixed_precision='no', cpu=False, fused_attn=True,
    checkpoint_every=1000, keep_checkpoints=2, log_every=20, eval=True, stop_after=0,
)


def parse_args(argv: Optional[Sequence[str]] = None):
    cfg = parse_config(argv, DEFAULTS, __doc__.splitlines()[1])
    set_fused_attn(cfg.fused_attn)  # timm's fused SDPA; its CPU backward is slow at small head dims
    if cfg.resume and cfg.output == DEFAULTS['output']:
        cfg.output = cfg.resume  # --resume DIR continues the run in DIR
    return cfg


def build_pool(cfg):
    spec = PoolSpec.from_any(cfg.pool)
    overrides = {k: getattr(cfg, k) for k in ('img_size', 'num_classes', 'in_chans') if getattr(cfg, k)}
    return timm.create_model('learngene_pool', pool=spec.replace(**overrides), drop_path_rate=cfg.drop_path)


def main(argv: Optional[Sequence[str]] = None):
    """Run the recipe; returns the distilled pool (the folder is OUTPUT/pool)."""
    cfg = parse_args(argv)
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    out = Path(cfg.output)
    if accelerator.is_main_process:
        save_config(cfg, out / 'config.yaml')

    pool = build_pool(cfg)
    spec = pool.pool_spec
    teacher = load_ancestry(cfg.teacher, cfg.teacher_checkpoint or None)
    distiller = DenseDistiller(pool, teacher, alpha=cfg.alpha, temperature=cfg.temperature,
                               beta_block=cfg.beta_block, beta_attn=cfg.beta_attn,
                               smoothing=0.0 if (cfg.mixup or cfg.cutmix) else cfg.smoothing)

    data_cfg = vars(cfg)
    train_set = build_dataset(data_cfg, 'train', spec.img_size, spec.in_chans, spec.num_classes)
    train_loader = build_loader(train_set, cfg.batch_size, True, cfg.num_workers, cfg.seed)
    eval_loader = None
    if cfg.eval:
        eval_set = build_dataset(data_cfg, 'eval', spec.img_size, spec.in_chans, spec.num_classes)
        eval_loader = build_loader(eval_set, cfg.eval_batch_size, False, cfg.num_workers)
    optimizer = make_optimizer(pool.named_parameters(), cfg.lr, cfg.weight_decay, pool.no_weight_decay())
    if eval_loader is not None:
        distiller, optimizer, train_loader, eval_loader = accelerator.prepare(
            distiller, optimizer, train_loader, eval_loader)
    else:
        distiller, optimizer, train_loader = accelerator.prepare(distiller, optimizer, train_loader)
    steps_per_epoch = max(1, len(train_loader) // cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = cosine_schedule(optimizer, int(cfg.warmup_epochs * steps_per_epoch), total, cfg.min_lr_ratio)
    core = accelerator.unwrap_model(distiller)

    def loss_fn(model, x, y, step):
        return model(x, y)

    def evaluate(epoch):
        if eval_loader is None:
            return {}
        distiller.eval()
        with accelerator.autocast():
            return accuracy(accelerator, core.evaluate_logits, eval_loader)

    accelerator.print(f'distilling {cfg.teacher_checkpoint or cfg.teacher} into {[m.label for m in spec.members]} '
                      f'({total} steps, {steps_per_epoch} per epoch, {accelerator.num_processes} process(es))')
    fit(cfg, accelerator, distiller, train_loader, loss_fn, optimizer, scheduler, total, evaluate=evaluate,
        mixup=build_mixup(data_cfg, spec.num_classes), desc='distill')
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_pool(core.pool, out / 'pool', recipe={'distill': {k: v for k, v in vars(cfg).items()}})
        accelerator.print(f'pool written to {out / "pool"}')
    finish(accelerator)
    return core.pool


if __name__ == '__main__':
    run_cli(main)
