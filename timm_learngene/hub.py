"""Hugging Face Hub access for pool checkpoints."""
from pathlib import Path
from typing import Optional, Union

from .errors import CheckpointError

__all__ = ['download_pool_file']


def download_pool_file(repo_id: str, filename: str, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Download (or find in the HF cache) one file of the pool repo ``repo_id`` (``org/name[@revision]``)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )
    repo, _, revision = repo_id.partition('@')
    hint = ("download it elsewhere and load the folder with 'local-dir:PATH', or point HF_ENDPOINT at a mirror")
    try:
        return Path(hf_hub_download(repo, filename, revision=revision or None, cache_dir=cache_dir))
    except GatedRepoError:
        raise CheckpointError(f'Hub repo {repo!r} is gated: accept its terms on the Hub and log in '
                              f'(huggingface-cli login), or {hint}') from None
    except RepositoryNotFoundError:
        raise CheckpointError(f'Hub repo {repo!r} was not found (or is private and you are not logged in); '
                              f'check the name, or {hint}') from None
    except RevisionNotFoundError:
        raise CheckpointError(f'Hub repo {repo!r} has no revision {revision!r}') from None
    except LocalEntryNotFoundError:  # before EntryNotFoundError: huggingface_hub derives it from that
        raise CheckpointError(f'{filename} of Hub repo {repo!r} is not in the local cache and the Hub cannot be '
                              f'reached (offline?); {hint}') from None
    except EntryNotFoundError:
        raise CheckpointError(f'Hub repo {repo!r} has no {filename}; it is not a learngene pool '
                              f'(pools hold model.safetensors + config.json written by timm_learngene)') from None
