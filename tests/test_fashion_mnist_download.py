"""The Fashion-MNIST download fallback: torchvision's mirrors and md5s, a file takes its name only when its
checksum matches, a corrupted mirror is skipped, and a failed download leaves nothing behind. No network: the
transfer itself (torchvision's ``_urlretrieve``) is replaced by a copy from a local folder."""
import hashlib
import shutil
from pathlib import Path

import pytest
import torchvision.datasets
import torchvision.datasets.utils as tv_utils

from timm_learngene.data import fashion_mnist as fm

from test_pipeline import _fake_fashion_mnist


@pytest.fixture
def offline_download(tmp_path, monkeypatch):
    """(source folder, cache folder, {url: bytes served}); Debian's path and the env folder are out of reach."""
    src = _fake_fashion_mnist(tmp_path / 'src')
    cache = tmp_path / 'cache'
    monkeypatch.setattr(fm, 'FASHION_MNIST_DIR', tmp_path / 'no-debian-here')
    monkeypatch.setattr(fm, '_CACHE', cache)
    monkeypatch.delenv('FASHION_MNIST_DIR', raising=False)
    monkeypatch.setattr(shutil, 'which', lambda name, *a, **k: None)  # no apt-get
    files = sorted(p.name for p in src.iterdir())
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, 'resources',
                        [(n, hashlib.md5((src / n).read_bytes()).hexdigest()) for n in files])
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, 'mirrors', ['http://bad.example/', 'http://good.example/'])
    served = {}
    for n in files:
        served[f'http://good.example/{n}'] = (src / n).read_bytes()
        served[f'http://bad.example/{n}'] = (src / n).read_bytes()[:-7] + b'garbage'
    monkeypatch.setattr(tv_utils, '_get_redirect_url', lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, '_is_remote_location_available', lambda: False)

    def fake_retrieve(url, fpath, chunk_size=1024 * 32):
        if url not in served:
            raise OSError(f'no route to {url}')
        Path(fpath).write_bytes(served[url])

    monkeypatch.setattr(tv_utils, '_urlretrieve', fake_retrieve)
    return src, cache, served


def test_corrupted_mirror_is_skipped_and_checked_files_are_kept(offline_download):
    src, cache, _ = offline_download
    lines = []
    found = fm.ensure_fashion_mnist(log=lines.append)
    assert found == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in src.iterdir())
    for p in src.iterdir():
        assert (cache / p.name).read_bytes() == p.read_bytes()
    assert sum('bad.example' in line for line in lines) == 4 and sum('good.example' in line for line in lines) == 4
    assert len(fm.FashionMNIST(cache, 'test')) == 64


def test_every_mirror_corrupted_leaves_nothing_and_says_so(offline_download):
    src, cache, served = offline_download
    for url in list(served):
        served[url] = b'not the published file'
    with pytest.raises(FileNotFoundError, match=r'could not be fetched .*md5 mismatch.*dataset-fashion-mnist'):
        fm.ensure_fashion_mnist(log=lambda line: None)
    assert list(cache.iterdir()) == []


def test_unreachable_mirrors_are_a_clear_error(offline_download):
    _, cache, served = offline_download
    served.clear()
    with pytest.raises(FileNotFoundError, match=r'bad.example/: no route.*good.example/: no route'):
        fm.ensure_fashion_mnist(log=lambda line: None)
    assert list(cache.iterdir()) == []
