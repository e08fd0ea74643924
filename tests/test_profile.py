"""Latency profiles: how a sample is timed, the device signature, profiles stored in config.json beside each other
(atomically, weights untouched), select by measured latency, and the CLI. No timing is asserted: the clock is
faked where a number matters, and measured numbers are only checked for shape and order (q1 <= median <= q3)."""
import hashlib
import json
import os
import re
import struct

import pytest
import timm
import torch

import timm_learngene
from timm_learngene import profiling
from timm_learngene.__main__ import main
from timm_learngene.errors import CheckpointError, ConfigError
from timm_learngene.evaluation import latency_series, pareto_plot, speed_columns
from timm_learngene.model_card import render_model_card, render_pareto
from timm_learngene.profiling import (
    DeviceSignature, NoProfileError, Profile, device_signature, find_profile, profile_pool, read_profiles, summarize,
    time_models, write_profile,
)
from timm_learngene.selection import BudgetError, select
from timm_learngene.training.progress import Progress

from conftest import tiny_spec


@pytest.fixture
def pool_dir(tmp_path):
    torch.manual_seed(0)
    return timm_learngene.save_pool(timm.create_model('learngene_pool', pool=tiny_spec(6)), tmp_path / 'pool')


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _profile(sig: DeviceSignature, medians) -> Profile:
    return Profile(sig, {n: dict(median_ms=m, q1_ms=m * 0.9, q3_ms=m * 1.2, iqr_ms=m * 0.3, min_ms=m * 0.8,
                                 img_s=sig.batch_size / m * 1e3, samples=5) for n, m in medians.items()})


# ---- timing --------------------------------------------------------------------------------------------------------
def test_summarize_known_values():
    r = summarize([0.005, 0.001, 0.004, 0.002, 0.003], batch_size=2)
    assert r == dict(median_ms=3.0, q1_ms=2.0, q3_ms=4.0, iqr_ms=2.0, min_ms=1.0, img_s=666.67, samples=5)
    r = summarize([0.001, 0.002])  # quartiles interpolate between ranks, as numpy's default
    assert (r['median_ms'], r['q1_ms'], r['q3_ms']) == (1.5, 1.25, 1.75)
    with pytest.raises(ValueError, match='at least one sample'):
        summarize([])


def test_time_models_warms_up_calibrates_and_interleaves(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(profiling.time, 'perf_counter', lambda: clock[0])
    calls = []

    def fn(name, seconds):
        def run():
            calls.append(name)
            clock[0] += seconds
        return run

    # a takes 1/256 s a call: 4 calls per 1/64 s sample; b takes 1/32 s: one call per sample (binary fractions,
    # so the fake clock adds up exactly)
    steps = []
    times = time_models({'a': fn('a', 2 ** -8), 'b': fn('b', 2 ** -5)}, warmup=2, repeats=3,
                        min_sample_ms=1000 * 2 ** -6, progress=steps.append)
    assert times == {'a': [2 ** -8] * 3, 'b': [2 ** -5] * 3}
    # warm-up (2) and the calibration call (1) per function, then rounds a b / b a / a b
    assert calls == ['a'] * 3 + ['b'] * 3 + ['a'] * 4 + ['b'] + ['b'] + ['a'] * 4 + ['a'] * 4 + ['b']
    assert sum(steps) == 2 * (1 + 3)
    with pytest.raises(ConfigError, match='repeats >= 1'):
        time_models({'a': fn('a', 0.001)}, repeats=0)


# ---- the device ------------------------------------------------------------------------------------------------------
def test_device_signature_of_this_cpu_round_trips():
    sig = device_signature('cpu', 'bf16', 4, threads=3)
    assert (sig.kind, sig.dtype, sig.batch_size, sig.threads) == ('cpu', 'bf16', 4, 3)
    assert sig.cores >= 1 and sig.processor and sig.torch == torch.__version__.split('+')[0]
    assert DeviceSignature.from_dict(json.loads(json.dumps(sig.to_dict()))) == sig
    assert sig.label == (f'cpu: {sig.processor}, {sig.cores} cores, 3 threads, torch {sig.torch}, bf16, batch 4')
    assert device_signature('cpu').threads == torch.get_num_threads()
    with pytest.raises(ConfigError, match=r"exactly the fields .*got \['kind'\]"):
        DeviceSignature.from_dict({'kind': 'cpu'})
    with pytest.raises(ConfigError, match='dtype must be one of fp32, bf16, fp16'):
        device_signature('cpu', 'int8')
    with pytest.raises(ConfigError, match="device must be 'cpu' or 'cuda'"):
        device_signature('mps')
    with pytest.raises(ConfigError, match='batch_size must be a positive integer'):
        device_signature('cpu', batch_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without CUDA')
def test_cuda_signature_without_a_gpu_says_so():
    with pytest.raises(ConfigError, match='no CUDA device on this machine'):
        device_signature('cuda')


# ---- profiles in config.json -----------------------------------------------------------------------------------------
def test_profile_pool_writes_beside_other_devices_and_leaves_the_weights(pool_dir):
    weights = pool_dir / 'model.safetensors'
    before_sha, before_config = _sha(weights), json.loads((pool_dir / 'config.json').read_text())
    threads = torch.get_num_threads()
    a = profile_pool(pool_dir, threads=1, warmup=1, repeats=3, min_sample_ms=0)
    assert torch.get_num_threads() == threads  # restored
    names = [d['name'] for d in timm_learngene.read_pool_config(pool_dir)['model_args']['descendants']]
    assert list(a.results) == names == [f's{i}' for i in range(1, 19)]
    for r in a.results.values():
        assert 0 < r['min_ms'] <= r['q1_ms'] <= r['median_ms'] <= r['q3_ms'] and r['samples'] == 3
        assert r['img_s'] == pytest.approx(1e3 / r['median_ms'], rel=1e-3)
    assert (a.device.threads, a.device.batch_size, a.device.dtype) == (1, 1, 'fp32')
    assert a.settings == dict(warmup=1, repeats=3, min_sample_ms=0, input_size=[3, 32, 32])
    # a second signature (batch 2) sits beside the first; the rest of config.json is as it was
    b = profile_pool(pool_dir, threads=1, batch_size=2, descendants=['s1', 's18'], warmup=0, repeats=2,
                     min_sample_ms=0)
    stored = read_profiles(pool_dir)
    assert [p.device for p in stored] == [a.device, b.device] and list(stored[1].results) == ['s1', 's18']
    after = json.loads((pool_dir / 'config.json').read_text())
    assert {k: v for k, v in after.items() if k != 'latency'} == before_config
    # the same signature again replaces its entry
    c = profile_pool(pool_dir, threads=1, descendants=['s2'], warmup=0, repeats=1, min_sample_ms=0)
    assert [(p.device, list(p.results)) for p in read_profiles(pool_dir)] == [(b.device, ['s1', 's18']),
                                                                            (c.device, ['s2'])]
    assert _sha(weights) == before_sha
    assert sorted(os.listdir(pool_dir)) == ['config.json', 'model.safetensors']  # no temporary files left
    timm_learngene.load_pool(pool_dir)  # still a pool timm loads


def test_profile_pool_progress_lines(pool_dir, capsys):
    profile_pool(pool_dir, threads=1, descendants=['s1', 's2'], warmup=0, repeats=2, min_sample_ms=0,
                 progress=lambda total, desc: Progress(total, desc=desc, mode='lines', unit='sample', every=3),
                 write=False)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(',')[0] for line in out] == ['profile cpu fp32 batch 1 sample 3/6 (50%)',
                                                    'profile cpu fp32 batch 1 sample 6/6 (100%)']
    assert read_profiles(pool_dir) == []  # write=False


def test_a_failed_write_leaves_config_json_as_it_was(pool_dir, monkeypatch):
    before = (pool_dir / 'config.json').read_bytes()
    sig = device_signature('cpu', threads=1)

    def fail(src, dst):
        raise OSError('disk full')
    monkeypatch.setattr(os, 'replace', fail)
    with pytest.raises(OSError, match='disk full'):
        write_profile(pool_dir, _profile(sig, {'s1': 1.0}))
    assert (pool_dir / 'config.json').read_bytes() == before
    assert sorted(os.listdir(pool_dir)) == ['config.json', 'model.safetensors']


def test_profile_input_errors(pool_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown descendants \['s99'\]; pool 'tiny_l6' has s1\.\.s18"):
        profile_pool(pool_dir, descendants=['s99'])
    with pytest.raises(ConfigError, match='dtype must be one of'):
        profile_pool(pool_dir, dtype='fp64')
    with pytest.raises(ConfigError, match='threads must be a positive integer'):
        profile_pool(pool_dir, threads=0)
    with pytest.raises(CheckpointError, match='not found'):
        profile_pool(tmp_path / 'nowhere')
    with pytest.raises(CheckpointError, match='config.json is a file; profile takes the pool folder'):
        profile_pool(pool_dir / 'config.json')
    with pytest.raises(CheckpointError, match=r"descendants \['s40'\] that pool"):
        write_profile(pool_dir, _profile(device_signature('cpu'), {'s40': 1.0}))


@pytest.mark.parametrize('latency, message', [
    ({'x': 1}, "'latency' must be a list of profiles"),
    ([{'device': {'kind': 'cpu'}, 'descendants': {}}], 'a device signature has exactly the fields'),
    ([42], "each 'latency' entry must be an object"),
    (['NEG'], "descendant 's1' needs non-negative numbers median_ms, q1_ms, q3_ms"),
])
def test_damaged_latency_section_is_a_checkpoint_error(pool_dir, latency, message):
    config = json.loads((pool_dir / 'config.json').read_text())
    if latency == ['NEG']:
        entry = _profile(device_signature('cpu'), {'s1': 1.0}).to_dict()
        entry['descendants']['s1']['median_ms'] = -1
        latency = [entry]
    config['latency'] = latency
    (pool_dir / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        read_profiles(pool_dir)


# ---- select by latency ---------------------------------------------------------------------------------------------
def _with_accuracy(pool_dir, val):
    timm_learngene.update_pool_metrics(pool_dir, {n: {'top1': 50.0, 'val_top1': v} for n, v in val.items()})


def test_select_by_latency_uses_this_devices_profile_and_breaks_ties(pool_dir):
    names = [f's{i}' for i in range(1, 19)]
    here = device_signature('cpu')
    other = device_signature('cpu', batch_size=8)
    lat = {n: 1.0 + i for i, n in enumerate(names)}       # s1 1 ms ... s18 18 ms on this device
    write_profile(pool_dir, _profile(here, lat))
    write_profile(pool_dir, _profile(other, {n: 0.1 for n in names}))  # another signature: not used
    # no accuracy: the largest that fits (s5 is 5 ms)
    assert select(pool_dir, max_latency_ms=5.0) == 's5'
    # accuracy on the validation split decides; equal accuracy goes to the faster one
    val = {n: 60.0 for n in names}
    val['s3'] = val['s4'] = 70.0
    val['s12'] = 90.0
    _with_accuracy(pool_dir, val)
    assert select(pool_dir, max_latency_ms=5.0) == 's3'
    assert select(pool_dir, max_latency_ms=12.0) == 's12'
    assert select(pool_dir, max_latency_ms=12.0, max_gmacs=0.0007) == 's3'  # both budgets hold (s1..s3)
    # config.json alone (as downloaded from the Hub) works too
    assert select(pool_dir / 'config.json', max_latency_ms=5.0) == 's3'
    msg = (f'no descendant fits max_gmacs=None, max_params=None, max_latency_ms=0.5; the smallest is s1 '
           f'(0.000 GMACs, 0.02M params, 1.00 ms on {here.label})')
    with pytest.raises(BudgetError, match='^' + re.escape(msg) + '$'):
        select(pool_dir, max_latency_ms=0.5)
    # another signature given as fields (batch 8 on this machine)
    assert select(pool_dir, max_latency_ms=0.2, device={'batch_size': 8}) == 's12'


def test_select_by_latency_without_a_profile_says_how_to_measure(pool_dir):
    here = device_signature('cpu')
    with pytest.raises(NoProfileError) as e:
        select(pool_dir, max_latency_ms=5.0)
    assert str(e.value) == (f'no latency measured for {here.label}; measure it on that device with: python -m '
                            f'timm_learngene profile {pool_dir} --device cpu --dtype fp32 --batch-size 1 --threads '
                            f'{here.threads} (measured devices: none)')
    with pytest.raises(NoProfileError, match=re.escape(f'python -m timm_learngene profile {pool_dir} --device')):
        select(pool_dir / 'config.json', max_latency_ms=5.0)  # the command names the folder
    write_profile(pool_dir, _profile(device_signature('cpu', 'bf16'), {'s1': 1.0}))
    with pytest.raises(NoProfileError, match=re.escape(f'(measured devices: {device_signature("cpu", "bf16").label})')):
        select(pool_dir, max_latency_ms=5.0)
    # a profile of only some descendants: the others cannot be judged
    write_profile(pool_dir, _profile(here, {'s1': 1.0, 's2': 2.0}))
    with pytest.raises(NoProfileError, match=r"descendants \['s3', .*'s18'\] have no latency measured on cpu: .*"
                                             r'measure every descendant with: python -m timm_learngene profile'):
        select(pool_dir, max_latency_ms=5.0)
    assert select(pool_dir, max_latency_ms=5.0, max_gmacs=0.0006) == 's2'  # only s1, s2 are candidates
    pool = timm_learngene.load_pool(pool_dir)
    with pytest.raises(NoProfileError, match='pass the folder .*not a LearngenePool'):
        select(pool, max_latency_ms=5.0)
    with pytest.raises(ConfigError, match=r"unknown device signature fields \['gpu'\]"):
        select(pool_dir, max_latency_ms=5.0, device={'gpu': 'x'})


def test_select_by_a_gpu_measured_elsewhere(pool_dir):
    gpu = DeviceSignature('cuda', 'NVIDIA H200', 132, 16, '2.14.1', 'bf16', 32)
    write_profile(pool_dir, _profile(gpu, {f's{i}': 0.1 * i for i in range(1, 19)}))
    assert select(pool_dir, max_latency_ms=0.35, device=gpu.to_dict()) == 's3'
    assert select(pool_dir, max_latency_ms=0.35, device=gpu) == 's3'
    assert find_profile(read_profiles(pool_dir), gpu).device == gpu


# ---- tables, plots, card ---------------------------------------------------------------------------------------------
def test_speed_columns_and_latency_series():
    lat = _profile(DeviceSignature('cpu', 'x', 2, 2, '2.14.1', 'fp32', 1), {'s1': 2.0, 's2': 4.0})
    thr = _profile(DeviceSignature('cpu', 'x', 2, 2, '2.14.1', 'fp32', 8), {'s1': 10.0})
    assert speed_columns(lat, thr) == {'s1': dict(latency_ms=2.0, latency_iqr_ms=0.6, img_s=800.0),
                                       's2': dict(latency_ms=4.0, latency_iqr_ms=1.2)}
    # a device with no descendant of known accuracy gets no series
    assert latency_series([lat, thr], {'s2': 71.5}) == {lat.device.label: [dict(
        name='s2', latency_ms=4.0, latency_q1_ms=3.6, latency_q3_ms=4.8, top1=71.5)]}


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    return struct.unpack('>II', data[16:24])


def test_latency_pareto_plot_and_the_model_card(pool_dir, tmp_path):
    names = [f's{i}' for i in range(1, 19)]
    here = device_signature('cpu', threads=1)
    write_profile(pool_dir, _profile(here, {n: 1.0 + i for i, n in enumerate(names)}))
    config = json.loads((pool_dir / 'config.json').read_text())
    series = latency_series(read_profiles(config), {n: 50.0 + i for i, n in enumerate(names)})
    pareto_plot(series, tmp_path / 'lat.png', x='latency_ms', xerr=('latency_q1_ms', 'latency_q3_ms'))
    assert _png_size(tmp_path / 'lat.png') == (840, 540)
    card = render_model_card(config, 'org/pool')
    assert '## Measured latency' in card and f'- (1) {here.label}' in card
    assert '| s3 | 3 ± 0.45 |' in card
    # no top-1 yet: the size plot; with top-1, two panels (GMACs, measured latency)
    _, text = render_pareto(config, tmp_path / 'card.png')
    assert 'no top-1 measured yet' in text
    timm_learngene.update_pool_metrics(pool_dir, {n: {'top1': 50.0 + i} for i, n in enumerate(names)})
    config = json.loads((pool_dir / 'config.json').read_text())
    _, text = render_pareto(config, tmp_path / 'card.png')
    assert text.endswith('and against the latency measured on 1 device(s)')
    assert _png_size(tmp_path / 'card.png') == (1560, 576)


# ---- command line ---------------------------------------------------------------------------------------------------
def test_cli_profile_then_select(pool_dir, capsys):
    assert main(['profile', str(pool_dir), '--threads', '1', '--descendants', 's1,s2', '--warmup', '0',
                 '--repeats', '2', '--min-sample-ms', '0', '--progress', 'none']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('cpu: ') and ', 1 threads, ' in out[0]
    assert out[1] == '| name | median ms | spread ms (q1..q3) | min ms | img/s |'
    assert [line.split(' | ')[0] for line in out[3:5]] == ['| s1', '| s2'] and out[-1].startswith('written into')
    assert main(['select', str(pool_dir), '--max-gmacs', '0.0006', '--max-latency-ms', '1e6',
                 '--threads', '1']) == 0
    assert capsys.readouterr().out.strip() == 's2'
    assert main(['select', str(pool_dir), '--max-latency-ms', '5', '--threads', '1', '--batch-size', '4']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: no latency measured for cpu: ') \
        and '--batch-size 4 --threads 1' in err[0]
    assert main(['profile', str(pool_dir / 'nope')]) == 2
    assert capsys.readouterr().err.startswith('error: ')
