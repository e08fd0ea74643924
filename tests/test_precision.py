"""``mixed_precision: auto``: explicit values pass, the launcher wins, the probe follows the faster step and leaves
the weights and the random state as they were."""
import json
import random
import time

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from timm_learngene.training.precision import MIXED_PRECISION_CHOICES, make_probe_step, resolve_mixed_precision

CPU = torch.device('cpu')


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch):
    monkeypatch.delenv('ACCELERATE_MIXED_PRECISION', raising=False)


def _fake_step(fp32_s: float, bf16_s: float, calls=None):
    def step(dtype):
        if calls is not None:
            calls.append(dtype)
        time.sleep(bf16_s if dtype is torch.bfloat16 else fp32_s)
    return step


def _never(dtype):
    raise AssertionError('no probe expected')


@pytest.mark.parametrize('value', ['no', 'fp16', 'bf16'])
def test_explicit_values_pass_through_without_a_probe(value, monkeypatch):
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'fp16')  # an explicit value wins over the launcher too
    chosen, record = resolve_mixed_precision(value, _never, CPU)
    assert chosen == value and record == {'requested': value, 'chosen': value, 'reason': 'explicit'}


def test_the_launcher_wins_over_auto(monkeypatch):
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'bf16')
    chosen, record = resolve_mixed_precision('auto', _never, CPU)
    assert chosen == 'bf16' and 'ACCELERATE_MIXED_PRECISION' in record['reason']
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'half')
    with pytest.raises(ValueError, match="ACCELERATE_MIXED_PRECISION='half'"):
        resolve_mixed_precision('auto', _never, CPU)


def test_unknown_request_names_the_choices():
    with pytest.raises(ValueError, match='one of auto, no, fp16, bf16'):
        resolve_mixed_precision('fp32', _never, CPU)
    assert MIXED_PRECISION_CHOICES == ('auto', 'no', 'fp16', 'bf16')


def test_cuda_takes_bf16_where_supported_without_a_probe(monkeypatch):
    for supported, want in ((True, 'bf16'), (False, 'no')):
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: supported)
        assert resolve_mixed_precision('auto', _never, torch.device('cuda'))[0] == want


@pytest.mark.parametrize('fp32_s,bf16_s,want', [(0.04, 0.004, 'bf16'), (0.004, 0.04, 'no')])
def test_the_probe_picks_the_faster_precision_and_records_it(fp32_s, bf16_s, want):
    calls = []
    chosen, record = resolve_mixed_precision('auto', _fake_step(fp32_s, bf16_s, calls), CPU, steps=3, warmup=1,
                                             decisive=None)
    assert chosen == want and record['chosen'] == want and record['requested'] == 'auto'
    assert set(record['seconds_per_step']) == {'no', 'bf16'}
    assert record['seconds_per_step']['bf16'] >= bf16_s and record['seconds_per_step']['no'] >= fp32_s
    assert json.loads(json.dumps(record)) == record  # goes into the run's config as is
    # warmup once each, then 3 timed rounds in alternating order
    assert calls == [None, torch.bfloat16, None, torch.bfloat16, torch.bfloat16, None, None, torch.bfloat16]


def test_the_probe_restores_the_random_state():
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)
    want = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)

    def noisy(dtype):
        torch.rand(100)
        random.random()
        np.random.rand(5)

    resolve_mixed_precision('auto', noisy, CPU, steps=2)
    got = (torch.rand(3), random.random(), np.random.rand())
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    assert got[1:] == want[1:]


def test_a_failing_step_still_restores_the_random_state():
    torch.manual_seed(3)
    before = torch.get_rng_state()

    def boom(dtype):
        torch.rand(10)
        raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        resolve_mixed_precision('auto', boom, CPU)
    assert torch.equal(torch.get_rng_state(), before)


def test_make_probe_step_runs_both_precisions_and_leaves_the_weights():
    torch.manual_seed(0)
    model = timm.create_model('vit_tiny_patch16_224', embed_dim=16, depth=1, num_heads=2, img_size=16, patch_size=8,
                              num_classes=3, drop_path_rate=0.1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = (torch.randn(2, 3, 16, 16), torch.tensor([0, 2]))
    seen = []

    def loss_fn(m, b):
        logits = m(b[0])
        seen.append(logits.dtype)
        return {'total': F.cross_entropy(logits.float(), b[1])}

    step = make_probe_step(model, batch, loss_fn)
    chosen, record = resolve_mixed_precision('auto', step, CPU, steps=1, warmup=0)
    assert chosen in ('no', 'bf16') and record['probe_steps'] == 1
    assert set(seen) == {torch.float32, torch.bfloat16}
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match='batch holding a tensor'):
        make_probe_step(model, {'x': [1, 2]}, loss_fn)


def test_a_decisive_round_ends_the_probe_early():
    calls = []
    chosen, record = resolve_mixed_precision('auto', _fake_step(0.002, 0.03, calls), CPU, steps=3, warmup=1)
    assert chosen == 'no' and record['probe_steps'] == 1 and len(calls) == 4  # warmup and one timed round
    calls.clear()
    _, record = resolve_mixed_precision('auto', _fake_step(0.02, 0.021, calls), CPU, steps=3, warmup=1)
    assert record['probe_steps'] == 3 and len(calls) == 8  # close: every round is timed
    with pytest.raises(ValueError, match='decisive > 1'):
        resolve_mixed_precision('auto', _never, CPU, decisive=1.0)
