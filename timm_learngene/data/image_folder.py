"""ImageFolder-style datasets (``DATA_DIR/train/<class>/*.jpg``) with clear errors for a missing, unreadable or
empty folder and for an image that cannot be decoded.

Files are found by timm's folder reader, so class order and image extensions match ``timm.data.create_dataset``;
unlike it, a missing split folder is an error (timm falls back to ``DATA_DIR`` itself), every class folder must hold
images directly (timm silently drops an empty class folder and makes a nested folder a class of its own, either of
which shifts the class indices), and a bad image is an error unless the dataset is wrapped in :class:`SkipBadImages`.
"""
import os
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import torch
from PIL import Image
from timm.data.readers.img_extensions import get_img_extensions
from timm.data.readers.reader_image_folder import find_images_and_targets

from ..errors import DatasetError
from ..logs import get_logger
from .transform_errors import apply_transform

__all__ = ['ImageFolder', 'SkipBadImages', 'find_split_folder', 'class_folders', 'SPLIT_FOLDERS', 'FOLDER_LAYOUT',
           'BAD_IMAGES']

_logger = get_logger(__name__)

SPLIT_FOLDERS = {'train': ('train', 'training'), 'eval': ('val', 'validation', 'valid', 'eval', 'evaluation')}
FOLDER_LAYOUT = 'DATA_DIR/train/<class>/*.jpg and DATA_DIR/val/<class>/*.jpg'
BAD_IMAGES = ('error', 'skip')

# what PIL raises for a file that is not an image or is damaged (UnidentifiedImageError and truncation are OSErrors,
# a broken PNG chunk is a SyntaxError)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _list(folder: Path, what: str) -> List[str]:
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        raise DatasetError(f'{what} {folder} does not exist; pass --data-dir FOLDER laid out as {FOLDER_LAYOUT}') \
            from None
    except NotADirectoryError:
        raise DatasetError(f'{what} {folder} is a file, not a folder; expected layout {FOLDER_LAYOUT}') from None
    except PermissionError:
        raise DatasetError(f'{what} {folder} is not readable (permission denied); make it readable '
                           f'(chmod -R a+rX {folder}) or run as a user who can read it') from None


def find_split_folder(data_dir: Union[str, Path], split: str) -> Path:
    """``DATA_DIR/train`` (or ``training``) for split 'train', ``DATA_DIR/val`` (or ``validation``, ``valid``,
    ``eval``, ``evaluation``) for 'eval'; raises DatasetError saying what is there and what was expected."""
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    data_dir = Path(data_dir)
    entries = _list(data_dir, 'data_dir')
    for name in SPLIT_FOLDERS[split]:
        if name in entries and (data_dir / name).is_dir():
            return data_dir / name
    found = ', '.join(entries[:8]) + (', ...' if len(entries) > 8 else '') if entries else 'nothing'
    raise DatasetError(f'data_dir {data_dir} has no {SPLIT_FOLDERS[split][0]}/ folder (looked for '
                       f'{", ".join(SPLIT_FOLDERS[split])}; found {found}); expected layout {FOLDER_LAYOUT}, one '
                       f'subfolder per class')


def class_folders(split_dir: Union[str, Path]) -> List[str]:
    """The class names of a split folder: its subfolders (hidden ones aside), sorted by name. Only lists the folder,
    so it is cheap even for ImageNet; :class:`ImageFolder` checks that these are exactly the classes it finds."""
    split_dir = Path(split_dir)
    return [n for n in _list(split_dir, 'split folder') if not n.startswith('.') and (split_dir / n).is_dir()]


class ImageFolder(torch.utils.data.Dataset):
    """``(image, class index)`` from ``root/<class>/*.jpg``; ``limit`` keeps the first N images.

    The classes are the subfolders of ``root`` (:func:`class_folders`), each holding its images directly; an empty
    class folder or images elsewhere raise DatasetError, since either would shift the class indices. An image that
    cannot be decoded raises DatasetError naming the file and its index; wrap the dataset in :class:`SkipBadImages`
    to skip such files instead.
    """

    def __init__(self, root: Union[str, Path], transform: Optional[Callable] = None, img_mode: str = 'RGB',
                 limit: Optional[int] = None):
        self.root = Path(root)
        folders = class_folders(self.root)
        for name in folders:
            # timm's walk silently skips a folder it cannot list, which would drop a class without a word
            if not os.access(self.root / name, os.R_OK | os.X_OK):
                raise DatasetError(f'class folder {self.root / name} is not readable (permission denied); make it '
                                   f'readable (chmod -R a+rX {self.root}) or remove it')
        samples, self.class_to_idx = find_images_and_targets(str(self.root))
        exts = ', '.join(get_img_extensions())
        if not samples:
            raise DatasetError(f'{self.root} holds no images ({exts}); expected layout {FOLDER_LAYOUT}, one '
                               f'subfolder per class')
        empty = [n for n in folders if n not in self.class_to_idx]
        if empty:
            raise DatasetError(f'class folder {self.root / empty[0]} holds no images ({exts})'
                               + (f' (nor do {", ".join(empty[1:])})' if len(empty) > 1 else '')
                               + '; every class needs images in every split: add some, or remove the folder from '
                               'train/ and val/ (and build the model with that many fewer classes)')
        stray = [c for c in self.class_to_idx if c not in folders]
        if stray:
            idx = self.class_to_idx[stray[0]]
            example = next(path for path, target in samples if target == idx)
            raise DatasetError(f'{example} is not directly inside a class folder of {self.root} (timm would make '
                               f'{stray[0]!r} a class of its own); expected layout {FOLDER_LAYOUT}, one subfolder per '
                               f'class with the images directly inside: move the images there')
        self.samples = samples[:limit] if limit else samples
        self.classes = sorted(self.class_to_idx, key=self.class_to_idx.get)
        self.transform, self.img_mode = transform, img_mode

    def __len__(self) -> int:
        return len(self.samples)

    def filename(self, index: int) -> str:
        return self.samples[index][0]

    def __getitem__(self, index: int) -> Tuple[object, int]:
        path, target = self.samples[index]
        try:
            with Image.open(path) as f:
                img = f.convert(self.img_mode)  # decodes every pixel, so a damaged file fails here
        except _DECODE_ERRORS as e:
            raise DatasetError(f'cannot read image {path} (index {index}): {type(e).__name__}: {e}; replace or '
                               f'delete the file, or pass --bad-images skip (bad_images: skip) to skip '
                               f'unreadable images') from e
        return apply_transform(self.transform, img, f'image {path} (index {index})'), target


class SkipBadImages(torch.utils.data.Dataset):
    """``dataset`` with unreadable images skipped: an index whose sample raises DatasetError gives the next readable
    sample (wrapping around), and each bad file is logged once (per DataLoader worker). Raises DatasetError when no
    sample is readable."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset
        self.bad = set()  # indices known to fail: skipped without another decode

    def __len__(self) -> int:
        return len(self.dataset)

    def _name(self, index: int) -> str:
        return self.dataset.filename(index) if hasattr(self.dataset, 'filename') else f'sample {index}'

    def __getitem__(self, index: int):
        n = len(self.dataset)
        for i in (j % n for j in range(index, index + n)):
            if i in self.bad:
                continue
            try:
                return self.dataset[i]
            except DatasetError as e:
                self.bad.add(i)
                _logger.warning('skipping unreadable image %s (index %d): %s', self._name(i), i, e.__cause__ or e)
        raise DatasetError(f'none of the {n} images can be read (e.g. {self._name(index % n)}); check the files '
                           f'under --data-dir')
