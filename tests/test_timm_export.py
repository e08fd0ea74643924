"""Issue 13, deliverable 5: timm's own export (``save_for_hf`` / ``push_to_hf_hub``) of a descendant or a pool, and
:func:`save_descendant`, write folders that ``timm.create_model('local-dir:…' / 'hf-hub:…', pretrained=True)``
loads back exactly. The Hub path runs through a hand-made HF cache with huggingface_hub in offline mode; the upload
runs for real up to the ``HfApi`` calls, which a stand-in checks against the real signatures."""
import inspect
import json
import shutil
import types

import pytest
import timm
import torch
from safetensors import safe_open
from timm.models import push_to_hf_hub, save_for_hf
from timm.data import resolve_data_config

from timm_learngene import (
    CheckpointError, load_pool, save_descendant, save_pool, update_pool_metrics,
)
from timm_learngene.spec import DEIT_BASE_L6

from conftest import IMG, tiny_spec
from test_hub import _hand_made_cache


@pytest.fixture(scope='module')
def pool():
    torch.manual_seed(0)
    p = timm.create_model('learngene_pool', pool=tiny_spec(6)).eval()
    with torch.no_grad():  # zero-init biases would hide a bias that is not loaded
        for t in p.parameters():
            t.add_(torch.randn_like(t) * 0.02)
    return p


@pytest.fixture(scope='module')
def x():
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


def _standalone(pool, name):
    """``timm.create_model('learngene_pool_<name>', pool=spec)`` holding the pool's weights for that descendant."""
    m = timm.create_model(f'learngene_pool_{name}', pool=pool.pool_spec).eval()
    m.load_state_dict(pool.descendant(name).state_dict())
    return m


def _keys(folder):
    with safe_open(str(folder / 'model.safetensors'), 'pt') as f:
        return set(f.keys())


@pytest.fixture
def hub_offline(monkeypatch):
    """huggingface_hub in offline mode (what HF_HUB_OFFLINE=1 sets at import): every file must come from the cache."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)


def test_save_for_hf_descendant_loads_back_exactly(pool, x, tmp_path):
    m = _standalone(pool, 's7')
    save_for_hf(m, tmp_path / 'd', safe_serialization=True)
    config = json.loads((tmp_path / 'd' / 'config.json').read_text())
    assert config['architecture'] == 'learngene_pool_s7' and config['model_args']['descendant'] == 's7'
    assert config['model_args']['pool']['name'] == pool.pool_spec.name  # the spec as data, not a Python object
    assert _keys(tmp_path / 'd') == set(m.state_dict())  # only this descendant's tensors
    back = timm.create_model(f'local-dir:{tmp_path / "d"}', pretrained=True).eval()
    assert back.info.route == m.info.route
    with torch.no_grad():
        assert torch.equal(back(x), m(x))


def test_save_for_hf_pool_and_a_pool_view(pool, x, tmp_path):
    save_for_hf(pool, tmp_path / 'p', safe_serialization=True)
    back = timm.create_model(f'local-dir:{tmp_path / "p"}', pretrained=True).eval()
    view = pool.descendant('s11')  # shares the pool's modules: saved as that descendant alone
    save_for_hf(view, tmp_path / 'v', safe_serialization=True)
    assert _keys(tmp_path / 'v') == set(view.state_dict())
    cfg = json.loads((tmp_path / 'v' / 'config.json').read_text())['pretrained_cfg']
    assert (cfg['first_conv'], cfg['classifier']) == ('patch_embed.proj', 'head')  # the view's, not the pool's
    back_view = timm.create_model(f'local-dir:{tmp_path / "v"}', pretrained=True).eval()
    # one descendant of the exported pool, read under the pool's names
    one = timm.create_model(f'local-dir:{tmp_path / "p"}', descendant='s11', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(one(x), pool(x, 's11'))
        for name in ('s1', 's11', 's18'):
            assert torch.equal(back(x, name), pool(x, name))
        assert torch.equal(back(x), pool(x))
        assert torch.equal(back_view(x), pool(x, 's11'))


def test_save_for_hf_keeps_changes_made_after_building(pool, x, tmp_path):
    """A new head and a new input size are reconstruction arguments timm records; they come back."""
    m = _standalone(pool, 's5')
    m.reset_classifier(3, 'avg')
    m.set_input_size(img_size=48)
    torch.manual_seed(3)
    torch.nn.init.normal_(m.head.weight)
    save_for_hf(m, tmp_path / 'd', safe_serialization=True)
    back = timm.create_model(f'local-dir:{tmp_path / "d"}', pretrained=True).eval()
    x48 = torch.randn(2, 3, 48, 48)
    assert back.num_classes == 3 and back.global_pool == 'avg' and back.pool_spec.img_size == 48
    with torch.no_grad():
        assert torch.equal(back(x48), m(x48))


def test_pickle_only_export_is_refused_with_the_fix(pool, tmp_path):
    save_for_hf(_standalone(pool, 's2'), tmp_path / 'd')  # timm's default: pytorch_model.bin only
    with pytest.raises(CheckpointError, match=r'pytorch_model\.bin.*never loads.*safe_serialization=True'):
        timm.create_model(f'local-dir:{tmp_path / "d"}', pretrained=True)


def test_export_config_bigger_than_its_file_fails_before_building(pool, tmp_path):
    save_for_hf(_standalone(pool, 's2'), tmp_path / 'd', safe_serialization=True)
    cfg_file = tmp_path / 'd' / 'config.json'
    config = json.loads(cfg_file.read_text())
    config['model_args']['pool'] = DEIT_BASE_L6.to_dict()  # 44M-parameter descendants, a 100 kB file
    config['model_args'].update(img_size=224, num_classes=1000)
    config['pretrained_cfg']['input_size'] = [3, 224, 224]
    cfg_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='too small for the model its config.json describes'):
        timm.create_model(f'local-dir:{tmp_path / "d"}', pretrained=True)


def test_save_descendant_standalone_folder(pool, x, tmp_path):
    data = dict(mean=(0.5,) * 3, std=(0.25,) * 3, crop_pct=1.0, interpolation='bilinear')
    out = save_descendant(pool, tmp_path / 's9', 's9', data_config=data)
    view = pool.descendant('s9')
    assert _keys(out) == set(view.state_dict())
    other = {k for k in pool.state_dict()} - set(pool.descendant('s9').pool_key_map().values())
    assert other, 'the pool holds tensors s9 does not run'
    assert (out / 'model.safetensors').stat().st_size < 0.8 * sum(t.numel() * 4 for t in pool.state_dict().values())
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'learngene_pool' and config['model_args']['descendant'] == 's9'
    assert config['pretrained_cfg']['first_conv'] == 'patch_embed.proj'
    for load in (lambda: timm.create_model(f'local-dir:{out}', pretrained=True), lambda: load_pool(out)):
        back = load().eval()
        with torch.no_grad():
            assert torch.equal(back(x), pool(x, 's9'))
        cfg = resolve_data_config(model=back)
        assert tuple(cfg['mean']) == (0.5,) * 3 and cfg['crop_pct'] == 1.0 and cfg['interpolation'] == 'bilinear'
    # a standalone descendant (and a Descendant given its own name) saves the same tensors
    m = _standalone(pool, 's9')
    save_descendant(m, tmp_path / 'm', 's9')
    back = load_pool(tmp_path / 'm').eval()
    with torch.no_grad():
        assert torch.equal(back(x), pool(x, 's9'))


def test_save_descendant_errors(pool, tmp_path):
    with pytest.raises(ValueError, match='needs descendant='):
        save_descendant(pool, tmp_path / 'a')
    with pytest.raises(ValueError, match="descendant='s4' but the model is descendant s9"):
        save_descendant(pool.descendant('s9'), tmp_path / 'a', 's4')
    with pytest.raises(TypeError, match='takes a Descendant or a LearngenePool'):
        save_descendant(torch.nn.Linear(2, 2), tmp_path / 'a')
    out = save_descendant(pool, tmp_path / 's9', 's9')
    with pytest.raises(CheckpointError, match=r'holds only descendant s9 .* not the descendant asked for'):
        load_pool(out, descendant='s3')
    with pytest.raises(CheckpointError, match='holds only descendant s9 .* not the whole pool'):
        timm.create_model('learngene_pool', pool=pool.pool_spec, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(out)))
    with pytest.raises(CheckpointError, match='holds one descendant'):
        update_pool_metrics(out, {'s9': {'top1': 1.0}})


def test_hub_download_of_exports_through_an_offline_cache(pool, x, tmp_path, hub_offline):
    cache = tmp_path / 'cache'
    save_descendant(pool, tmp_path / 'desc', 's13')
    save_for_hf(_standalone(pool, 's4'), tmp_path / 'timm', safe_serialization=True)
    save_pool(pool, tmp_path / 'pool')
    for repo, folder in (('org/desc', 'desc'), ('org/timm', 'timm'), ('org/pool', 'pool')):
        _hand_made_cache(cache, repo, tmp_path / folder)
    with torch.no_grad():
        got = {repo: timm.create_model(f'hf-hub:org/{repo}', pretrained=True, cache_dir=cache).eval()(x)
               for repo in ('desc', 'timm')}
        assert torch.equal(got['desc'], pool(x, 's13'))
        assert torch.equal(got['timm'], pool(x, 's4'))
        m = timm.create_model('hf-hub:org/pool', descendant='s13', pretrained=True, cache_dir=cache).eval()
        assert torch.equal(m(x), pool(x, 's13'))
    with pytest.raises(CheckpointError, match='not in the HF cache'):
        timm.create_model('learngene_pool_s4', pool=pool.pool_spec, pretrained=True, cache_dir=cache,
                          pretrained_cfg_overlay=dict(hf_hub_id='org/absent'))


def _fake_timm_hub(monkeypatch, uploads):
    """``HfApi`` as timm's push_to_hf_hub uses it, each call checked against the real signature; upload_folder keeps
    a copy of the folder it was given."""
    import timm.models._hub as timm_hub
    from huggingface_hub import HfApi

    def bind(method, args, kwargs):
        bound = inspect.signature(getattr(HfApi, method)).bind(None, *args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    class Api:
        def __init__(self, *args, **kwargs):
            inspect.signature(HfApi).bind(*args, **kwargs)

        def create_repo(self, *args, **kwargs):
            return types.SimpleNamespace(repo_id=bind('create_repo', args, kwargs)['repo_id'])

        def file_exists(self, *args, **kwargs):
            bind('file_exists', args, kwargs)
            return False

        def upload_folder(self, *args, **kwargs):
            a = bind('upload_folder', args, kwargs)
            dest = uploads / a['repo_id']
            shutil.copytree(a['folder_path'], dest)
            return types.SimpleNamespace(oid='0' * 40)

    monkeypatch.setattr(timm_hub, 'HfApi', Api)


def test_push_to_hf_hub_uploads_a_folder_that_loads_back(pool, x, tmp_path, monkeypatch, hub_offline):
    _fake_timm_hub(monkeypatch, tmp_path / 'uploads')
    push_to_hf_hub(_standalone(pool, 's10'), 'org/s10', safe_serialization=True)
    push_to_hf_hub(pool, 'org/whole', safe_serialization=True)
    uploaded = tmp_path / 'uploads' / 'org'
    assert {p.name for p in (uploaded / 's10').iterdir()} == {'model.safetensors', 'config.json', 'README.md'}
    cache = tmp_path / 'cache'
    _hand_made_cache(cache, 'org/s10', uploaded / 's10')
    _hand_made_cache(cache, 'org/whole', uploaded / 'whole')
    with torch.no_grad():
        m = timm.create_model('hf-hub:org/s10', pretrained=True, cache_dir=cache).eval()
        assert torch.equal(m(x), pool(x, 's10'))
        whole = timm.create_model('hf-hub:org/whole', pretrained=True, cache_dir=cache).eval()
        assert torch.equal(whole(x, 's3'), pool(x, 's3'))


def test_push_one_descendant_as_its_own_repo(pool, x, tmp_path, monkeypatch, capsys):
    """``push`` of a folder ``export --format timm`` (or ``save_descendant``) wrote: validated by loading it, the
    repo gets its tensors, config.json pointing at the repo and its own card, and loads back exactly; run up to the
    ``HfApi`` calls, which a stand-in checks against the real signatures."""
    import huggingface_hub
    from timm_learngene import push_to_hub
    from timm_learngene.__main__ import main
    from timm_learngene.export import export_descendant
    from timm_learngene.hub import DESCENDANT_HUB_FILES
    from test_hub import _front_matter, git_hf_api

    calls = []
    monkeypatch.setattr(huggingface_hub, 'HfApi', git_hf_api(tmp_path / 'hub', calls))
    pool_dir = save_pool(pool, tmp_path / 'pool')
    update_pool_metrics(pool_dir, {'s9': {'top1': 70.5}})
    out = export_descendant(pool_dir, 's9', tmp_path / 's9')
    assert json.loads((out / 'config.json').read_text())['model_args']['descendants'][0]['top1'] == 70.5
    info = push_to_hub(out, 'org/pool-s9')
    assert [c[0] for c in calls] == ['create_repo', 'upload_folder']
    assert calls[1][1]['commit_message'].startswith('Descendant s9 of learngene pool tiny_l6')
    repo = tmp_path / 'hub' / 'models' / 'org' / 'pool-s9'
    assert sorted(p.name for p in repo.iterdir() if p.name != '.git') == sorted(DESCENDANT_HUB_FILES)
    assert (repo / 'model.safetensors').read_bytes() == (out / 'model.safetensors').read_bytes()
    assert json.loads((repo / 'config.json').read_text())['pretrained_cfg']['hf_hub_id'] == 'org/pool-s9'
    card = (repo / 'README.md').read_text()
    assert _front_matter(card)['library_name'] == 'timm' and 'learngene-pool' in _front_matter(card)['tags']
    assert "timm.create_model('hf-hub:org/pool-s9', pretrained=True)" in card and 'test top-1 70.50%' in card
    assert info.commit_url.endswith(info.oid)
    model = timm.create_model(f'local-dir:{repo}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(model(x), pool(x, 's9'))
    # a save_descendant folder (no card of its own) gets one; the CLI pushes it the same way
    plain = save_descendant(pool, tmp_path / 'plain', 's4')
    assert main(['push', str(plain), 'org/pool-s4']) == 0
    assert 'https://hub.test/org/pool-s4/commit/' in capsys.readouterr().out
    card = (tmp_path / 'hub' / 'models' / 'org' / 'pool-s4' / 'README.md').read_text()
    assert '# Descendant `s4` of the learngene pool `tiny_l6`' in card and 'top-1' not in card.split('---')[2]
    # a broken descendant folder is refused before any Hub call
    n = len(calls)
    broken = tmp_path / 'broken'
    shutil.copytree(plain, broken)
    cfg = json.loads((broken / 'config.json').read_text())
    cfg['model_args']['descendant'] = 's5'  # the tensors are s4's
    (broken / 'config.json').write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match='holds only descendant s4'):
        push_to_hub(broken, 'org/broken')
    assert len(calls) == n
