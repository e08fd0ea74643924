"""Distill an ancestry ViT into every member of a learngene pool, in one pass, and write the pool folder.

    accelerate launch recipes/distill.py --config recipes/configs/deit_base_l6.yaml --data-dir /data/imagenet
    python recipes/distill.py --config recipes/configs/fashion_mnist.yaml --teacher-checkpoint out/ancestry/model
    python recipes/distill.py --config ... --resume out/distill      # continue a stopped run

Outputs under ``--output``: ``config.yaml`` (the resolved config), ``log.jsonl``, ``checkpoints/`` and ``pool/``
(model.safetensors + config.json, loadable with ``timm.create_model('local-dir:OUT/pool', descendant='s3',
pretrained=True)``).
"""
from pathlib import Path
from typing import Optional, Sequence

import timm
from accelerate.utils import set_seed
from timm.layers import set_fused_attn

from ..ancestry import load_ancestry
from ..pool_writer import save_pool
from ..data.augment import eval_data_config
from ..data import build_mixup
from ..distill import FEATURE_NORMS, DenseDistiller
from ..spec import PoolSpec
from ..training.loop import finish, fit
from ..training.metrics import accuracy
from ..training.option_groups import AUGMENTATION, DATA, DISTILLATION, MODEL, OPTIMIZATION, RUN
from ..training.options import NAME_OR_JSON, Option, OptionTable, pick
from ..training.setup import check_inputs, prepare_run, start_run
from ..training.cli import run_cli
from ..weight_selection import init_members_from_ancestry

__all__ = ['OPTIONS', 'parse_args', 'run', 'main', 'build_pool']

OPTIONS = OptionTable([
    Option('pool', NAME_OR_JSON, 'deit_base_l6', 'the pool to distill into: a registered spec name or the spec as '
           'JSON (PoolSpec.to_json)', group='model'),
    Option('img_size', int, 0, "input size, overriding the spec's (0 = the spec's)", group='model'),
    Option('num_classes', int, 0, "classifier outputs, overriding the spec's (0 = the spec's)", group='model'),
    Option('in_chans', int, 0, "input channels, overriding the spec's (0 = the spec's)", group='model'),
    *MODEL, *DATA,
    *pick(DISTILLATION, 'teacher', 'teacher_checkpoint'),
    Option('alpha', float, 0.1, "loss = alpha * CE + (1 - alpha) * (KD + beta_block * block MSE + beta_attn * "
           'attention MSE), per member', group='distillation'),
    *pick(DISTILLATION, 'temperature'),
    Option('beta_block', float, 1.0, "weight of the MSE between the member's transformed block outputs and the "
           "teacher's", group='distillation'),
    Option('beta_attn', float, 1.0, "weight of the MSE between the member's transformed attention outputs and the "
           "teacher's", group='distillation'),
    Option('feature_norm', str, 'none', "how each matched position's block and attention MSE is normalised: none "
           "(raw residual stream MSE, scale of the teacher's features), teacher_ms (divided by the teacher "
           "feature's mean square), layernorm (both sides layer normalised without affine)",
           choices=FEATURE_NORMS, group='distillation'),
    Option('member_init', str, 'random', "how the members start: random (timm's ViT init) or weight_selection (each "
           "member takes evenly spaced blocks, channels, heads and MLP units of the ancestry; "
           'timm_learngene/weight_selection.py)', choices=('random', 'weight_selection'), group='distillation'),
    *OPTIMIZATION, *AUGMENTATION, *RUN,
], __doc__, defaults=dict(teacher='deit_base_patch16_224', output='out/distill'))


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


def build_pool(cfg):
    """The learngene pool of ``cfg.pool`` with the ``img_size``/``num_classes``/``in_chans`` overrides."""
    spec = PoolSpec.from_any(cfg.pool)
    overrides = {k: getattr(cfg, k) for k in ('img_size', 'num_classes', 'in_chans') if getattr(cfg, k)}
    return timm.create_model('learngene_pool', pool=spec.replace(**overrides), drop_path_rate=cfg.drop_path)


def run(cfg):
    """Distill; returns the distilled pool (the folder is OUTPUT/pool)."""
    check_inputs(cfg)  # the data is there before the ancestry is loaded (perhaps downloaded)
    set_fused_attn(cfg.fused_attn)  # timm's fused SDPA; its CPU backward is slow at small head dims
    set_seed(cfg.seed)
    pool = build_pool(cfg)
    spec = pool.pool_spec
    teacher = load_ancestry(cfg.teacher, cfg.teacher_checkpoint or None)
    if cfg.member_init == 'weight_selection':  # before the run starts: a resumed run loads its checkpoint over it
        init_members_from_ancestry(pool, teacher)
    distiller = DenseDistiller(pool, teacher, alpha=cfg.alpha, temperature=cfg.temperature,
                               beta_block=cfg.beta_block, beta_attn=cfg.beta_attn,
                               smoothing=0.0 if (cfg.mixup or cfg.cutmix) else cfg.smoothing,
                               feature_norm=cfg.feature_norm)
    shape = dict(img_size=spec.img_size, in_chans=spec.in_chans, num_classes=spec.num_classes)
    accelerator = start_run(cfg, distiller, lambda m, b: m(*b), **shape)
    out = Path(cfg.output)
    prep = prepare_run(cfg, accelerator, distiller, pool, **shape)
    distiller = prep.model
    core = accelerator.unwrap_model(distiller)

    def loss_fn(model, x, y, step):
        return model(x, y)

    def evaluate(epoch):
        if prep.eval_loader is None:
            return {}
        distiller.eval()
        with accelerator.autocast():
            return accuracy(accelerator, core.evaluate_logits, prep.eval_loader)

    accelerator.print(f'distilling {cfg.teacher_checkpoint or cfg.teacher} into {[m.label for m in spec.members]} '
                      f'({prep.total_steps} steps, {prep.steps_per_epoch} per epoch, {accelerator.num_processes} '
                      f'process(es))')
    fit(cfg, accelerator, prep, loss_fn,
        evaluate=evaluate, mixup=build_mixup(vars(cfg), spec.num_classes), desc='distill')
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_pool(core.pool, out / 'pool', recipe={'distill': dict(vars(cfg))},
                  data_config=eval_data_config(vars(cfg), spec.img_size, spec.in_chans))
        accelerator.print(f'pool written to {out / "pool"}')
    finish(accelerator)
    return core.pool


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))


if __name__ == '__main__':  # accelerate launch -m timm_learngene.recipes.distill ...
    run_cli(main)
