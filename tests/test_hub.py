"""Pools on the Hugging Face Hub, all offline.

- Upload: ``push_to_hub`` runs for real up to the ``HfApi`` calls; ``HfApi`` is replaced by a stand-in that checks
  every call against the real signature and writes a git repo (a copy of the folder, one commit per upload).
- Download over real HTTP: those git repos are served by a local ``olah`` server (a Hub mirror, from PyPI, installed
  into its own cached venv by the fixture) in offline mode; huggingface_hub talks to it as it talks to the Hub.
- Offline: a hand-made HF cache with ``HF_HUB_OFFLINE=1``, in a fresh process so the variable is read as users set it.
- The model card: metadata, descendant table, plot, recipe, citation.
"""
import hashlib
import inspect
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import timm_learngene
import timm_learngene.hub as hub
from timm_learngene import (
    FORMAT_VERSION, CheckpointError, Descendant, FormatVersionError, LearngenePool, enumerate_descendants, save_pool,
)
from timm_learngene.ancestry import load_ancestry
from timm_learngene.errors import HubError
from timm_learngene.__main__ import main as cli_main
from timm_learngene.model_card import card_metadata, render_model_card

from conftest import IMG, tiny_spec
from test_checkpoint import spy_reads

TESTS = Path(__file__).resolve().parent
PACKAGE_ROOT = Path(timm_learngene.__file__).resolve().parent.parent
OLAH_REQUIREMENT = 'olah==0.5.4'
DEFAULT_REPO = 'timm-learngene/learngene-pool-deit-base-l6'


def _images():
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(2))


def _make_pool(seed, metrics=None, recipe=None, folder=None):
    torch.manual_seed(seed)
    pool = timm.create_model('learngene_pool', pool=tiny_spec(6)).eval()
    with torch.no_grad():  # zero-init biases would hide a bias that is not loaded
        for p in pool.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return save_pool(pool, folder, metrics=metrics, recipe=recipe), pool


@pytest.fixture(scope='module')
def pools(tmp_path_factory):
    """Three tiny pools of the same spec with different weights: A (one top-1 measured), B (all measured), C."""
    root = tmp_path_factory.mktemp('pools')
    n = len(enumerate_descendants(tiny_spec(6)))
    recipe = {'distill': {'dataset': 'fashion_mnist', 'epochs': 1, 'lr': 0.001}, 'finetune': {'train': 'all'}}
    return {
        'A': _make_pool(0, {'s3': {'top1': 55.5}}, recipe, root / 'A'),
        'B': _make_pool(1, {f's{i}': {'top1': 40.0 + i} for i in range(1, n + 1)}, recipe, root / 'B'),
        'C': _make_pool(2, None, None, root / 'C'),
    }


# ---- HfApi stand-in: git repos in the layout olah serves (ROOT/models/ORG/NAME) ---------------------------------
_GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME='test', GIT_AUTHOR_EMAIL='test@example.com', GIT_COMMITTER_NAME='test',
                GIT_COMMITTER_EMAIL='test@example.com', GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM='1')


def _git(repo, *args) -> str:
    r = subprocess.run(['git', *args], cwd=repo, env=_GIT_ENV, capture_output=True, text=True)
    assert r.returncode == 0, f'git {" ".join(args)} failed: {r.stderr}'
    return r.stdout.strip()


def git_hf_api(root: Path, calls: list):
    """A class standing in for ``huggingface_hub.HfApi``; ``calls`` records ``(method, bound arguments)``."""
    from huggingface_hub import HfApi

    def bind(method, args, kwargs):
        # the call must be one the real HfApi accepts
        bound = inspect.signature(getattr(HfApi, method)).bind(None, *args, **kwargs)
        bound.apply_defaults()
        out = dict(bound.arguments)
        out.pop('self')
        calls.append((method, out))
        return out

    class GitHfApi:
        def __init__(self, *args, **kwargs):
            inspect.signature(HfApi).bind(*args, **kwargs)

        def create_repo(self, *args, **kwargs):
            a = bind('create_repo', args, kwargs)
            path = root / 'models' / a['repo_id']
            if path.exists():
                assert a['exist_ok'], f'{a["repo_id"]} exists'
                return
            path.mkdir(parents=True)
            _git(path, 'init', '-q', '-b', 'main')

        def create_branch(self, *args, **kwargs):
            a = bind('create_branch', args, kwargs)
            path = root / 'models' / a['repo_id']
            if a['branch'] not in _git(path, 'branch', '--list', a['branch']):
                _git(path, 'branch', a['branch'], 'main')

        def upload_folder(self, *args, **kwargs):
            a = bind('upload_folder', args, kwargs)
            assert not a['create_pr'] and a['path_in_repo'] is None
            path = root / 'models' / a['repo_id']
            if _git(path, 'branch', '--list'):  # a new repo has no branch until its first commit
                _git(path, 'checkout', '-q', a['revision'] or 'main')
            for f in Path(a['folder_path']).iterdir():
                shutil.copyfile(f, path / f.name)
            _git(path, 'add', '-A')
            _git(path, 'commit', '-q', '-m', a['commit_message'] or 'Upload folder using huggingface_hub')
            sha = _git(path, 'rev-parse', 'HEAD')
            _git(path, 'checkout', '-q', 'main')
            return types.SimpleNamespace(oid=sha, commit_url=f'https://hub.test/{a["repo_id"]}/commit/{sha}')

    return GitHfApi


@pytest.fixture
def fake_api(tmp_path, monkeypatch):
    import huggingface_hub
    calls = []
    root = tmp_path / 'hub'
    monkeypatch.setattr(huggingface_hub, 'HfApi', git_hf_api(root, calls))
    return types.SimpleNamespace(root=root, calls=calls, repo=lambda repo_id: root / 'models' / repo_id)


# ---- upload -------------------------------------------------------------------------------------------------------
def _no_pickle(path: Path):
    head = path.read_bytes()[:2]
    assert head[:1] != b'\x80' and head != b'PK', f'{path.name} looks like a pickle / torch.save zip'


def test_push_uploads_pool_that_reloads_identically(pools, fake_api):
    path, pool = pools['A']
    info = timm_learngene.push_to_hub(path, 'my-org/learngene-pool', private=False)
    assert [c[0] for c in fake_api.calls] == ['create_repo', 'upload_folder']
    create, upload = fake_api.calls[0][1], fake_api.calls[1][1]
    assert create['repo_id'] == 'my-org/learngene-pool' and create['private'] is False and create['exist_ok']
    assert upload['repo_id'] == 'my-org/learngene-pool' and upload['revision'] is None
    assert 'tiny_l6' in upload['commit_message']
    repo = fake_api.repo('my-org/learngene-pool')
    assert info.oid == _git(repo, 'rev-parse', 'HEAD')
    files = sorted(p.name for p in repo.iterdir() if p.name != '.git')
    assert files == sorted(hub.HUB_FILES)
    for f in files:
        _no_pickle(repo / f)
    assert (repo / 'model.safetensors').read_bytes() == (path / 'model.safetensors').read_bytes()
    config = json.loads((repo / 'config.json').read_text())
    assert config['pretrained_cfg']['hf_hub_id'] == 'my-org/learngene-pool'
    original = json.loads((path / 'config.json').read_text())
    assert config['model_args'] == original['model_args'] and config['recipe'] == original['recipe']

    # the pushed copy loads through local-dir: to the same outputs, every descendant and the whole pool
    x = _images()
    with torch.no_grad():
        for d in enumerate_descendants(pool.pool_spec):
            m = timm.create_model(f'local-dir:{repo}', descendant=d.name, pretrained=True).eval()
            assert torch.equal(m(x), pool(x, d.name)), d.name
    whole = timm.create_model(f'local-dir:{repo}', pretrained=True)
    assert isinstance(whole, LearngenePool)
    sd = whole.state_dict()
    assert sd.keys() == pool.state_dict().keys() and all(torch.equal(sd[k], v) for k, v in pool.state_dict().items())


def test_push_to_branch_and_private(pools, fake_api):
    timm_learngene.push_to_hub(pools['A'][0], 'org/p', private=True)
    timm_learngene.push_to_hub(pools['C'][0], 'org/p', revision='exp', commit_message='C on exp')
    methods = [c[0] for c in fake_api.calls]
    assert methods == ['create_repo', 'upload_folder', 'create_repo', 'create_branch', 'upload_folder']
    assert fake_api.calls[0][1]['private'] is True and fake_api.calls[2][1]['private'] is None
    assert fake_api.calls[4][1]['revision'] == 'exp' and fake_api.calls[4][1]['commit_message'] == 'C on exp'
    repo = fake_api.repo('org/p')
    assert _git(repo, 'rev-parse', 'exp:model.safetensors') != _git(repo, 'rev-parse', 'main:model.safetensors')
    assert _git(repo, 'rev-parse', 'exp~1') == _git(repo, 'rev-parse', 'main')  # the branch starts at main


def _broken(kind, src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / 'config.json').read_text())
    if kind == 'vit config':
        cfg['architecture'] = 'vit_tiny_patch16_224'
    elif kind == 'newer format':
        cfg['model_args']['format_version'] = FORMAT_VERSION + 1
    elif kind == 'missing tensor':
        with safe_open(str(src / 'model.safetensors'), framework='pt') as f:
            meta = f.metadata()
        t = load_file(src / 'model.safetensors')
        t.pop('members.base.blocks.5.mlp.fc2.bias')
        save_file(t, dst / 'model.safetensors', metadata=meta)
    elif kind == 'no pool metadata':
        save_file(load_file(src / 'model.safetensors'), dst / 'model.safetensors')
    elif kind == 'pickled weights':
        torch.save(load_file(src / 'model.safetensors'), dst / 'model.safetensors')
    elif kind == 'no weights':
        (dst / 'model.safetensors').unlink()
    (dst / 'config.json').write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize('kind, error, match', [
    ('vit config', CheckpointError, 'not a learngene pool'),
    ('newer format', FormatVersionError, 'newer than the installed timm_learngene'),
    ('missing tensor', CheckpointError, r"has no tensor 'members\.base\.blocks\.5\.mlp\.fc2\.bias'"),
    ('no pool metadata', CheckpointError, 'not a learngene pool checkpoint'),
    ('pickled weights', CheckpointError, 'not a readable safetensors file'),
    ('no weights', CheckpointError, 'model.safetensors not found'),
])
def test_push_validates_before_any_hub_call(pools, fake_api, tmp_path, kind, error, match):
    bad = _broken(kind, pools['A'][0], tmp_path / 'bad')
    with pytest.raises(error, match=match):
        timm_learngene.push_to_hub(bad, 'org/p')
    assert fake_api.calls == []


def test_push_rejects_bad_targets_and_uploads_only_pool_files(pools, fake_api, tmp_path):
    with pytest.raises(CheckpointError, match='is not a folder'):
        timm_learngene.push_to_hub(tmp_path / 'nowhere', 'org/p')
    with pytest.raises(ValueError, match=r"pass revision='v2'"):
        timm_learngene.push_to_hub(pools['A'][0], 'org/p@v2')
    with pytest.raises(ValueError, match=r"Repo id must use alphanumeric chars.*'not a repo id'"):
        timm_learngene.push_to_hub(pools['A'][0], 'not a repo id')
    assert fake_api.calls == []
    # stray files next to the pool (a pickled checkpoint, logs) stay home
    folder = tmp_path / 'with-extras'
    shutil.copytree(pools['A'][0], folder)
    torch.save({'w': torch.zeros(1)}, folder / 'pytorch_model.bin')
    (folder / 'train.log').write_text('...')
    timm_learngene.push_to_hub(folder, 'org/p')
    uploaded = sorted(p.name for p in fake_api.repo('org/p').iterdir() if p.name != '.git')
    assert uploaded == sorted(hub.HUB_FILES)


def test_cli_push(pools, fake_api, tmp_path, capsys):
    assert cli_main(['push', str(pools['A'][0]), 'org/cli', '--private', '--dataset', 'my/data']) == 0
    out = capsys.readouterr().out
    assert 'https://hub.test/org/cli/commit/' in out
    assert fake_api.calls[0][1]['private'] is True
    card = (fake_api.repo('org/cli') / 'README.md').read_text()
    assert _front_matter(card)['datasets'] == ['my/data']
    # errors are one line on stderr, exit status 2, and nothing reaches the Hub
    n = len(fake_api.calls)
    bad = _broken('newer format', pools['A'][0], tmp_path / 'newer')
    assert cli_main(['push', str(bad), 'org/cli']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'newer than the installed' in err and 'Traceback' not in err
    assert len(fake_api.calls) == n


def test_cli_module_stage_only(pools, tmp_path, monkeypatch, capsys):
    """``python -m timm_learngene push … --stage-only DIR`` (run as -m runs it: runpy, ``__name__ == '__main__'``)."""
    import runpy
    monkeypatch.delitem(sys.modules, 'timm_learngene.__main__', raising=False)  # as in a fresh `python -m`
    out = tmp_path / 'staged'
    monkeypatch.setattr(sys, 'argv', ['timm_learngene', 'push', str(pools['A'][0]), 'org/stage', '--stage-only',
                                      str(out)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module('timm_learngene', run_name='__main__', alter_sys=True)
    assert exit_.value.code == 0
    assert 'nothing uploaded' in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(hub.HUB_FILES)
    # staging never overwrites: a second run into the same folder is refused
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module('timm_learngene', run_name='__main__', alter_sys=True)
    assert exit_.value.code == 2 and 'not an empty folder' in capsys.readouterr().err


# ---- the model card -----------------------------------------------------------------------------------------------
def _front_matter(card: str) -> dict:
    m = re.match(r'---\n(.*?)\n---\n', card, flags=re.S)
    assert m, 'the card does not start with a YAML metadata block'
    return yaml.safe_load(m.group(1))


def _table_rows(card: str, header_start: str):
    lines = card.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith('|'):
            break
        rows.append([c.strip() for c in line.strip().strip('|').split('|')])
    return lines[i], rows


@pytest.mark.parametrize('which', ['A', 'C'])
def test_model_card(pools, tmp_path, which):
    from huggingface_hub import ModelCard
    path, pool = pools[which]
    out = hub.stage_for_hub(path, 'my-org/pool', tmp_path / 'staged')
    card = (out / 'README.md').read_text()
    config = json.loads((out / 'config.json').read_text())

    meta = _front_matter(card)
    assert meta['library_name'] == 'timm' and meta['pipeline_tag'] == 'image-classification'
    assert meta['license'] == 'apache-2.0' and {'timm', 'learngene-pool'} <= set(meta['tags'])
    if which == 'A':  # the recorded recipe trained on Fashion-MNIST
        assert meta['datasets'] == ['zalando-datasets/fashion_mnist']
    else:  # no recipe: no dataset claimed
        assert 'datasets' not in meta
    parsed = ModelCard(card).data  # huggingface_hub's own parser agrees
    assert parsed.to_dict()['library_name'] == 'timm'
    measured = {d.name: d.metrics['top1'] for d in enumerate_descendants(pool.pool_spec, pool.metrics)
                if 'top1' in d.metrics}
    if which == 'A' and measured:  # model-index: each measured descendant's test top-1 on the recipe's dataset
        assert {r.metric_name: r.metric_value for r in parsed.eval_results} == \
            {f'{n} top-1 (%)': v for n, v in measured.items()}
        assert {(r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type) for r in parsed.eval_results} == \
            {('zalando-datasets/fashion_mnist', 'Fashion-MNIST', 'test', 'accuracy')}
    else:  # no dataset known: no evaluation results claimed
        assert not parsed.eval_results and 'model-index' not in meta

    # one table row per descendant, in rank order, with its route, size and measured top-1
    header, rows = _table_rows(card, '| name |')
    assert header == '| name | route | params | GMACs | top-1 (%) |'
    infos = enumerate_descendants(pool.pool_spec, pool.metrics)
    assert [r[0] for r in rows] == [d.name for d in infos]
    assert [r[1] for r in rows] == [d.route_label for d in infos]
    assert [r[2] for r in rows] == [f'{d.params / 1e6:.2f}M' for d in infos]
    assert [r[4] for r in rows] == [f'{d.metrics["top1"]:.2f}' if 'top1' in d.metrics else '' for d in infos]
    assert len(rows) == len(config['model_args']['descendants']) == 18

    # every image the card shows is a PNG file in the repo folder
    images = re.findall(r'!\[([^\]]*)\]\(([^)]+)\)', card)
    assert images
    for alt, target in images:
        assert (out / target).is_file() and (out / target).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', target
    alt = images[0][0]
    assert ('top-1 against GMACs' in alt) if which == 'A' else ('no top-1 measured' in alt)

    # usage names this repo; the recipe block is the recorded recipe; the paper is cited
    assert "timm.create_model('hf-hub:my-org/pool', descendant=" in card
    recipe = re.search(r'## Training\n\n.*?```yaml\n(.*?)```', card, flags=re.S)
    if which == 'A':
        assert yaml.safe_load(recipe.group(1)) == config['recipe']
    else:
        assert recipe is None and 'No training recipe was recorded' in card
    assert 'Building Variable-sized Models via Learngene Pool' in card and '2312.05743' in card
    assert 'AAAI' in card


def test_card_metadata_datasets_and_default_repo_usage(pools):
    config = json.loads((pools['A'][0] / 'config.json').read_text())
    assert card_metadata(config, datasets=['imagenet-1k'], license='mit')['datasets'] == ['imagenet-1k']
    assert card_metadata(config, license='mit')['license'] == 'mit'
    imagenet = dict(config, recipe={'distill': {'dataset': 'folder'}})
    imagenet['model_args'] = dict(config['model_args'], pool=dict(config['model_args']['pool'], num_classes=1000))
    assert card_metadata(imagenet)['datasets'] == ['imagenet-1k']
    assert 'datasets' not in card_metadata(dict(config, recipe={'distill': {'dataset': 'synthetic'}}))
    # the registered names are advertised only on the repo they point at
    deit = dict(config, model_args=dict(config['model_args'], pool=dict(config['model_args']['pool'],
                                                                           name='deit_base_l6')))
    assert "timm.create_model('learngene_pool_s" in render_model_card(deit, DEFAULT_REPO)
    assert "timm.create_model('learngene_pool_s" not in render_model_card(deit, 'someone/else')


# ---- download over real HTTP: a local olah mirror --------------------------------------------------------------
def _olah_cli() -> Path:
    """olah in its own venv under the test cache (built once; PyPI needed only then)."""
    import fcntl
    root = Path(os.environ.get('TIMM_LEARNGENE_TEST_CACHE', Path.home() / '.cache' / 'timm_learngene_test'))
    venv = root / f'olah-venv-{OLAH_REQUIREMENT.replace("==", "-")}-py{sys.version_info[0]}{sys.version_info[1]}'
    exe = venv / 'bin' / 'olah-cli'
    root.mkdir(parents=True, exist_ok=True)
    with open(root / '.olah-venv.lock', 'w') as lock:  # one builder at a time; others wait and reuse
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / '.complete').exists() and exe.exists():
            return exe
        shutil.rmtree(venv, ignore_errors=True)
        try:
            subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, capture_output=True, timeout=120)
            r = subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '-q',
                                '--disable-pip-version-check', OLAH_REQUIREMENT],
                               capture_output=True, text=True, timeout=400)
            failed = r.returncode != 0 and (r.stderr or r.stdout)[-800:]
        except subprocess.TimeoutExpired:
            failed = 'timed out'
        except subprocess.CalledProcessError as e:
            failed = f'python -m venv failed: {e.stderr[-400:]!r}'
        if failed:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(f'pip could not install {OLAH_REQUIREMENT} into {venv} (the local Hub mirror these HTTP '
                        f'tests talk to): {failed}')
        (venv / '.complete').write_text(OLAH_REQUIREMENT)
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Olah:
    """A running olah server: ``url``, and its access log as lines ``(method, path, status)``."""

    def __init__(self, url, log):
        self.url, self._log = url, log

    def requests(self):
        time.sleep(0.2)  # let the server write the last access lines
        out = []
        for line in self._log.read_text(errors='replace').splitlines():
            m = re.search(r'"(GET|HEAD) (\S+) HTTP/[\d.]+" (\d+)', line)
            if m:
                out.append((m.group(1), m.group(2), int(m.group(3))))
        return out


@pytest.fixture(scope='module')
def published(pools, tmp_path_factory):
    """Repos pushed with push_to_hub (HfApi -> git): org/pool main = A then B, branch exp = C; the default repo of
    the registered names = A; org/vit = a plain timm ViT; org/newer = a pool in a future format."""
    import huggingface_hub
    root = tmp_path_factory.mktemp('hub')
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub, 'HfApi', git_hf_api(root, calls))
        first = timm_learngene.push_to_hub(pools['A'][0], 'org/pool')
        second = timm_learngene.push_to_hub(pools['B'][0], 'org/pool')
        timm_learngene.push_to_hub(pools['C'][0], 'org/pool', revision='exp')
        timm_learngene.push_to_hub(pools['A'][0], DEFAULT_REPO)
        vit = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, num_classes=5)
        staged = root / 'staged-vit'
        timm.models.save_for_hf(vit, staged, safe_serialization=True)
        api = huggingface_hub.HfApi()
        api.create_repo('org/vit', exist_ok=True)
        api.upload_folder(repo_id='org/vit', folder_path=str(staged))
        newer = _broken('newer format', pools['A'][0], root / 'staged-newer')
        api.create_repo('org/newer', exist_ok=True)
        api.upload_folder(repo_id='org/newer', folder_path=str(newer))
        # one descendant alone: pushed by push_to_hub, and written by timm's own save_for_hf
        timm_learngene.push_to_hub(timm_learngene.save_descendant(pools['A'][1], root / 'staged-s3', 's3'), 'org/s3')
        timm.models.save_for_hf(pools['A'][1].descendant('s5'), root / 'staged-s5', safe_serialization=True)
        api.create_repo('org/s5', exist_ok=True)
        api.upload_folder(repo_id='org/s5', folder_path=str(root / 'staged-s5'))
    return types.SimpleNamespace(root=root, c1=first.oid, c2=second.oid)


@pytest.fixture(scope='module')
def olah(published, tmp_path_factory):
    exe = _olah_cli()
    work = tmp_path_factory.mktemp('olah')
    port = _free_port()
    (work / 'olah.toml').write_text(f'''[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{work / 'cache'}"
mirror-scheme = "http"
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
mirrors-path = ["{published.root}"]

[accessibility]
offline = true
''')
    log = work / 'access.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen([str(exe), '-c', str(work / 'olah.toml'), '--log-path', str(work / 'logs')],
                                cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED='1'))
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f'olah exited with {proc.returncode}:\n{log.read_text()[-3000:]}')
            try:  # ready when it serves a mirrored file (its index page answers 500 in olah 0.5.4)
                probe = urllib.request.Request(url + '/org/pool/resolve/main/config.json', method='HEAD')
                with urllib.request.urlopen(probe, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f'olah did not answer on {url} within 60 s:\n{log.read_text()[-3000:]}')
                time.sleep(0.2)
        yield Olah(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def hub_env(olah, tmp_path, monkeypatch):
    """huggingface_hub pointed at the olah server (what HF_ENDPOINT does at import) with an empty HF cache."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'ENDPOINT', olah.url)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE', olah.url + '/{repo_id}/resolve/{revision}/{filename}')
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf-cache'))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    return types.SimpleNamespace(olah=olah, cache=tmp_path / 'hf-cache')


def _gets(requests, suffix):
    return [r for r in requests if r[0] == 'GET' and r[1].endswith(suffix)]


@pytest.mark.slow
def test_pull_standalone_descendants_over_http(pools, published, hub_env):
    """A descendant pushed alone (``push`` of an exported folder, or timm's ``save_for_hf``) comes back over HTTP
    from the olah mirror as itself, with only its own tensors."""
    pool = pools['A'][1]
    x = _images()
    for repo, name in (('org/s3', 's3'), ('org/s5', 's5')):
        model = timm.create_model(f'hf-hub:{repo}', pretrained=True).eval()
        assert model.info.name == name
        with torch.no_grad():
            assert torch.equal(model(x), pool(x, name)), repo
    assert _gets(hub_env.olah.requests(), '/org/s3/resolve/main/model.safetensors')


@pytest.mark.slow
def test_pull_descendant_over_http(pools, published, hub_env, monkeypatch):
    _, pool_b = pools['B']
    x = _images()
    before = len(hub_env.olah.requests())
    reads = spy_reads(monkeypatch)
    model = timm.create_model('hf-hub:org/pool', descendant='s3', pretrained=True).eval()
    assert isinstance(model, Descendant) and model.info.metrics == {'top1': 43.0}
    assert sorted(reads) == sorted(model.pool_key_map().values())  # only the tensors s3 runs
    assert not any(k.startswith(('transforms.', 'members.base.blocks.0.')) for k in reads)
    with torch.no_grad():
        assert torch.equal(model(x), pool_b(x, 's3'))
        for name in ('s1', 's16', 's18'):
            m = timm.create_model('hf-hub:org/pool', descendant=name, pretrained=True).eval()
            assert torch.equal(m(x), pool_b(x, name)), name
        whole = timm.create_model('hf-hub:org/pool', pretrained=True).eval()
        assert isinstance(whole, LearngenePool) and torch.equal(whole(x, 's7'), pool_b(x, 's7'))
    # five loads over HTTP, one download of each file: the rest is the HF cache (a HEAD to check it is current)
    requests = hub_env.olah.requests()[before:]
    assert len(_gets(requests, '/org/pool/resolve/main/model.safetensors')) == 1, requests
    assert len(_gets(requests, '/org/pool/resolve/main/config.json')) == 1, requests
    assert all(status == 200 for _, _, status in requests), requests
    blobs = list((hub_env.cache / 'models--org--pool' / 'blobs').iterdir())
    assert len(blobs) == 2  # config.json + model.safetensors, once


@pytest.mark.slow
def test_pull_revisions_and_cache_dir(pools, published, hub_env, tmp_path):
    x = _images()
    elsewhere = tmp_path / 'elsewhere'
    with torch.no_grad():
        old = timm.create_model(f'hf-hub:org/pool@{published.c1}', descendant='s5', pretrained=True,
                                cache_dir=elsewhere).eval()
        assert torch.equal(old(x), pools['A'][1](x, 's5'))
        assert old.info.metrics == {}  # A measured only s3
        branch = timm.create_model('hf-hub:org/pool@exp', descendant='s5', pretrained=True, cache_dir=elsewhere)
        assert torch.equal(branch.eval()(x), pools['C'][1](x, 's5'))
        main = timm_learngene.load_from_hub('org/pool', 's5', cache_dir=elsewhere).eval()
        assert torch.equal(main(x), pools['B'][1](x, 's5'))
    assert main.pretrained_cfg['hf_hub_id'] == f'org/pool@{published.c2}'  # config and weights of one commit
    snapshots = {p.name for p in (elsewhere / 'models--org--pool' / 'snapshots').iterdir()}
    assert published.c1 in snapshots and published.c2 in snapshots and len(snapshots) == 3
    assert not hub_env.cache.exists()  # cache_dir took everything


@pytest.mark.slow
def test_registered_name_uses_default_repo(pools, published, hub_env):
    # no pool is published yet, so the registered cfgs name no repo (README "Pretrained weights"); once one is, its
    # cfg gets the hf_hub_id that the overlay gives here
    x = _images()
    model = timm.create_model('learngene_pool_s3', pretrained=True, pool=tiny_spec(6),
                              pretrained_cfg_overlay=dict(hf_hub_id=DEFAULT_REPO)).eval()
    assert model.pretrained_cfg['hf_hub_id'] == DEFAULT_REPO
    with torch.no_grad():
        assert torch.equal(model(x), pools['A'][1](x, 's3'))
    assert (hub_env.cache / f'models--{DEFAULT_REPO.replace("/", "--")}').is_dir()


@pytest.mark.slow
def test_hub_errors_over_http(published, hub_env):
    with pytest.raises(CheckpointError, 
                       match=r"Hub repo 'org/absent': the repo was not found .*local-dir:PATH.*HF_ENDPOINT"):
        timm_learngene.load_from_hub('org/absent', 's3')
    with pytest.raises(CheckpointError, match=r"Hub repo 'org/vit'.*not a learngene pool"):
        timm_learngene.load_from_hub('org/vit', 's3')
    with pytest.raises(FormatVersionError, match=r"Hub repo 'org/newer'.*newer than the installed.*pip install -U"):
        timm_learngene.load_from_hub('org/newer', 's3')
    # timm's own hf-hub: path reaches the same version check in our entrypoint
    with pytest.raises(FormatVersionError, match='newer than the installed'):
        timm.create_model('hf-hub:org/newer', descendant='s3', pretrained=True)
    # the weights of a registered name come from the repo its cfg names, here one that does not exist
    with pytest.raises(CheckpointError, match=r"'org/absent-l9': the repo was not found"):
        timm.create_model('learngene_pool_l9_s3', pretrained=True, pool=tiny_spec(9),
                          pretrained_cfg_overlay=dict(hf_hub_id='org/absent-l9'))
    with pytest.raises(ValueError, match="names revision 'a' but revision='b'"):
        timm_learngene.load_from_hub('org/pool@a', revision='b')
    # a plain timm model from a repo that does not exist (an ancestry, an SN-Net anchor): one HubError, not a traceback
    with pytest.raises(HubError, match=r"ancestry 'hf-hub:org/absent': the repo was not found.*--teacher-checkpoint"):
        load_ancestry('hf-hub:org/absent')


@pytest.mark.slow
def test_no_network(pools, published, hub_env, monkeypatch):
    """The Hub unreachable (connection refused): a clear error with nothing cached, the HF cache when it has the
    files."""
    from huggingface_hub import constants
    import huggingface_hub.utils._http as hf_http
    x = _images()
    with torch.no_grad():
        cached = timm.create_model('hf-hub:org/pool', descendant='s2', pretrained=True).eval()(x)
    dead = f'http://127.0.0.1:{_free_port()}'
    monkeypatch.setattr(constants, 'ENDPOINT', dead)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE', dead + '/{repo_id}/resolve/{revision}/{filename}')
    monkeypatch.setattr(hf_http, 'time', types.SimpleNamespace(sleep=lambda s: None))  # skip the retry back-off
    with pytest.raises(CheckpointError, match=r'model\.safetensors of Hub repo .*: the Hub at http.* cannot be reached '
                                              r".*local-dir:PATH.*HF_ENDPOINT to a reachable mirror \(now http"):
        timm.create_model('learngene_pool_s3', pretrained=True, pool=tiny_spec(6),
                          pretrained_cfg_overlay=dict(hf_hub_id=DEFAULT_REPO))
    with pytest.raises(CheckpointError,
                       match=r"config\.json of Hub repo 'org/absent': the Hub at .* cannot be reached"):
        timm_learngene.load_from_hub('org/absent', 's3')
    with torch.no_grad():
        again = timm.create_model('hf-hub:org/pool', descendant='s2', pretrained=True).eval()(x)
        assert torch.equal(again, cached) and torch.equal(again, pools['B'][1](x, 's2'))
        other = timm_learngene.load_from_hub('org/pool', 's9').eval()(x)  # another descendant, same cached file
        assert torch.equal(other, pools['B'][1](x, 's9'))


def test_gated_and_missing_revision_messages(monkeypatch):
    """States olah cannot produce (gated repos; it answers an unknown revision with 'repo not found')."""
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RevisionNotFoundError

    def raiser(exc):
        def download(*a, **kw):
            raise exc('from the Hub', response=types.SimpleNamespace(headers={}, request=None))
        return download
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', raiser(GatedRepoError))
    with pytest.raises(CheckpointError,
                       match=r"'org/pool': the repo is gated: accept its terms .*hf auth login.*local-dir:"):
        hub.download_pool_file('org/pool', 'config.json')
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', raiser(RevisionNotFoundError))
    with pytest.raises(CheckpointError,
                       match=r"'org/pool@v9': the repo has no such revision; pass a branch, tag or commit"):
        hub.download_pool_file('org/pool@v9', 'config.json')


# ---- offline: HF_HUB_OFFLINE=1 and a hand-made cache, in a fresh process ------------------------------------------
_CHILD = r'''
import json, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
import timm, timm_learngene
from safetensors.torch import save_file
from conftest import tiny_spec
x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
out, errors = {}, {}
with torch.no_grad():
    out['hf_hub'] = timm.create_model('hf-hub:org/pool', descendant='s3', pretrained=True).eval()(x)
    out['registered'] = timm.create_model('learngene_pool_s3', pretrained=True, pool=tiny_spec(6),
                                          pretrained_cfg_overlay=dict(hf_hub_id=sys.argv[4])).eval()(x)
try:
    timm_learngene.load_from_hub('org/absent', 's3')
except timm_learngene.CheckpointError as e:
    errors['absent'] = str(e)
save_file(out, sys.argv[2])
json.dump(errors, open(sys.argv[3], 'w'))
'''


def _hand_made_cache(cache: Path, repo_id: str, folder: Path) -> str:
    """The HF cache layout huggingface_hub writes: blobs/<hash>, snapshots/<commit>/<file> -> blob, refs/main."""
    repo = cache / ('models--' + repo_id.replace('/', '--'))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(commit)
    for f in folder.iterdir():
        data = f.read_bytes()
        blob = repo / 'blobs' / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = repo / 'snapshots' / commit / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path('..') / '..' / 'blobs' / blob.name)
    return commit


@pytest.mark.slow
def test_offline_from_hand_made_cache(pools, published, olah, tmp_path):
    """``HF_HUB_OFFLINE=1`` as a user's shell sets it (read by huggingface_hub at import), in a fresh process: the
    cache holds pool A while the reachable mirror's main branch holds B, so a load that asked the mirror would
    differ."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
    env.update(PYTHONPATH=str(PACKAGE_ROOT), HF_ENDPOINT=olah.url, HF_HUB_CACHE=str(tmp_path / 'cache'),
               HF_HUB_OFFLINE='1')
    staged = hub.stage_for_hub(pools['A'][0], 'org/pool', tmp_path / 'A')
    _hand_made_cache(tmp_path / 'cache', 'org/pool', staged)
    _hand_made_cache(tmp_path / 'cache', DEFAULT_REPO, staged)
    before = len(olah.requests())
    r = subprocess.run([sys.executable, '-c', _CHILD, str(TESTS), str(tmp_path / 'out.safetensors'),
                        str(tmp_path / 'errors.json'), DEFAULT_REPO], env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    out = load_file(tmp_path / 'out.safetensors')
    errors = json.loads((tmp_path / 'errors.json').read_text())
    x = _images()
    with torch.no_grad():
        assert torch.equal(out['hf_hub'], pools['A'][1](x, 's3'))
        assert torch.equal(out['registered'], pools['A'][1](x, 's3'))
    assert olah.requests()[before:] == []
    assert re.search(r"config\.json of Hub repo 'org/absent': HF_HUB_OFFLINE is set, and what is needed is not in "
                     r"the HF cache \(.*\); unset HF_HUB_OFFLINE \(with a network\) to fetch it once; or "
                     r".*local-dir:PATH", errors['absent'])
