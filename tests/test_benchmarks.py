"""Every benchmark runs in its quick mode and returns finite positive numbers; ``torch.compile`` of a descendant
matches eager. Timings are never asserted: a shared CI runner cannot promise them."""
import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import timm
import torch

import timm_learngene  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.slow

# Two blocks per member (16 and 32 wide) at 32 px: the smallest pool with stitched descendants (s3:
# tiny[0..1] -> base[1]); it builds in milliseconds where deit_base_l6 (52M parameters) takes seconds, and
# inductor has few kernels to build. Distilled from timm's DeiT-Ti (patch 16, so teacher and members agree on
# 5 tokens at 32 px).
TINY_POOL = json.dumps(dict(
    name='tiny_l2', img_size=32, patch_size=16, num_classes=5,
    members=[dict(name='tiny', width=16, heads=2, depth=2), dict(name='base', width=32, heads=4, depth=2)],
    distill=dict(teacher='deit_tiny_patch16_224', teacher_width=192, teacher_depth=12, member_blocks=[0, 1],
                 teacher_blocks=[5, 11])))
# Each benchmark's --quick run, on the tiny pool where it takes one (the quick defaults are deit_base_l6-sized).
QUICK_ARGS = {
    'stitch_overhead': ['--pool', TINY_POOL, '--descendants', 's2,s3'],
    'distill_step': ['--pool', TINY_POOL],
    'load_descendant': ['--pool', TINY_POOL, '--descendant', 's3'],
    'finetune_step': ['--pool', TINY_POOL, '--descendants', 's1,s3'],
    'throughput': ['--pool', TINY_POOL],
    'cpu_training': ['--width', '32', '--depth', '2', '--heads', '2'],
}


def _finite_positive(value) -> bool:
    values = list(value.values()) if isinstance(value, dict) else [value]
    return bool(values) and all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


@pytest.mark.parametrize('name', sorted(QUICK_ARGS))
def test_quick_run_returns_finite_positive(name, capsys):
    value = importlib.import_module(f'benchmarks.{name}').main(['--quick', '--device', 'cpu'] + QUICK_ARGS[name])
    assert _finite_positive(value), value
    assert 'ratio' in capsys.readouterr().out.strip().splitlines()[-1]  # the ratio is printed last


def _compile_or_skip():
    bench = importlib.import_module('benchmarks.compile')
    reason = bench.unsupported_reason('cpu')
    if reason:
        pytest.skip(f'torch.compile unsupported here: {reason}')
    import torch._inductor.config as inductor_config
    inductor_config.compile_threads = 1  # in-process: faster than starting compile workers for a tiny graph
    return bench


def test_compiled_descendant_matches_eager():
    bench = _compile_or_skip()
    torch.manual_seed(0)
    desc = timm.create_model('learngene_pool', pool=TINY_POOL, descendant='s3').eval()
    assert desc.stitches, 'the test needs a stitched descendant'
    x = torch.randn(2, 3, 32, 32)
    compiled, seconds, _ = bench.compile_and_check(desc, x)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), desc(x), rtol=1e-4, atol=1e-4)
        x2 = torch.randn(2, 3, 32, 32)  # a new input through the same compiled graph
        torch.testing.assert_close(compiled(x2), desc(x2), rtol=1e-4, atol=1e-4)
    assert seconds > 0


def test_compile_benchmark_quick_run():
    bench = _compile_or_skip()
    speedup = bench.main(['--quick', '--device', 'cpu', '--pool', TINY_POOL, '--descendant', 's3'])
    assert _finite_positive(speedup)


def test_runner_writes_results(tmp_path):
    runner = importlib.import_module('benchmarks.__main__')
    out = tmp_path / 'results.md'
    assert runner.main(['--quick', '--device', 'cpu', '--only', 'stitch_overhead', '--output', str(out)]) == 0
    text = out.read_text()
    assert '## Machine' in text and f'| torch | {torch.__version__} |' in text
    assert '| stitch_overhead |' in text and '>= 0.97' in text
    assert 'Quick smoke run' in text


def test_profile_repeatability_quick_run_writes_its_report(tmp_path, capsys):
    bench = importlib.import_module('benchmarks.profile_repeatability')
    torch.manual_seed(0)
    pool = timm.create_model('learngene_pool', pool=TINY_POOL)
    pool_dir = timm_learngene.save_pool(pool, tmp_path / 'pool')
    config = (pool_dir / 'config.json').read_bytes()
    value = bench.main(['--quick', '--pool-dir', str(pool_dir), '--cases', 'x:1,x:2', '--output',
                        str(tmp_path / 'r.md')])
    assert _finite_positive(value) and value['worst_run_ratio'] >= 1
    text = (tmp_path / 'r.md').read_text()
    assert text.startswith('# Latency profiles: repeatability and order')
    assert [line.split(' | ')[0] for line in text.splitlines() if line.startswith('| tiny_l2')] == [
        '| tiny_l2, 32 px, batch 1', '| tiny_l2, 32 px, batch 2']
    assert sum(line.startswith('| s') for line in text.splitlines()) == 2 * 6  # 6 descendants, 2 cases
    out = capsys.readouterr().out
    assert text.strip() in out and 'ratio' in out.strip().splitlines()[-1]
    assert (pool_dir / 'config.json').read_bytes() == config  # the folder is only read


def test_profile_repeatability_analysis_on_known_profiles():
    from timm_learngene.profiling import DeviceSignature, Profile
    bench = importlib.import_module('benchmarks.profile_repeatability')
    sig = DeviceSignature('cpu', 'x', 2, 2, '2.14.1', 'fp32', 1)

    def prof(ms):
        return Profile(sig, {n: dict(median_ms=m, q1_ms=m - 0.1, q3_ms=m + 0.1) for n, m in ms.items()})
    gmacs = {'s1': 1.0, 's2': 2.0, 's3': 3.0}
    # s2 and s3 overlap (cannot be told apart); s1 is apart from both; s3 faster than s1 in both runs: an inversion
    run1, run2 = prof({'s1': 2.0, 's2': 1.5, 's3': 1.6}), prof({'s1': 2.2, 's2': 1.5, 's3': 1.55})
    res = bench.analyse(gmacs, run1, run2)
    assert (res['told_apart'], res['pairs'], res['inversions']) == (2, 3, [('s1', 's2'), ('s1', 's3')])
    assert res['inside'] == {'s1': False, 's2': True, 's3': True}
    assert res['worst_ratio'] == pytest.approx(1.1)
    assert res['spearman'] == pytest.approx(-0.5)
