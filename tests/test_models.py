"""Every registered learngene model, built at tiny size, speaks timm's model API (after timm's tests/test_models.py).
"""
import pytest
import timm
import torch
from timm.models import group_parameters
from timm.models.vision_transformer import VisionTransformer

import timm_learngene
from timm_learngene import Descendant, LearngenePool, enumerate_descendants
from timm_learngene.spec import find_descendant, route_params

from conftest import IMG, NUM_CLASSES, tiny_spec

POOL_NAMES = ['learngene_pool', 'learngene_pool_l9']
ALL_NAMES = timm.list_models('learngene_pool*')
DESCENDANT_NAMES = [n for n in ALL_NAMES if n not in POOL_NAMES]
TINY = {6: tiny_spec(6), 9: tiny_spec(9)}


def test_every_expected_name_is_registered():
    assert len(DESCENDANT_NAMES) == 18 + 27 and set(POOL_NAMES) <= set(ALL_NAMES)


def _spec_for(name):
    return TINY[9] if name.startswith('learngene_pool_l9') else TINY[6]


def _create(name, **kwargs):
    return timm.create_model(name, pool=_spec_for(name), **kwargs)


def _images(batch=2, chans=3, size=IMG):
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(1))


def _check_grads(named_params):
    named_params = list(named_params)
    assert named_params
    for n, p in named_params:
        assert p.grad is not None, f'{n} got no gradient'
        assert torch.isfinite(p.grad).all(), f'{n} has a non-finite gradient'
        assert p.grad.abs().sum() > 0, f'{n} has an all-zero gradient'


# ---- descendants: the timm model API ----------------------------------------------------------------------------
@pytest.mark.parametrize('name', DESCENDANT_NAMES)
def test_descendant_forward_backward(name):
    model = _create(name)
    assert isinstance(model, Descendant)
    spec = _spec_for(name)
    want = find_descendant(spec, 's' + name.rsplit('_s', 1)[1])
    assert model.route == want.route
    x = _images()
    out = model(x)
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    _check_grads(model.named_parameters())
    assert sum(p.numel() for p in model.parameters()) == want.params


@pytest.mark.parametrize('name', DESCENDANT_NAMES)
def test_descendant_classifier_api(name):
    model = _create(name).eval()
    end_width = _spec_for(name).member(model.route[-1][0]).width
    assert model.num_features == end_width and model.num_classes == NUM_CLASSES
    assert model.get_classifier() is model.head and model.head.out_features == NUM_CLASSES
    x = _images()
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert feats.shape == (2, (IMG // 8) ** 2 + 1, end_width)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, end_width)
        torch.testing.assert_close(model.head(pre), logits, rtol=0, atol=0)
        model.reset_classifier(0)
        assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)
        torch.testing.assert_close(model(x), pre, rtol=0, atol=0)
        model.reset_classifier(7, global_pool='avg')
        assert model(x).shape == (2, 7) and model.global_pool == 'avg'
        assert torch.equal(model.forward_head(feats, pre_logits=True), feats[:, 1:].mean(1))
    with pytest.raises(ValueError, match="global_pool must be 'token', 'avg' or ''"):
        model.reset_classifier(3, global_pool='max')


@pytest.mark.parametrize('name', DESCENDANT_NAMES)
def test_descendant_pretrained_cfg(name):
    model = _create(name)
    cfg = model.pretrained_cfg
    for key in ('input_size', 'mean', 'std', 'interpolation', 'crop_pct', 'num_classes', 'first_conv',
                'classifier', 'license', 'paper_ids'):
        assert key in cfg and cfg[key] is not None, key
    assert cfg['architecture'] == name and cfg['fixed_input_size']
    # no pool is published: no Hub repo or tag claims weights (README "Pretrained weights")
    assert not cfg.get('hf_hub_id') and not cfg.get('tag')
    # the names timm reads really exist on the model
    assert model.get_submodule(cfg['first_conv']) is model.patch_embed.proj
    assert model.get_submodule(cfg['classifier']) is model.head
    assert model.default_cfg is model.pretrained_cfg


@pytest.mark.parametrize('name', DESCENDANT_NAMES)
def test_descendant_forward_intermediates(name):
    model = _create(name).eval()
    # a block followed by a stitch reports the stitched tensor, in the next block's width
    widths = [f['num_chs'] for f in model.feature_info]
    depth = len(model.blocks)
    assert len(widths) == depth and widths[-1] == model.num_features
    if len(model.route) == 2:
        j = model.route[0][2] - model.route[0][1] - 1
        assert model.block_widths[j] != widths[j] == model.block_widths[j + 1]
    g = IMG // 8
    x = _images()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert len(inter) == depth
        for t, w in zip(inter, widths):
            assert t.shape == (2, w, g, g)
        final_nlc, nlc = model.forward_intermediates(x, output_fmt='NLC')
        assert torch.equal(final_nlc, final)
        for a, b in zip(inter, nlc):
            assert torch.equal(a, b.transpose(1, 2).reshape(a.shape))
        # the last block's output, normed, is what forward_features returns (patch tokens)
        assert torch.equal(model.norm(nlc[-1]), final[:, 1:])

        only = model.forward_intermediates(x, indices=[0, depth - 1], intermediates_only=True)
        assert isinstance(only, list) and len(only) == 2
        assert torch.equal(only[0], inter[0]) and torch.equal(only[1], inter[-1])
        last2 = model.forward_intermediates(x, indices=2, output_fmt='NLC', intermediates_only=True)
        assert [t.shape[-1] for t in last2] == widths[-2:]
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        assert torch.equal(early[0], inter[1])
        with_prefix = model.forward_intermediates(x, indices=[depth - 1], return_prefix_tokens=True,
                                                  intermediates_only=True)
        spatial, prefix = with_prefix[0]
        assert prefix.shape == (2, 1, widths[-1]) and torch.equal(spatial, inter[-1])
        normed = model.forward_intermediates(x, indices=[depth - 1], norm=True, output_fmt='NLC',
                                             intermediates_only=True)
        assert torch.equal(normed[0], final[:, 1:])
    if widths[0] != widths[-1]:
        with pytest.raises(ValueError, match='norm=True applies the final norm'):
            model.forward_intermediates(x, indices=[0], norm=True)
    with pytest.raises(ValueError, match='output_fmt'):
        model.forward_intermediates(x, output_fmt='NHWC')


# Checkpointing is one code path for every descendant; members alone and stitches at both ends cover it.
@pytest.mark.parametrize('name', ['learngene_pool_s1', 'learngene_pool_s3', 'learngene_pool_s16',
                                  'learngene_pool_s18', 'learngene_pool_l9_s14'])
def test_descendant_grad_checkpointing(name):
    model = _create(name).eval()
    x = _images()
    ref = model(x)
    ref.sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    calls = []
    hook = model.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    out = model(x)
    out.sum().backward()
    hook.remove()
    assert len(calls) == 2  # checkpointing reran the block during backward
    assert torch.equal(out, ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], msg=n)


@pytest.mark.parametrize('name', DESCENDANT_NAMES)
def test_descendant_weight_decay_and_groups(name):
    model = _create(name)
    names = {n for n, _ in model.named_parameters()}
    nwd = model.no_weight_decay()
    assert nwd == {'pos_embed', 'cls_token'} and nwd <= names
    groups = group_parameters(model, model.group_matcher())
    assigned = [n for g in groups.values() for n in g]
    assert sorted(assigned) == sorted(names)
    # stem first, head last, one group per block in between; a stitch goes with the block it follows
    depth = len(model.blocks)
    assert len(groups) == depth + 2
    assert set(groups[0]) == {'cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias'}
    assert set(groups[depth + 1]) == {'head.weight', 'head.bias'}
    for key in model.stitches:
        assert f'stitches.{key}.weight' in groups[int(key) + 1]
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert sorted(n for g in coarse.values() for n in g) == sorted(names)


# ---- timm's kwargs --------------------------------------------------------------------------------------------
def test_timm_kwargs_at_real_width():
    model = timm.create_model('learngene_pool_s3', num_classes=10, img_size=32)
    assert model.route == (('tiny', 0, 6), ('base', 5, 6))
    assert model.pos_embed.shape == (1, 5, 192) and model.head.out_features == 10
    spec = timm_learngene.get_pool_spec('deit_base_l6').replace(num_classes=10, img_size=32)
    assert sum(p.numel() for p in model.parameters()) == route_params(spec, model.route)
    out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_spec_classes_and_channels_are_defaults():
    # the pool spec, not timm's ImageNet pretrained cfg, decides classes and channels unless they are passed
    spec = tiny_spec(6).replace(num_classes=3, in_chans=1)
    model = timm.create_model('learngene_pool_s2', pool=spec)
    assert model.num_classes == 3 and model.in_chans == 1
    assert model(_images(chans=1)).shape == (2, 3)
    pool = timm.create_model('learngene_pool', pool=spec)
    assert pool.num_classes == 3 and pool(_images(chans=1), 's2').shape == (2, 3)
    assert timm.create_model('learngene_pool_s2', pool=spec, num_classes=4).num_classes == 4


def test_timm_kwargs_tiny(tiny6):
    x1 = _images(chans=1, size=64)
    model = timm.create_model('learngene_pool_s5', pool=tiny6, in_chans=1, img_size=64, num_classes=0,
                              global_pool='avg', drop_rate=0.1, drop_path_rate=0.2)
    assert model.pool_spec.img_size == 64 and model.pos_embed.shape[1] == 64 // 8 * 64 // 8 + 1
    assert model(x1).shape == (2, model.num_features)
    rates = [b.drop_path1.drop_prob for b in model.blocks if hasattr(b.drop_path1, 'drop_prob')]
    assert rates and max(rates) == pytest.approx(0.2)
    assert timm.create_model('learngene_pool_s5', pool=tiny6, img_size=(64, 64)).pool_spec.img_size == 64
    with pytest.raises(ValueError, match='square images'):
        timm.create_model('learngene_pool_s5', pool=tiny6, img_size=(32, 64))
    with pytest.raises(ValueError, match="global_pool must be 'token', 'avg' or ''"):
        timm.create_model('learngene_pool_s5', pool=tiny6, global_pool='max')


def test_pool_by_registered_name_or_dict(tiny6):
    a = timm.create_model('learngene_pool', pool=tiny6.to_dict(), descendant='s4')
    assert a.pool_spec == tiny6
    b = timm.create_model('learngene_pool', pool=tiny6, descendant=[['tiny', 0, 4], ['base', 4, 6]])
    assert b.info.name == 's4' and b.route == a.route


# ---- the whole pool -------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', POOL_NAMES)
def test_pool_forward_backward(name):
    pool = _create(name)
    assert isinstance(pool, LearngenePool)
    spec = _spec_for(name)
    x = _images()
    loss = 0
    for info in enumerate_descendants(spec):
        out = pool(x, info.name)
        assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()
        loss = loss + out.square().mean()
    loss.backward()
    # every descendant together reaches every pool tensor but the distillation transforms (used by the loss)
    _check_grads((n, p) for n, p in pool.named_parameters() if not n.startswith('transforms.'))
    assert all(p.grad is None for n, p in pool.named_parameters() if n.startswith('transforms.'))
    assert len(list(pool.transforms.parameters())) == len(spec.members) * 2 * 3 * 2


@pytest.mark.parametrize('name', POOL_NAMES)
def test_pool_api(name):
    pool = _create(name).eval()
    spec = _spec_for(name)
    x = _images()
    names = {n for n, _ in pool.named_parameters()}
    assert pool.no_weight_decay() <= names and 'members.tiny.pos_embed' in pool.no_weight_decay()
    assert pool.get_classifier() is pool.members['base'].head
    assert pool.pool_key_map() == {k: k for k in pool.state_dict()}
    assert not pool.pretrained_cfg.get('hf_hub_id')  # nothing published
    with torch.no_grad():
        ref = pool(x, 's3')
        pool.set_grad_checkpointing(True)
        assert pool.descendant('s3').grad_checkpointing
        assert torch.equal(pool(x, 's3'), ref)
        pool.set_grad_checkpointing(False)
        pool.reset_classifier(0)
        for info in enumerate_descendants(pool.pool_spec):
            assert pool(x, info.name).shape == (2, spec.member(info.route[-1][0]).width)
        pool.reset_classifier(4)
        assert pool(x, 's1').shape == (2, 4) and pool.pool_spec.num_classes == 4


def test_pool_grad_checkpointing_matches(tiny6):
    pool = timm.create_model('learngene_pool', pool=tiny6).eval()
    x = _images()
    pool(x, 's7').sum().backward()
    ref = {n: p.grad.clone() for n, p in pool.named_parameters() if p.grad is not None}
    pool.zero_grad(set_to_none=True)
    pool.set_grad_checkpointing(True)
    pool(x, 's7').sum().backward()
    got = {n: p.grad for n, p in pool.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], msg=n)


@pytest.mark.parametrize('spec', [tiny_spec(6), tiny_spec(9), tiny_spec(4, name='tiny3m', distill=False,
                                  widths=((16, 2), (24, 3), (32, 4)), names=('tiny', 'small', 'base')),
                                  # fashion_mnist_l6_w4's shape in small: four members, one with heads of another size
                                  tiny_spec(4, name='tiny4m', distill=False, widths=((16, 1), (24, 2), (32, 2), (48, 3)),
                                            names=('tiny', 'small', 'mid', 'base'))],
                         ids=['l6', 'l9', 'three_members', 'four_members'])
def test_pool_equals_standalone_descendants(spec):
    pool = timm.create_model('learngene_pool', pool=spec).eval()
    state = pool.state_dict()
    x = _images()
    with torch.no_grad():
        for info in enumerate_descendants(spec):
            d = timm.create_model('learngene_pool', pool=spec, descendant=info.name).eval()
            d.load_state_dict({k: state[v] for k, v in d.pool_key_map().items()}, strict=True)
            assert torch.equal(pool(x, info.name), d(x)), info.name
            assert torch.equal(pool(x, info.route), d(x)), info.name
            # the shared-module view holds the pool's tensors themselves
            shared = pool.descendant(info.name)
            assert shared.patch_embed is pool.members[info.route[0][0]].patch_embed
            assert shared.head is pool.members[info.route[-1][0]].head


def test_route_and_name_give_same_descendant(tiny6):
    pool = timm.create_model('learngene_pool', pool=tiny6).eval()
    x = _images()
    with torch.no_grad():
        assert torch.equal(pool(x, [('tiny', 0, 4), ('base', 3, 6)]), pool(x, 's8'))
        assert not torch.equal(pool(x, 's8'), pool(x, 's9'))
    with pytest.raises(timm_learngene.RouteError, match="unknown member 'huge'"):
        pool(x, [('huge', 0, 6)])
    with pytest.raises(timm_learngene.UnknownDescendantError, match='s1..s18'):
        pool(x, 's19')


# ---- members are timm ViTs ------------------------------------------------------------------------------------
@pytest.mark.parametrize('member, width, heads', [('tiny', 16, 2), ('base', 32, 4)])
def test_member_loads_timm_vit(tiny6, member, width, heads):
    vit = VisionTransformer(img_size=IMG, patch_size=8, embed_dim=width, depth=6, num_heads=heads,
                            num_classes=NUM_CLASSES).eval()
    pool = timm.create_model('learngene_pool', pool=tiny6).eval()
    m = pool.members[member]
    assert set(m.state_dict()) == set(vit.state_dict())
    m.load_state_dict(vit.state_dict(), strict=True)
    x = _images()
    d = pool.descendant([(member, 0, 6)])
    with torch.no_grad():
        y = torch.randn(2, (IMG // 8) ** 2 + 1, width)
        for i in range(6):
            assert torch.equal(m.blocks[i](y), vit.blocks[i](y)), i
        assert torch.equal(d.forward_features(x), vit.forward_features(x))
        assert torch.equal(d(x), vit(x))


def test_pool_forward_follows_a_replaced_member_module():
    """The pool keeps a descendant view per route; replacing a member's head or block (as a user or timm's
    reset_classifier does) must not leave forward running the old module."""
    from timm_learngene.spec import MemberSpec, PoolSpec
    spec = PoolSpec('views', (MemberSpec('tiny', 16, 2, 2), MemberSpec('base', 32, 4, 2)), img_size=32, patch_size=8,
                    num_classes=5)
    pool = timm.create_model('learngene_pool', pool=spec).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = pool(x, 's2')
        pool.members['base'].head = torch.nn.Linear(32, 3)
        after = pool(x, 's2')
        assert after.shape == (2, 3) and torch.equal(after, pool.descendant('s2')(x))
        pool.members['base'].blocks[1] = timm.models.vision_transformer.Block(32, 4)
        assert torch.equal(pool(x, 's2'), pool.descendant('s2')(x))
    assert before.shape == (2, 5)
