"""Fashion-MNIST from its gzipped IDX files (Debian's ``dataset-fashion-mnist`` puts them in
``/usr/share/datasets/fashion-mnist/``), as a map-style dataset of PIL images for timm's transforms.

Missing files raise FileNotFoundError from :func:`find_fashion_mnist` and DatasetError from :class:`FashionMNIST`;
a damaged, truncated or mismatched file raises DatasetError naming it; each message says how to get the files.
"""
import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from ..errors import DatasetError
from .transform_errors import apply_transform

__all__ = ['read_idx', 'FashionMNIST', 'FASHION_MNIST_DIR', 'FASHION_MNIST_MEAN', 'FASHION_MNIST_STD',
           'FASHION_MNIST_CLASSES', 'MAX_IDX_BYTES', 'find_fashion_mnist', 'ensure_fashion_mnist']

FASHION_MNIST_DIR = Path('/usr/share/datasets/fashion-mnist')
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
                         'Bag', 'Ankle boot')
_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype('>i2'), 0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'),
           0x0E: np.dtype('>f8')}
_HOW_TO_GET = ('install Debian\'s dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist), or download '
               'the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist into a folder and '
               'pass it as --data-dir')
_REPLACE = f'replace it with a fresh copy ({_HOW_TO_GET})'
# the largest IDX data read_idx accepts (Fashion-MNIST's largest file holds 47 MB): a header is read before any data,
# so a small gzip file declaring a huge shape (a gzip bomb) is refused before anything is allocated or decompressed
MAX_IDX_BYTES = 256 * 2 ** 20


def read_idx(path: Union[str, Path], max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (gzipped or not) into an array of its declared type and shape. A missing, unreadable or
    damaged file, or one whose header declares more than ``max_bytes`` of data, raises DatasetError naming it."""
    path = Path(path)
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rb') as f:
            head = f.read(4)
            if len(head) != 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
                raise DatasetError(f'{path} is not an IDX file (bad magic {head.hex()}); {_REPLACE}')
            dtype, ndim = _DTYPES[head[2]], head[3]
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) != 4 * ndim:
                raise DatasetError(f'{path} is truncated inside its header; {_REPLACE}')
            dims = struct.unpack(f'>{ndim}I', raw_dims)
            nbytes = math.prod(dims) * np.dtype(dtype).itemsize  # exact: np.prod wraps around past 2**63
            if nbytes > max_bytes:
                raise DatasetError(f'{path}: IDX header declares shape {dims} of {np.dtype(dtype).name}, '
                                   f'{nbytes / 2 ** 20:.0f} MiB of data, more than the {max_bytes / 2 ** 20:.0f} MiB '
                                   f'limit (Fashion-MNIST needs 45 MiB): the file is damaged or not Fashion-MNIST; '
                                   f'{_REPLACE}')
            data = f.read(nbytes)
            f.read(1)  # reach the end of the gzip stream, where its CRC is checked
    except FileNotFoundError:
        raise DatasetError(f'{path} does not exist; {_HOW_TO_GET}') from None
    except PermissionError:
        raise DatasetError(f'{path} is not readable (permission denied); make it readable (chmod a+r {path})') \
            from None
    except (OSError, EOFError, zlib.error) as e:  # gzip: not gzip, bad CRC, cut short
        raise DatasetError(f'{path} is damaged ({type(e).__name__}: {e}); {_REPLACE}') from e
    if len(data) != nbytes:
        raise DatasetError(f'{path} is truncated: header declares shape {dims}, file holds {len(data)} bytes of '
                           f'data; {_REPLACE}')
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def find_fashion_mnist(root: Optional[Union[str, Path]] = None) -> Path:
    """The folder holding the Fashion-MNIST files, or a clear error saying how to get them."""
    if root:  # an explicit folder is the only place looked at: a typo must not silently use other data
        candidates = [Path(root)]
    else:
        candidates = [Path(os.environ['FASHION_MNIST_DIR'])] if os.environ.get('FASHION_MNIST_DIR') else []
        candidates.append(FASHION_MNIST_DIR)
    looked = []
    for c in candidates:
        try:
            missing = [n for pair in _FILES.values() for n in pair if not _find(c, n)]
            is_dir = c.is_dir()
        except PermissionError:
            looked.append(f'{c} (not readable, permission denied: chmod -R a+rX {c})')
            continue
        if not missing:
            return c
        looked.append(f'{c} (missing {", ".join(missing)})' if is_dir else f'{c} (no such folder)')
    raise FileNotFoundError(f'Fashion-MNIST not found in {"; ".join(looked)}; {_HOW_TO_GET}')


_CACHE = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'timm_learngene' / 'fashion-mnist'


def ensure_fashion_mnist(root: Optional[Union[str, Path]] = None, log=print) -> Path:
    """Find Fashion-MNIST, or get it: Debian's package when apt-get can run (as root), else a download from the
    dataset's site into ~/.cache/timm_learngene/fashion-mnist, each file checked against torchvision's md5 before it
    takes its name (a failed or corrupted download leaves nothing behind). Raises with instructions when neither
    works."""
    for where in ([root] if root else [None, _CACHE]):
        try:
            return find_fashion_mnist(where)
        except FileNotFoundError:
            if root:
                raise
    import shutil
    import subprocess
    if shutil.which('apt-get') and hasattr(os, 'geteuid') and os.geteuid() == 0:
        log('Fashion-MNIST not found; installing Debian package dataset-fashion-mnist ...')
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        ok = subprocess.run(['apt-get', 'install', '-y', '-qq', 'dataset-fashion-mnist'], env=env).returncode == 0
        if not ok:
            subprocess.run(['apt-get', 'update', '-qq'], env=env)
            subprocess.run(['apt-get', 'install', '-y', '-qq', 'dataset-fashion-mnist'], env=env)
        try:
            return find_fashion_mnist(root)
        except FileNotFoundError:
            pass
    _download(_CACHE, log)
    return find_fashion_mnist(_CACHE)


def _download(folder: Path, log) -> None:
    """The four files from torchvision's Fashion-MNIST mirrors into ``folder``, md5-checked by torchvision's
    ``download_url`` under a ``.part`` name and renamed only when the checksum matches."""
    from torchvision.datasets import FashionMNIST as Reference
    from torchvision.datasets.utils import download_url

    folder.mkdir(parents=True, exist_ok=True)
    for filename, md5 in Reference.resources:
        target = folder / filename
        if target.is_file():
            continue
        part = folder / (filename + '.part')
        errors = []
        for mirror in Reference.mirrors:
            log(f'downloading {mirror}{filename} ...')
            try:
                download_url(f'{mirror}{filename}', str(folder), filename=part.name, md5=md5)
            except (OSError, RuntimeError) as e:  # RuntimeError: torchvision's "File not found or corrupted."
                why = 'md5 mismatch (corrupted or not the published file)' if part.is_file() else str(e)
                errors.append(f'{mirror}: {why}')
                part.unlink(missing_ok=True)
                continue
            os.replace(part, target)
            break
        else:
            raise FileNotFoundError(f'Fashion-MNIST is not on this machine and {filename} could not be fetched '
                                    f'({"; ".join(errors)}); {_HOW_TO_GET}')


def _find(root: Path, stem: str) -> Optional[Path]:
    for name in (stem + '.gz', stem):
        if (root / name).is_file():
            return root / name
    return None


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST ``train`` (60k) or ``test`` (10k) split; items are ``(PIL 'L' image, label)`` before
    ``transform``. ``limit`` keeps the first N images (for quick runs)."""

    def __init__(self, root: Optional[Union[str, Path]] = None, split: str = 'train',
                 transform: Optional[Callable] = None, limit: Optional[int] = None):
        if split not in _FILES:
            raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
        try:
            root = find_fashion_mnist(root)
        except FileNotFoundError as e:
            raise DatasetError(str(e)) from None
        img_file, lbl_file = (_find(root, n) for n in _FILES[split])
        images, labels = read_idx(img_file), read_idx(lbl_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f'{img_file} / {lbl_file}: expected N x H x W images and N labels, got '
                               f'{images.shape} and {labels.shape}; the files do not belong together: replace them '
                               f'with fresh copies ({_HOW_TO_GET})')
        if labels.size and not 0 <= labels.min() <= labels.max() < len(FASHION_MNIST_CLASSES):
            raise DatasetError(f'{lbl_file}: labels must be 0..{len(FASHION_MNIST_CLASSES) - 1}, found '
                               f'{labels.min()}..{labels.max()}; {_REPLACE}')
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.images, self.labels = images, labels.astype(np.int64)
        self.transform, self.split = transform, split
        self.classes = FASHION_MNIST_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[object, int]:
        img = Image.fromarray(self.images[i], mode='L')
        return apply_transform(self.transform, img, f'Fashion-MNIST {self.split} image {i}'), int(self.labels[i])
