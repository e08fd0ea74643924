"""Hugging Face datasets as a recipe's data: ``--dataset hfds/NAME`` reads NAME (a Hub dataset id, or a local folder
of data files such as ``data/train-*.parquet``) through timm's own reader (``create_dataset('hfds/NAME')``,
:class:`timm.data.readers.ReaderHfds`, random access), with ``--data-dir`` as the datasets cache (``''``: the
datasets library's default) and ``--train-split`` / ``--eval-split`` naming the splits (default ``train`` and
``validation``). Needs the ``datasets`` package (``pip install 'timm-learngene[hfds]'``).

Being random access, such a dataset behaves as ``folder`` does: the seeded ``--val-size`` hold-out, ``--train-limit``,
the class-count check (from the label column's ``ClassLabel``), the same per-process sharding and exact resume, and
an image that cannot be decoded stops the run naming its index unless ``--bad-images skip``.
"""
from typing import Any, Callable, Mapping, Optional, Tuple

import torch
from PIL import Image

from ..errors import DatasetError
from .transform_errors import apply_transform

__all__ = ['HF_PREFIX', 'is_hf_dataset', 'HfImages', 'open_hf_dataset']

HF_PREFIX = 'hfds/'
_INSTALL = "pip install 'timm-learngene[hfds]' (the datasets package)"


def is_hf_dataset(name: str) -> bool:
    return isinstance(name, str) and name[:len(HF_PREFIX)].lower() == HF_PREFIX and len(name) > len(HF_PREFIX)


class HfImages(torch.utils.data.Dataset):
    """Images and labels of one split of a Hugging Face dataset, read through timm's ``ReaderHfds`` (``reader``),
    converted to ``img_mode`` and passed through ``transform``. An image that cannot be decoded raises
    :class:`DatasetError` naming the dataset and index (``SkipBadImages`` turns that into a skip)."""

    def __init__(self, reader, name: str, transform: Optional[Callable], img_mode: str):
        self.reader, self.name, self.transform, self.img_mode = reader, name, transform, img_mode
        self.classes = sorted(reader.class_to_idx, key=reader.class_to_idx.get)

    def __len__(self) -> int:
        return len(self.reader)

    def filename(self, index: int) -> str:
        return f'{self.name}[{index}]'

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        try:
            data, target = self.reader[index][:2]
            with Image.open(data) as f:
                img = f.convert(self.img_mode)  # decodes every pixel
        except (OSError, ValueError, AssertionError, KeyError) as e:
            raise DatasetError(f'cannot read image {index} of {self.name}: {type(e).__name__}: {e}; pass --bad-images '
                               f'skip (bad_images: skip) to skip unreadable images') from e
        return apply_transform(self.transform, img, f'image {index} of {self.name}'), int(target)


def open_hf_dataset(cfg: Mapping[str, Any], source: str, transform: Optional[Callable], in_chans: int) -> HfImages:
    """The ``source`` split (``train`` or ``eval``) of ``cfg['dataset']`` (``hfds/NAME``) as :class:`HfImages`.
    Raises DatasetError when ``datasets`` is missing, the dataset or split cannot be found or opened, or the label
    column has no class names."""
    name = cfg['dataset']
    split = (cfg.get('train_split') or 'train') if source == 'train' else (cfg.get('eval_split') or 'validation')
    try:
        from timm.data.readers.reader_hfds import ReaderHfds
    except ImportError:
        raise DatasetError(f'dataset {name!r} needs the datasets package: {_INSTALL}') from None
    path = name[len(HF_PREFIX):]
    where = f" (cache --data-dir {cfg['data_dir']})" if cfg.get('data_dir') else ''
    try:
        reader = ReaderHfds(path, root=cfg.get('data_dir') or None, split=split)
    except ValueError as e:  # an unknown split names the ones there are
        raise DatasetError(f'dataset {name!r}{where}: {e} (--train-split / --eval-split name the splits)') from None
    except (FileNotFoundError, ConnectionError, OSError) as e:
        raise DatasetError(f'cannot open dataset {name!r} split {split!r}{where}: {type(e).__name__}: {e}; give a '
                           f'Hub dataset id reachable from here or a local folder of data files '
                           f'(e.g. data/train-00000-of-00001.parquet)') from None
    except KeyError as e:
        raise DatasetError(f'dataset {name!r} split {split!r} has no column {e}; it needs an image column "image" '
                           f'and a class label column "label"') from None
    if not reader.class_to_idx:
        raise DatasetError(f'dataset {name!r}: the "label" column has no class names (a datasets ClassLabel '
                           f'feature), so the class count is unknown; cast it with dataset.cast_column("label", '
                           f'ClassLabel(names=[...]))')
    return HfImages(reader, name, transform, 'L' if in_chans == 1 else 'RGB')
