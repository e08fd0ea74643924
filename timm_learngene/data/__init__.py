"""Datasets and loaders for the recipes, all through timm.data transforms.

``dataset``: ``folder`` (ImageFolder-style ``--data-dir``: ``DATA_DIR/train/<class>/*.jpg`` and
``DATA_DIR/val/<class>/*.jpg``), ``fashion_mnist`` (the IDX files from Debian's package or ``--data-dir``),
``hfds/NAME`` (a Hugging Face dataset through timm's reader, :mod:`.hf_datasets`), ``wds/NAME`` (webdataset tar
shards streamed through timm's reader, :mod:`.wds_datasets`), or ``synthetic`` (random images, for tests and
benchmarks).

``split``: ``train`` and ``eval`` (the test set: Fashion-MNIST's test files, the folder's ``val/``), and ``val``, a
seeded validation split carved from the training set for model selection (:mod:`.split`): with ``val_size`` N > 0,
``train`` is the training set without those N images and ``val`` exactly those N, with evaluation transforms.

``bad_images`` (``--bad-images``, ``folder`` only): what a file that cannot be decoded does when it is read.
``error`` (default) raises DatasetError naming the file and its index; ``skip`` logs one warning per file and uses
the next readable image in its place (an epoch still has ``len(dataset)`` samples, so a few are seen twice).

A missing, unreadable or empty dataset, damaged Fashion-MNIST files, a bad ``bad_images`` value, a dataset with more
classes than the model has outputs, and ``folder`` splits whose class folders differ raise
:class:`~timm_learngene.errors.DatasetError` (a ``ValueError``) saying what was wrong and what to do: checked when the
dataset is built, not as an IndexError (a device-side assert on GPU) from the loss mid-run.
"""
from pathlib import Path
from typing import Any, List, Mapping, Optional

import torch
from timm.data import Mixup

from ..errors import DatasetError, TransformError
from ..logs import get_logger
from ..signals import ignore_stop_signals
from .augment import build_transform, dataset_stats, guard_posterize
from .hf_datasets import is_hf_dataset, open_hf_dataset
from .wds_datasets import StreamLoader, is_wds_dataset, open_wds_dataset
from .fashion_mnist import FASHION_MNIST_CLASSES, FashionMNIST, find_fashion_mnist, read_idx
from .transform_errors import apply_transform
from .image_folder import BAD_IMAGES, FOLDER_LAYOUT, ImageFolder, SkipBadImages, class_folders, find_split_folder
from .split import SplitSubset, check_val_size, split_indices

__all__ = ['build_dataset', 'check_data_source', 'build_loader', 'build_mixup', 'SyntheticImages', 'FashionMNIST', 'ImageFolder',
           'SkipBadImages', 'DatasetError', 'read_idx', 'find_fashion_mnist', 'find_split_folder', 'class_folders',
           'dataset_stats', 'BAD_IMAGES', 'build_transform', 'guard_posterize', 'apply_transform',
           'TransformError', 'SplitSubset', 'split_indices', 'SPLITS', 'DATASETS', 'PIN_MEMORY',
           'StreamLoader']

_logger = get_logger(__name__)

DATASETS = ('folder', 'fashion_mnist', 'synthetic')
SPLITS = ('train', 'val', 'eval')
# synthetic validation images come from a generator of their own, apart from the train (seed) and eval (seed + 1)
# images of any plausible run seed (the CPU generator keeps a seed's low 32 bits only, so no 2**32 offset)
_SYNTHETIC_VAL_SEED = 0x76616C00


class SyntheticImages(torch.utils.data.Dataset):
    """``n`` fixed random images (``C x H x W`` float tensors, already normalised) with random labels."""

    def __init__(self, n: int, img_size: int, in_chans: int, num_classes: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, in_chans, img_size, img_size, generator=g)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])



def build_dataset(cfg: Mapping[str, Any], split: str, img_size: int, in_chans: int, num_classes: int,
                  augment: Optional[bool] = None):
    """Dataset for ``split`` (one of :data:`SPLITS`) from a recipe config; ``augment`` (default: train split only)
    picks training or evaluation transforms.

    Config keys used: ``dataset``, ``data_dir``, ``train_limit``/``eval_limit`` (first N images), ``val_size`` and
    ``val_seed`` (below), ``bad_images``, ``seed``, and the augmentation keys ``aug_scale``, ``hflip``,
    ``auto_augment``, ``re_prob``, ``crop_pct``, ``interpolation``.

    ``val_size`` N (default 0, none) holds N training images out of ``train`` and makes them the ``val`` split; which
    images is decided by a permutation of the whole training set seeded with ``val_seed`` (default 0) alone, so every
    run seed and every ``train_limit`` holds out the same images. ``train_limit`` then keeps the first N of the
    remaining training images; ``eval_limit`` applies to ``eval`` only (``val_size`` is the validation split's size).
    ``synthetic`` data is random, so there is nothing to carve: its ``val`` split is ``val_size`` images of their
    own (seeded by ``val_seed`` alone) and its ``train`` split is unchanged.

    Raises DatasetError when the data is missing, unreadable or empty, when it has more classes than ``num_classes``
    (0, a headless model, is not checked), for ``folder`` when ``train/`` and ``val/`` both exist and have different
    class folders (checked whichever split is built), for split ``val`` with ``val_size`` 0, and when ``val_size`` is
    not a whole number below the training set's size.
    """
    name = cfg.get('dataset', 'synthetic')
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    bad_images = cfg.get('bad_images') or 'error'
    if bad_images not in BAD_IMAGES:
        raise DatasetError(f'--bad-images must be one of {", ".join(BAD_IMAGES)}, got {bad_images!r}')
    val_size = check_val_size(cfg.get('val_size') or 0)
    val_seed = cfg.get('val_seed') or 0
    if split == 'val' and not val_size:
        raise DatasetError("split 'val' is held out of the training set, but val_size is 0: set val_size "
                           '(--val-size N) to the number of training images to hold out for validation')
    training = split == 'train'
    augment = training if augment is None else augment
    limit = cfg.get({'train': 'train_limit', 'eval': 'eval_limit'}.get(split, '')) or None  # 0 = all
    if name == 'synthetic':
        if split == 'val':
            return SyntheticImages(val_size, img_size, in_chans, num_classes, seed=_SYNTHETIC_VAL_SEED + val_seed)
        n = limit or (256 if training else 64)
        return SyntheticImages(n, img_size, in_chans, num_classes, seed=cfg.get('seed', 0) + (0 if training else 1))
    source = 'eval' if split == 'eval' else 'train'  # the split whose files are read
    carve = source == 'train' and val_size > 0
    tf = build_transform(cfg, img_size, in_chans, augment)
    if name == 'fashion_mnist':
        _check_num_classes(len(FASHION_MNIST_CLASSES), num_classes, "dataset 'fashion_mnist'")
        ds = FashionMNIST(cfg.get('data_dir'), 'train' if source == 'train' else 'test', transform=tf,
                          limit=None if carve else limit)
    elif is_wds_dataset(name):  # a stream: no hold-out or limit (open_wds_dataset refuses them), no len check
        return open_wds_dataset(cfg, source, tf, in_chans, num_classes, training)
    elif is_hf_dataset(name):
        ds = open_hf_dataset(cfg, source, tf, in_chans)
        _check_num_classes(len(ds.classes), num_classes, f'dataset {name!r}')
        if limit and not carve:
            ds = SplitSubset(ds, list(range(min(limit, len(ds)))))
    elif name == 'folder':
        if not cfg.get('data_dir'):
            raise DatasetError(f"dataset 'folder' needs --data-dir, a folder laid out as {FOLDER_LAYOUT}")
        root = find_split_folder(cfg['data_dir'], source)
        classes = _same_classes_in_both_splits(cfg['data_dir'], source, root)
        _check_num_classes(len(classes), num_classes, str(root),
                           extra=' or remove class folders from train/ and val/')
        ds = ImageFolder(root, transform=tf, img_mode='L' if in_chans == 1 else 'RGB',
                         limit=None if carve else limit)
    else:
        raise DatasetError(f'unknown dataset {name!r}; choose one of {DATASETS}, hfds/NAME or wds/NAME')
    if carve:
        train_idx, val_idx = split_indices(len(ds), val_size, val_seed)
        ds = SplitSubset(ds, train_idx[:limit] if training else val_idx)
    if (name == 'folder' or is_hf_dataset(name)) and bad_images == 'skip':
        ds = SkipBadImages(ds)  # after the split: a bad image is replaced by one of its own split
    if len(ds) == 0:
        raise DatasetError(f'dataset {name!r} split {split!r} is empty (data_dir={cfg.get("data_dir")!r})')
    return ds


def check_data_source(cfg: Mapping[str, Any], splits=('train',)) -> None:
    """Raise DatasetError when the files of ``splits`` (of :data:`SPLITS`) are not where ``cfg`` says: the
    Fashion-MNIST files, or ``data_dir`` and its split folders. Cheap (it lists folders, reads no image), so the
    recipes call it before loading any ancestry or pool: a missing data dir is reported first, not after a
    download that was going to be useless. :func:`build_dataset` checks the rest."""
    name = cfg.get('dataset', 'synthetic')
    if name == 'synthetic' or is_hf_dataset(name):  # a Hub dataset is only found by opening it
        return
    if is_wds_dataset(name):
        if not cfg.get('data_dir') or not Path(cfg['data_dir'], '_info.json').is_file():
            raise DatasetError(f"dataset {name!r} needs --data-dir, a folder holding the shards and their "
                               f"_info.json (got {cfg.get('data_dir')!r})")
        return
    if name not in DATASETS:
        raise DatasetError(f'unknown dataset {name!r}; choose one of {DATASETS}, hfds/NAME or wds/NAME')
    if name == 'fashion_mnist':
        try:
            find_fashion_mnist(cfg.get('data_dir') or None)
        except FileNotFoundError as e:
            raise DatasetError(str(e)) from None
        return
    if not cfg.get('data_dir'):
        raise DatasetError(f"dataset 'folder' needs --data-dir, a folder laid out as {FOLDER_LAYOUT}")
    for split in dict.fromkeys('eval' if s == 'eval' else 'train' for s in splits):
        find_split_folder(cfg['data_dir'], split)


def _check_num_classes(n: int, num_classes: int, what: str, extra: str = ''):
    # a label >= num_classes fails in cross_entropy mid-run; fewer classes than outputs runs (unused logits) but is
    # most likely a pool made for other data, so it is worth a warning
    if num_classes and n < num_classes:
        _logger.warning_once(f'{what} has {n} classes but the model has {num_classes} outputs: {num_classes - n} '
                             f'outputs are never a target (a pool from other data?); finetune and evaluate take '
                             f'--num-classes {n} to put new heads on every member')
    if num_classes and n > num_classes:
        raise DatasetError(f'{what} has {n} classes but the model has {num_classes} outputs; build the model with '
                           f'{n} classes (distill: --num-classes {n}; train_vit: --model-args '
                           f"'{{\"num_classes\": {n}}}'; finetune and evaluate use the pool's, so distill it that way)"
                           f'{extra}')


def _same_classes_in_both_splits(data_dir, split: str, root: Path) -> List[str]:
    """The class folders of ``root`` (split ``split``), after checking the other split has the same ones, so that a
    class index means the same class in training and evaluation. A missing other split is not checked here."""
    classes = class_folders(root)
    try:
        other = find_split_folder(data_dir, 'eval' if split == 'train' else 'train')
    except DatasetError:  # e.g. evaluate with only val/, or training without evaluation
        return classes
    other_classes = class_folders(other)
    if classes != other_classes:
        (train, train_classes), (val, val_classes) = ((root, classes), (other, other_classes)) if split == 'train' \
            else ((other, other_classes), (root, classes))
        raise DatasetError(f'{train} and {val} have different class folders (only in {train.name}/: '
                           f'{_some(set(train_classes) - set(val_classes))}; only in {val.name}/: '
                           f'{_some(set(val_classes) - set(train_classes))}); a class index must mean the same class '
                           f'in both: give both splits the same class folders')
    return classes


def _some(names) -> str:
    names = sorted(names)
    if not names:
        return 'none'
    return ', '.join(names[:10]) + (f', ... ({len(names)} in all)' if len(names) > 10 else '')



PIN_MEMORY = ('auto', 'on', 'off')


def build_loader(dataset, batch_size: int, training: bool, num_workers: int = 0, seed: int = 0,
                 pin_memory: bool = False):
    """The recipes' DataLoader: shuffled from its own seeded generator and dropping the last partial batch when
    ``training``; ``num_workers`` worker processes kept alive across epochs (``persistent_workers``) and ignoring
    SIGTERM/SIGINT (the training process handles preemption); ``pin_memory`` for faster copies to a GPU. A stream
    (an ``IterableDataset``, ``wds/``) shuffles itself and is told the worker count first."""
    stream = isinstance(dataset, torch.utils.data.IterableDataset)
    if stream and hasattr(dataset, 'set_loader_cfg'):
        dataset.set_loader_cfg(num_workers=num_workers)  # timm's readers size each worker's share with it
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=training and not stream, drop_last=training,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed) if training else None,
        persistent_workers=num_workers > 0, pin_memory=pin_memory,
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None)  # the main process handles preemption


def build_mixup(cfg: Mapping[str, Any], num_classes: int) -> Optional[Mixup]:
    """timm's Mixup/CutMix (with label smoothing folded into the soft targets), or None when both are off."""
    mixup, cutmix = cfg.get('mixup', 0.0) or 0.0, cfg.get('cutmix', 0.0) or 0.0
    if mixup <= 0 and cutmix <= 0:
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=cfg.get('smoothing', 0.0),
                 num_classes=num_classes)
