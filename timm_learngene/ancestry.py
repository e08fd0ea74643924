"""Loading the ancestry (the large pretrained ViT that the pool is distilled from)."""
from pathlib import Path
from typing import Optional

import timm
from torch import nn

from .hub_errors import hub_error

__all__ = ['load_ancestry']


def load_ancestry(name: str, checkpoint: Optional[str] = None, **kwargs) -> nn.Module:
    """A frozen, eval-mode timm model.

    ``name`` is a timm name (pretrained weights from the Hub), or ``local-dir:PATH`` / ``hf-hub:ORG/REPO``.
    ``checkpoint`` overrides the weights: a folder written by ``timm.models.save_for_hf`` (config.json +
    model.safetensors; the architecture comes from its config) or a ``.safetensors`` file for the
    architecture ``name``. Never unpickles. A Hub or network failure (offline, no connection, a missing repo) is
    a :class:`~timm_learngene.errors.HubError` saying what to do.
    """
    if checkpoint:
        path = Path(checkpoint)
        if path.is_dir():
            model = timm.create_model(f'local-dir:{path}', pretrained=True, **kwargs)
        elif path.is_file() and path.suffix == '.safetensors':
            from safetensors.torch import load_file
            model = timm.create_model(name, pretrained=False, **kwargs)
            model.load_state_dict(load_file(str(path)))
        else:
            raise FileNotFoundError(
                f'ancestry checkpoint {checkpoint!r} is neither a timm model folder (config.json + model.safetensors)'
                f' nor a .safetensors file')
    else:
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - only Hub and network failures are turned into a HubError
            err = hub_error(e, f'could not load the pretrained ancestry {name!r}',
                            'pass --teacher-checkpoint with a local timm model folder (config.json + '
                            'model.safetensors) or a .safetensors file')
            if err is None:
                raise
            raise err from e
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
