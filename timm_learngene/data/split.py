"""A seeded validation split carved from a training set, for model selection that never looks at the test set.

The held-out images are the first ``val_size`` of a permutation of the whole training set drawn from a generator
seeded with ``val_seed`` alone: not the run's seed (every arm and every seed of an experiment selects on the same
images) and not ``train_limit`` (a shorter run holds out the same images). Both halves keep the training set's
order.
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..errors import DatasetError

__all__ = ['split_indices', 'SplitSubset', 'check_val_size']


def check_val_size(val_size, n: Optional[int] = None) -> int:
    """``val_size`` as an int after checking it is a whole number >= 0 and, when the training set's size ``n`` is
    known, leaves at least one training image; raises DatasetError otherwise."""
    if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
        raise DatasetError(f'val_size must be a whole number of training images to hold out (0 = none), got '
                           f'{val_size!r}')
    if n is not None and val_size >= n:
        raise DatasetError(f'val_size {val_size} would hold out all {n} training images; set val_size below {n} '
                           f'(e.g. {max(1, n // 12)}, about a twelfth)')
    return val_size


def split_indices(n: int, val_size: int, seed: int = 0) -> Tuple[List[int], List[int]]:
    """``(train, val)``: indices into a training set of ``n`` images, disjoint and together ``range(n)``, each in
    ascending order; ``val`` holds ``val_size`` of them, chosen by a permutation seeded with ``seed`` alone."""
    check_val_size(val_size, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return sorted(perm[val_size:].tolist()), sorted(perm[:val_size].tolist())


class SplitSubset(torch.utils.data.Dataset):
    """The items ``indices`` of ``dataset``, in that order. ``classes`` and ``filename(i)`` come from the dataset
    (where it has them), so a subset of an :class:`~timm_learngene.data.ImageFolder` can still be wrapped in
    :class:`~timm_learngene.data.SkipBadImages`, and an error names the image by its index in the whole set."""

    def __init__(self, dataset: torch.utils.data.Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]

    @property
    def classes(self):
        return self.dataset.classes

    @property
    def transform(self):
        return self.dataset.transform

    @property
    def filename(self) -> Callable[[int], str]:
        name = self.dataset.filename  # AttributeError when the dataset has none, so hasattr() says so too
        return lambda i: name(self.indices[i])
