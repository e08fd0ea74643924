"""A seeded validation split carved from the training set: disjoint, covering, stable, with evaluation transforms."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from timm_learngene.data import SkipBadImages, SplitSubset, build_dataset, build_transform, split_indices
from timm_learngene.errors import DatasetError

N_TRAIN = 120


def _write_idx(path: Path, array: np.ndarray):
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(head + array.astype(np.uint8).tobytes())


@pytest.fixture(scope='module')
def fm_dir(tmp_path_factory) -> Path:
    """Fashion-MNIST-shaped IDX files: N_TRAIN training images, 20 test images, each image different."""
    root = tmp_path_factory.mktemp('fm')
    rng = np.random.default_rng(0)
    for split, n in (('train', N_TRAIN), ('t10k', 20)):
        _write_idx(root / f'{split}-images-idx3-ubyte.gz', rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f'{split}-labels-idx1-ubyte.gz', rng.integers(0, 10, n))
    return root


def _fm(fm_dir, split, **cfg):
    return build_dataset(dict({'dataset': 'fashion_mnist', 'data_dir': str(fm_dir), 'val_size': 30}, **cfg), split,
                         32, 1, 10)


def test_split_indices_are_disjoint_covering_sorted_and_seeded():
    train, val = split_indices(50, 10, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert sorted(train + val) == list(range(50)) and train == sorted(train) and val == sorted(val)
    assert split_indices(50, 10, seed=3) == (train, val)
    assert split_indices(50, 10, seed=4)[1] != val
    assert split_indices(50, 0) == (list(range(50)), [])


def test_fashion_mnist_val_is_held_out_of_train(fm_dir):
    train, val = _fm(fm_dir, 'train'), _fm(fm_dir, 'val')
    assert isinstance(train, SplitSubset) and isinstance(val, SplitSubset)
    assert len(train) == N_TRAIN - 30 and len(val) == 30
    assert not set(train.indices) & set(val.indices)
    assert sorted(train.indices + val.indices) == list(range(N_TRAIN))
    # the images themselves, not only the indices: every validation image is missing from train
    train_imgs = {img.tobytes() for img in train.dataset.images[train.indices]}
    assert not any(img.tobytes() in train_imgs for img in val.dataset.images[val.indices])
    assert len(_fm(fm_dir, 'eval')) == 20  # the test set is untouched


def test_val_images_depend_on_val_seed_alone(fm_dir):
    val = _fm(fm_dir, 'val').indices
    assert _fm(fm_dir, 'val', seed=7).indices == val  # every run seed holds out the same images
    assert _fm(fm_dir, 'val', train_limit=10, eval_limit=5).indices == val
    assert _fm(fm_dir, 'val', val_seed=1).indices != val
    limited = _fm(fm_dir, 'train', train_limit=10)
    assert limited.indices == _fm(fm_dir, 'train').indices[:10]  # the first 10 of what is left


def test_val_gets_evaluation_transforms(fm_dir):
    cfg = {'dataset': 'fashion_mnist', 'aug_scale': (0.08, 1.0), 'hflip': 0.5}
    val, train = _fm(fm_dir, 'val', **cfg), _fm(fm_dir, 'train', **cfg)
    want = build_transform(cfg, 32, 1, augment=False)
    for i in range(3):
        raw = Image.fromarray(val.dataset.images[val.indices[i]], mode='L')
        x, y = val[i]
        torch.testing.assert_close(x, want(raw), rtol=0, atol=0)
        assert x.shape == (1, 32, 32) and y == int(val.dataset.labels[val.indices[i]])
    torch.manual_seed(0)
    assert any(not torch.equal(train[0][0], train[0][0]) for _ in range(5))  # training augmentation is random
    augmented_val = build_dataset(dict(cfg, data_dir=str(fm_dir), val_size=30), 'val', 32, 1, 10, augment=True)
    assert any(not torch.equal(augmented_val[0][0], augmented_val[0][0]) for _ in range(5))  # augment= overrides


def test_val_without_val_size_and_bad_sizes_are_clear_errors(fm_dir):
    with pytest.raises(DatasetError, match=r"split 'val' .* val_size is 0: set val_size \(--val-size N\)"):
        _fm(fm_dir, 'val', val_size=0)
    with pytest.raises(DatasetError, match='val_size is 0'):
        build_dataset({'dataset': 'synthetic'}, 'val', 32, 3, 5)
    with pytest.raises(DatasetError, match=f'would hold out all {N_TRAIN} training images'):
        _fm(fm_dir, 'train', val_size=N_TRAIN)
    for bad in (-1, 2.5, '10', True):
        with pytest.raises(DatasetError, match='whole number'):
            _fm(fm_dir, 'train', val_size=bad)
    with pytest.raises(ValueError, match="split must be one of train, val, eval, got 'test'"):
        _fm(fm_dir, 'test')


def test_no_val_size_keeps_the_training_set_as_it_was(fm_dir):
    plain = build_dataset({'dataset': 'fashion_mnist', 'data_dir': str(fm_dir)}, 'train', 32, 1, 10)
    assert len(plain) == N_TRAIN and not isinstance(plain, SplitSubset)
    limited = build_dataset({'dataset': 'fashion_mnist', 'data_dir': str(fm_dir), 'train_limit': 7}, 'train', 32, 1,
                            10)
    assert len(limited) == 7


def test_synthetic_val_is_its_own_seeded_images():
    cfg = {'dataset': 'synthetic', 'val_size': 16}
    val, train = build_dataset(cfg, 'val', 32, 3, 5), build_dataset(cfg, 'train', 32, 3, 5)
    assert len(val) == 16 and len(train) == 256
    again = build_dataset(dict(cfg, seed=3, train_limit=8), 'val', 32, 3, 5)
    assert torch.equal(val.images, again.images) and torch.equal(val.labels, again.labels)
    assert not torch.equal(build_dataset(dict(cfg, val_seed=1), 'val', 32, 3, 5).images, val.images)
    flat = train.images.flatten(1)
    assert not any((flat == img.flatten()).all(-1).any() for img in val.images)
    assert torch.equal(train.images, build_dataset({'dataset': 'synthetic'}, 'train', 32, 3, 5).images)


def _folder(root: Path, per_class=6) -> Path:
    rng = np.random.default_rng(1)
    for split, n in (('train', per_class), ('val', 2)):
        for c in ('a', 'b', 'c'):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / split / c / f'{i}.png')
    return root


def test_folder_val_is_carved_from_train_folder(tmp_path):
    root = _folder(tmp_path / 'data')
    cfg = {'dataset': 'folder', 'data_dir': str(root), 'val_size': 5, 'val_seed': 2}
    train, val = build_dataset(cfg, 'train', 16, 3, 3), build_dataset(cfg, 'val', 16, 3, 3)
    train_files = {train.filename(i) for i in range(len(train))}
    val_files = {val.filename(i) for i in range(len(val))}
    assert len(train_files) == 13 and len(val_files) == 5 and not train_files & val_files
    assert all('/train/' in f for f in train_files | val_files)
    assert len(build_dataset(cfg, 'eval', 16, 3, 3)) == 6
    x, y = val[0]
    assert x.shape == (3, 16, 16) and 0 <= y < 3
    # a bad image is replaced by one of its own split; the subset still names files for the skip warnings
    skipping = build_dataset(dict(cfg, bad_images='skip'), 'val', 16, 3, 3)
    assert isinstance(skipping, SkipBadImages) and skipping.dataset.indices == val.indices
    Path(val.filename(0)).write_bytes(b'not an image')
    assert skipping[0][1] == val[1][1]
    assert not hasattr(SplitSubset(torch.utils.data.TensorDataset(torch.zeros(3)), [0]), 'filename')
