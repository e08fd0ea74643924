"""Bad data gets a clear DatasetError: missing, unreadable or empty folders, damaged Fashion-MNIST files (a gzip bomb
too), more classes than the model has outputs, train/ and val/ with different classes, and images that cannot be
decoded (``bad_images``: error or skip). Permission errors are tested with chmod (skipped as root) and, so that they
run as root too, with the reading functions patched to refuse the one path."""
import builtins
import gzip
import logging
import os
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from timm_learngene.data import DatasetError, FashionMNIST, SkipBadImages, build_dataset, build_loader, read_idx
from timm_learngene.errors import LearngeneError

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = 'DATA_DIR/train/<class>/*.jpg'


def _folder_cfg(data_dir, **kw):
    return dict(dataset='folder', data_dir=str(data_dir), **kw)


def _build(cfg, split='train'):
    return build_dataset(cfg, split, img_size=8, in_chans=3, num_classes=2, augment=False)


def _png(path: Path, value: int = 128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (8, 8), (value, value, value)).save(path)


def _image_folder(root: Path, bad: bytes = None) -> Path:
    """train/a/0.png, train/a/1.png, [train/a/2_bad.jpg], train/b/3.png (the reader's order), val/a/0.png and
    val/b/1.png."""
    _png(root / 'train' / 'a' / '0.png')
    _png(root / 'train' / 'a' / '1.png')
    if bad is not None:
        (root / 'train' / 'a' / '2_bad.jpg').write_bytes(bad)
    _png(root / 'train' / 'b' / '3.png')
    _png(root / 'val' / 'a' / '0.png')
    _png(root / 'val' / 'b' / '1.png')
    return root


def _truncated_png() -> bytes:
    import io
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, 'PNG')
    return buf.getvalue()[:len(buf.getvalue()) // 2]


BAD_FILES = {'garbage': b'this is not a jpeg' * 10, 'truncated_png': _truncated_png(), 'empty': b''}


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, LearngeneError) and issubclass(DatasetError, ValueError)


# --- folder layout ---------------------------------------------------------------------------------------------

def test_folder_needs_data_dir():
    with pytest.raises(DatasetError, match='needs --data-dir.*DATA_DIR/train/<class>'):
        _build(dict(dataset='folder', data_dir=''))


def test_folder_data_dir_that_does_not_exist(tmp_path):
    with pytest.raises(DatasetError, match='does not exist') as e:
        _build(_folder_cfg(tmp_path / 'nope'))
    assert str(tmp_path / 'nope') in str(e.value) and LAYOUT in str(e.value)


def test_folder_data_dir_that_is_a_file(tmp_path):
    (tmp_path / 'data.tar').write_bytes(b'x')
    with pytest.raises(DatasetError, match='is a file, not a folder'):
        _build(_folder_cfg(tmp_path / 'data.tar'))


def test_folder_without_split_folder_does_not_fall_back_to_data_dir(tmp_path):
    # timm's create_dataset would read DATA_DIR itself, with 'val' as a class
    _png(tmp_path / 'val' / 'a' / '0.png')
    with pytest.raises(DatasetError, match=r'has no train/ folder .*found val\).*' + LAYOUT.replace('*', r'\*')):
        _build(_folder_cfg(tmp_path))
    _png(tmp_path / 'train' / 'a' / '0.png')
    (tmp_path / 'val').rename(tmp_path / 'test')
    with pytest.raises(DatasetError, match='has no val/ folder'):
        _build(_folder_cfg(tmp_path), 'eval')


@pytest.mark.parametrize('content', ['nothing', 'empty_class', 'no_images'])
def test_folder_with_empty_train_folder(tmp_path, content):
    (tmp_path / 'train').mkdir()
    if content == 'empty_class':
        (tmp_path / 'train' / 'a').mkdir()
    elif content == 'no_images':
        (tmp_path / 'train' / 'a').mkdir()
        (tmp_path / 'train' / 'a' / 'notes.txt').write_text('hi')
    with pytest.raises(DatasetError, match=r'holds no images \(.png, .jpg, .jpeg\); expected layout'):
        _build(_folder_cfg(tmp_path))


def _chmod_000_or_skip(path: Path):
    path.chmod(0)
    try:
        os.listdir(path) if path.is_dir() else path.read_bytes()
    except PermissionError:
        return
    path.chmod(0o755)
    pytest.skip('chmod 000 does not block reads here (running as root?)')


def _deny(monkeypatch, locked: Path):
    """Reading ``locked`` fails as after chmod 000 for a user other than root, even as root: listing it (os.listdir,
    os.scandir: timm's walk), opening it (gzip.open goes through builtins.open), and os.access on it."""
    real_listdir, real_scandir, real_access, real_open = os.listdir, os.scandir, os.access, builtins.open

    def is_locked(path):
        return isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(locked)

    def refuse(real):
        def patched(path='.', *args, **kwargs):
            if is_locked(path):
                raise PermissionError(13, 'Permission denied', str(path))
            return real(path, *args, **kwargs)
        return patched

    monkeypatch.setattr(os, 'listdir', refuse(real_listdir))
    monkeypatch.setattr(os, 'scandir', refuse(real_scandir))
    monkeypatch.setattr(builtins, 'open', refuse(real_open))
    monkeypatch.setattr(os, 'access', lambda path, mode, *a, **kw: not is_locked(path) and real_access(path, mode,
                                                                                                       *a, **kw))


def _lock(path: Path, how: str, monkeypatch):
    if how == 'chmod':
        _chmod_000_or_skip(path)
    else:
        _deny(monkeypatch, path)


@pytest.mark.parametrize('how', ['chmod', 'patched'])
@pytest.mark.parametrize('which', ['data_dir', 'train', 'class'])
def test_folder_unreadable(tmp_path, monkeypatch, which, how):
    data = _image_folder(tmp_path / 'data')
    locked = {'data_dir': data, 'train': data / 'train', 'class': data / 'train' / 'b'}[which]
    _lock(locked, how, monkeypatch)
    try:
        with pytest.raises(DatasetError, match=re.escape(f'{locked} is not readable (permission denied)')):
            _build(_folder_cfg(data))
    finally:
        locked.chmod(0o755)


def test_folder_reads_classes_and_limit(tmp_path):
    data = _image_folder(tmp_path / 'data')
    ds = _build(_folder_cfg(data))
    assert len(ds) == 3 and ds.classes == ['a', 'b'] and [ds[i][1] for i in range(3)] == [0, 0, 1]
    assert ds[0][0].shape == (3, 8, 8)
    assert len(_build(_folder_cfg(data, train_limit=2))) == 2 and len(_build(_folder_cfg(data), 'eval')) == 2
    assert _build(_folder_cfg(data), 'eval').classes == ['a', 'b']


# --- classes: the model's outputs, train/ vs val/ --------------------------------------------------------------

def _classes(root: Path, train=('a', 'b', 'c'), val=('a', 'b', 'c')) -> Path:
    for split, names in (('train', train), ('val', val)):
        for name in names:
            _png(root / split / name / '0.png')
    return root


@pytest.mark.parametrize('split', ['train', 'eval'])
def test_folder_with_more_classes_than_the_model(tmp_path, split):
    # a label >= num_classes would stop the run inside cross_entropy (IndexError; a device-side assert on GPU)
    data = _classes(tmp_path / 'data')
    with pytest.raises(DatasetError, match=re.escape(f'{data / ("train" if split == "train" else "val")} has 3 '
                                                     'classes but the model has 2 outputs')) as e:
        build_dataset(_folder_cfg(data), split, img_size=8, in_chans=3, num_classes=2)
    assert '--num-classes 3' in str(e.value) and 'remove class folders' in str(e.value)
    for num_classes in (3, 5, 0):  # as many, more outputs than classes, headless (features only)
        ds = build_dataset(_folder_cfg(data), split, img_size=8, in_chans=3, num_classes=num_classes)
        assert ds.classes == ['a', 'b', 'c']


def test_fashion_mnist_with_more_classes_than_the_model(tmp_path):
    root = _fashion_mnist(tmp_path / 'fm')
    for split in ('train', 'eval'):
        with pytest.raises(DatasetError, match="dataset 'fashion_mnist' has 10 classes but the model has 5 outputs.*"
                                               '--num-classes 10'):
            build_dataset(dict(dataset='fashion_mnist', data_dir=str(root)), split, 28, 1, 5)
        for num_classes in (10, 0):
            assert len(build_dataset(dict(dataset='fashion_mnist', data_dir=str(root)), split, 28, 1,
                                     num_classes)) == 20


@pytest.mark.parametrize('split', ['train', 'eval'])
@pytest.mark.parametrize('val, only_train, only_val', [
    (('a', 'c'), 'b', 'none'),
    (('a', 'b', 'c', 'd'), 'none', 'd'),
    (('a', 'c', 'x', 'y'), 'b', 'x, y'),
])
def test_folder_train_and_val_with_different_classes(tmp_path, split, val, only_train, only_val):
    # val/ without b would label c as 1 in evaluation but 2 in training: wrong accuracy, no error
    data = _classes(tmp_path / 'data', val=val)
    with pytest.raises(DatasetError, match=re.escape(
            f'{data / "train"} and {data / "val"} have different class folders (only in train/: {only_train}; only '
            f'in val/: {only_val}); a class index must mean the same class in both')):
        build_dataset(_folder_cfg(data), split, img_size=8, in_chans=3, num_classes=10)


def test_folder_with_one_split_only_is_not_compared(tmp_path):
    data = _classes(tmp_path / 'data', val=('a',))
    (data / 'val').rename(data / 'elsewhere')
    assert build_dataset(_folder_cfg(data), 'train', 8, 3, 3).classes == ['a', 'b', 'c']
    (data / 'train').rename(data / 'other')
    (data / 'elsewhere').rename(data / 'val')
    assert build_dataset(_folder_cfg(data), 'eval', 8, 3, 3).classes == ['a']


def test_folder_class_folder_without_images(tmp_path):
    # timm's reader would drop the empty folder's class and shift the indices of the classes after it
    data = _classes(tmp_path / 'data')
    (data / 'val' / 'b' / '0.png').unlink()
    (data / 'val' / 'b' / 'notes.txt').write_text('hi')
    with pytest.raises(DatasetError, match=re.escape(f'class folder {data / "val" / "b"} holds no images (')):
        build_dataset(_folder_cfg(data), 'eval', 8, 3, 3)
    assert build_dataset(_folder_cfg(data), 'train', 8, 3, 3).classes == ['a', 'b', 'c']


@pytest.mark.parametrize('where', ['split_folder', 'nested'])
def test_folder_images_outside_class_folders(tmp_path, where):
    data = _classes(tmp_path / 'data')
    stray = data / 'train' / ('x.png' if where == 'split_folder' else 'b/extra/x.png')
    _png(stray)  # timm would make a class '' or 'extra' of these
    with pytest.raises(DatasetError, match=re.escape(f'{stray} is not directly inside a class folder of '
                                                     f'{data / "train"}')):
        build_dataset(_folder_cfg(data), 'train', 8, 3, 3)


def test_folder_hidden_folders_are_not_classes(tmp_path):
    data = _classes(tmp_path / 'data')
    (data / 'train' / '.ipynb_checkpoints').mkdir()
    (data / 'val' / '.cache').mkdir()
    assert build_dataset(_folder_cfg(data), 'train', 8, 3, 3).classes == ['a', 'b', 'c']


# --- bad images ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('bad', list(BAD_FILES))
def test_bad_image_is_an_error_naming_the_file(tmp_path, bad):
    data = _image_folder(tmp_path / 'data', BAD_FILES[bad])
    ds = _build(_folder_cfg(data))
    assert len(ds) == 4
    assert ds[1][1] == 0 and ds[3][1] == 1  # the good ones around it read fine
    with pytest.raises(DatasetError, match='index 2') as e:
        ds[2]
    msg = str(e.value)
    assert str(data / 'train' / 'a' / '2_bad.jpg') in msg and '--bad-images skip' in msg
    with pytest.raises(DatasetError, match='2_bad.jpg'):
        list(build_loader(ds, batch_size=2, training=False))


@pytest.mark.parametrize('bad', list(BAD_FILES))
def test_bad_image_skip(tmp_path, bad, caplog):
    data = _image_folder(tmp_path / 'data', BAD_FILES[bad])
    ds = _build(_folder_cfg(data, bad_images='skip'))
    assert isinstance(ds, SkipBadImages) and len(ds) == 4
    with caplog.at_level(logging.WARNING, logger='timm_learngene.data'):
        labels = [ds[i][1] for i in range(4)] + [ds[i][1] for i in range(4)]
        batches = list(build_loader(ds, batch_size=2, training=False))
    assert labels == [0, 0, 1, 1] * 2  # index 2 gives the next readable image (b/3.png)
    assert torch.cat([y for _, y in batches]).tolist() == [0, 0, 1, 1]
    warned = [r.getMessage() for r in caplog.records if '2_bad.jpg' in r.getMessage()]
    assert len(warned) == 1 and 'skipping unreadable image' in warned[0] and 'index 2' in warned[0]


def test_bad_image_skip_wraps_around_and_fails_when_nothing_is_readable(tmp_path):
    data = tmp_path / 'data'
    _png(data / 'train' / 'a' / '0.png')
    (data / 'train' / 'b' / '1.jpg').parent.mkdir(parents=True)
    (data / 'train' / 'b' / '1.jpg').write_bytes(b'junk')
    ds = _build(_folder_cfg(data, bad_images='skip'))
    assert ds[1][1] == 0  # the last image is bad: wraps around to the first
    (data / 'train' / 'a' / '0.png').write_bytes(b'junk')
    with pytest.raises(DatasetError, match='none of the 2 images can be read'):
        _build(_folder_cfg(data, bad_images='skip'))[0]


@pytest.mark.skipif(sys.platform != 'linux', reason='fork start method keeps this quick')
def test_bad_images_with_dataloader_workers(tmp_path):
    data = _image_folder(tmp_path / 'data', BAD_FILES['garbage'])
    skip = _build(_folder_cfg(data, bad_images='skip'))
    batches = list(torch.utils.data.DataLoader(skip, batch_size=1, num_workers=2))
    assert sorted(y.item() for _, y in batches) == [0, 0, 1, 1]
    # (error mode raises DatasetError through workers too, but a DataLoader stopped by an error takes 5 s per
    # worker to shut down, too slow for this suite)


@pytest.mark.parametrize('value', ['ignore', 'Skip', 'true'])
def test_bad_images_value_is_validated(tmp_path, value):
    with pytest.raises(DatasetError, match=f"--bad-images must be one of error, skip, got '{value}'"):
        _build(dict(dataset='synthetic', bad_images=value))


def test_recipes_have_the_bad_images_flag():
    from timm_learngene.recipes import distill, evaluate, finetune, pipeline, train_vit
    assert 'bad_images' in pipeline.SHARED
    for module in (train_vit, distill, finetune, evaluate):
        assert module.OPTIONS['bad_images'].default == 'error'
        assert module.parse_args(['--pool', 'x', '--bad-images', 'skip'] if 'pool' in module.OPTIONS else
                                 ['--bad-images', 'skip']).bad_images == 'skip'
        with pytest.raises(SystemExit) as e:
            module.parse_args(['--bad-images', 'ignore'])
        assert e.value.code == 2


# --- Fashion-MNIST ---------------------------------------------------------------------------------------------

def _write_idx(path: Path, array: np.ndarray):
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(head + array.astype(np.uint8).tobytes())


def _fashion_mnist(root: Path, n: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ('train', 't10k'):
        _write_idx(root / f'{split}-images-idx3-ubyte.gz', rng.integers(0, 255, (n, 28, 28)))
        _write_idx(root / f'{split}-labels-idx1-ubyte.gz', rng.integers(0, 10, n))
    return root


def test_fashion_mnist_missing_files(tmp_path):
    root = _fashion_mnist(tmp_path / 'fm')
    (root / 't10k-labels-idx1-ubyte.gz').unlink()
    with pytest.raises(DatasetError, match='missing t10k-labels-idx1-ubyte.*apt-get install -y dataset-fashion-mnist'):
        FashionMNIST(root, 'train')
    with pytest.raises(DatasetError, match=re.escape(f'{tmp_path / "nope"} (no such folder)')):
        build_dataset(dict(dataset='fashion_mnist', data_dir=str(tmp_path / 'nope')), 'train', 28, 1, 10)


def _truncate_gzip(raw: bytes) -> bytes:
    return raw[:len(raw) // 2]


def _flip_bytes(raw: bytes) -> bytes:
    mid = len(raw) // 2
    return raw[:mid] + bytes(b ^ 0xFF for b in raw[mid:mid + 64]) + raw[mid + 64:]


@pytest.mark.parametrize('damage', [_truncate_gzip, _flip_bytes, lambda raw: b'not gzip at all' * 4, lambda raw: b''])
def test_fashion_mnist_damaged_gzip(tmp_path, damage):
    root = _fashion_mnist(tmp_path / 'fm', n=200)
    path = root / 'train-images-idx3-ubyte.gz'
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError, match='damaged|truncated|not an IDX file') as e:
        FashionMNIST(root, 'train')
    assert str(path) in str(e.value) and 'fresh copy' in str(e.value) and 'dataset-fashion-mnist' in str(e.value)
    assert len(FashionMNIST(root, 'test')) == 200  # the other split is untouched


def test_fashion_mnist_truncated_idx_inside_valid_gzip(tmp_path):
    root = _fashion_mnist(tmp_path / 'fm')
    path = root / 't10k-images-idx3-ubyte.gz'
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DatasetError, match=re.escape(f'{path} is truncated: header declares shape (20, 28, 28)')):
        FashionMNIST(root, 'test')
    path.write_bytes(gzip.compress(raw[:10]))
    with pytest.raises(DatasetError, match='truncated inside its header'):
        read_idx(path)


def test_fashion_mnist_count_mismatch_and_bad_labels(tmp_path):
    root = _fashion_mnist(tmp_path / 'fm')
    _write_idx(root / 'train-labels-idx1-ubyte.gz', np.zeros(19))
    with pytest.raises(DatasetError, match=r'\(20, 28, 28\) and \(19,\); the files do not belong together'):
        FashionMNIST(root, 'train')
    _write_idx(root / 'train-labels-idx1-ubyte.gz', np.full(20, 12))
    with pytest.raises(DatasetError, match='labels must be 0..9, found 12..12'):
        FashionMNIST(root, 'train')


@pytest.mark.parametrize('shape, code', [
    ((1_000_000, 28, 28), 0x08),      # 748 MiB of uint8 pretending to be Fashion-MNIST
    ((40_000_000,), 0x0E),            # few elements, but float64: 305 MiB
    ((2 ** 32 - 1,) * 3, 0x08),       # np.prod of this wraps around int64
])
def test_fashion_mnist_gzip_bomb_is_refused_before_reading(tmp_path, monkeypatch, shape, code):
    root = _fashion_mnist(tmp_path / 'fm')
    path = root / 'train-images-idx3-ubyte.gz'
    # a real bomb holds its bytes as a few KB of compressed zeros; the header alone must stop it
    path.write_bytes(gzip.compress(bytes([0, 0, code, len(shape)]) + struct.pack(f'>{len(shape)}I', *shape)
                                   + bytes(1000)))
    reads = []
    real_read = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, 'read', lambda self, size=-1: reads.append(size) or real_read(self, size))
    with pytest.raises(DatasetError, match=re.escape(f'{path}: IDX header declares shape {shape}')) as e:
        FashionMNIST(root, 'train')
    assert 'more than the 256 MiB limit' in str(e.value) and 'fresh copy' in str(e.value)
    assert max(reads) <= 4 * len(shape), 'nothing past the header is read'


def test_read_idx_max_bytes(tmp_path):
    path = _fashion_mnist(tmp_path / 'fm') / 'train-images-idx3-ubyte.gz'
    assert read_idx(path).shape == (20, 28, 28)
    with pytest.raises(DatasetError, match=re.escape('declares shape (20, 28, 28) of uint8')):
        read_idx(path, max_bytes=20 * 28 * 28 - 1)


@pytest.mark.parametrize('how', ['chmod', 'patched'])
def test_fashion_mnist_unreadable_file(tmp_path, monkeypatch, how):
    root = _fashion_mnist(tmp_path / 'fm')
    path = root / 'train-images-idx3-ubyte.gz'
    _lock(path, how, monkeypatch)
    try:
        with pytest.raises(DatasetError, match=re.escape(f'{path} is not readable (permission denied)')):
            FashionMNIST(root, 'train')
    finally:
        path.chmod(0o644)
