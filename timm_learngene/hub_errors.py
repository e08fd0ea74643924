"""Hub and network failures as one sentence: what could not be fetched or sent, why, and what to do.

huggingface_hub raises a different exception for each way a request can fail (offline mode, no connection, a
missing repo, revision or file, a gated repo, a refused write) and httpx its own for the connection underneath;
:func:`hub_error` maps any of them to a :class:`~timm_learngene.errors.HubError`, which the command lines print as
one ``error:`` line (exit status 2).
"""
from typing import Optional

from .errors import HubError

__all__ = ['hub_error']


def _network_types():
    types = [ConnectionError, TimeoutError]
    for module in ('httpx2', 'httpx'):  # huggingface_hub 2 speaks httpx2, 1.x httpx, older ones requests
        try:
            types.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    try:
        import requests
        types.append(requests.exceptions.ConnectionError)
        types.append(requests.exceptions.Timeout)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def hub_error(e: BaseException, what: str, instead: str, cache: Optional[str] = None) -> Optional[HubError]:
    """A :class:`HubError` for ``e`` raised while ``what`` (e.g. ``"loading the ancestry 'deit_base_patch16_224'"``)
    talked to the Hub, ending with ``instead``, the way around the Hub (e.g. ``"pass --teacher-checkpoint
    FOLDER"``); None when ``e`` is not a Hub or network failure. ``cache``: the HF cache the download used (default
    ``HF_HUB_CACHE``)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    endpoint = constants.ENDPOINT
    if isinstance(e, OfflineModeIsEnabled):
        why = 'HF_HUB_OFFLINE is set, so the Hub is not contacted; unset HF_HUB_OFFLINE (with a network)'
    elif isinstance(e, LocalEntryNotFoundError) and constants.is_offline_mode():
        why = (f'HF_HUB_OFFLINE is set, and what is needed is not in the HF cache ({cache or constants.HF_HUB_CACHE}); '
               f'unset HF_HUB_OFFLINE (with a network) to fetch it once')
    elif isinstance(e, LocalEntryNotFoundError) or isinstance(e, _network_types()):
        why = (f'the Hub at {endpoint} cannot be reached ({_first_line(e)}); check the network, or set HF_ENDPOINT to '
               f'a reachable mirror')
    elif isinstance(e, GatedRepoError):
        why = 'the repo is gated: accept its terms on its Hub page and log in (hf auth login, or set HF_TOKEN)'
    elif isinstance(e, RepositoryNotFoundError):
        why = ('the repo was not found on the Hub (or it is private and you are not logged in: hf auth login, or set '
               'HF_TOKEN); check its name')
    elif isinstance(e, RevisionNotFoundError):
        why = 'the repo has no such revision; pass a branch, tag or commit it has'
    elif isinstance(e, HfHubHTTPError):
        why = (f'the Hub refused: {_first_line(e)}; check that you are logged in (hf auth login) with access to the '
               f'repo (write access, to push)')
    else:
        return None
    return HubError(f'{what}: {why}; or {instead}')


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
