"""Hugging Face Hub access for pool checkpoints: one Hub repo holds a whole pool.

- :func:`download_pool_file`: one file of a pool repo into the HF cache (what ``pretrained=True`` uses), with errors
  that say what to do.
- :func:`load_from_hub`: a descendant (or the pool) from a repo, the repo checked to be a pool first.
- :func:`push_to_hub` / :func:`stage_for_hub`: upload a pool folder written by ``save_pool`` with a model card
  (README.md) and its Pareto plot.

``timm.create_model('hf-hub:ORG/REPO', descendant='s3', pretrained=True)`` works without this module's help for the
config (timm downloads config.json itself); the weights come through :func:`download_pool_file`.
"""
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from .pool_format import CONFIG_NAME, WEIGHTS_NAME
from .pool_writer import load_pool
from .errors import CheckpointError
from .logs import get_logger
from .model_card import PARETO_NAME, render_descendant_card, render_model_card, render_pareto
from .pool_reader import check_pool_file, download_pool_file, read_pool_config, split_revision
from .version import __version__

__all__ = ['download_pool_file', 'load_from_hub', 'stage_for_hub', 'push_to_hub', 'HUB_FILES',
           'DESCENDANT_HUB_FILES']

_logger = get_logger(__name__)

_COMMIT = re.compile(r'[0-9a-f]{40}')


def load_from_hub(repo_id: str, descendant: Optional[str] = None, *, revision: Optional[str] = None,
                  cache_dir: Optional[Union[str, Path]] = None, pretrained: bool = True, **kwargs):
    """``timm.create_model('hf-hub:REPO', descendant=…, pretrained=True)``, with the repo checked to be a pool
    first, so a missing, gated, foreign or too-new repo gives a :class:`CheckpointError` that says what to do.

    The config and the weights are read at the same commit (the one ``config.json`` was found at), even if the
    branch moves in between. ``revision`` (or ``repo@revision``) selects a branch, tag or commit.
    """
    import timm
    repo, revision = split_revision(repo_id, revision)
    cfg_file = download_pool_file(repo, CONFIG_NAME, cache_dir=cache_dir, revision=revision)
    try:
        read_pool_config(cfg_file)
    except CheckpointError as e:
        raise type(e)(f'Hub repo {repo!r}: {e}') from None
    # the HF cache keeps files under snapshots/<commit>/: pin the weights to the config's commit
    commit = cfg_file.parent.name if _COMMIT.fullmatch(cfg_file.parent.name) else revision
    name = f'hf-hub:{repo}@{commit}' if commit else f'hf-hub:{repo}'
    return timm.create_model(name, pretrained=pretrained, descendant=descendant, cache_dir=cache_dir, **kwargs)


# ---- upload -----------------------------------------------------------------------------------------------------
README_NAME = 'README.md'
HUB_FILES = ('model.safetensors', 'config.json', README_NAME, 'pareto.png')
DESCENDANT_HUB_FILES = HUB_FILES[:3]  # a descendant's repo: no Pareto plot of one model


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import validate_repo_id
    if '@' in repo_id:
        raise ValueError(f'push to {repo_id.partition("@")[0]!r} and pass revision={repo_id.partition("@")[2]!r} '
                         f'(a branch) instead of writing it into the repo id')
    validate_repo_id(repo_id)


def _validate_folder(folder: Path) -> Dict[str, Any]:
    """Check that ``folder`` holds a pool, or one descendant saved alone, that loads: a learngene config.json
    (architecture, format version, spec) and a model.safetensors with learngene metadata and every tensor it needs,
    by loading it the way a user will (``timm.create_model('local-dir:…', pretrained=True)``). Returns the raw
    config.json dict."""
    if not folder.is_dir():
        raise CheckpointError(f'{folder} is not a folder; push the folder save_pool (or save_descendant, or export) '
                              f'wrote ({WEIGHTS_NAME} + {CONFIG_NAME})')
    if not (folder / WEIGHTS_NAME).is_file():
        raise CheckpointError(f'{folder / WEIGHTS_NAME} not found; a pool folder holds {CONFIG_NAME} and '
                              f'{WEIGHTS_NAME} (written by timm_learngene.save_pool)')
    config = read_pool_config(folder)
    descendant = config['model_args'].get('descendant')
    if descendant:
        load_pool(folder, descendant=descendant)  # its tensors, their checksums and the route
    else:
        check_pool_file(folder / WEIGHTS_NAME, config['model_args']['pool'])  # save_pool's file: metadata, checksums
        load_pool(folder)
    return json.loads((folder / CONFIG_NAME).read_text())


def stage_for_hub(pool_dir: Union[str, Path], repo_id: str, out_dir: Union[str, Path],
                  datasets: Optional[Sequence[str]] = None, license: Optional[str] = None) -> Path:
    """Write the files a pool repo holds into ``out_dir`` (new or empty): ``model.safetensors`` (the pool's,
    unchanged), ``config.json`` (with ``pretrained_cfg.hf_hub_id = repo_id``), ``README.md`` (the model card) and
    ``pareto.png``. The pool is validated first. Nothing else from ``pool_dir`` is copied, so no pickle is ever
    uploaded. Returns ``out_dir``.

    ``pool_dir`` may also be one descendant saved alone (``save_descendant``, ``export --format timm``): its repo
    gets the same files but the plot (:data:`DESCENDANT_HUB_FILES`), its card the descendant's; ``datasets`` and
    ``license`` apply to pool cards only.
    """
    _check_repo_id(repo_id)
    pool_dir, out_dir = Path(pool_dir), Path(out_dir)
    config = _validate_folder(pool_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f'{out_dir} exists and is not an empty folder; stage the upload into a new folder')
    out_dir.mkdir(parents=True, exist_ok=True)
    try:  # a hard link costs nothing for a multi-GB pool; copy across file systems
        os.link(pool_dir / WEIGHTS_NAME, out_dir / WEIGHTS_NAME)
    except OSError:
        shutil.copyfile(pool_dir / WEIGHTS_NAME, out_dir / WEIGHTS_NAME)
    cfg = dict(config.get('pretrained_cfg') or {})
    for k in ('file', 'source', 'hf_hub_filename', 'url'):
        cfg.pop(k, None)
    cfg['hf_hub_id'] = repo_id
    config['pretrained_cfg'] = cfg
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    if config['model_args'].get('descendant'):
        card = render_descendant_card(config, repo_id)
    else:
        _, description = render_pareto(config, out_dir / PARETO_NAME)
        card = render_model_card(config, repo_id, image=PARETO_NAME, image_description=description,
                                 datasets=datasets, license=license)
    (out_dir / README_NAME).write_text(card)
    return out_dir


def push_to_hub(pool_dir: Union[str, Path], repo_id: str, *, private: Optional[bool] = None,
                token: Optional[str] = None, revision: Optional[str] = None, commit_message: Optional[str] = None,
                create_pr: bool = False, datasets: Optional[Sequence[str]] = None, license: Optional[str] = None):
    """Upload the pool folder ``pool_dir`` (written by ``save_pool``) to the Hub repo ``repo_id`` with a model card.

    The repo gets ``model.safetensors``, ``config.json`` (timm's layout, ``hf_hub_id`` set to the repo), a
    ``README.md`` model card and ``pareto.png`` (:func:`stage_for_hub`), in one commit; afterwards
    ``timm.create_model('hf-hub:REPO', descendant='s3', pretrained=True)`` builds any descendant.

    Args:
        pool_dir: the pool folder.
        repo_id: ``org/name``; created if missing (``private`` applies only then).
        token: a Hub token with write access; default: the logged-in one (``hf auth login``) or ``HF_TOKEN``.
        revision: branch to commit to (created from the default branch if missing); default the default branch.
        commit_message, create_pr: as in ``HfApi.upload_folder``.
        datasets, license: model card metadata overrides (default: from the recorded recipe / the pretrained cfg).
    Returns:
        the ``CommitInfo`` of the upload (``.commit_url``, ``.oid``).
    """
    from huggingface_hub import HfApi
    with tempfile.TemporaryDirectory(prefix='learngene-push-') as tmp:
        staged = stage_for_hub(pool_dir, repo_id, Path(tmp) / 'repo', datasets=datasets, license=license)
        config = json.loads((staged / 'config.json').read_text())
        name = config['model_args']['pool']['name']
        descendant = config['model_args'].get('descendant')
        n = len(config['model_args'].get('descendants') or [])
        what = f'descendant {descendant} of learngene pool {name}' if descendant else \
            f'Learngene pool {name} ({n} descendants)'
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type='model')
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type='model')
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(staged), repo_type='model', revision=revision, create_pr=create_pr,
            commit_message=commit_message or f'{what[0].upper()}{what[1:]}, timm_learngene {__version__}')
    _logger.info(f'pushed {what} to {repo_id}: {getattr(info, "commit_url", info)}')
    return info
