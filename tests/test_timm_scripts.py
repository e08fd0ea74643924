"""Learngene models as timm's own scripts and data helpers use them (issue 29's three bugs): a pretrained descendant
as a feature backbone, the pretrained cfg overlay of timm's train.py (``--pretrained-path``), and the preprocessing
of the registered specs through ``resolve_data_config`` + ``create_transform``.

The ``timm.create_model`` calls below are the ones train.py and validate.py (timm's repository, v1.0) make, with
their default arguments; the scripts themselves are not in timm's wheel or sdist, so they are not run here."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from timm_learngene import save_pool
from timm_learngene.data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from timm_learngene.spec import FASHION_MNIST_L6

from conftest import IMG, tiny_spec


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    torch.manual_seed(0)
    pool = timm.create_model('learngene_pool', pool=tiny_spec(6)).eval()
    with torch.no_grad():  # zero-init biases would hide a bias that is not loaded
        for t in pool.parameters():
            t.add_(torch.randn_like(t) * 0.02)
    out = tmp_path_factory.mktemp('pool')
    save_pool(pool, out)
    return out


@pytest.fixture(scope='module')
def x():
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


def test_pretrained_descendant_as_a_feature_backbone(folder, x):
    ref = timm.create_model(f'local-dir:{folder}', descendant='s9', pretrained=True).eval()
    feats = timm.create_model(f'local-dir:{folder}', descendant='s9', pretrained=True, features_only=True,
                              out_indices=(1, 3)).eval()
    assert feats.feature_info.out_indices == (1, 3)
    with torch.no_grad():
        want = ref.forward_intermediates(x, indices=(1, 3), intermediates_only=True)
        got = feats(x)
    assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, want))
    # the weights are the pool's, not a fresh init
    fresh = timm.create_model('learngene_pool_s9', pool=tiny_spec(6), features_only=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(x)[0], got[0])


def test_train_py_pretrained_path_adapts_the_head(folder, x):
    ref = timm.create_model(f'local-dir:{folder}', descendant='s3', pretrained=True).eval()
    # train.py --model learngene_pool_s3 --pretrained --pretrained-path POOL/model.safetensors [--num-classes N]
    overlay = dict(file=str(folder / 'model.safetensors'), num_classes=-1)  # timm's "adapt the head"
    same = timm.create_model('learngene_pool_s3', pool=tiny_spec(6), pretrained=True, in_chans=3, num_classes=None,
                             drop_rate=0.0, drop_path_rate=None, pretrained_cfg_overlay=overlay).eval()
    other = timm.create_model('learngene_pool_s3', pool=tiny_spec(6), pretrained=True, in_chans=3, num_classes=7,
                              drop_rate=0.0, pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        assert torch.equal(same(x), ref(x))  # the checkpoint's classes: its head loads too
        assert other.num_classes == 7 and other(x).shape == (2, 7)
        assert torch.equal(other.forward_features(x), ref.forward_features(x))


def test_validate_py_and_train_py_pretrained_from_a_pool_folder(folder, x):
    ref = timm.create_model(f'local-dir:{folder}', descendant='s3', pretrained=True).eval()
    # validate.py / train.py --model local-dir:POOL --pretrained --model-kwargs descendant=s3
    m = timm.create_model(f'local-dir:{folder}', pretrained=True, num_classes=None, in_chans=3, global_pool=None,
                          scriptable=False, descendant='s3').eval()
    with torch.no_grad():
        assert torch.equal(m(x), ref(x))


def _image(c, h, w):
    pixels = np.random.default_rng(0).integers(0, 256, (h, w) if c == 1 else (h, w, c), dtype=np.uint8)
    return Image.fromarray(pixels, mode='L' if c == 1 else 'RGB')


@pytest.mark.parametrize('kwargs, want', [
    (dict(pool='fashion_mnist_l6'), dict(input_size=(1, 32, 32), mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD)),
    (dict(pool='fashion_mnist_l6_mid'), dict(input_size=(1, 32, 32), mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD)),
    (dict(pool='fashion_mnist_l6_w4'), dict(input_size=(1, 32, 32), mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD)),
    (dict(pool='fashion_mnist_l6', in_chans=3), dict(input_size=(3, 32, 32), mean=FASHION_MNIST_MEAN * 3,
                                                     std=FASHION_MNIST_STD * 3)),
    ({}, dict(input_size=(3, 224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))),
    (dict(pool=tiny_spec(6)), dict(input_size=(3, IMG, IMG))),
    (dict(pool=tiny_spec(6, in_chans=1)), dict(input_size=(1, IMG, IMG), mean=(0.449,), std=(0.226,))),
])
def test_registered_specs_preprocess_their_own_images(kwargs, want):
    model = timm.create_model('learngene_pool_s2', **kwargs).eval()
    cfg = resolve_data_config(model=model)
    for k, v in want.items():
        assert tuple(cfg[k]) == pytest.approx(v), k
    image = _image(*cfg['input_size'])
    x = create_transform(**cfg)(image)
    assert tuple(x.shape) == cfg['input_size']
    with torch.no_grad():
        assert model(x[None]).shape == (1, model.num_classes)


def test_save_pool_of_a_registered_spec_writes_its_preprocessing(tmp_path):
    pool = timm.create_model('learngene_pool', pool=FASHION_MNIST_L6)
    save_pool(pool, tmp_path / 'p')
    loaded = timm.create_model(f'local-dir:{tmp_path / "p"}', descendant='s2', pretrained=True)
    cfg = resolve_data_config(model=loaded)
    assert tuple(cfg['input_size']) == (1, 32, 32) and tuple(cfg['mean']) == pytest.approx(FASHION_MNIST_MEAN)
