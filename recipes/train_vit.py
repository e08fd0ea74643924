#!/usr/bin/env python
"""Train a plain timm ViT with labels (the ancestry for small-scale runs, or a from-scratch baseline).

    python recipes/train_ancestry.py --config recipes/configs/fashion_mnist_ancestry.yaml

Writes ``OUTPUT/model`` with ``timm.models.save_for_hf`` (config.json + model.safetensors), loadable with
``timm.create_model('local-dir:OUTPUT/model', pretrained=True)`` and usable as ``--teacher-checkpoint``.
"""
import sys
from pathlib import Path
from typing import Optional, Sequence

import timm
import torch
from accelerate.utils import set_seed
from timm.layers import set_fused_attn
from timm.models import save_for_hf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timm_learngene.data import build_dataset, build_loader, build_mixup  # noqa: E402
from timm_learngene.ancestry import load_ancestry  # noqa: E402
from timm_learngene.losses import label_kd_loss  # noqa: E402
from timm_learngene.training.config import parse_config, save_config  # noqa: E402
from timm_learngene.training.loop import cosine_schedule, finish, fit, make_accelerator, make_optimizer  # noqa
from timm_learngene.training.metrics import accuracy  # noqa: E402
from timm_learngene.training.cli import run_cli  # noqa: E402

DEFAULTS = dict(
    model='vit_tiny_patch16_224', model_args={},
    teacher='', teacher_checkpoint='', ce_weight=1.0, kd_weight=0.0, temperature=1.0,  # logit KD (off by default)
    dataset='fashion_mnist', data_dir='', train_limit=0, eval_limit=0, num_workers=1, bad_images='error',
    epochs=2, max_steps=0, batch_size=64, eval_batch_size=500, grad_accum=1, lr=1e-3, weight_decay=0.05,
    warmup_epochs=0.1, min_lr_ratio=0.01, clip_grad=0.0, drop_path=0.0,
    mixup=0.0, cutmix=0.0, smoothing=0.0, aug_scale=[0.7, 1.0], hflip=0.5, color_jitter=0.0, auto_augment='',
    re_prob=0.0, crop_pct=1.0, interpolation='bicubic',
    output='out/ancestry', resume='', seed=0, mixed_precision='no', cpu=False, fused_attn=True,
    checkpoint_every=0, keep_checkpoints=2, log_every=20, eval=True, stop_after=0,
)


def main(argv: Optional[Sequence[str]] = None):
    """Train; returns the model (the folder is OUTPUT/model)."""
    cfg = parse_config(argv, DEFAULTS, __doc__.splitlines()[1])
    set_fused_attn(cfg.fused_attn)  # timm's fused SDPA; its CPU backward is slow at small head dims
    if cfg.resume and cfg.output == DEFAULTS['output']:
        cfg.output = cfg.resume
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    out = Path(cfg.output)
    if accelerator.is_main_process:
        save_config(cfg, out / 'config.yaml')
    model = timm.create_model(cfg.model, drop_path_rate=cfg.drop_path, **cfg.model_args)
    c, size = model.patch_embed.proj.in_channels, model.patch_embed.img_size[0]
    data_cfg = vars(cfg)
    train_loader = build_loader(build_dataset(data_cfg, 'train', size, c, model.num_classes), cfg.batch_size,
                                True, cfg.num_workers, cfg.seed)
    eval_loader = build_loader(build_dataset(data_cfg, 'eval', size, c, model.num_classes), cfg.eval_batch_size,
                               False, cfg.num_workers)
    optimizer = make_optimizer(model.named_parameters(), cfg.lr, cfg.weight_decay, model.no_weight_decay())
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    steps_per_epoch = max(1, len(train_loader) // cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = cosine_schedule(optimizer, int(cfg.warmup_epochs * steps_per_epoch), total, cfg.min_lr_ratio)
    smoothing = 0.0 if (cfg.mixup or cfg.cutmix) else cfg.smoothing
    teacher = None
    if cfg.kd_weight:
        if not (cfg.teacher or cfg.teacher_checkpoint):
            raise SystemExit('train_vit: --kd-weight needs --teacher or --teacher-checkpoint')
        teacher = load_ancestry(cfg.teacher, cfg.teacher_checkpoint or None).to(accelerator.device)

    def loss_fn(m, x, y, step):
        logits = m(x)
        t_logits = None
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(x)
        return label_kd_loss(logits, y, t_logits, cfg.ce_weight, cfg.kd_weight, cfg.temperature, smoothing)

    def evaluate(epoch):
        if not cfg.eval:
            return {}
        model.eval()
        with accelerator.autocast():
            return accuracy(accelerator, lambda x: {'top1': model(x)}, eval_loader)

    fit(cfg, accelerator, model, train_loader, loss_fn, optimizer, scheduler, total, evaluate=evaluate,
        mixup=build_mixup(data_cfg, accelerator.unwrap_model(model).num_classes), desc='ancestry')
    accelerator.wait_for_everyone()
    core = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        save_for_hf(core, out / 'model', safe_serialization=True)  # model.safetensors, no pickle
        accelerator.print(f'model written to {out / "model"}')
    finish(accelerator)
    return core


if __name__ == '__main__':
    run_cli(main)
