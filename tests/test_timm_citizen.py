"""Issue 13: learngene models follow timm's factory conventions, and a pool's data config travels with it."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from timm_learngene.checkpoint import save_pool
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


def test_data_config_travels_with_a_one_channel_pool(tmp_path):
    spec = tiny_spec(6, in_chans=1)
    recipe = dict(dataset='fashion_mnist', crop_pct=1.0, interpolation='bilinear')
    pool = timm.create_model('learngene_pool', pool=spec)
    save_pool(pool, tmp_path / 'pool', data_config=eval_data_config(recipe, spec.img_size, 1))
    m = timm.create_model(f'local-dir:{tmp_path / "pool"}', pretrained=True, descendant='s3')
    data = resolve_data_config(model=m)
    # lists, as timm reads any config.json (its own Hub models' too)
    assert tuple(data['mean']) == pytest.approx((0.2860,)) and tuple(data['std']) == pytest.approx((0.3530,))
    assert tuple(data['input_size']) == (1, spec.img_size, spec.img_size)
    assert data['crop_pct'] == 1.0 and data['interpolation'] == 'bilinear'
    img = Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 33), dtype=np.uint8), mode='L')
    ours = build_transform(recipe, spec.img_size, 1, augment=False)(img)
    torch.testing.assert_close(create_transform(**data)(img), ours, rtol=0, atol=0)
