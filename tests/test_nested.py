"""The nested pool (timm_learngene/nested.py, recipes/train_nested.py): width slices of one ViT as models of
their own, trained through the slices, started from the ancestry by weight selection."""
import csv
import json

import pytest
import timm
import torch
from timm.models import save_for_hf

from timm_learngene.errors import ConfigError, PoolSpecError
from timm_learngene.nested import NestedViT, every_step, parse_sizes, size_cost
from timm_learngene.recipes import train_nested
from timm_learngene.spec import MemberSpec, PoolSpec, route_macs
from timm_learngene.weight_selection import select_weights

ARGS = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8, num_classes=5)


@pytest.fixture(autouse=True)
def _reset_accelerate():
    from accelerate.state import AcceleratorState, PartialState
    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def test_a_slice_is_a_plain_vit_and_trains_the_network(images):
    torch.manual_seed(0)
    net = NestedViT('vit_tiny_patch16_224', ARGS, ['16x1', '24x2', [32, 2]], slicing='even').eval()
    assert net.names == ['w16', 'w24', 'w32'] and set(net.state_dict()) == {f'base.{k}' for k in net.base.state_dict()}
    with torch.no_grad():
        for name in net.names:
            alone = net.slice_model(name).eval()
            assert alone.embed_dim == net.size(name)[0]
            torch.testing.assert_close(alone(images), net(images, name))
        torch.testing.assert_close(net(images), net.base(images))
    # a slice's loss reaches exactly the network's entries it selected: w16 reads 16 of the 32 residual channels
    net.train()
    net(images, 'w16').sum().backward()
    grad = net.base.patch_embed.proj.weight.grad.flatten(1).abs().sum(1)
    assert (grad > 0).sum() == 16 and torch.equal(torch.nonzero(grad > 0).flatten(), torch.arange(16) * 2)


def test_prefix_slices_lie_inside_each_other(images):
    """slicing='prefix': a narrower slice is the first channels, heads, head dims and units of every wider one
    with as many heads, so its loss reaches only the network's first entries."""
    torch.manual_seed(0)
    net = NestedViT('vit_tiny_patch16_224', ARGS, ['8x1', '16x1', '32x2'], slicing='prefix')
    s8, s16, s32 = (net.slice_state(n, detach=True) for n in ('w8', 'w16', 'w32'))
    assert torch.equal(s8['patch_embed.proj.weight'], s16['patch_embed.proj.weight'][:8])
    assert torch.equal(s8['blocks.0.mlp.fc1.weight'], s16['blocks.0.mlp.fc1.weight'][:32, :8])
    assert torch.equal(s8['blocks.1.attn.proj.weight'], s32['blocks.1.attn.proj.weight'][:8, :8])
    q = s16['blocks.0.attn.qkv.weight']  # q, k and v rows of the one head: the first 8 dims of each are w8's
    assert torch.equal(s8['blocks.0.attn.qkv.weight'], torch.cat([q[i * 16:i * 16 + 8, :8] for i in range(3)]))
    net(images, 'w8').sum().backward()
    grad = net.base.patch_embed.proj.weight.grad.flatten(1).abs().sum(1)
    assert torch.equal(torch.nonzero(grad > 0).flatten(), torch.arange(8))
    with pytest.raises(PoolSpecError, match=r"nested slicing is one of \['even', 'prefix'\], got 'odd'"):
        NestedViT('vit_tiny_patch16_224', ARGS, ['32x2'], slicing='odd')


def test_weight_selection_start_gives_each_slice_the_weight_selected_member():
    """A nested ViT as wide as the ancestry, started from it by weight selection: each slice is what weight
    selection takes from the ancestry for a model of the slice's width directly."""
    torch.manual_seed(0)
    anc = timm.create_model('vit_tiny_patch16_224', **dict(ARGS, depth=4)).eval()
    net = NestedViT('vit_tiny_patch16_224', ARGS, ['16x1', '32x2'], slicing='even')
    state = {k: v.detach() for k, v in anc.state_dict().items()}
    net.base.load_state_dict(select_weights(net.base.state_dict(), 32, 2, 2, state, anc))
    direct = timm.create_model('vit_tiny_patch16_224', **dict(ARGS, embed_dim=16, num_heads=1))
    expected = select_weights(direct.state_dict(), 16, 1, 2, state, anc)
    got = net.slice_state('w16', detach=True)
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in got)


@pytest.mark.parametrize('sizes, match', [
    (['16x1', '24x2'], r'the widest nested size must be the network itself \(32x2\), got 24x2'),
    (['16', '32x2'], r"a nested size is WIDTHxHEADS \(e.g. '96x2'\), got '16'"),
    (['15x2', '32x2'], 'the width must be a positive multiple of the heads'),
    (['16x1', '16x2', '32x2'], r'nested sizes repeat a width: \[16, 16, 32\]'),
    ([], 'at least one size'),
    (['16x4', '32x2'], 'cannot take heads of an ancestry with 2 heads'),
])
def test_nested_sizes_are_checked(sizes, match):
    with pytest.raises(PoolSpecError, match=match):
        NestedViT('vit_tiny_patch16_224', ARGS, sizes)


def test_every_step_is_the_widest_and_the_narrowest():
    assert every_step(1) == [0] and every_step(10) == [0, 9] and every_step(10, 2) == [0, 1, 9]
    assert every_step(3, 2) == [0, 1, 2]
    for bad in (0, 3, True, 1.5):
        with pytest.raises(ValueError, match=r'give 1 to 2 \(there are 3 sizes'):
            every_step(3, bad)


def test_size_cost_counts_as_the_pool_counts():
    params, macs = size_cost(24, 2, 2, img_size=32, patch_size=8, in_chans=3, num_classes=5)
    one = PoolSpec('x', (MemberSpec('m', 24, 2, 2),), img_size=32, patch_size=8, in_chans=3, num_classes=5)
    assert macs == route_macs(one, (('m', 0, 2),))
    assert params == sum(p.numel() for p in timm.create_model('vit_tiny_patch16_224', **dict(
        ARGS, embed_dim=24)).parameters())
    assert parse_sizes(['32x2', '16X1']) == [(16, 1), (32, 2)]


def test_train_nested_writes_every_size_with_test_and_val_top1(tmp_path):
    teacher = timm.create_model('vit_tiny_patch16_224', **dict(ARGS, depth=4))
    save_for_hf(teacher, tmp_path / 'teacher')
    base = ['--model-args', json.dumps(ARGS), '--sizes', '16x1,24x2,32x2', '--teacher-checkpoint',
            str(tmp_path / 'teacher'), '--dataset', 'synthetic', '--train-limit', '48', '--eval-limit', '16',
            '--batch-size', '8', '--num-workers', '0', '--log-every', '1']
    with pytest.raises(ConfigError, match=r'the widest nested size must be the network itself'):
        train_nested.main(base[:3] + ['16x1'] + base[4:] + ['--output', str(tmp_path / 'bad')])
    net = train_nested.main(base + ['--val-size', '16', '--max-steps', '2', '--sizes-per-step', '2',
                                    '--member-init', 'weight_selection', '--output', str(tmp_path / 'out')])
    rows = list(csv.DictReader(open(tmp_path / 'out' / 'sizes.csv')))
    assert [r['name'] for r in rows] == ['w16', 'w24', 'w32'] and all(r['top1'] and r['val_top1'] for r in rows)
    assert float(rows[0]['gmacs']) < float(rows[1]['gmacs']) < float(rows[2]['gmacs'])
    log = [json.loads(x) for x in (tmp_path / 'out' / 'log.jsonl').read_text().splitlines() if '"total"' in x]
    assert [sorted(k for k in r if k.startswith('route:')) for r in log] == [['route:w16', 'route:w32']] * 2
    saved = timm.create_model(f"local-dir:{tmp_path / 'out' / 'model'}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(saved(x), net.eval()(x))
    assert json.loads((tmp_path / 'out' / 'nested.json').read_text())['sizes'] == ['16x1', '24x2', '32x2']
    # --narrowest-every-step: the two narrowest train in every step with the widest, the rest is drawn
    for bad, match in ((['--narrowest-every-step', '3'], r'--narrowest-every-step 3: give 1 to 2 \(there are 3 sizes'),
                       (['--narrowest-every-step', '2', '--sizes-per-step', '2'],
                        r'--sizes-per-step 2: 3 routes are drawn in every step .* more than the 2 routes per step')):
        with pytest.raises(ConfigError, match=match):
            train_nested.main(base + bad + ['--output', str(tmp_path / 'bad')])
    four = base[:3] + ['8x1,16x1,24x2,32x2'] + base[4:]
    train_nested.main(four + ['--max-steps', '2', '--sizes-per-step', '3', '--narrowest-every-step', '2', '--no-eval',
                              '--output', str(tmp_path / 'two')])
    log = [json.loads(x) for x in (tmp_path / 'two' / 'log.jsonl').read_text().splitlines() if '"total"' in x]
    assert [sorted(k for k in r if k.startswith('route:')) for r in log] == [['route:w16', 'route:w32', 'route:w8']] * 2
    assert not (tmp_path / 'bad').exists()
