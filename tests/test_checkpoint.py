"""The pool checkpoint: model.safetensors + timm config.json, loading whole pools and single descendants."""
import json
import os

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import timm_learngene
import timm_learngene.pool_reader as pool_file
from timm_learngene import (
    FORMAT_VERSION, CheckpointError, Descendant, FormatVersionError, LearngenePool, enumerate_descendants,
    load_pool, read_pool_config, save_pool,
)

from conftest import IMG, NUM_CLASSES, tiny_spec


def _images(size=IMG):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """A tiny l6 pool with distinct random weights, saved once; returns (folder, pool in eval mode)."""
    torch.manual_seed(0)
    pool = timm.create_model('learngene_pool', pool=tiny_spec(6)).eval()
    with torch.no_grad():  # zero-init biases would hide a bias that is not loaded
        for p in pool.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = save_pool(pool, tmp_path_factory.mktemp('pool') / 'out', metrics={'s3': {'top1': 55.5}},
                     recipe={'epochs': 1})
    return path, pool


def _rewrite(src, dst, change):
    """Copy the pool folder ``src`` to ``dst`` with ``change(tensors)`` applied, keeping the file's metadata."""
    dst.mkdir()
    with safe_open(str(src / 'model.safetensors'), framework='pt') as f:
        meta = f.metadata()
    tensors = load_file(src / 'model.safetensors')
    change(tensors)
    save_file(tensors, dst / 'model.safetensors', metadata=meta)
    (dst / 'config.json').write_text((src / 'config.json').read_text())
    return dst


def _edit_config(src, dst, change):
    dst.mkdir()
    (dst / 'model.safetensors').write_bytes((src / 'model.safetensors').read_bytes())
    cfg = json.loads((src / 'config.json').read_text())
    change(cfg)
    (dst / 'config.json').write_text(json.dumps(cfg))
    return dst


# ---- the files ------------------------------------------------------------------------------------------------
def test_save_writes_timm_layout(saved):
    path, pool = saved
    assert sorted(os.listdir(path)) == ['config.json', 'model.safetensors']
    cfg = json.loads((path / 'config.json').read_text())
    assert cfg['architecture'] == 'learngene_pool'
    assert cfg['num_classes'] == NUM_CLASSES and cfg['num_features'] == 32
    pc = cfg['pretrained_cfg']
    assert tuple(pc['input_size']) == (3, IMG, IMG) and pc['num_classes'] == NUM_CLASSES
    for key in ('mean', 'std', 'interpolation', 'crop_pct', 'license', 'paper_ids'):
        assert key in pc, key
    for key in ('file', 'source', 'architecture', 'tag'):
        assert key not in pc, key
    args = cfg['model_args']
    assert args['format_version'] == FORMAT_VERSION
    assert timm_learngene.PoolSpec.from_dict(args['pool']) == pool.pool_spec
    infos = enumerate_descendants(pool.pool_spec)
    assert [d['name'] for d in args['descendants']] == [i.name for i in infos]
    for d, info in zip(args['descendants'], infos):
        assert [tuple(s) for s in d['route']] == list(info.route)
        assert d['params'] == info.params and d['gmacs'] == round(info.gmacs, 4) and d['label'] == info.route_label
    assert args['descendants'][2]['top1'] == 55.5 and 'top1' not in args['descendants'][0]
    assert cfg['recipe'] == {'epochs': 1}

    with safe_open(str(path / 'model.safetensors'), framework='pt') as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta['learngene_pool_format'] == str(FORMAT_VERSION)
    assert timm_learngene.PoolSpec.from_dict(json.loads(meta['learngene_pool_spec'])) == pool.pool_spec
    assert keys == set(pool.state_dict())
    assert {'members.tiny.blocks.0.attn.qkv.weight', 'members.base.patch_embed.proj.weight',
            'stitches.tiny-base.4.weight', 'transforms.tiny.block.2.weight', 'transforms.base.attn.0.bias'} <= keys
    tensors = load_file(path / 'model.safetensors')
    for k, v in pool.state_dict().items():
        assert torch.equal(tensors[k], v), k


def test_save_rejects_non_pool_and_file_path(saved, tmp_path):
    path, pool = saved
    with pytest.raises(TypeError, match='takes a whole LearngenePool'):
        save_pool(pool.descendant('s1'), tmp_path / 'x')
    f = tmp_path / 'file'
    f.write_text('')
    with pytest.raises(FileExistsError, match='not a folder'):
        save_pool(pool, f)


def test_read_pool_config(saved):
    path, pool = saved
    cfg = read_pool_config(path)
    assert cfg['model_args']['pool'] == pool.pool_spec
    assert read_pool_config(path / 'config.json')['architecture'] == 'learngene_pool'


# ---- loading --------------------------------------------------------------------------------------------------
def test_local_dir_descendant_equals_pool(saved):
    path, pool = saved
    x = _images()
    model = timm.create_model(f'local-dir:{path}', descendant='s3', pretrained=True).eval()
    assert isinstance(model, Descendant) and model.info.name == 's3'
    assert model.info.metrics == {'top1': 55.5}
    with torch.no_grad():
        assert torch.equal(model(x), pool(x, 's3'))
    for name in ('s1', 's16', 's18'):
        m = load_pool(path, descendant=name).eval()
        with torch.no_grad():
            assert torch.equal(m(x), pool(x, name)), name


def test_registered_name_with_file_overlay(saved):
    path, pool = saved
    x = _images()
    model = timm.create_model('learngene_pool_s3', pretrained=True, pool=pool.pool_spec,
                              pretrained_cfg_overlay=dict(file=str(path / 'model.safetensors'))).eval()
    assert model.num_classes == NUM_CLASSES
    with torch.no_grad():
        assert torch.equal(model(x), pool(x, 's3'))
    # the folder works as the file too
    model = timm.create_model('learngene_pool_s5', pretrained=True, pool=pool.pool_spec,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        assert torch.equal(model(x), pool(x, 's5'))


def test_local_dir_whole_pool(saved):
    path, pool = saved
    x = _images()
    loaded = timm.create_model(f'local-dir:{path}', pretrained=True).eval()
    assert isinstance(loaded, LearngenePool) and loaded.pool_spec == pool.pool_spec
    assert {k: v for k, v in loaded.metrics.items() if v} == {'s3': {'top1': 55.5}}
    sd, ref = loaded.state_dict(), pool.state_dict()
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)
    with torch.no_grad():
        for info in enumerate_descendants(pool.pool_spec):
            assert torch.equal(loaded(x, info.name), pool(x, info.name)), info.name
    assert isinstance(load_pool(path), LearngenePool)


def test_not_pretrained_does_not_load(saved):
    path, pool = saved
    fresh = timm.create_model(f'local-dir:{path}', descendant='s3').eval()
    x = _images()
    with torch.no_grad():
        assert not torch.equal(fresh(x), pool(x, 's3'))


class _Spy:
    """Wraps a safetensors handle and records every tensor read in full."""

    def __init__(self, handle, log):
        self._h, self._log = handle, log

    def __enter__(self):
        self._h.__enter__()
        return self

    def __exit__(self, *exc):
        return self._h.__exit__(*exc)

    def get_tensor(self, key):
        self._log.append(key)
        return self._h.get_tensor(key)

    def __getattr__(self, name):
        return getattr(self._h, name)


def spy_reads(monkeypatch):
    """The names of the tensors the loader reads from pool files, in order (through ``get_tensor`` or the
    memory map)."""
    log = []
    real = pool_file.safe_open
    monkeypatch.setattr(pool_file, 'safe_open', lambda *a, **kw: _Spy(real(*a, **kw), log))
    real_map = pool_file._MappedTensors.__getitem__

    def mapped(self, key):
        log.append(key)
        return real_map(self, key)
    monkeypatch.setattr(pool_file._MappedTensors, '__getitem__', mapped)
    return log


@pytest.mark.parametrize('name', ['s1', 's3', 's16', 's18'])
def test_descendant_reads_only_its_tensors(saved, monkeypatch, name):
    path, pool = saved
    log = spy_reads(monkeypatch)
    model = timm.create_model(f'local-dir:{path}', descendant=name, pretrained=True).eval()
    assert log, 'the spy saw no reads'
    assert len(log) == len(set(log))
    want = set(model.pool_key_map().values())
    assert set(log) == want
    route = model.route
    front, end = route[0][0], route[-1][0]
    expected = {f'members.{front}.{k}' for k in ('cls_token', 'pos_embed', 'patch_embed.proj.weight',
                                                  'patch_embed.proj.bias')}
    expected |= {f'members.{end}.{k}.{p}' for k in ('norm', 'head') for p in ('weight', 'bias')}
    for m, a, b in route:
        expected |= {k for k in pool.state_dict() for i in range(a, b) if k.startswith(f'members.{m}.blocks.{i}.')}
    if len(route) == 2:
        w = _window(pool, route)
        expected |= {f'stitches.{front}-{end}.{w}.weight', f'stitches.{front}-{end}.{w}.bias'}
    assert set(log) == expected
    assert not any(k.startswith('transforms.') for k in log)
    with torch.no_grad():
        x = _images()
        assert torch.equal(model(x), pool(x, name))


def _window(pool, route):
    from timm_learngene.spec import stitch_window
    return stitch_window(pool.pool_spec, route[0][2] - 1, route[1][1])


def test_other_num_classes_skips_heads(saved):
    path, pool = saved
    x = _images()
    model = timm.create_model(f'local-dir:{path}', descendant='s3', pretrained=True, num_classes=9).eval()
    assert model.head.out_features == 9
    ref = pool.descendant('s3')
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), ref.forward_features(x))
        assert not torch.equal(model.head.weight[:NUM_CLASSES], ref.head.weight)
    whole = timm.create_model(f'local-dir:{path}', pretrained=True, num_classes=0).eval()
    ref5 = pool.descendant('s5')
    with torch.no_grad():
        assert torch.equal(whole(x, 's5'), ref5.forward_head(ref5.forward_features(x), pre_logits=True))


def test_other_img_size_resamples_pos_embed(saved):
    from timm.layers import resample_abs_pos_embed
    path, pool = saved
    model = timm.create_model(f'local-dir:{path}', descendant='s3', pretrained=True, img_size=48).eval()
    assert model.pos_embed.shape == (1, 6 * 6 + 1, 16)
    want = resample_abs_pos_embed(pool.members['tiny'].pos_embed.detach(), new_size=[6, 6], old_size=[4, 4],
                                  num_prefix_tokens=1)
    assert torch.equal(model.pos_embed.detach(), want)
    assert torch.equal(model.blocks[0].attn.qkv.weight, pool.members['tiny'].blocks[0].attn.qkv.weight)
    out = model(_images(48))
    assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()


# ---- damaged and foreign checkpoints --------------------------------------------------------------------------
def test_missing_tensor_is_named(saved, tmp_path):
    path, _ = saved
    bad = _rewrite(path, tmp_path / 'bad', lambda t: t.pop('members.base.blocks.5.mlp.fc2.bias'))
    with pytest.raises(CheckpointError, match=r"has no tensor 'members\.base\.blocks\.5\.mlp\.fc2\.bias'"):
        timm.create_model(f'local-dir:{bad}', descendant='s3', pretrained=True)
    # a descendant that does not run that block still loads
    timm.create_model(f'local-dir:{bad}', descendant='s1', pretrained=True)
    with pytest.raises(CheckpointError, match=r"members\.base\.blocks\.5\.mlp\.fc2\.bias"):
        timm.create_model(f'local-dir:{bad}', pretrained=True)


def test_wrong_shape_names_tensor_and_shapes(saved, tmp_path):
    path, _ = saved

    def change(t):
        t['stitches.tiny-base.4.weight'] = torch.zeros(32, 8)
    bad = _rewrite(path, tmp_path / 'bad', change)
    with pytest.raises(CheckpointError,
                       match=r"tensor 'stitches\.tiny-base\.4\.weight' has shape \[32, 8\] but the model expects "
                             r"\[32, 16\]"):
        timm.create_model(f'local-dir:{bad}', descendant='s3', pretrained=True)


def test_other_architecture_config(saved, tmp_path):
    path, _ = saved
    other = _edit_config(path, tmp_path / 'vit', lambda c: c.update(architecture='vit_base_patch16_224'))
    with pytest.raises(CheckpointError, match=r"architecture 'vit_base_patch16_224', not a learngene pool"):
        read_pool_config(other)
    with pytest.raises(CheckpointError, match='not a learngene pool'):
        load_pool(other, descendant='s3')
    no_args = _edit_config(path, tmp_path / 'noargs', lambda c: c.pop('model_args'))
    with pytest.raises(CheckpointError, match='no model_args.pool'):
        read_pool_config(no_args)
    with pytest.raises(CheckpointError, match='not found'):
        read_pool_config(tmp_path / 'nowhere')
    garbled = tmp_path / 'garbled'
    garbled.mkdir()
    (garbled / 'config.json').write_text('{not json')
    with pytest.raises(CheckpointError, match='not readable JSON'):
        read_pool_config(garbled)
    bad_spec = _edit_config(path, tmp_path / 'badspec', lambda c: c['model_args']['pool'].update(img_size=-1))
    with pytest.raises(CheckpointError, match='invalid pool spec: img_size must be in'):
        read_pool_config(bad_spec)


def test_newer_format_version(saved, tmp_path):
    path, _ = saved
    newer = _edit_config(path, tmp_path / 'newer',
                         lambda c: c['model_args'].update(format_version=FORMAT_VERSION + 1))
    match = rf'format version {FORMAT_VERSION + 1}, newer than the installed timm_learngene reads'
    with pytest.raises(FormatVersionError, match=match):
        timm.create_model(f'local-dir:{newer}', descendant='s3', pretrained=True)
    with pytest.raises(FormatVersionError, match=match):
        timm.create_model(f'local-dir:{newer}')
    with pytest.raises(FormatVersionError, match=match):
        read_pool_config(newer)
    bogus = _edit_config(path, tmp_path / 'bogus', lambda c: c['model_args'].update(format_version='1'))
    with pytest.raises(FormatVersionError, match='must be a positive integer'):
        read_pool_config(bogus)
    assert issubclass(FormatVersionError, CheckpointError)


def test_newer_format_version_in_weights_metadata(saved, tmp_path):
    path, pool = saved
    dst = tmp_path / 'meta'
    dst.mkdir()
    with safe_open(str(path / 'model.safetensors'), framework='pt') as f:
        meta = dict(f.metadata(), learngene_pool_format=str(FORMAT_VERSION + 1))
    save_file(load_file(path / 'model.safetensors'), dst / 'model.safetensors', metadata=meta)
    with pytest.raises(FormatVersionError, match='newer than the installed'):
        timm.create_model('learngene_pool_s3', pretrained=True, pool=pool.pool_spec,
                          pretrained_cfg_overlay=dict(file=str(dst / 'model.safetensors')))


class _Boom:
    """Unpickling this creates a marker folder: a visible trace if anything ever unpickles the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


@pytest.mark.parametrize('kind', ['random', 'pickle', 'empty'])
def test_not_safetensors(saved, tmp_path, kind):
    path, pool = saved
    dst = _edit_config(path, tmp_path / kind, lambda c: None)
    marker = tmp_path / 'unpickled'
    weights = dst / 'model.safetensors'
    if kind == 'random':
        weights.write_bytes(os.urandom(4096))
    elif kind == 'pickle':
        torch.save({'members.tiny.cls_token': _Boom(str(marker))}, weights)
        assert weights.read_bytes()[:2] == b'PK'
    else:
        weights.write_bytes(b'')
    with pytest.raises(CheckpointError, match='is not a readable safetensors file'):
        timm.create_model(f'local-dir:{dst}', descendant='s3', pretrained=True)
    with pytest.raises(CheckpointError, match='is not a readable safetensors file'):
        timm.create_model('learngene_pool_s3', pretrained=True, pool=pool.pool_spec,
                          pretrained_cfg_overlay=dict(file=str(weights)))
    assert not marker.exists()
    if kind == 'pickle':  # the marker would work: the file really is a malicious pickle
        copy = tmp_path / 'copy.pt'
        copy.write_bytes(weights.read_bytes())
        torch.load(copy, weights_only=False)
        assert marker.exists()


def test_safetensors_without_pool_metadata(saved, tmp_path):
    path, pool = saved
    dst = _edit_config(path, tmp_path / 'plain', lambda c: None)
    save_file(load_file(path / 'model.safetensors'), dst / 'model.safetensors')
    # without learngene metadata a file is read as a timm export (save_for_hf) of the pool: a descendant still
    # finds its tensors under the pool's names, unverified (no checksums)
    m = timm.create_model(f'local-dir:{dst}', descendant='s3', pretrained=True).eval()
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        assert torch.equal(m(x), pool.eval()(x, 's3'))
    # neither the model's own names nor the pool's: says how such a file is read
    save_file({'x': torch.zeros(10 ** 6)}, dst / 'model.safetensors')  # big enough to pass the size check
    with pytest.raises(CheckpointError, match="has no tensor 'cls_token'; a safetensors file without "
                                              "'learngene_pool_format' metadata is read as a timm export"):
        timm.create_model(f'local-dir:{dst}', descendant='s3', pretrained=True)


def test_pool_of_another_spec(saved, tmp_path):
    path, _ = saved
    other_spec = tiny_spec(6, widths=((16, 2), (48, 4)), name='wider')
    other = save_pool(timm.create_model('learngene_pool', pool=other_spec), tmp_path / 'wider')
    with pytest.raises(CheckpointError, match=r"holds pool 'wider', which does not fit the model built for pool "
                                              r"'tiny_l6': members differ"):
        timm.create_model('learngene_pool_s3', pretrained=True, pool=tiny_spec(6),
                          pretrained_cfg_overlay=dict(file=str(other)))
    no_distill = save_pool(timm.create_model('learngene_pool', pool=tiny_spec(6, distill=False)), tmp_path / 'nd')
    with pytest.raises(CheckpointError, match='distillation transforms differ'):
        timm.create_model('learngene_pool', pretrained=True, pool=tiny_spec(6),
                          pretrained_cfg_overlay=dict(file=str(no_distill)))
    # the same shapes under another pool name load fine: names are labels, shapes are the contract
    timm.create_model('learngene_pool_s3', pretrained=True, pool=tiny_spec(6, name='renamed'),
                      pretrained_cfg_overlay=dict(file=str(path)))


def test_missing_weights_file(tmp_path, saved):
    path, pool = saved
    with pytest.raises(CheckpointError, match='not found'):
        timm.create_model('learngene_pool_s3', pretrained=True, pool=pool.pool_spec,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'missing.safetensors')))


def test_resave_round_trip(saved, tmp_path):
    path, pool = saved
    loaded = load_pool(path)
    again = save_pool(loaded, tmp_path / 'again')
    first = json.loads((path / 'config.json').read_text())
    assert first.pop('recipe') == {'epochs': 1}  # the recipe is what save_pool was given, not carried over
    assert json.loads((again / 'config.json').read_text()) == first
    a, b = load_file(path / 'model.safetensors'), load_file(again / 'model.safetensors')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- the Hub (hf_hub_download faked with a local folder) --------------------------------------------------------
@pytest.fixture
def fake_hub(saved, monkeypatch):
    """``hf_hub_download`` serving ``org/pool`` from the saved folder; returns the list of calls."""
    import huggingface_hub
    import timm.models._hub as timm_hub
    path, _ = saved
    calls = []

    def download(repo_id, filename, revision=None, cache_dir=None, **kw):
        calls.append((repo_id, filename, revision))
        if repo_id != 'org/pool':
            raise huggingface_hub.errors.EntryNotFoundError(f'{repo_id}/{filename}')
        return str(path / filename)
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', download)
    monkeypatch.setattr(timm_hub, 'hf_hub_download', download)
    return calls


def test_hf_hub_descendant(saved, fake_hub):
    _, pool = saved
    x = _images()
    model = timm.create_model('hf-hub:org/pool', descendant='s3', pretrained=True).eval()
    assert isinstance(model, Descendant)
    with torch.no_grad():
        assert torch.equal(model(x), pool(x, 's3'))
    assert ('org/pool', 'model.safetensors', None) in fake_hub
    fake_hub.clear()
    timm.create_model('hf-hub:org/pool@v1', descendant='s1', pretrained=True)
    assert ('org/pool', 'model.safetensors', 'v1') in fake_hub


def test_hub_errors_are_checkpoint_errors(monkeypatch):
    import huggingface_hub
    from timm_learngene.hub import download_pool_file

    def offline(*a, **kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError('offline')
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', offline)
    with pytest.raises(CheckpointError,
                       match=r"model\.safetensors of Hub repo 'org/pool': the Hub at .* cannot be reached"):
        download_pool_file('org/pool', 'model.safetensors')

    def missing(*a, **kw):
        raise huggingface_hub.errors.EntryNotFoundError('missing')
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', missing)
    with pytest.raises(CheckpointError, match=r"Hub repo 'org/pool' has no model.safetensors; it is not a learngene"):
        download_pool_file('org/pool', 'model.safetensors')
    # a registered name with pretrained=True goes to the Hub repo its cfg names
    with pytest.raises(CheckpointError, match=r"'org/pool' has no model.safetensors"):
        timm.create_model('learngene_pool_s1', pretrained=True, pool=tiny_spec(6),
                          pretrained_cfg_overlay=dict(hf_hub_id='org/pool'))
