"""Train and eval transforms for the recipes, built with timm's ``create_transform``, and what this package adds
around them.

1. **Posterize at 0 bits.** timm's RandAugment/AutoAugment posterize ops map the top of their magnitude range to
   0 bits kept (``PosterizeIncreasing`` at magnitude 10, which ``rand-m9-mstd0.5`` reaches once the sampled
   magnitude is clipped; ``Posterize`` at magnitude 0). Pillow >= 13 refuses 0 bits with ``ValueError('bits must
   be between or equal to 1 and 8')`` (older Pillow blacked the image out), which killed the DeiT recipe a few
   steps into an ImageNet run. :func:`guard_posterize` makes every posterize op keep at least 1 bit, the strongest
   posterize Pillow accepts; no other op and no other magnitude changes.
2. **Which transform failed, on which image**: see :mod:`.transform_errors`.
"""
from typing import Dict, Any, Callable, List, Mapping, Tuple

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.auto_augment import AugMixAugment, AugmentOp, AutoAugment, RandAugment

from .fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD

__all__ = ['build_transform', 'eval_data_config', 'dataset_stats', 'guard_posterize', 'ToChannels', 'POSTERIZE_OPS']

POSTERIZE_OPS = ('Posterize', 'PosterizeIncreasing', 'PosterizeOriginal')


def dataset_stats(name: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Normalisation mean/std for a dataset name."""
    if name == 'fashion_mnist':
        return FASHION_MNIST_MEAN, FASHION_MNIST_STD
    return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def eval_data_config(cfg: Mapping[str, Any], img_size: int, in_chans: int) -> Dict[str, Any]:
    """The evaluation preprocessing of a recipe as timm's data config (``mean``, ``std``, ``crop_pct``,
    ``interpolation``, ``input_size``): saved in a pool's pretrained_cfg, so that
    ``create_transform(**resolve_data_config(model=m))`` is the transform the recipe evaluated with."""
    mean, std = dataset_stats(cfg.get('dataset', 'synthetic'))
    if len(mean) != in_chans:
        mean, std = (mean * in_chans)[:in_chans], (std * in_chans)[:in_chans]
    return dict(mean=tuple(mean), std=tuple(std), crop_pct=cfg.get('crop_pct', 0.875),
                interpolation=cfg.get('interpolation', 'bicubic'), input_size=(in_chans, img_size, img_size))


def build_transform(cfg: Mapping[str, Any], img_size: int, in_chans: int, augment: bool) -> Callable:
    """The transform a recipe applies to a PIL image: training augmentation (``augment``) or evaluation
    resize + crop, normalised with the dataset's mean/std, converting the image to ``in_chans`` channels first.

    Config keys used: ``dataset``, ``aug_scale``, ``hflip``, ``color_jitter``, ``auto_augment``, ``re_prob``,
    ``crop_pct``, ``interpolation``. Posterize ops keep at least one bit (:func:`guard_posterize`).
    """
    data = eval_data_config(cfg, img_size, in_chans)
    mean, std, interpolation = data['mean'], data['std'], data['interpolation']
    if augment:
        tf = create_transform(
            img_size, is_training=True, scale=tuple(cfg.get('aug_scale') or (0.08, 1.0)),
            hflip=cfg.get('hflip', 0.5), color_jitter=cfg.get('color_jitter', 0.0) or 0.0,
            auto_augment=cfg.get('auto_augment') or None, interpolation=interpolation,
            re_prob=cfg.get('re_prob', 0.0), mean=mean, std=std)
        guard_posterize(tf)
    else:
        tf = create_transform(img_size, is_training=False, crop_pct=data['crop_pct'],
                              interpolation=interpolation, mean=mean, std=std)
    return ToChannels(tf, in_chans)


class ToChannels:
    """timm's transforms keep the PIL mode; make grayscale or RGB match the model's input channels first."""

    def __init__(self, tf: Callable, in_chans: int):
        self.tf, self.mode = tf, ('L' if in_chans == 1 else 'RGB')

    def __call__(self, img):
        return self.tf(img if img.mode == self.mode else img.convert(self.mode))

    def __repr__(self):
        return f'{type(self).__name__}(mode={self.mode!r}, {self.tf!r})'


def _augment_ops(tf) -> List[AugmentOp]:
    """Every timm AugmentOp inside ``tf`` (a Compose, RandAugment, AutoAugment or AugMix, nested)."""
    found = []
    if isinstance(tf, AugmentOp):
        found.append(tf)
    elif isinstance(tf, (RandAugment, AugMixAugment)):
        found += tf.ops
    elif isinstance(tf, AutoAugment):
        found += [op for sub in tf.policy for op in sub]
    for child in getattr(tf, 'transforms', None) or ():
        found += _augment_ops(child)
    if isinstance(tf, ToChannels):
        found += _augment_ops(tf.tf)
    return found


def _posterize_at_least_one_bit(aug_fn: Callable) -> Callable:
    def posterize(img, bits_to_keep, **kwargs):
        return aug_fn(img, max(1, int(bits_to_keep)), **kwargs)
    posterize.__name__ = posterize.__qualname__ = 'posterize_at_least_one_bit'
    return posterize


def guard_posterize(tf) -> int:
    """Make every posterize op inside ``tf`` keep at least 1 bit (Pillow >= 13 rejects 0); returns how many ops
    were guarded. Idempotent."""
    n = 0
    for op in _augment_ops(tf):
        if op.name in POSTERIZE_OPS and getattr(op.aug_fn, '__name__', '') != 'posterize_at_least_one_bit':
            op.aug_fn = _posterize_at_least_one_bit(op.aug_fn)
            n += 1
    return n
