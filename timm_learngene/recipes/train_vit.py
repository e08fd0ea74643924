"""Train a plain timm ViT on labels (the ancestry for small-scale runs, SN-Net anchors, or a from-scratch
baseline), with optional logit KD from a teacher.

    python recipes/train_vit.py --config recipes/configs/fashion_mnist_ancestry.yaml

Writes ``OUTPUT/model`` with ``timm.models.save_for_hf`` (config.json + model.safetensors), loadable with
``timm.create_model('local-dir:OUTPUT/model', pretrained=True)`` and usable as ``--teacher-checkpoint``; and
config.yaml, log.jsonl, checkpoints/ under ``--output``.
"""
from pathlib import Path
from typing import Optional, Sequence

import timm
import torch
from accelerate.utils import set_seed
from timm.layers import set_fused_attn
from timm.models import save_for_hf

from ..ancestry import load_ancestry
from ..data import build_mixup
from ..data.augment import eval_data_config
from ..errors import ConfigError
from ..losses import label_kd_loss
from ..training.loop import finish, fit
from ..training.metrics import accuracy
from ..training.option_groups import AUGMENTATION, DATA, DISTILLATION, MODEL, OPTIMIZATION, RUN
from ..training.options import Option, OptionTable
from ..training.setup import check_inputs, prepare_run, start_run
from ..training.cli import run_cli

__all__ = ['OPTIONS', 'parse_args', 'run', 'main']


def _check(cfg) -> None:
    if cfg.kd_weight and not (cfg.teacher or cfg.teacher_checkpoint):
        raise ConfigError('train_vit: --kd-weight needs --teacher or --teacher-checkpoint (or --kd-weight 0)')


OPTIONS = OptionTable([
    Option('model', str, 'vit_tiny_patch16_224', 'timm model name of the ViT to train', group='model'),
    Option('model_args', dict, {}, 'keyword arguments for timm.create_model, as a JSON object, e.g. '
           '{"embed_dim": 192, "depth": 12, "num_heads": 3, "img_size": 32, "in_chans": 1}', group='model'),
    *MODEL, *DATA, *DISTILLATION, *OPTIMIZATION, *AUGMENTATION, *RUN,
], __doc__, check=_check, defaults=dict(
    ce_weight=1.0, kd_weight=0.0,  # labels only; logit KD when --kd-weight > 0
    dataset='fashion_mnist', num_workers=1,
    epochs=2, batch_size=64, eval_batch_size=500, lr=1e-3, warmup_epochs=0.1, drop_path=0.0,
    mixup=0.0, cutmix=0.0, smoothing=0.0, aug_scale=[0.7, 1.0], auto_augment='', re_prob=0.0, crop_pct=1.0,
    output='out/ancestry', checkpoint_every=0,
))


# where the architecture's published weights came from: not this model's
_PROVENANCE = ('url', 'hf_hub_id', 'hf_hub_filename', 'file', 'source', 'tag', 'custom_load', 'license', 'paper_ids',
               'paper_name', 'notes', 'origin_url')


def trained_cfg(pretrained_cfg: Optional[dict], cfg, img_size: int, in_chans: int, num_classes: int) -> dict:
    """The pretrained cfg a trained model is saved with: the architecture's, without the provenance of its
    published weights (a tag or Hub id would claim weights this model does not have), with the recipe's eval
    preprocessing (:func:`~timm_learngene.data.eval_data_config`: mean, std, crop_pct, interpolation, input size)
    and classes, so ``resolve_data_config(model=m)`` reproduces what the recipe evaluated with."""
    out = {k: v for k, v in (pretrained_cfg or {}).items() if k not in _PROVENANCE}
    out.update(eval_data_config(vars(cfg), img_size, in_chans), num_classes=num_classes)
    return out


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


def run(cfg):
    """Train; returns the model (the folder is OUTPUT/model)."""
    check_inputs(cfg)  # the data is there before anything is built or downloaded
    set_fused_attn(cfg.fused_attn)  # timm's fused SDPA; its CPU backward is slow at small head dims
    set_seed(cfg.seed)
    model = timm.create_model(cfg.model, drop_path_rate=cfg.drop_path, **cfg.model_args)
    shape = dict(img_size=model.patch_embed.img_size[0], in_chans=model.patch_embed.proj.in_channels,
                 num_classes=model.num_classes)
    accelerator = start_run(cfg, model, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]), **shape)
    out = Path(cfg.output)
    prep = prepare_run(cfg, accelerator, model, model, **shape)
    model = prep.model
    smoothing = 0.0 if (cfg.mixup or cfg.cutmix) else cfg.smoothing
    teacher = None
    if cfg.kd_weight:
        teacher = load_ancestry(cfg.teacher, cfg.teacher_checkpoint or None).to(accelerator.device)

    def loss_fn(m, x, y, step):
        logits = m(x)
        t_logits = None
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(x)
        return label_kd_loss(logits, y, t_logits, cfg.ce_weight, cfg.kd_weight, cfg.temperature, smoothing)

    def evaluate(epoch):
        if prep.eval_loader is None:
            return {}
        model.eval()
        with accelerator.autocast():
            return accuracy(accelerator, lambda x: {'top1': model(x)}, prep.eval_loader)

    core = accelerator.unwrap_model(model)
    fit(cfg, accelerator, prep, loss_fn,
        evaluate=evaluate, mixup=build_mixup(vars(cfg), core.num_classes),
        desc='train_vit (KD)' if teacher is not None else 'train_vit')
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        core.pretrained_cfg = trained_cfg(core.pretrained_cfg, cfg, **shape)
        save_for_hf(core, out / 'model', safe_serialization=True)  # model.safetensors, no pickle
        accelerator.print(f'model written to {out / "model"}')
    finish(accelerator)
    return core


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))


if __name__ == '__main__':  # accelerate launch -m timm_learngene.recipes.train_vit ...
    run_cli(main)
