"""Which transform failed, on which image: :func:`apply_transform` runs a dataset's transform and turns any
exception it raises into a :class:`~timm_learngene.errors.TransformError` naming the image and the transform (down
to the RandAugment op), so a DataLoader worker's failure reaches the recipe as one ``error:`` line instead of a
worker traceback. ``--bad-images skip`` skips files that cannot be decoded, never transform failures.
"""
from typing import Callable, Optional

from timm.data.auto_augment import AugmentOp

from ..errors import LearngeneError, TransformError

__all__ = ['apply_transform']


def _transform_path(tb) -> str:
    """The transforms a traceback passed through, outermost first (``RandAugment > PosterizeIncreasing``)."""
    names = []
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name in ('__call__', 'forward'):
            obj = frame.f_locals.get('self')
            if obj is not None and type(obj).__name__ not in ('ToChannels', 'Compose'):
                name = obj.name if isinstance(obj, AugmentOp) else type(obj).__name__
                if not names or names[-1] != name:
                    names.append(name)
        tb = tb.tb_next
    return ' > '.join(names) or 'the transform'


def apply_transform(tf: Optional[Callable], img, where: str):
    """``tf(img)``; an exception in the transform becomes a :class:`TransformError` naming ``where`` (the image
    file or dataset index) and the transform that raised."""
    if tf is None:
        return img
    try:
        return tf(img)
    except LearngeneError:
        raise
    except Exception as e:
        raise TransformError(
            f'the training/eval transform failed on {where} in {_transform_path(e.__traceback__)}: '
            f'{type(e).__name__}: {e}; this is an augmentation setting or dependency problem, not a damaged image '
            f'(--bad-images skip does not skip it): change the augmentation options (--auto-augment, --aug-scale, '
            f'--re-prob, ...) and report it if the defaults fail') from e
