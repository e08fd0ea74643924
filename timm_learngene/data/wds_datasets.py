"""webdataset shards as a recipe's data: ``--dataset wds/NAME`` streams the tar shards under ``--data-dir`` through
timm's own reader (``create_dataset('wds/NAME')``, :class:`timm.data.readers.ReaderWds`): ``DATA_DIR/_info.json``
lists each split's shard files and sample counts, each sample holds an image (``jpg``, ``png`` or ``webp``) and its
class index (``cls``); ``--train-split`` / ``--eval-split`` name the splits (default ``train`` and
``validation``). Needs the ``webdataset`` package (``pip install 'timm-learngene[wds]'``).

A stream is not random access, so what ``folder`` does differs here, and says so:

- the reader shards by process *and* loader worker (each reads its own shards; a split needs at least as many
  shards as processes x workers to keep every one busy), so the training loader is not handed to
  ``accelerate.prepare`` (which would shard it again): :class:`StreamLoader` puts the batches on the device;
- there is no seeded ``--val-size`` hold-out and no ``--train-limit`` / ``--eval-limit``: give the shards a
  validation split of their own and choose on it;
- shards are shuffled per epoch from ``--seed`` (the same on every process) and samples in a buffer per worker, so
  a ``--resume`` continues at the right step with the right schedule but is not bit-exact (the buffer restarts);
- a class index outside the model's outputs stops the run naming the sample, as soon as it is read.
"""
from typing import Any, Callable, Mapping, Optional

import torch

from ..errors import DatasetError

__all__ = ['WDS_PREFIX', 'is_wds_dataset', 'open_wds_dataset', 'StreamLoader']

WDS_PREFIX = 'wds/'
_INSTALL = "pip install 'timm-learngene[wds]' (the webdataset package)"


def is_wds_dataset(name: str) -> bool:
    return isinstance(name, str) and name[:len(WDS_PREFIX)].lower() == WDS_PREFIX and len(name) > len(WDS_PREFIX)


class _CheckedTargets(torch.utils.data.IterableDataset):
    """``dataset``'s samples, stopping with DatasetError at the first class index outside ``[0, num_classes)``."""

    def __init__(self, dataset, name: str, num_classes: int):
        self.dataset, self.name, self.num_classes = dataset, name, num_classes

    def __iter__(self):
        for i, (img, target) in enumerate(self.dataset):
            if self.num_classes and not 0 <= int(target) < self.num_classes:
                raise DatasetError(f'{self.name}: sample {i} of this stream has class {int(target)}, but the model '
                                   f'has {self.num_classes} outputs; build the model with more classes or fix the '
                                   f'shards\' cls entries')
            yield img, int(target)

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def set_loader_cfg(self, num_workers: Optional[int] = None) -> None:
        self.dataset.set_loader_cfg(num_workers=num_workers)


def open_wds_dataset(cfg: Mapping[str, Any], source: str, transform: Optional[Callable], in_chans: int,
                     num_classes: int, training: bool) -> torch.utils.data.IterableDataset:
    """The ``source`` split (``train`` or ``eval``) of ``cfg['dataset']`` (``wds/NAME``) as a stream of
    ``(image, class)``. Raises DatasetError when webdataset is missing, ``--data-dir`` or its ``_info.json`` or the
    split is missing, or a hold-out or limit is asked for (a stream has none)."""
    name = cfg['dataset']
    for key in ('val_size', 'train_limit', 'eval_limit'):
        if cfg.get(key):
            raise DatasetError(f'dataset {name!r} is a stream of shards: --{key.replace("_", "-")} needs random '
                               f'access; set it to 0 and give the shards a validation split of their own '
                               f'(--train-split / --eval-split)')
    root = cfg.get('data_dir')
    if not root:
        raise DatasetError(f'dataset {name!r} needs --data-dir, the folder holding the shards and their _info.json')
    split = (cfg.get('train_split') or 'train') if source == 'train' else (cfg.get('eval_split') or 'validation')
    try:
        import webdataset  # noqa: F401  (timm's reader needs it)
        from timm.data import create_dataset
    except ImportError:
        raise DatasetError(f'dataset {name!r} needs the webdataset package: {_INSTALL}') from None
    try:
        ds = create_dataset(name, root=str(root), split=split, is_training=training,
                            batch_size=int(cfg.get('batch_size') or 1), seed=int(cfg.get('seed') or 0),
                            input_img_mode='L' if in_chans == 1 else 'RGB', transform=transform)
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        raise DatasetError(f'cannot open split {split!r} of dataset {name!r} in {root}: {type(e).__name__}: {e}; '
                           f'{root}/_info.json must list it under "splits" (num_samples, filenames, '
                           f'shard_lengths)') from None
    if len(ds) == 0:
        raise DatasetError(f'split {split!r} of dataset {name!r} in {root} is empty')
    return _CheckedTargets(ds, name, num_classes)


class StreamLoader:
    """A DataLoader over a stream that shards itself, used in place of an ``accelerate.prepare``'d one: batches
    moved to ``device``; ``set_epoch`` reaches the stream (its shard shuffle); :meth:`skip_first_batches` reads and
    drops batches (a resume). ``len`` is the batches per epoch on this process."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device):
        self.loader, self.device = loader, torch.device(device)
        self.dataset, self.generator = loader.dataset, loader.generator
        self._skip = 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def skip_first_batches(self, n: int) -> 'StreamLoader':
        skipping = StreamLoader(self.loader, self.device)
        skipping._skip = n
        return skipping

    def __iter__(self):
        non_blocking = self.device.type == 'cuda'
        for i, batch in enumerate(self.loader):
            if i < self._skip:
                continue
            yield tuple(t.to(self.device, non_blocking=non_blocking) for t in batch)
