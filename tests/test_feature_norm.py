"""Normalised distillation feature terms: scale-free, finite, the raw MSE unchanged, clear errors."""
import inspect

import pytest
import timm
import torch

from timm_learngene.distill import FEATURE_NORMS, DenseDistiller, feature_loss
from timm_learngene.spec import DistillSpec, MemberSpec, PoolSpec

SCALE = 10.0


def _spec():
    return PoolSpec('tiny_fnorm', (MemberSpec('tiny', 16, 2, 3), MemberSpec('base', 32, 4, 3)), img_size=32,
                    patch_size=8, num_classes=5, distill=DistillSpec('t', 32, 3, (0, 1, 2), (0, 1, 2)))


def _distiller(norm: str) -> DenseDistiller:
    torch.manual_seed(0)
    pool = timm.create_model('learngene_pool', pool=_spec())
    teacher = timm.create_model('vit_tiny_patch16_224', embed_dim=32, depth=3, num_heads=2, img_size=32,
                                patch_size=8, num_classes=5)
    return DenseDistiller(pool, teacher, feature_norm=norm)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 5, (4,), generator=g)


def _losses(d: DenseDistiller, x, y, t_logits, t_feats):
    with torch.no_grad():
        return d.member_losses(x, y, t_logits, t_feats, d.member_names)


def _scale_transforms(d: DenseDistiller, c: float):
    with torch.no_grad():
        for p in d.pool.transforms.parameters():
            p.mul_(c)


@pytest.mark.parametrize('norm', ['teacher_ms', 'layernorm'])
def test_scaled_teacher_with_scaled_transforms_gives_the_same_feature_terms(norm):
    # the student that meets a teacher c times larger is the same one with c times larger W_p, V_p: a scale-free
    # term gives it the same loss
    d, (x, y) = _distiller(norm), _batch()
    t_logits, t_feats = d.teacher_forward(x)
    base = _losses(d, x, y, t_logits, t_feats)
    _scale_transforms(d, SCALE)
    scaled = _losses(d, x, y, t_logits, {k: v * SCALE for k, v in t_feats.items()})
    for k in ('block', 'attn', 'ce', 'kd', 'total', 'tiny', 'base'):
        torch.testing.assert_close(scaled[k], base[k], rtol=1e-5, atol=0, msg=k)
    assert all(torch.isfinite(v).all() for v in base.values())


def test_raw_mse_grows_with_the_square_of_the_scale():
    d, (x, y) = _distiller('none'), _batch()
    t_logits, t_feats = d.teacher_forward(x)
    base = _losses(d, x, y, t_logits, t_feats)
    teacher_only = _losses(d, x, y, t_logits, {k: v * SCALE for k, v in t_feats.items()})
    for k in ('block', 'attn'):  # mapped member features start small: the term is about |t|^2
        assert 0.5 * SCALE ** 2 < float(teacher_only[k] / base[k]) < 2 * SCALE ** 2, k
    _scale_transforms(d, SCALE)
    scaled = _losses(d, x, y, t_logits, {k: v * SCALE for k, v in t_feats.items()})
    for k in ('block', 'attn'):
        torch.testing.assert_close(scaled[k], base[k] * SCALE ** 2, rtol=1e-5, atol=0, msg=k)


def test_layernorm_terms_ignore_the_teacher_scale_even_with_fixed_transforms():
    d, (x, y) = _distiller('layernorm'), _batch()
    t_logits, t_feats = d.teacher_forward(x)
    base = _losses(d, x, y, t_logits, t_feats)
    scaled = _losses(d, x, y, t_logits, {k: v * SCALE for k, v in t_feats.items()})
    for k in ('block', 'attn'):
        torch.testing.assert_close(scaled[k], base[k], rtol=1e-5, atol=0, msg=k)


def test_teacher_ms_at_init_is_near_one_per_position_whatever_the_scale():
    # transforms start small, so each term is about |t|^2 / ms(t) = 1: 3 positions, 2 members -> about 6
    d, (x, y) = _distiller('teacher_ms'), _batch()
    t_logits, t_feats = d.teacher_forward(x)
    for c in (1.0, SCALE, 1000.0):
        out = _losses(d, x, y, t_logits, {k: v * c for k, v in t_feats.items()})
        for k in ('block', 'attn'):
            assert 0.5 * 6 < float(out[k]) < 2 * 6, (c, k, out[k])


def test_none_is_the_raw_mse_and_the_default():
    d_default, d_none = _distiller('none'), _distiller('none')
    assert inspect.signature(DenseDistiller).parameters['feature_norm'].default == 'none'
    x, y = _batch()
    a, b = d_default(x, y), d_none(x, y)
    s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(feature_loss(s, t, 'none'), ((s - t) ** 2).mean())
    torch.testing.assert_close(feature_loss(s, t, 'teacher_ms'), ((s - t) ** 2).mean() / (t ** 2).mean())
    for k in a:
        torch.testing.assert_close(a[k], b[k])


@pytest.mark.parametrize('norm', FEATURE_NORMS)
def test_every_term_is_finite_and_trains_the_transforms(norm):
    d, (x, y) = _distiller(norm), _batch()
    out = d(x, y)
    assert {'total', 'ce', 'kd', 'block', 'attn', 'tiny', 'base'} <= set(out)
    assert all(torch.isfinite(v).all() for v in out.values())
    out['total'].backward()
    for name, p in d.pool.transforms.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_teacher_ms_is_finite_for_an_all_zero_teacher_feature():
    s = torch.randn(2, 5, 8, requires_grad=True)
    loss = feature_loss(s, torch.zeros(2, 5, 8), 'teacher_ms')
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_unknown_feature_norm_names_the_choices():
    with pytest.raises(ValueError, match="unknown feature_norm 'l2'.*none, teacher_ms, layernorm"):
        _distiller('l2')
    with pytest.raises(ValueError, match='none, teacher_ms, layernorm'):
        feature_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), 'bogus')


def test_layernorm_matches_torch_layer_norm_at_unit_scale_and_is_exactly_scale_free():
    from timm_learngene.distill import _layer_norm
    x = torch.randn(3, 7, 16, dtype=torch.float64) * 2 + 0.5
    torch.testing.assert_close(_layer_norm(x), torch.nn.functional.layer_norm(x, (16,)), rtol=1e-5, atol=1e-5)
    tiny = x * 1e-4  # variance ~4e-8, where F.layer_norm's absolute eps of 1e-5 would flatten it
    torch.testing.assert_close(_layer_norm(tiny), _layer_norm(x), rtol=1e-9, atol=1e-9)
