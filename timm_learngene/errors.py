"""Exceptions raised by timm_learngene.

Every error is a ``ValueError`` subclass, so callers that only want "bad input" can catch that; the subclasses
let tests and tools tell the cases apart. Messages say what was wrong, what was expected and what to do.
"""

__all__ = [
    'LearngeneError', 'PoolSpecError', 'RouteError', 'UnknownDescendantError', 'CheckpointError',
    'FormatVersionError', 'ResumeError', 'DatasetError', 'TransformError', 'ConfigError', 'HubError',
]


class LearngeneError(ValueError):
    """Base class of every error this package raises on bad input. ``all_ranks=True`` marks an error that every
    process of a distributed run raises alike, so the command line reports it once (from the main process)."""

    def __init__(self, *args, all_ranks: bool = False):
        super().__init__(*args)
        self.all_ranks = all_ranks


class PoolSpecError(LearngeneError):
    """A pool spec (members, sizes, stitching, matched positions) is malformed or inconsistent."""


class RouteError(LearngeneError):
    """A route does not describe a descendant the pool can build."""


class UnknownDescendantError(LearngeneError):
    """A descendant name that the pool does not have."""


class CheckpointError(LearngeneError):
    """A pool checkpoint (model.safetensors / config.json) is unreadable, incomplete or does not match."""


class FormatVersionError(CheckpointError):
    """A pool checkpoint written in a format version this package does not know."""


class ResumeError(LearngeneError):
    """A training-resume checkpoint (``OUTPUT/checkpoints/step_N``) is unreadable, damaged or belongs to another
    run. (A damaged pool file is a :class:`CheckpointError`.)"""


class DatasetError(LearngeneError):
    """A dataset is missing, unreadable, empty or damaged (folder layout, IDX files, an image that won't decode)."""


class TransformError(LearngeneError):
    """A training or evaluation transform (an augmentation) raised on an image: names the image and the transform.
    Not a :class:`DatasetError`, so ``--bad-images skip`` never hides it."""


class ConfigError(LearngeneError):
    """A recipe config (YAML file or flags) names an unknown option or holds a value of the wrong kind."""


class HubError(LearngeneError):
    """A model could not be fetched from, or a pool sent to, the Hugging Face Hub: offline mode, no network, a
    missing repo or revision, a gated repo, a refused upload. Says which, and the way around the Hub. (A pool repo
    that answers but holds no valid pool is a :class:`CheckpointError`.)"""
