"""Loading the ancestry (the large pretrained ViT that the pool is distilled from)."""
from pathlib import Path
from typing import Optional

import timm
import torch
from torch import nn

__all__ = ['load_ancestry']


def load_ancestry(name: str, checkpoint: Optional[str] = None, **kwargs) -> nn.Module:
    """A frozen, eval-mode timm model.

    ``name`` is a timm name (pretrained weights from the Hub), or ``local-dir:PATH`` / ``hf-hub:ORG/REPO``.
    ``checkpoint`` overrides the weights: a folder written by ``timm.models.save_for_hf`` (config.json +
    model.safetensors; the architecture comes from its config) or a ``.safetensors`` file for the
    architecture ``name``. Never unpickles.
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
        except (OSError, RuntimeError) as e:
            raise RuntimeError(
                f'could not load the pretrained ancestry {name!r} ({type(e).__name__}: {e}). Without network access, '
                f'pass --teacher-checkpoint with a local folder or .safetensors file, or set HF_ENDPOINT to a '
                f'mirror') from e
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
