"""Distillation: losses, gradients, frozen teacher, exact resume, two-process data parallel."""
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.models import save_for_hf

import timm_learngene  # noqa: F401  (registers the models)
from timm_learngene.distill import DenseDistiller, FeatureRecorder, kd_loss
from timm_learngene.errors import PoolSpecError
from timm_learngene.spec import DistillSpec, MemberSpec, PoolSpec

ROOT = Path(__file__).resolve().parents[1]


def _spec(classes=5):
    return PoolSpec('tiny_distill', (MemberSpec('tiny', 16, 2, 3), MemberSpec('base', 32, 4, 3)), img_size=32,
                    patch_size=8, num_classes=classes, distill=DistillSpec('t', 32, 3, (0, 1, 2), (0, 1, 2)))


def _teacher(classes=5, seed=0):
    torch.manual_seed(seed)
    return timm.create_model('vit_tiny_patch16_224', embed_dim=32, depth=3, num_heads=2, img_size=32, patch_size=8,
                             num_classes=classes)


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('teacher')
    save_for_hf(_teacher(), d)
    return d


@pytest.fixture(autouse=True)
def _reset_accelerate():
    from accelerate.state import AcceleratorState, PartialState
    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def _distiller(**kw):
    pool = timm.create_model('learngene_pool', pool=_spec())
    return DenseDistiller(pool, _teacher(), **kw)


def test_feature_recorder_matches_manual_forward():
    vit = _teacher().eval()
    rec = FeatureRecorder(vit.blocks, [1])
    x = torch.randn(2, 3, 32, 32)
    vit(x)
    got = rec.pop()
    h = vit._pos_embed(vit.patch_embed(x))
    h = vit.blocks[0](h)
    attn = vit.blocks[1].attn(vit.blocks[1].norm1(h))
    h = vit.blocks[1](h)
    torch.testing.assert_close(got[('block', 1)], h)
    torch.testing.assert_close(got[('attn', 1)], attn)


def test_kd_is_zero_for_equal_logits_and_positive_otherwise():
    z = torch.randn(4, 7)
    assert kd_loss(z, z).abs() < 1e-6
    assert kd_loss(z, torch.randn(4, 7), temperature=2.0) > 0


def test_loss_dict_terms_and_falls_on_fixed_batch():
    torch.manual_seed(0)
    d = _distiller()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    losses = d(x, y)
    assert {'total', 'ce', 'kd', 'block', 'attn', 'tiny', 'base'} <= set(losses)
    torch.testing.assert_close(losses['total'], losses['tiny'] + losses['base'])
    params = [p for p in d.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3)
    first = losses['total'].item()
    for _ in range(30):
        opt.zero_grad()
        loss = d(x, y)['total']
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first


def test_transforms_get_gradients_teacher_frozen_one_teacher_forward():
    d = _distiller()
    calls = []
    d.teacher.register_forward_hook(lambda *a: calls.append(1))
    t_before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    tr_before = {k: v.clone() for k, v in d.pool.transforms.state_dict().items()}
    opt = torch.optim.SGD([p for p in d.parameters() if p.requires_grad], lr=0.1)
    d.train()
    loss = d(torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,)))['total']
    assert len(calls) == 1, 'every member must share one teacher forward'
    assert not d.teacher.training, 'the teacher stays in eval mode'
    loss.backward()
    for name, p in d.pool.transforms.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in d.teacher.parameters())
    assert all(not p.requires_grad for p in d.pool.stitches.parameters())
    opt.step()
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, t_before[k]), k
    changed = [k for k, v in d.pool.transforms.state_dict().items() if not torch.equal(v, tr_before[k])]
    assert len(changed) == len(tr_before)


def test_teacher_mismatch_is_a_clear_error():
    pool = timm.create_model('learngene_pool', pool=_spec())
    wide = timm.create_model('vit_tiny_patch16_224', embed_dim=48, depth=3, num_heads=2, img_size=32, patch_size=8,
                             num_classes=5)
    with pytest.raises(PoolSpecError, match='width 48'):
        DenseDistiller(pool, wide)
    other_patch = timm.create_model('vit_tiny_patch16_224', embed_dim=32, depth=3, num_heads=2, img_size=32,
                                    patch_size=4, num_classes=5)
    with pytest.raises(PoolSpecError, match='tokens per image'):
        DenseDistiller(pool, other_patch)


def _args(out, teacher_dir, *extra):
    return ['--pool', json.dumps(_spec().to_dict()), '--teacher-checkpoint', str(teacher_dir),
            '--dataset', 'synthetic', '--train-limit', '64', '--eval-limit', '16', '--batch-size', '8',
            '--num-workers', '0', '--output', str(out), '--warmup-epochs', '0', '--mixup', '0', '--cutmix', '0',
            '--log-every', '1', '--seed', '3', *extra]


@pytest.mark.slow
def test_recipe_resume_equals_straight_run(tmp_path, teacher_dir):
    from timm_learngene.recipes import distill
    distill.main(_args(tmp_path / 'a', teacher_dir, '--max-steps', '4', '--no-eval'))
    straight = tmp_path / 'a' / 'pool'
    from accelerate.state import AcceleratorState, PartialState
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    distill.main(_args(tmp_path / 'b', teacher_dir, '--max-steps', '4', '--stop-after', '2', '--no-eval'))
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    distill.main(_args(tmp_path / 'b', teacher_dir, '--max-steps', '4', '--resume', str(tmp_path / 'b'),
                       '--no-eval'))
    resumed = tmp_path / 'b' / 'pool'
    a, b = load_file(straight / 'model.safetensors'), load_file(resumed / 'model.safetensors')
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    log = [json.loads(line) for line in (tmp_path / 'b' / 'log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in log if 'total' in r] == [1, 2, 3, 4]
    # the written pool loads as timm models
    d = timm.create_model(f'local-dir:{resumed}', descendant='s3', pretrained=True)
    assert d(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    config = json.loads((resumed / 'config.json').read_text())
    assert config['recipe']['distill']['max_steps'] == 4


