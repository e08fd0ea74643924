"""The recipes' optimizer: timm's create_optimizer_v2 with the pool's weight-decay rules, layer decay folded into
each group's lr (the cosine LambdaLR reads the group's initial lr, not timm's lr_scale), clear errors."""
import pytest
import timm
import torch

from timm_learngene import LearngenePool
from timm_learngene.errors import ConfigError
from timm_learngene.finetune import set_trainable
from timm_learngene.training.loop import cosine_schedule, make_optimizer

from conftest import tiny_spec


def _groups(opt):
    """{id(param): (lr, weight_decay)} over every group."""
    return {id(p): (g['lr'], g['weight_decay']) for g in opt.param_groups for p in g['params']}


def test_pool_decay_groups_follow_no_weight_decay_and_skip_frozen():
    pool = LearngenePool(tiny_spec(6))
    set_trainable(pool, 'stitches')
    opt = make_optimizer(pool, 1e-3, 0.05)
    assert isinstance(opt, torch.optim.AdamW)
    got = _groups(opt)
    trainable = {n: p for n, p in pool.named_parameters() if p.requires_grad}
    assert trainable and len(trainable) < len(list(pool.parameters()))
    assert set(got) == {id(p) for p in trainable.values()}
    skip = pool.no_weight_decay()
    for n, p in trainable.items():
        want = 0.0 if p.ndim <= 1 or n in skip else 0.05
        assert got[id(p)] == (1e-3, want), n


def test_pool_without_weight_decay_still_skips_frozen():
    pool = LearngenePool(tiny_spec(6))
    set_trainable(pool, 'stitches')
    opt = make_optimizer(pool, 1e-3, 0.0)
    assert set(_groups(opt)) == {id(p) for p in pool.parameters() if p.requires_grad}


def test_position_embeddings_get_no_decay():
    pool = LearngenePool(tiny_spec(6))
    got = _groups(make_optimizer(pool, 1e-3, 0.05))
    params = dict(pool.named_parameters())
    assert got[id(params['members.tiny.pos_embed'])][1] == 0.0
    assert got[id(params['members.tiny.blocks.0.attn.qkv.weight'])][1] == 0.05


def test_other_timm_optimizer_by_name():
    model = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                              num_classes=5)
    opt = make_optimizer(model, 0.1, 0.0, opt='sgd')
    assert isinstance(opt, torch.optim.SGD)


def test_layer_decay_scales_lr_per_block_and_the_schedule_keeps_it():
    model = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2,
                              num_classes=5)
    opt = make_optimizer(model, 1e-2, 0.05, layer_decay=0.5)
    got = _groups(opt)
    params = dict(model.named_parameters())
    lr = {n: got[id(p)][0] for n, p in params.items()}
    assert lr['head.weight'] == pytest.approx(1e-2)
    # the head's layer is one above the last block, every block one factor of 0.5 below the next
    for i in range(3):
        assert lr[f'blocks.{i}.mlp.fc1.weight'] == pytest.approx(1e-2 * 0.5 ** (3 - i))
    assert lr['patch_embed.proj.weight'] == pytest.approx(1e-2 * 0.5 ** 4)
    assert all('lr_scale' not in g for g in opt.param_groups)
    sched = cosine_schedule(opt, 2, 10)
    for _ in range(2):
        opt.step()
        sched.step()
    after = {n: next(g['lr'] for g in opt.param_groups if any(q is p for q in g['params'])) for n, p in params.items()}
    ratio = after['head.weight'] / lr['head.weight']
    assert after['blocks.0.mlp.fc1.weight'] == pytest.approx(lr['blocks.0.mlp.fc1.weight'] * ratio)


def test_bad_optimizer_and_layer_decay_on_a_pool_are_config_errors():
    pool = LearngenePool(tiny_spec(6))
    with pytest.raises(ConfigError, match="--opt 'adamx' is not one of timm's optimizers.*adamw"):
        make_optimizer(pool, 1e-3, 0.05, opt='adamx')
    with pytest.raises(ConfigError, match='--layer-decay 0.7 needs a model with group_matcher'):
        make_optimizer(pool, 1e-3, 0.05, layer_decay=0.7)


def test_stitch_lr_scale_multiplies_only_the_stitch_layers_and_keeps_decay_rules():
    from timm_learngene.recipes.finetune import _stitch_lr

    pool = LearngenePool(tiny_spec(6))
    set_trainable(pool, 'all')
    plain = _groups(make_optimizer(pool, 1e-3, 0.05))
    scaled = _groups(make_optimizer(pool, 1e-3, 0.05, lr_scale=_stitch_lr(10.0)))
    assert set(scaled) == set(plain)
    names = {id(p): n for n, p in pool.named_parameters()}
    assert any(n.startswith('stitches.') for n in names.values())
    for key, (lr, wd) in scaled.items():
        factor = 10.0 if names[key].startswith('stitches.') else 1.0
        assert lr == pytest.approx(plain[key][0] * factor), names[key]
        assert wd == plain[key][1], names[key]
    assert _stitch_lr(1.0) is None


def test_lr_scale_composes_with_layer_decay_and_without_weight_decay():
    model = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2,
                              num_classes=5)
    head_x3 = lambda name: 3.0 if name.startswith('head.') else 1.0  # noqa: E731
    decayed = _groups(make_optimizer(model, 1e-2, 0.05, layer_decay=0.5))
    both = _groups(make_optimizer(model, 1e-2, 0.05, layer_decay=0.5, lr_scale=head_x3))
    params = dict(model.named_parameters())
    assert both[id(params['head.weight'])][0] == pytest.approx(3 * decayed[id(params['head.weight'])][0])
    assert both[id(params['blocks.0.mlp.fc1.weight'])] == pytest.approx(decayed[id(params['blocks.0.mlp.fc1.weight'])])
    no_wd = _groups(make_optimizer(model, 1e-2, 0.0, lr_scale=head_x3))
    assert set(no_wd) == {id(p) for p in model.parameters()}
    assert no_wd[id(params['head.bias'])] == (pytest.approx(3e-2), 0.0)
    assert no_wd[id(params['pos_embed'])] == (1e-2, 0.0)
