"""Documented failures end in one ``error:`` line saying what to do, exit status 2: a missing data dir (reported
before any ancestry or pool is loaded), an ancestry that cannot be fetched offline, a push offline or without a
network."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm

from conftest import tiny_spec
from timm_learngene.pool_writer import save_pool
from timm_learngene.errors import ConfigError, DatasetError, HubError
from timm_learngene.recipes import distill, evaluate, finetune

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pool_dir(tmp_path):
    pool = timm.create_model('learngene_pool', pool=tiny_spec(6))
    return save_pool(pool, tmp_path / 'pool')


def test_the_data_dir_is_checked_before_any_ancestry_or_pool_is_loaded(tmp_path, pool_dir, monkeypatch):
    def never(*a, **kw):
        raise AssertionError('loaded before the data was checked')
    monkeypatch.setattr(distill, 'load_ancestry', never)
    monkeypatch.setattr(distill, 'build_pool', never)
    monkeypatch.setattr(finetune, 'load_pool', never)
    monkeypatch.setattr(evaluate, 'load_pool', never)
    missing = tmp_path / 'no_data'
    data = ['--dataset', 'folder', '--data-dir', str(missing), '--output', str(tmp_path / 'out')]
    for main, extra in ((distill.main, ['--teacher', 'deit_base_patch16_224']),
                        (finetune.main, ['--pool', str(pool_dir)]), (evaluate.main, ['--pool', str(pool_dir)])):
        with pytest.raises(DatasetError, match=str(missing)):
            main(data + extra)
    (missing / 'train').mkdir(parents=True)
    with pytest.raises(DatasetError, match=r'has no val/ folder'):  # evaluation is on by default in distill
        distill.main(data + ['--teacher', 'deit_base_patch16_224'])
    with pytest.raises(DatasetError, match='Fashion-MNIST not found'):
        distill.main(['--dataset', 'fashion_mnist', '--data-dir', str(missing)])


@pytest.mark.slow
def test_an_ancestry_that_cannot_be_fetched_offline_is_one_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'), OMP_NUM_THREADS='1')
    env.pop('TIMM_LEARNGENE_TRACEBACK', None)
    res = subprocess.run([sys.executable, str(ROOT / 'recipes' / 'distill.py'), '--dataset', 'synthetic', '--pool',
                          tiny_spec(6).to_json(), '--teacher', 'vit_tiny_patch16_224', '--max-steps', '1',
                          '--output', str(tmp_path / 'out')], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('distill.py: error: could not load the pretrained ancestry '
                                               "'vit_tiny_patch16_224': HF_HUB_OFFLINE is set"), err
    assert '--teacher-checkpoint' in err[0]


def _push(pool_dir, capsys):
    from timm_learngene.__main__ import main
    rc = main(['push', str(pool_dir), 'org/pool', '--token', 'hf_test'])
    return rc, capsys.readouterr().err


def test_push_offline_is_one_line(pool_dir, monkeypatch, capsys):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    rc, err = _push(pool_dir, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f'error: pushing {pool_dir} to org/pool: HF_HUB_OFFLINE is set') and '--stage-only' in err


def test_push_without_a_network_is_one_line(pool_dir, monkeypatch, capsys):
    import socket
    from huggingface_hub import constants
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(('127.0.0.1', 0))
        dead = f'http://127.0.0.1:{s.getsockname()[1]}'
    monkeypatch.setattr(constants, 'ENDPOINT', dead)
    rc, err = _push(pool_dir, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f'the Hub at {dead} cannot be reached' in err and 'HF_ENDPOINT' in err and '--stage-only' in err


def test_hub_errors_name_the_case_and_only_hub_failures_are_mapped():
    import types
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    from timm_learngene.hub_errors import hub_error
    response = types.SimpleNamespace(headers={}, request=None, status_code=404)
    err = hub_error(RepositoryNotFoundError('404', response=response), 'loading x', 'pass a folder')
    assert isinstance(err, HubError) and 'was not found' in str(err) and str(err).endswith('; or pass a folder')
    assert 'gated' in str(hub_error(GatedRepoError('403', response=response), 'loading x', 'y'))
    assert 'cannot be reached' in str(hub_error(ConnectionRefusedError(111, 'refused'), 'loading x', 'y'))
    assert hub_error(KeyError('a bug'), 'loading x', 'y') is None


def _reset():
    from accelerate.state import AcceleratorState, PartialState
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def test_num_classes_puts_new_heads_on_every_member(tmp_path, pool_dir, caplog):
    """A pool of 5 classes finetuned and evaluated on data of 3 (--num-classes), and a warning when the pool has
    more outputs than the data has classes."""
    # fused attention left on: timm's global switch would outlive the test (and change later tests' numbers)
    common = ['--dataset', 'synthetic', '--num-workers', '0', '--cpu', '--mixed-precision', 'no']
    train = common + ['--max-steps', '1', '--batch-size', '4', '--train-limit', '8', '--stitch-init', 'none',
                      '--kd-weight', '0', '--routes-per-step', '1']
    try:
        pool = finetune.main(train + ['--pool', str(pool_dir), '--num-classes', '3', '--output', str(tmp_path / 'ft')])
    finally:
        _reset()
    assert pool.pool_spec.num_classes == 3
    assert all(m.head.out_features == 3 for m in pool.members.values())
    teacher = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, embed_dim=16, depth=1,
                                num_heads=2, num_classes=5)
    timm.models.save_for_hf(teacher, tmp_path / 'teacher', safe_serialization=True)
    with pytest.raises(ConfigError, match=r'ancestry has 5 outputs and the pool 3.*--kd-weight 0'):
        finetune.main(train[:-4] + ['--routes-per-step', '1', '--pool', str(pool_dir), '--num-classes', '3',
                                    '--teacher-checkpoint', str(tmp_path / 'teacher'), '--output',
                                    str(tmp_path / 'ft2')])
    _reset()
    with caplog.at_level('INFO', logger='timm_learngene'):
        try:
            rows = evaluate.main(common + ['--pool', str(pool_dir), '--num-classes', '3', '--no-throughput',
                                           '--eval-limit', '8', '--batch-size', '8', '--no-write-pool',
                                           '--output', str(tmp_path / 'ev')])
        finally:
            _reset()
    assert rows and 'new, untrained head' in caplog.text
    # a 5-output pool on a 3-class folder: it runs, with one warning naming --num-classes
    from PIL import Image
    for split in ('train', 'val'):
        for c in range(3):
            (tmp_path / 'data' / split / f'c{c}').mkdir(parents=True)
            Image.new('RGB', (32, 32), (c * 80, 0, 0)).save(tmp_path / 'data' / split / f'c{c}' / '0.png')
    caplog.clear()
    with caplog.at_level('WARNING', logger='timm_learngene'):
        try:
            evaluate.main(['--dataset', 'folder', '--data-dir', str(tmp_path / 'data')] + common[2:] +
                          ['--pool', str(pool_dir), '--no-throughput', '--no-write-pool', '--output',
                           str(tmp_path / 'ev2')])
        finally:
            _reset()
    warned = [r.getMessage() for r in caplog.records if 'never a target' in r.getMessage()]
    assert len(warned) == 1 and 'has 3 classes but the model has 5 outputs' in warned[0]
    assert '--num-classes 3' in warned[0]
