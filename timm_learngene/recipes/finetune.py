"""Initialise the stitch layers of a pool and finetune all its descendants jointly, then write the pool folder.

    accelerate launch recipes/finetune.py --pool out/distill/pool --stitch-init learngene --data-dir /data/imagenet
    # SN-Net baseline, same harness: a pool of independently trained anchors, lstsq stitches
    accelerate launch recipes/finetune.py --stitch-init lstsq --teacher deit_base_patch16_224 \\
        --anchors deit_tiny_patch16_224,deit_small_patch16_224,deit_base_patch16_224 --data-dir /data/imagenet

``--routes-per-step`` descendants per optimizer step (the smallest and largest member always among them, the rest
drawn from a seeded generator, the same on every process); loss ``ce_weight * CE + kd_weight * KD`` from the
ancestry, averaged over the step's routes. ``--train all`` trains blocks and stitch layers (the paper),
``--train stitches`` only the stitch layers (the pool's blocks stay the distilled learngenes).
Outputs under ``--output``: config.yaml, log.jsonl, checkpoints/, pool/.
"""
import json
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence

import timm
import torch
from accelerate.utils import set_seed
from timm.layers import set_fused_attn

from ..ancestry import load_ancestry
from ..pool_reader import read_pool_config
from ..pool_writer import load_pool, save_pool
from ..data import build_dataset, build_mixup
from ..data.augment import eval_data_config
from ..errors import ConfigError
from ..finetune import (
    SANDWICH, TRAIN_MODES, DescendantTrainer, RouteSampler, add_lora_stitches, merge_lora_stitches, sandwich_routes,
    set_trainable,
)
from ..snnet import anchor_pool
from ..spec import route_macs
from ..stitch_init import STITCH_INITS, init_stitches
from ..training.loop import finish, fit, latest_checkpoint
from ..training.metrics import accuracy
from ..training.progress import Progress
from ..training.option_groups import AUGMENTATION, DATA, DISTILLATION, OPTIMIZATION, RUN
from ..training.options import Option, OptionTable
from ..training.launch import launched_main_process
from ..training.setup import check_inputs, prepare_run, start_run
from ..training.cli import run_cli

__all__ = ['OPTIONS', 'parse_args', 'run', 'main']


def _check(cfg) -> None:
    if bool(cfg.pool) == bool(cfg.anchors):
        raise ConfigError('finetune: pass exactly one of --pool FOLDER (a distilled pool) or --anchors A,B,C '
                          '(SN-Net)')
    if cfg.stitch_lora_rank < 0:
        raise ConfigError(f'finetune: --stitch-lora-rank must be 0 (off) or a rank >= 1, got {cfg.stitch_lora_rank}')
    if not cfg.stitch_lr_scale > 0:
        raise ConfigError(f'finetune: --stitch-lr-scale must be above 0 (a multiple of --lr), got '
                          f'{cfg.stitch_lr_scale}; use --train all with 1 for one lr, or --train stitches to freeze '
                          f'the blocks')


def _stitch_lr(scale: float):
    """``make_optimizer``'s ``lr_scale``: ``scale`` on the pool's stitch layers; None (one lr) for 1."""
    return None if scale == 1.0 else (lambda name: scale if name.startswith('stitches.') else 1.0)


OPTIONS = OptionTable([
    Option('pool', str, '', "a pool folder to finetune (distill's OUTPUT/pool); or give --anchors", group='model'),
    Option('anchors', List[str], [], 'SN-Net instead of --pool: the anchor models '
           '(timm names, local-dir:/hf-hub: names or model folders), comma-separated, each one a member',
           group='model'),
    Option('num_classes', int, 0, "classifier outputs (0 = the pool's); another number puts a new head of that "
           'many classes on every member, to finetune on a data set with other classes (as timm\'s train.py '
           '--num-classes); KD then needs an ancestry with as many outputs', group='model'),
    Option('stitch_init', str, 'lstsq', "how the stitch layers start: lstsq (least squares on --init-images "
           'training images), learngene (data-free, from the distillation transforms), transpose (the released '
           "code's rule), none (keep the pool's stitch layers)", choices=STITCH_INITS + ('none',),
           group='finetune'),
    Option('init_images', int, 100, 'training images (without augmentation) the lstsq init fits on',
           group='finetune'),
    Option('ridge_lambda', float, 0.01, 'ridge regularisation of the learngene init (composing two transforms)',
           group='finetune'),
    Option('train', str, 'all', 'what is trained: all (blocks and stitch layers, the paper) or stitches (only the '
           'stitch layers; the blocks stay the distilled learngenes)', choices=TRAIN_MODES, group='finetune'),
    Option('stitch_lr_scale', float, 1.0, "the stitch layers' lr as a multiple of --lr (with --train all: the only "
           "weights each stitched route has to itself, freshly fitted, next to blocks that are already trained)",
           group='finetune'),
    Option('routes_per_step', int, 3, 'descendants trained per optimizer step (their losses averaged, one teacher '
           'forward); with --train all and 3 or more, the smallest and the largest member are always among them '
           '(the sandwich rule: drawn alone on 1/N of the steps, the members were dragged down by the stitched '
           'routes that share their blocks), the rest drawn from a seeded generator, the same on every process',
           group='finetune'),
    Option('stitch_lora_rank', int, 0, "0: train the stitch layers themselves; R > 0: keep each stitch layer as "
           "initialised (e.g. --stitch-init lstsq) frozen and train a rank-R update on it (SN-Netv2's LoRA stitch), "
           "folded back into the layer when the pool is written", group='finetune'),
    Option('two_way', bool, False, "also stitch each larger member into the next smaller one (SN-Netv2's "
           'two-way stitching): the large-front routes become descendants, their stitch layers added to the pool '
           'and set by --stitch-init (lstsq or learngene)', group='model'),
    Option('sandwich', str, 'ends', 'with --train all and 3 or more routes per step, the members in every step: '
           'ends (the smallest and the largest) or members (every member; needs as many routes per step)',
           choices=SANDWICH, group='finetune'),
    Option('route_sampling', str, 'uniform', "how the non-sandwich routes of a step are drawn: uniform (every "
           "route alike) or macs (one from each of as many equal-width MACs buckets as routes are drawn, SN-Netv2's "
           "FLOPs-bucketed sampling, so every part of the size range is trained every step)",
           choices=('uniform', 'macs'), group='finetune'),
    *DATA,
    replace(DISTILLATION[0], help=DISTILLATION[0].help + " ('' with no --teacher-checkpoint = the timm model the "
            "pool's distill recipe names)"),
    *DISTILLATION[1:], *OPTIMIZATION, *AUGMENTATION, *RUN,
], __doc__, check=_check, defaults=dict(
    epochs=50, lr=1e-4,  # the paper: 50 epochs, no mixup
    mixup=0.0, cutmix=0.0,
    output='out/finetune', eval=False,
))


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


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


def run(cfg):
    """Finetune; returns the finetuned pool (the folder is OUTPUT/pool)."""
    check_inputs(cfg)  # the data is there before the pool, the anchors or the ancestry are loaded
    set_fused_attn(cfg.fused_attn)  # timm's fused SDPA; its CPU backward is slow at small head dims
    set_seed(cfg.seed)
    if cfg.pool:
        recipe = read_pool_config(cfg.pool).get('recipe') or {}
        pool = load_pool(cfg.pool, **({'num_classes': cfg.num_classes} if cfg.num_classes else {}))
    else:
        recipe = {}
        pool = anchor_pool(cfg.anchors, num_classes=cfg.num_classes)
    if cfg.two_way:
        if cfg.stitch_init == 'none' and not pool.pool_spec.two_way:
            raise ConfigError('finetune: --two-way adds stitch layers, and --stitch-init none would leave them at '
                              'random; use --stitch-init lstsq or learngene')
        added = pool.add_two_way_stitches()
        if added and launched_main_process():
            print(f'two-way stitching: {added} stitch layers added (larger -> smaller members)', flush=True)
    spec = pool.pool_spec
    # a resumed run restores the stitch layers from its checkpoint; one killed before its first checkpoint
    # starts over and initialises them like a fresh run
    if cfg.stitch_init != 'none' and not (cfg.resume and latest_checkpoint(cfg.resume) is not None):
        images = None
        if cfg.stitch_init == 'lstsq':
            calib = build_dataset(vars(cfg), 'train', spec.img_size, spec.in_chans, spec.num_classes, augment=False)
            idx = torch.randperm(len(calib), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.init_images]
            images = torch.stack([calib[int(i)][0] for i in idx])
        solved = init_stitches(
            pool, cfg.stitch_init, images, lam=cfg.ridge_lambda,
            progress=lambda total, desc: Progress(total, desc=desc, mode=cfg.progress, every=max(1, total // 10),
                                                  enabled=launched_main_process(), unit='solve'))
        if launched_main_process():  # no PartialState() before the Accelerator: it would fix the state without cpu
            print(f'stitch layers initialised by {cfg.stitch_init}: {solved} positions', flush=True)
    routes = set_trainable(pool, cfg.train)
    if cfg.stitch_lora_rank:
        try:
            n = add_lora_stitches(pool, cfg.stitch_lora_rank)
        except ValueError as e:
            raise ConfigError(f'finetune: --stitch-lora-rank {cfg.stitch_lora_rank}: {e}') from None
        if launched_main_process():
            print(f'{n} stitch layers frozen, each with a trained rank-{cfg.stitch_lora_rank} update', flush=True)
    teacher = _teacher(cfg, recipe)
    if teacher is not None and getattr(teacher, 'num_classes', spec.num_classes) != spec.num_classes:
        raise ConfigError(f'finetune: KD compares logits, but the ancestry has {teacher.num_classes} outputs and the '
                          f'pool {spec.num_classes}; pass an ancestry trained on this data (--teacher-checkpoint) or '
                          f'--kd-weight 0 for labels only')
    trainer = DescendantTrainer(pool, teacher, cfg.ce_weight, cfg.kd_weight, cfg.temperature,
                                smoothing=0.0 if (cfg.mixup or cfg.cutmix) else cfg.smoothing)
    always = sandwich_routes(pool, cfg.sandwich) if cfg.train == 'all' and cfg.routes_per_step >= 3 else ()
    try:
        macs = [route_macs(spec, r) for r in routes] if cfg.route_sampling == 'macs' else None
        sampler = RouteSampler(routes, seed=cfg.seed, per_step=cfg.routes_per_step, always=always, macs=macs)
    except ValueError as e:
        raise ConfigError(f'finetune: --routes-per-step {cfg.routes_per_step}: {e}') from None
    shape = dict(img_size=spec.img_size, in_chans=spec.in_chans, num_classes=spec.num_classes)
    probe_routes = list(always) or routes[-cfg.routes_per_step:]
    accelerator = start_run(cfg, trainer, lambda m, b: m(b[0], b[1], probe_routes), **shape, find_unused_parameters=True)
    out = Path(cfg.output)
    prep = prepare_run(cfg, accelerator, trainer, pool, **shape, lr_scale=_stitch_lr(cfg.stitch_lr_scale))
    trainer = prep.model
    core = accelerator.unwrap_model(trainer)

    def loss_fn(model, x, y, step):
        return model(x, y, sampler.routes_for(step))  # drawn on the step's first micro-batch

    def evaluate(epoch):
        if prep.eval_loader is None:
            return {}
        trainer.eval()
        with accelerator.autocast():
            return accuracy(accelerator, lambda x: {d.name: core.pool(x, d.route) for d in core.pool.descendants},
                            prep.eval_loader)

    accelerator.print(f'finetuning {len(routes)} descendants of {spec.name!r} ({cfg.train}), {prep.total_steps} '
                      f'steps, {accelerator.num_processes} process(es)')
    fit(cfg, accelerator, prep, loss_fn,
        evaluate=evaluate, mixup=build_mixup(vars(cfg), spec.num_classes), extra_state=[sampler], desc='finetune')
    accelerator.wait_for_everyone()
    merge_lora_stitches(core.pool)  # the pool file (and the returned pool) holds plain stitch layers
    if accelerator.is_main_process:
        recipe = dict(recipe, finetune=json.loads(json.dumps(vars(cfg), default=str)))
        core.pool.metrics = {}  # accuracies measured before finetuning no longer hold
        save_pool(core.pool, out / 'pool', recipe=recipe,
                  data_config=eval_data_config(vars(cfg), spec.img_size, spec.in_chans))
        accelerator.print(f'pool written to {out / "pool"}')
    finish(accelerator)
    return core.pool


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))


if __name__ == '__main__':  # accelerate launch -m timm_learngene.recipes.finetune ...
    run_cli(main)
