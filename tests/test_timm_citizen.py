"""Issue 13: learngene models follow timm's factory conventions, and a pool's data config travels with it."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from timm_learngene.pool_writer import save_pool
from timm_learngene.data.augment import build_transform, eval_data_config
from timm_learngene.errors import CheckpointError

from conftest import tiny_spec


def test_device_dtype_and_meta(tiny6):
    m = timm.create_model('learngene_pool_s3', pool=tiny6, device='meta', dtype=torch.float16)
    assert {p.device.type for p in m.parameters()} == {'meta'}
    assert {p.dtype for p in m.parameters()} == {torch.float16}
    with torch.device('meta'):
        pool = timm.create_model('learngene_pool', pool=tiny6, drop_path_rate=0.1)
    assert next(pool.parameters()).device.type == 'meta'
    rates = [b.drop_path1.drop_prob for b in pool.members['tiny'].blocks[1:]]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 6).tolist()[1:])


def test_features_only_out_indices(tiny6):
    m = timm.create_model('learngene_pool_s3', pool=tiny6, features_only=True, out_indices=(1, -1)).eval()
    feats = m(torch.randn(2, 3, tiny6.img_size, tiny6.img_size))
    n = tiny6.img_size // tiny6.patch_size
    assert [tuple(f.shape) for f in feats] == [(2, c, n, n) for c in m.feature_info.channels()]
    with pytest.raises(ValueError, match='features_only needs one descendant'):
        timm.create_model('learngene_pool', pool=tiny6, features_only=True)


def test_torchscript_matches_eager(tiny6):
    m = timm.create_model('learngene_pool_s5', pool=tiny6).eval()
    assert m.stitches, 'needs a stitched descendant'
    x = torch.randn(2, 3, tiny6.img_size, tiny6.img_size)
    torch.testing.assert_close(torch.jit.script(m)(x), m(x))


def test_reset_classifier_no_pool(tiny6):
    m = timm.create_model('learngene_pool_s5', pool=tiny6).eval()
    m.reset_classifier(0, '')
    x = torch.randn(2, 3, tiny6.img_size, tiny6.img_size)
    assert m(x).shape == (2, (tiny6.img_size // tiny6.patch_size) ** 2 + 1, m.num_features)


def test_no_pretrained_tags_and_clear_error():
    assert not [n for n in timm.list_models(pretrained=True) if n.startswith('learngene')]
    with pytest.raises(CheckpointError, match='no learngene pool is published yet.*local-dir'):
        timm.create_model('learngene_pool_s1', pretrained=True)


def test_data_config_travels_with_a_one_channel_pool(tmp_path, caplog):
    spec = tiny_spec(6, in_chans=1)
    recipe = dict(dataset='fashion_mnist', crop_pct=1.0, interpolation='bilinear')
    pool = timm.create_model('learngene_pool', pool=spec)
    with caplog.at_level('WARNING', logger='timm_learngene.pool_writer'):
        save_pool(pool, tmp_path / 'plain')  # no data config: the spec's channels and size, one mean and std
    assert 'channel model' not in caplog.text
    plain = resolve_data_config(model=timm.create_model(f'local-dir:{tmp_path / "plain"}', pretrained=True,
                                                        descendant='s3'))
    assert tuple(plain['input_size']) == (1, spec.img_size, spec.img_size) and len(plain['mean']) == 1
    # a cfg that still has 3 values (an overlay, an old pool) for a 1-channel model is written with a warning
    old = timm.create_model('learngene_pool', pool=spec, pretrained_cfg_overlay=dict(
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    with caplog.at_level('WARNING', logger='timm_learngene.pool_writer'):
        save_pool(old, tmp_path / 'old')
    assert 'mean and std has 3 values for a 1-channel model' in caplog.text and 'data_config=' in caplog.text
    caplog.clear()
    with caplog.at_level('WARNING', logger='timm_learngene.pool_writer'):
        save_pool(pool, tmp_path / 'pool', data_config=eval_data_config(recipe, spec.img_size, 1))
    assert 'channel model' not in caplog.text
    m = timm.create_model(f'local-dir:{tmp_path / "pool"}', pretrained=True, descendant='s3')
    data = resolve_data_config(model=m)
    # lists, as timm reads any config.json (its own Hub models' too)
    assert tuple(data['mean']) == pytest.approx((0.2860,)) and tuple(data['std']) == pytest.approx((0.3530,))
    assert tuple(data['input_size']) == (1, spec.img_size, spec.img_size)
    assert data['crop_pct'] == 1.0 and data['interpolation'] == 'bilinear'
    img = Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 33), dtype=np.uint8), mode='L')
    ours = build_transform(recipe, spec.img_size, 1, augment=False)(img)
    torch.testing.assert_close(create_transform(**data)(img), ours, rtol=0, atol=0)


def _perturbed(model):
    with torch.no_grad():  # zero-init biases and a zero cls token would hide parts that are skipped
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def test_dynamic_img_size(tiny6):
    torch.manual_seed(0)
    fixed = _perturbed(timm.create_model('learngene_pool_s5', pool=tiny6))
    dyn = timm.create_model('learngene_pool_s5', pool=tiny6, dynamic_img_size=True).eval()
    dyn.load_state_dict(fixed.state_dict())
    x = torch.randn(2, 3, tiny6.img_size, tiny6.img_size)
    big = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(dyn(x), fixed(x))  # at the trained size nothing is resampled
        with pytest.raises(AssertionError, match='Input height'):
            fixed(big)
        # another size: the same as a model resized once to it (both resample the position embedding alike)
        fixed.set_input_size(img_size=48)
        torch.testing.assert_close(dyn(big), fixed(big), rtol=0, atol=0)
        feats = dyn.forward_intermediates(torch.randn(1, 3, 48, 40), intermediates_only=True)
        assert [tuple(f.shape[-2:]) for f in feats] == [(6, 5)] * len(dyn.blocks)
        with pytest.raises(AssertionError, match='multiples of the patch size'):  # as timm's PatchEmbed
            dyn(torch.randn(1, 3, 36, 32))
        scripted = torch.jit.script(dyn)
        y = torch.randn(1, 3, 40, 56)
        torch.testing.assert_close(scripted(y), dyn(y))
    current = timm.models.get_model_input_config(dyn)  # what timm's export and data helpers read
    assert current['input_size'] == (3, tiny6.img_size, tiny6.img_size) and not current['fixed_input_size']
    # a pool's descendants share its setting
    pool = timm.create_model('learngene_pool', pool=tiny6, dynamic_img_size=True).eval()
    assert pool(big, 's3').shape == (2, tiny6.num_classes) and pool(big).shape == (2, tiny6.num_classes)


def test_set_input_size(tiny6):
    torch.manual_seed(1)
    pool = _perturbed(timm.create_model('learngene_pool', pool=tiny6))
    standalone = timm.create_model('learngene_pool_s7', pool=tiny6).eval()
    standalone.load_state_dict(pool.descendant('s7').state_dict())
    pool.requires_grad_(False)
    pool.set_input_size(img_size=(48, 48))
    assert pool.pool_spec.img_size == 48 and not [n for n, p in pool.named_parameters() if p.requires_grad]
    standalone.set_input_size(img_size=48)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(pool(x, 's7'), standalone(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=r'shares its modules with a pool .* pool\.set_input_size'):
        pool.descendant('s7').set_input_size(img_size=64)
    before = standalone.pos_embed
    with pytest.raises(ValueError, match='square images'):
        standalone.set_input_size(img_size=(48, 64))
    with pytest.raises(ValueError, match='not a multiple of patch_size'):
        standalone.set_input_size(patch_size=7)
    assert standalone.pos_embed is before and standalone.pool_spec.img_size == 48  # a refused resize changes nothing
    standalone.set_input_size(img_size=64, patch_size=16)
    assert standalone.patch_embed.proj.weight.shape[-1] == 16 and standalone.pos_embed.shape[1] == 17
    assert standalone(torch.randn(1, 3, 64, 64)).shape == (1, tiny6.num_classes)
