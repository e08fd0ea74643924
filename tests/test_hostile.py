"""Broken and hostile pool files: every one is a LearngeneError with a message, never a crash, a wrong load or
an allocation the file does not back. Includes property-based tests (hypothesis) over config.json and the
safetensors header."""
import contextlib
import copy
import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors import safe_open

import timm_learngene.pool_reader as ckpt
import timm_learngene.pool_reader as pool_file
from timm_learngene.checksum import checksum
import timm_learngene.models.learngene_pool as lgp_module
from timm_learngene import (
    CheckpointError, FormatVersionError, LearngeneError, RouteError, UnknownDescendantError,
    load_pool, save_pool,
)

from conftest import tiny_spec

DESCENDANTS = ('s1', 's3', 's18', None)  # a member, a stitched one, the largest, the whole pool


@pytest.fixture(scope='module')
def pool_dir(tmp_path_factory):
    torch.manual_seed(0)
    pool = timm.create_model('learngene_pool', pool=tiny_spec(6)).eval()
    with torch.no_grad():
        for p in pool.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = save_pool(pool, tmp_path_factory.mktemp('hostile') / 'pool', metrics={'s3': {'top1': 50.0}})
    return path, pool


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _header(weights: Path):
    raw = weights.read_bytes()
    (n,) = struct.unpack('<Q', raw[:8])
    return raw, n, json.loads(raw[8:8 + n])


def _same_weights(model, pool, name) -> bool:
    ref = pool.descendant(name) if name else pool
    got = model.state_dict()
    return all(torch.equal(got[k], v) for k, v in ref.state_dict().items())


# ---- damaged weights ----------------------------------------------------------------------------------------
@pytest.mark.parametrize('cut', ['8', 'header/2', 'header', 'data/2', '-1'])
def test_truncated_weights(pool_dir, tmp_path, cut):
    path, _ = pool_dir
    bad = _copy(path, tmp_path / 'bad')
    raw, n, _ = _header(bad / 'model.safetensors')
    keep = {'8': 8, 'header/2': 8 + n // 2, 'header': 8 + n, 'data/2': 8 + n + (len(raw) - 8 - n) // 2,
            '-1': len(raw) - 1}[cut]
    (bad / 'model.safetensors').write_bytes(raw[:keep])
    with pytest.raises(CheckpointError, match='not a readable safetensors file|too small|truncated'):
        load_pool(bad, descendant='s3')


def test_flipped_bit_in_tensor_data(pool_dir, tmp_path):
    path, pool = pool_dir
    bad = _copy(path, tmp_path / 'bad')
    raw, n, header = _header(bad / 'model.safetensors')
    key = 'members.base.blocks.5.mlp.fc1.weight'  # run by s3 (tiny -> base), not by s1 (tiny alone)
    start, end = header[key]['data_offsets']
    data = bytearray(raw)
    data[8 + n + (start + end) // 2] ^= 0x04  # one mantissa bit: a finite, plausible wrong weight
    (bad / 'model.safetensors').write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"tensor '{key}' does not match its checksum"):
        load_pool(bad, descendant='s3')
    with pytest.raises(CheckpointError, match='checksum'):
        load_pool(bad)
    # a descendant that does not read the damaged tensor loads, and loads right
    assert _same_weights(load_pool(bad, descendant='s1'), pool, 's1')


def test_checksums_stored_for_every_tensor(pool_dir):
    path, pool = pool_dir
    with safe_open(str(path / 'model.safetensors'), framework='pt') as f:
        sums = json.loads(f.metadata()['learngene_pool_sum64'])
        assert set(sums) == set(f.keys()) == set(pool.state_dict())


def test_file_without_checksums_still_loads(pool_dir, tmp_path):
    """Files written before checksums existed (same format version) load unverified."""
    from safetensors.torch import load_file, save_file
    path, pool = pool_dir
    old = _copy(path, tmp_path / 'old')
    with safe_open(str(old / 'model.safetensors'), framework='pt') as f:
        meta = {k: v for k, v in f.metadata().items() if k != 'learngene_pool_sum64'}
    save_file(load_file(old / 'model.safetensors'), old / 'model.safetensors', metadata=meta)
    assert _same_weights(load_pool(old, descendant='s3'), pool, 's3')


def test_integer_tensor_rejected(pool_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    path, _ = pool_dir
    bad = _copy(path, tmp_path / 'bad')
    with safe_open(str(bad / 'model.safetensors'), framework='pt') as f:
        meta = f.metadata()
    tensors = load_file(bad / 'model.safetensors')
    tensors['members.tiny.cls_token'] = torch.zeros(1, 1, 16, dtype=torch.int32)
    save_file(tensors, bad / 'model.safetensors', metadata=meta)
    with pytest.raises(CheckpointError, match=r"'members\.tiny\.cls_token' has dtype torch\.int32"):
        load_pool(bad, descendant='s1')


def test_failed_load_leaves_model_unchanged(pool_dir, tmp_path):
    path, _ = pool_dir
    bad = _copy(path, tmp_path / 'bad')
    raw, n, header = _header(bad / 'model.safetensors')
    last = max(header, key=lambda k: header[k]['data_offsets'][0] if k != '__metadata__' else -1)
    data = bytearray(raw)
    data[8 + n + header[last]['data_offsets'][0]] ^= 0x01
    (bad / 'model.safetensors').write_bytes(bytes(data))
    model = timm.create_model('learngene_pool', pool=tiny_spec(6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match='checksum'):
        ckpt.load_pool_weights(model, {}, file=bad / 'model.safetensors')
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- config.json: missing fields, wrong types, versions, sizes ------------------------------------------------
def _edit(src: Path, dst: Path, change) -> Path:
    out = _copy(src, dst)
    cfg = json.loads((out / 'config.json').read_text())
    change(cfg)
    (out / 'config.json').write_text(json.dumps(cfg))
    return out


def _members(c):
    return c['model_args']['pool']['members']


CONFIG_CASES = {
    'no architecture': (lambda c: c.pop('architecture'), CheckpointError, 'not a learngene pool'),
    'no model_args': (lambda c: c.pop('model_args'), CheckpointError, 'no model_args.pool'),
    'no members': (lambda c: c['model_args']['pool'].pop('members'), CheckpointError, "required field 'members'"),
    'member without width': (lambda c: _members(c)[0].pop('width'), CheckpointError, r'members\[0\] is incomplete'),
    'width as text': (lambda c: _members(c)[0].update(width='16'), CheckpointError, 'width must be an integer'),
    'depth as float': (lambda c: [m.update(depth=6.0) for m in _members(c)], CheckpointError,
                       'depth must be an integer'),
    'members as object': (lambda c: c['model_args']['pool'].update(members={'a': 1}), CheckpointError,
                          'must be a list'),
    'pool as list': (lambda c: c['model_args'].update(pool=[1, 2]), CheckpointError, 'must be a mapping'),
    'num_classes as text': (lambda c: c.update(num_classes='5'), CheckpointError, 'num_classes must be an integer'),
    'descendants as text': (lambda c: c['model_args'].update(descendants='s1'), CheckpointError,
                            'descendants must be a list'),
    'unknown model_args': (lambda c: c['model_args'].update(trust_remote_code=True), CheckpointError,
                           r"unknown model_args \['trust_remote_code'\]"),
    'unknown pretrained_cfg field': (lambda c: c['pretrained_cfg'].update(evil=1), CheckpointError,
                                     r"unknown pretrained_cfg fields \['evil'\]"),
    'newer format': (lambda c: c['model_args'].update(format_version=99), FormatVersionError, 'upgrade'),
    'format as text': (lambda c: c['model_args'].update(format_version='1'), FormatVersionError,
                       'positive integer'),
    'absurd width': (lambda c: [m.update(width=10 ** 9) for m in _members(c)], CheckpointError,
                     r'width must be in \[1, 16384\]'),
    'absurd total': (lambda c: [m.update(width=16384, heads=16, depth=256) for m in _members(c)], CheckpointError,
                     'more than the 20,000,000,000'),
    'absurd image': (lambda c: c['model_args']['pool'].update(img_size=8192, patch_size=1), CheckpointError,
                     '8192-patch-wide grid, more than 256'),
    'absurd classes': (lambda c: c['model_args']['pool'].update(num_classes=10 ** 6), CheckpointError,
                       r'num_classes must be in \[0, 100000\]'),
    'too many descendants': (lambda c: c['model_args']['pool'].update(
        members=[dict(name=f'm{i}', width=8 * (i + 1), heads=1, depth=256) for i in range(16)], stitch_kernel=256),
        CheckpointError, 'descendants, more than 10,000'),
    'no pretrained_cfg': (lambda c: c.pop('pretrained_cfg'), CheckpointError, 'has no pretrained_cfg'),
    'input_size as int': (lambda c: c['pretrained_cfg'].update(input_size=5), CheckpointError,
                          r'pretrained_cfg\.input_size must be three positive integers'),
    'input_size too short': (lambda c: c['pretrained_cfg'].update(input_size=[1, 2]), CheckpointError,
                             'input_size must be'),
    'fixed_input_size as text': (lambda c: c['pretrained_cfg'].update(fixed_input_size='yes'), CheckpointError,
                                 'fixed_input_size must be true or false'),
    'recipe as list': (lambda c: c.update(recipe=[1]), CheckpointError, 'recipe must be an object'),
    'member name with newline': (lambda c: _members(c)[0].update(name='tiny\n'), CheckpointError,
                                 'member name .* is invalid'),
}


@pytest.mark.parametrize('case', list(CONFIG_CASES))
def test_bad_config(pool_dir, tmp_path, case):
    path, _ = pool_dir
    change, error, match = CONFIG_CASES[case]
    bad = _edit(path, tmp_path / 'bad', change)
    with pytest.raises(error, match=match):
        load_pool(bad, descendant='s3')


@pytest.mark.parametrize('body', ['not utf-8', 'deep', 'huge int', 'huge file', 'array'])
def test_config_not_json(pool_dir, tmp_path, body):
    path, _ = pool_dir
    bad = _copy(path, tmp_path / 'bad')
    text = {'not utf-8': b'{"architecture": "learngene_pool", \xff', 'deep': b'[' * 100_000,
            'huge int': b'{"num_classes": 1' + b'0' * 5000 + b'}', 'huge file': b' ' * (17 * 2 ** 20) + b'{}',
            'array': b'[1, 2]'}[body]
    (bad / 'config.json').write_bytes(text)
    with pytest.raises(CheckpointError, match='not readable JSON|bytes; a pool config is a few kB|JSON object'):
        load_pool(bad)


def test_metadata_not_json(pool_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    path, _ = pool_dir
    bad = _copy(path, tmp_path / 'bad')
    with safe_open(str(bad / 'model.safetensors'), framework='pt') as f:
        meta = dict(f.metadata(), learngene_pool_spec='[' * 100_000)
    save_file(load_file(bad / 'model.safetensors'), bad / 'model.safetensors', metadata=meta)
    with pytest.raises(CheckpointError, match='pool spec in its metadata is not readable JSON'):
        load_pool(bad, descendant='s1')


def test_tensor_missing_from_checksums(pool_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    path, _ = pool_dir
    bad = _copy(path, tmp_path / 'bad')
    with safe_open(str(bad / 'model.safetensors'), framework='pt') as f:
        meta = f.metadata()
    sums = json.loads(meta['learngene_pool_sum64'])
    sums.pop('members.tiny.cls_token')
    meta['learngene_pool_sum64'] = json.dumps(sums)
    save_file(load_file(bad / 'model.safetensors'), bad / 'model.safetensors', metadata=meta)
    with pytest.raises(CheckpointError, match=r"'members\.tiny\.cls_token' has no checksum"):
        load_pool(bad, descendant='s1')


@pytest.mark.parametrize('case', ['unknown model_args', 'descendants as text', 'input_size as int',
                                  'absurd classes', 'width as text'])
def test_bad_config_through_timm(pool_dir, tmp_path, case):
    """The same checks run when timm reads the folder itself (once it reaches the learngene entrypoint)."""
    path, _ = pool_dir
    change, _, match = CONFIG_CASES[case]
    bad = _edit(path, tmp_path / 'bad', change)
    with pytest.raises(LearngeneError, match=match):
        timm.create_model(f'local-dir:{bad}', descendant='s3', pretrained=True)


@pytest.fixture
def no_build(monkeypatch):
    """Fail the test if a model is built: the error must come from the headers alone."""
    def refuse(*a, **kw):
        raise AssertionError('a model was built before the checkpoint was checked')
    monkeypatch.setattr(lgp_module, 'build_model_with_cfg', refuse)


def test_large_config_small_file_fails_before_building(pool_dir, tmp_path, no_build):
    """A config describing a 1.8-billion-parameter pool next to a tiny weights file: refused from the
    headers, before a single large tensor is allocated."""
    path, _ = pool_dir
    bad = _edit(path, tmp_path / 'big', lambda c: [m.update(width=4096, heads=32) for m in _members(c)])
    with pytest.raises(CheckpointError, match='does not fit the model built for pool'):
        load_pool(bad, descendant='s3')


def test_large_metadata_small_file_fails_before_building(pool_dir, tmp_path, no_build):
    """Config and weights metadata agree on a huge pool, but the file holds only the tiny tensors."""
    from safetensors.torch import load_file, save_file
    path, _ = pool_dir
    big = tiny_spec(6, widths=((4096, 32), (8192, 64)))
    bad = _edit(path, tmp_path / 'big', lambda c: c['model_args'].update(pool=big.to_dict()))
    with safe_open(str(bad / 'model.safetensors'), framework='pt') as f:
        meta = dict(f.metadata(), learngene_pool_spec=big.to_json())
    save_file(load_file(bad / 'model.safetensors'), bad / 'model.safetensors', metadata=meta)
    with pytest.raises(CheckpointError, match='too small for the pool'):
        load_pool(bad, descendant='s3')


# ---- names that do not exist, files that escape the folder ----------------------------------------------------
def test_unknown_descendant_and_route(pool_dir):
    path, _ = pool_dir
    with pytest.raises(UnknownDescendantError, match=r"'s99'.*s1\.\.s18"):
        load_pool(path, descendant='s99')
    with pytest.raises(LearngeneError, match=r"unknown descendant 'resnet50'.*s1\.\.s18"):
        load_pool(path, descendant='resnet50')
    pool = load_pool(path)
    with pytest.raises(RouteError, match=r'no stitch layer joins front block 2 to end block 5.*valid'):
        pool(torch.zeros(1, 3, 32, 32), (('tiny', 0, 3), ('base', 5, 6)))
    with pytest.raises(RouteError, match="unknown member 'huge'"):
        pool(torch.zeros(1, 3, 32, 32), (('huge', 0, 6),))


def test_hub_config_cannot_name_a_local_file(pool_dir, monkeypatch, tmp_path):
    """A downloaded config.json's pretrained_cfg.file is ignored: the weights come from the repo."""
    path, _ = pool_dir
    asked = []

    def fake_download(repo, filename, cache_dir=None, revision=None):
        asked.append((repo, filename))
        return path / 'model.safetensors'
    monkeypatch.setattr(pool_file, 'download_pool_file', fake_download)
    secret = tmp_path / 'secret.safetensors'
    secret.write_bytes(b'not for you')
    got = ckpt.pool_weights_file({'source': 'hf-hub', 'hf_hub_id': 'org/pool', 'file': str(secret)})
    assert asked == [('org/pool', 'model.safetensors')] and got == path / 'model.safetensors'
    # local folders and explicit overlays still use their file
    assert ckpt.pool_weights_file({'source': 'local-dir', 'file': str(path)}) == path / 'model.safetensors'


def test_local_dir_config_cannot_redirect_weights(pool_dir, tmp_path):
    """timm sets ``file`` to the folder for local-dir; a config.json naming another file does not win."""
    path, pool = pool_dir
    other = tmp_path / 'other'
    torch.manual_seed(1)
    save_pool(timm.create_model('learngene_pool', pool=tiny_spec(6)), other)
    bad = _edit(path, tmp_path / 'bad', lambda c: c['pretrained_cfg'].update(file=str(other / 'model.safetensors')))
    assert _same_weights(load_pool(bad, descendant='s3'), pool, 's3')


# ---- property-based: random damage gives a clean error or the exact weights -----------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _paths(node, prefix=()):
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate(cfg, path, op, value):
    if not path:
        return value if op == 'replace' else cfg
    parent = cfg
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if op == 'delete':
        parent.pop(last) if isinstance(parent, dict) else parent.pop(last)
    elif op == 'replace':
        parent[last] = value
    elif op == 'add' and isinstance(parent[last], dict):
        parent[last]['x_' + str(value)[:5]] = value
    return cfg


def _load_or_clean_error(folder: Path, pool, name):
    try:
        model = load_pool(folder, descendant=name)
    except LearngeneError as e:
        assert str(e), 'an error without a message'
        return
    # when it loads, what loaded is right: the weights of the file. A config may legitimately ask for another
    # image size (position embeddings resampled) or class count (heads left fresh); everything else is exact.
    spec, ref = model.pool_spec, pool.pool_spec
    ref_sd = (pool.descendant(name) if name else pool).state_dict()
    for k, v in model.state_dict().items():
        if (spec.img_size != ref.img_size and k.endswith('pos_embed')) or \
                (spec.num_classes != ref.num_classes and ('head.' in k or k.startswith('head'))):
            continue
        assert torch.equal(v, ref_sd[k]), k


@contextlib.contextmanager
def _damaged_copy(path: Path, weights: bytes):
    """A temporary pool folder: the config.json of ``path`` beside the given weights bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / 'pool'
        folder.mkdir()
        (folder / 'model.safetensors').write_bytes(weights)
        shutil.copy(path / 'config.json', folder / 'config.json')
        yield folder


HYPOTHESIS = settings(max_examples=120, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@HYPOTHESIS
@given(data=st.data())
def test_fuzz_config_json(pool_dir, data):
    path, pool = pool_dir
    cfg = json.loads((path / 'config.json').read_text())
    # the descendant rows are most of the paths but only carry metrics: sample the structure far more often
    rows = [p for p in _paths(cfg) if p[:2] == ('model_args', 'descendants')]
    structure = [p for p in _paths(cfg) if p not in rows]
    target = data.draw(st.sampled_from(sorted(structure, key=repr)) | st.sampled_from(sorted(rows, key=repr)[:20]),
                       label='path')
    op = data.draw(st.sampled_from(['delete', 'replace', 'add']), label='op')
    value = data.draw(JSON, label='value')
    name = data.draw(st.sampled_from(DESCENDANTS), label='descendant')
    try:
        mutated = _mutate(copy.deepcopy(cfg), target, op, value)
    except (KeyError, IndexError, TypeError):
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / 'pool'
        folder.mkdir()
        (folder / 'model.safetensors').symlink_to(path / 'model.safetensors')
        (folder / 'config.json').write_text(json.dumps(mutated))
        _load_or_clean_error(folder, pool, name)


@HYPOTHESIS
@given(data=st.data())
def test_fuzz_safetensors_header(pool_dir, data):
    path, pool = pool_dir
    raw, n, _ = _header(path / 'model.safetensors')
    buf = bytearray(raw)
    kind = data.draw(st.sampled_from(['flip', 'overwrite', 'length', 'truncate']), label='kind')
    if kind == 'flip':  # a bit anywhere in the length prefix or the JSON header
        i = data.draw(st.integers(0, 8 + n - 1), label='byte')
        buf[i] ^= 1 << data.draw(st.integers(0, 7), label='bit')
    elif kind == 'overwrite':
        i = data.draw(st.integers(0, 8 + n - 1), label='at')
        junk = data.draw(st.binary(min_size=1, max_size=16), label='bytes')
        buf[i:i + len(junk)] = junk
    elif kind == 'length':
        buf[:8] = struct.pack('<Q', data.draw(st.integers(0, 2 ** 64 - 1), label='header length'))
    else:
        buf = buf[:data.draw(st.integers(0, len(raw) - 1), label='keep')]
    name = data.draw(st.sampled_from(DESCENDANTS), label='descendant')
    with _damaged_copy(path, bytes(buf)) as folder:
        _load_or_clean_error(folder, pool, name)


@HYPOTHESIS
@given(data=st.data())
def test_fuzz_tensor_bytes(pool_dir, data):
    """A flipped bit in any tensor's bytes: the descendants that read it fail on the checksum, the others load
    exactly."""
    path, pool = pool_dir
    raw, n, header = _header(path / 'model.safetensors')
    key = data.draw(st.sampled_from(sorted(k for k in header if k != '__metadata__')), label='tensor')
    start, end = header[key]['data_offsets']
    buf = bytearray(raw)
    buf[8 + n + data.draw(st.integers(start, end - 1), label='byte')] ^= 1 << data.draw(st.integers(0, 7))
    name = data.draw(st.sampled_from(DESCENDANTS), label='descendant')
    with _damaged_copy(path, bytes(buf)) as folder:
        reads = name is None or key in set(pool.descendant(name).pool_key_map().values())
        if reads:
            with pytest.raises(CheckpointError, match='checksum'):
                load_pool(folder, descendant=name)
        else:
            assert _same_weights(load_pool(folder, descendant=name), pool, name)


def test_save_pool_removes_leftovers_of_a_killed_save(pool_dir, tmp_path):
    _, pool = pool_dir
    target = tmp_path / 'pool'
    (tmp_path / '.pool.abc123.tmp').mkdir()  # a new-folder save killed before its rename
    (tmp_path / '.pool.abc123.tmp' / 'model.safetensors').write_bytes(b'half')
    (tmp_path / '.other.abc.tmp').mkdir()  # another pool's: left alone
    save_pool(pool, target)
    assert not (tmp_path / '.pool.abc123.tmp').exists() and (tmp_path / '.other.abc.tmp').exists()
    (target / '.model.safetensors.xyz.tmp').write_bytes(b'half')  # an in-place save killed mid-write
    save_pool(pool, target)
    assert sorted(p.name for p in target.iterdir()) == ['config.json', 'model.safetensors']
    assert _same_weights(load_pool(target, descendant='s3'), pool, 's3')


@pytest.mark.parametrize('dtype,n', [(torch.float32, 37), (torch.bfloat16, 3), (torch.float16, 1), (torch.float64, 8)])
def test_checksum_changes_with_every_bit(dtype, n):
    t = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(dtype)
    base = checksum(t)
    assert len(base) == 16 and base == checksum(t.clone())
    raw = t.view(torch.uint8)
    for i in range(raw.numel()):
        for bit in range(8):
            flipped = raw.clone()
            flipped[i] ^= 1 << bit
            assert checksum(flipped.view(dtype)) != base, (i, bit)
