"""Datasets and loaders for the recipes, all through timm.data transforms.

``dataset``: ``folder`` (ImageFolder-style ``--data-dir`` with train/ and val/), ``fashion_mnist`` (the IDX files
from Debian's package or ``--data-dir``), or ``synthetic`` (random images, for tests and benchmarks).
"""
from typing import Any, Mapping, Optional, Tuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup, create_dataset, create_transform

from .fashion_mnist import (
    FASHION_MNIST_MEAN, FASHION_MNIST_STD, FashionMNIST, find_fashion_mnist, read_idx,
)

__all__ = ['build_dataset', 'build_loader', 'build_mixup', 'SyntheticImages', 'FashionMNIST', 'read_idx',
           'find_fashion_mnist', 'dataset_stats']

DATASETS = ('folder', 'fashion_mnist', 'synthetic')


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


def dataset_stats(name: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Normalisation mean/std for a dataset name."""
    if name == 'fashion_mnist':
        return FASHION_MNIST_MEAN, FASHION_MNIST_STD
    return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def build_dataset(cfg: Mapping[str, Any], split: str, img_size: int, in_chans: int, num_classes: int,
                  augment: Optional[bool] = None):
    """Dataset for ``split`` ('train' or 'eval') from a recipe config; ``augment`` (default: train split only)
    picks training or evaluation transforms.

    Config keys used: ``dataset``, ``data_dir``, ``train_limit``/``eval_limit`` (first N images), ``seed``, and the
    augmentation keys ``aug_scale``, ``hflip``, ``auto_augment``, ``re_prob``, ``crop_pct``, ``interpolation``.
    """
    name = cfg.get('dataset', 'synthetic')
    if split not in ('train', 'eval'):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    training = split == 'train'
    augment = training if augment is None else augment
    limit = cfg.get('train_limit' if training else 'eval_limit') or None  # 0 = all
    if name == 'synthetic':
        n = limit or (256 if training else 64)
        return SyntheticImages(n, img_size, in_chans, num_classes, seed=cfg.get('seed', 0) + (0 if training else 1))
    mean, std = dataset_stats(name)
    if len(mean) != in_chans:
        mean, std = (mean * in_chans)[:in_chans], (std * in_chans)[:in_chans]
    if augment:
        tf = create_transform(
            img_size, is_training=True, scale=tuple(cfg.get('aug_scale') or (0.08, 1.0)),
            hflip=cfg.get('hflip', 0.5), color_jitter=cfg.get('color_jitter', 0.0) or 0.0,
            auto_augment=cfg.get('auto_augment') or None, interpolation=cfg.get('interpolation', 'bicubic'),
            re_prob=cfg.get('re_prob', 0.0), mean=mean, std=std)
    else:
        tf = create_transform(img_size, is_training=False, crop_pct=cfg.get('crop_pct', 0.875),
                              interpolation=cfg.get('interpolation', 'bicubic'), mean=mean, std=std)
    if name == 'fashion_mnist':
        ds = FashionMNIST(cfg.get('data_dir'), 'train' if training else 'test', transform=_channels(tf, in_chans),
                          limit=limit)
    elif name == 'folder':
        if not cfg.get('data_dir'):
            raise ValueError("dataset 'folder' needs --data-dir, a folder with train/ and val/ class subfolders")
        ds = create_dataset('', root=cfg['data_dir'], split='train' if training else 'validation',
                            is_training=augment, transform=_channels(tf, in_chans),
                            input_img_mode='L' if in_chans == 1 else 'RGB')
        if limit:
            ds = torch.utils.data.Subset(ds, range(min(limit, len(ds))))
    else:
        raise ValueError(f'unknown dataset {name!r}; choose one of {DATASETS}')
    if len(ds) == 0:
        raise ValueError(f'dataset {name!r} split {split!r} is empty (data_dir={cfg.get("data_dir")!r})')
    return ds


class _channels:
    """timm's transforms keep the PIL mode; make grayscale or RGB match the model's input channels."""

    def __init__(self, tf, in_chans: int):
        self.tf, self.mode = tf, ('L' if in_chans == 1 else 'RGB')

    def __call__(self, img):
        return self.tf(img if img.mode == self.mode else img.convert(self.mode))


def build_loader(dataset, batch_size: int, training: bool, num_workers: int = 0, seed: int = 0):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=training, drop_last=training, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed) if training else None,
        persistent_workers=num_workers > 0)


def build_mixup(cfg: Mapping[str, Any], num_classes: int) -> Optional[Mixup]:
    """timm's Mixup/CutMix (with label smoothing folded into the soft targets), or None when both are off."""
    mixup, cutmix = cfg.get('mixup', 0.0) or 0.0, cfg.get('cutmix', 0.0) or 0.0
    if mixup <= 0 and cutmix <= 0:
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=cfg.get('smoothing', 0.0),
                 num_classes=num_classes)
