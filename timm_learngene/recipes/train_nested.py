"""Train a nested pool: one timm ViT whose width slices are models of their own (:mod:`timm_learngene.nested`).

    python recipes/train_nested.py --model vit_tiny_patch16_224 --model-args '{"embed_dim": 192, "depth": 6,
        "num_heads": 3, "img_size": 32, "patch_size": 8, "in_chans": 1, "num_classes": 10}'
        --sizes 64x1,96x2,128x2,160x2,192x3 --teacher-checkpoint out/ancestry/model --dataset fashion_mnist

Every optimizer step trains ``--sizes-per-step`` widths on the same batch (the sandwich rule: the widest and the
narrowest in every step, or the ``--narrowest-every-step`` narrowest, the others drawn uniformly, seeded and
resumable), each with ``ce_weight * CE + kd_weight * KD`` from the ancestry (one ancestry forward a step), their
mean the loss. ``--member-init weight_selection`` starts the network from the ancestry's own weights (each slice
then equal to the weight-selected member of its width). At the end every size is evaluated on the test split
(``top1``) and, with ``--val-size``, the validation split (``val_top1``): ``OUTPUT/sizes.csv`` (name, route, width,
heads, params, gmacs, top1, val_top1). Writes ``OUTPUT/model`` (the full network, ``timm.models.save_for_hf``) and
``OUTPUT/nested.json`` (its sizes); a size alone: ``NestedViT.slice_model``.
"""
import csv
import json
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from accelerate.utils import set_seed
from timm.layers import set_fused_attn
from timm.models import save_for_hf

from ..ancestry import load_ancestry
from ..data import build_dataset, build_loader, build_mixup
from ..errors import ConfigError, PoolSpecError
from ..finetune import DescendantTrainer, RouteSampler
from ..nested import NestedViT, every_step, size_cost
from ..training.loop import finish, fit
from ..training.metrics import accuracy
from ..training.option_groups import AUGMENTATION, DATA, DISTILLATION, MODEL, OPTIMIZATION, RUN
from ..training.options import Option, OptionTable
from ..training.setup import check_inputs, pin_memory, prepare_run, start_run
from ..training.cli import run_cli
from ..weight_selection import select_weights
from .train_vit import trained_cfg

__all__ = ['OPTIONS', 'parse_args', 'run', 'main']


def _check(cfg) -> None:
    if cfg.kd_weight and not (cfg.teacher or cfg.teacher_checkpoint):
        raise ConfigError('train_nested: --kd-weight needs --teacher or --teacher-checkpoint (or --kd-weight 0)')
    if cfg.member_init == 'weight_selection' and not (cfg.teacher or cfg.teacher_checkpoint):
        raise ConfigError('train_nested: --member-init weight_selection takes the ancestry\'s weights; give '
                          '--teacher or --teacher-checkpoint')


OPTIONS = OptionTable([
    Option('model', str, 'vit_tiny_patch16_224', 'timm model name of the full network (the widest size)',
           group='model'),
    Option('model_args', dict, {}, 'keyword arguments for timm.create_model of the full network, as a JSON object',
           group='model'),
    Option('sizes', List[str], [], 'the width slices, WIDTHxHEADS comma-separated (e.g. 64x1,96x2,192x3); the widest '
           "must be the full network's own width and heads", group='model'),
    Option('sizes_per_step', int, 4, 'widths trained per optimizer step: the widest and the narrowest in every step, '
           'the others drawn uniformly', group='model'),
    Option('narrowest_every_step', int, 1, 'how many of the narrowest widths train in every step (with the widest); '
           'the rest of --sizes-per-step is drawn from the widths between', group='model'),
    Option('slicing', str, 'prefix', "how a size is cut from the network: prefix (the first channels, heads and "
           'units: each narrower size inside the wider; ahead of even on val at seed 0, docs/stitching.md section '
           '10) or even (evenly spaced, as weight selection takes a member from the ancestry)', group='model',
           choices=('even', 'prefix')),
    Option('member_init', str, 'random', "how the network starts: random (timm's init) or weight_selection (the "
           "ancestry's own weights, as distill --member-init weight_selection)", group='model',
           choices=('random', 'weight_selection')),
    *MODEL, *DATA, *DISTILLATION, *OPTIMIZATION, *AUGMENTATION, *RUN,
], __doc__, check=_check, defaults=dict(
    dataset='fashion_mnist', num_workers=1, epochs=2, batch_size=64, eval_batch_size=500, lr=1e-3,
    warmup_epochs=0.1, drop_path=0.0, mixup=0.0, cutmix=0.0, smoothing=0.0, aug_scale=[0.7, 1.0], auto_augment='',
    re_prob=0.0, crop_pct=1.0, output='out/nested', checkpoint_every=0,
))


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


def run(cfg):
    """Train; returns the :class:`NestedViT` (OUTPUT/model holds the full network, OUTPUT/sizes.csv the sizes)."""
    check_inputs(cfg, ('eval', 'train') if cfg.val_size else ('eval',))
    set_fused_attn(cfg.fused_attn)
    set_seed(cfg.seed)
    try:
        model = NestedViT(cfg.model, cfg.model_args, cfg.sizes or [], slicing=cfg.slicing,
                          drop_path_rate=cfg.drop_path)
    except PoolSpecError as e:
        raise ConfigError(f'train_nested: {e}') from None
    base = model.base
    shape = dict(img_size=base.patch_embed.img_size[0], in_chans=base.patch_embed.proj.in_channels,
                 num_classes=base.num_classes)
    teacher = None
    if cfg.kd_weight or cfg.member_init == 'weight_selection':
        teacher = load_ancestry(cfg.teacher, cfg.teacher_checkpoint or None)
    if cfg.member_init == 'weight_selection':
        anc = {k: v.detach() for k, v in teacher.state_dict().items()}
        try:
            base.load_state_dict(select_weights(base.state_dict(), base.embed_dim, base.blocks[0].attn.num_heads,
                                                len(base.blocks), anc, teacher), strict=False)
        except PoolSpecError as e:
            raise ConfigError(f'train_nested: --member-init weight_selection: {e}') from None
    names = model.names
    try:
        idx = every_step(len(names), cfg.narrowest_every_step)
        always = [names[idx[-1]], *(names[i] for i in idx[:-1])]  # the widest first, then narrowest first
    except ValueError as e:
        raise ConfigError(f'train_nested: --narrowest-every-step {cfg.narrowest_every_step}: {e}') from None
    try:
        sampler = RouteSampler(names, seed=cfg.seed, per_step=min(cfg.sizes_per_step, len(names)), always=always)
    except ValueError as e:
        raise ConfigError(f'train_nested: --sizes-per-step {cfg.sizes_per_step}: {e}') from None
    trainer = DescendantTrainer(model, teacher if cfg.kd_weight else None, cfg.ce_weight, cfg.kd_weight,
                                cfg.temperature, smoothing=0.0 if (cfg.mixup or cfg.cutmix) else cfg.smoothing)
    accelerator = start_run(cfg, trainer, lambda m, b: m(b[0], b[1], always), **shape)
    out = Path(cfg.output)
    prep = prepare_run(cfg, accelerator, trainer, model, **shape)
    trainer = prep.model
    core = accelerator.unwrap_model(trainer).pool

    def measure(loader, name):
        core.eval()
        with torch.no_grad(), accelerator.autocast():
            return accuracy(accelerator, lambda x: {'top1': core(x, name)}, loader)['top1']

    def evaluate(epoch):
        if prep.eval_loader is None:
            return {}
        return {'top1': measure(prep.eval_loader, names[-1])}

    fit(cfg, accelerator, prep, lambda m, x, y, step: m(x, y, sampler.routes_for(step)), evaluate=evaluate,
        mixup=build_mixup(vars(cfg), shape['num_classes']), extra_state=[sampler], desc='train_nested')
    val_loader = None
    if cfg.val_size:
        val_loader = accelerator.prepare(build_loader(build_dataset(vars(cfg), 'val', **shape), cfg.eval_batch_size,
                                                      False, cfg.num_workers, pin_memory=pin_memory(cfg, accelerator.device)))
    rows = []
    for (w, h), name in zip(model.sizes, names):
        params, macs = size_cost(w, h, model.depth, patch_size=base.patch_embed.patch_size[0], **shape)
        row = dict(name=name, route=f'ViT {w}/{h}h/{model.depth}', width=w, heads=h, params=params,
                   gmacs=round(macs / 1e9, 4))
        if prep.eval_loader is not None:
            row['top1'] = measure(prep.eval_loader, name)
        if val_loader is not None:
            row['val_top1'] = measure(val_loader, name)
        rows.append(row)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        base.pretrained_cfg = trained_cfg(base.pretrained_cfg, cfg, **shape)
        save_for_hf(base, out / 'model', safe_serialization=True)
        (out / 'nested.json').write_text(json.dumps(dict(
            model=cfg.model, model_args=cfg.model_args, slicing=cfg.slicing,
            sizes=[f'{w}x{h}' for w, h in model.sizes]), indent=2))
        with open(out / 'sizes.csv', 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        accelerator.print(f'nested network written to {out / "model"}; sizes: '
                          + ', '.join(f"{r['name']} {r.get('top1', float('nan')):.2f}" for r in rows))
    finish(accelerator)
    return model


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))


if __name__ == '__main__':  # accelerate launch -m timm_learngene.recipes.train_nested ...
    run_cli(main)
