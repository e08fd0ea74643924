"""Known-value tests added for the mutants that ``make mutants`` found alive (issue 17, docs/mutants.md).

Each test pins a value, a default, a boundary or a message that a one-line change in the maths modules would alter
without any other test noticing. Expected values are literals worked out by hand (the arithmetic is written out
in the test) or a few lines of plain torch/json, never the helper under test. Fast: every model here is tiny.
"""
import json
import re
import types

import pytest
import timm
import torch
from torch import nn

import timm_learngene  # noqa: F401  (registers the models)
from timm_learngene.distill import DenseDistiller, FeatureRecorder, check_teacher, feature_loss, teacher_shape
from timm_learngene.errors import PoolSpecError, RouteError
from timm_learngene.evaluation import descendant_rows, write_csv, write_markdown
from timm_learngene.finetune import DescendantTrainer, RouteSampler, set_trainable
from timm_learngene.losses import label_kd_loss
from timm_learngene.selection import BudgetError, select
from timm_learngene.spec import (
    DistillSpec, MemberSpec, PoolSpec, _deit_base_pool, _SPECS, enumerate_descendants, find_descendant,
    get_pool_spec, pool_params, register_pool_spec, route_name, stitch_window, validate_route,
)
from timm_learngene.stitch_init import ridge_compose

from conftest import IMG, NUM_CLASSES, PATCH, tiny_spec

DEPTH = 6


def _teacher(width=48, depth=12, heads=3, img=IMG, classes=NUM_CLASSES):
    torch.manual_seed(1)
    return timm.create_model('vit_tiny_patch16_224', embed_dim=width, depth=depth, num_heads=heads, img_size=img,
                             patch_size=PATCH, num_classes=classes)


def _pool(distill=True):
    torch.manual_seed(0)
    return timm.create_model('learngene_pool', pool=tiny_spec(DEPTH, distill=distill))


def _images(n=2):
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))


# ---- distill: the ancestry's shape, its checks, the distiller's defaults ----------------------------------------
class _FakeViT(nn.Module):
    """Only the attributes teacher_shape reads."""

    def __init__(self, depth, grid, num_classes, num_features, embed_dim=None, prefix=None):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Identity() for _ in range(depth))
        self.patch_embed = types.SimpleNamespace(grid_size=grid)
        self.num_classes, self.num_features = num_classes, num_features
        if embed_dim is not None:
            self.embed_dim = embed_dim
        if prefix is not None:
            self.num_prefix_tokens = prefix


def test_teacher_shape_reads_width_tokens_and_prefix_tokens():
    # a 2 x 3 grid (not square) and two prefix tokens (class + distillation token, as in a distilled DeiT)
    assert teacher_shape(_FakeViT(4, (2, 3), 7, num_features=16, embed_dim=8, prefix=2)) == dict(
        width=8, depth=4, tokens=2 * 3 + 2, num_classes=7)
    # no embed_dim: the width is num_features; no num_prefix_tokens: one class token
    assert teacher_shape(_FakeViT(5, (3, 3), 9, num_features=12)) == dict(width=12, depth=5, tokens=10,
                                                                       num_classes=9)


def test_teacher_shape_refuses_a_model_without_blocks_or_patch_embed():
    with pytest.raises(PoolSpecError, match=r'must be a timm ViT-like model with \.blocks and \.patch_embed, got '
                                            r'Linear$'):
        teacher_shape(nn.Linear(2, 2))
    half = nn.Module()
    half.blocks = nn.ModuleList([nn.Identity()])  # blocks but no patch_embed
    with pytest.raises(PoolSpecError, match='got Module$'):
        teacher_shape(half)


def test_check_teacher_names_every_mismatch():
    pool = _pool()
    wrong = _teacher(width=24, depth=4, heads=3, img=16, classes=3)
    msg = ("the ancestry does not fit pool 'tiny_l6': it has width 24 (spec says 48); depth 4 (spec says 12); "
           "5 tokens per image (the pool's members have 17: img 32, patch 8, one class token); 3 classes (the pool "
           "has 5). Pick a matching pool spec or teacher")
    with pytest.raises(PoolSpecError, match='^' + re.escape(msg) + '$'):
        check_teacher(wrong, pool)
    with pytest.raises(PoolSpecError, match=r"^pool 'tiny_l6' has no distill section \(teacher width/depth, "
                                            r"matched blocks\); it cannot be distilled$"):
        check_teacher(_teacher(), _pool(distill=False))


def test_layer_norm_epsilon_is_added_and_relative_to_the_mean_variance():
    from timm_learngene.distill import _layer_norm
    x = torch.tensor([[1., -1.], [3., -3.]])   # token variances 1 and 9: mean 5, eps = 1e-5 * 5
    want = torch.tensor([[1., -1.], [3., -3.]], dtype=torch.float64) / torch.tensor([[1.00005], [9.00005]],
                                                                                      dtype=torch.float64).sqrt()
    torch.testing.assert_close(_layer_norm(x).double(), want, rtol=1e-7, atol=0)
    torch.testing.assert_close(_layer_norm(1e-4 * x).double(), want, rtol=1e-6, atol=0)


def test_feature_loss_default_is_the_raw_mse():
    s = torch.tensor([[[1., 2.], [3., 4.]]])
    t = torch.tensor([[[0., 0.], [1., 1.]]])
    # (1 + 4 + 4 + 9) / 4
    assert feature_loss(s, t).item() == pytest.approx(4.5)


def test_distiller_defaults_freeze_teacher_and_stitches_and_train_keeps_the_teacher_in_eval():
    pool, teacher = _pool(), _teacher()
    d = DenseDistiller(pool, teacher)
    # design step 3 defaults (docs/design.md): alpha 0.1, T 1, beta_block = beta_attn = 1, no smoothing, raw MSE
    assert (d.alpha, d.temperature, d.beta_block, d.beta_attn, d.smoothing, d.feature_norm) == (
        0.1, 1.0, 1.0, 1.0, 0.0, 'none')
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(p.requires_grad for p in pool.stitches.parameters())
    assert all(p.requires_grad for p in pool.members.parameters())
    d.eval()
    assert not pool.training
    d.train()
    assert pool.training and d.training and not teacher.training


def test_evaluate_logits_are_the_teacher_and_each_member_alone():
    pool, teacher = _pool(), _teacher()
    d = DenseDistiller(pool, teacher).eval()
    x = _images()
    out = d.evaluate_logits(x)
    assert all(not rec.recorded for rec in d._member_rec.values())  # each member's recorded features were dropped
    with torch.no_grad():
        want = {'teacher': teacher(x), 'tiny': pool(x, (('tiny', 0, DEPTH),)), 'base': pool(x, (('base', 0, DEPTH),))}
    assert set(out) == set(want)
    for k in want:
        torch.testing.assert_close(out[k], want[k], msg=k)


def test_feature_recorder_remove_is_idempotent():
    blk = nn.Module()
    blk.attn = nn.Identity()
    blk.forward = lambda x: blk.attn(x)
    rec = FeatureRecorder([blk], [0])
    blk(torch.ones(1))
    assert set(rec.recorded) == {('block', 0), ('attn', 0)}
    rec.remove()
    rec.remove()
    rec.pop()
    blk(torch.ones(1))
    assert rec.recorded == {}


# ---- losses: label_kd_loss defaults ------------------------------------------------------------------------------
def test_label_kd_loss_defaults_are_plain_unsmoothed_ce_and_no_kd_weight():
    logits = torch.tensor([[0., math_log(3.)]])   # softmax = (1/4, 3/4)
    y = torch.tensor([0])
    out = label_kd_loss(logits, y)
    assert set(out) == {'ce', 'total'}
    assert out['ce'].item() == pytest.approx(math_log(4.))      # -log(1/4), no smoothing
    assert out['total'].item() == pytest.approx(math_log(4.))   # ce_weight 1
    out = label_kd_loss(logits, y, teacher_logits=torch.tensor([[5., 0.]]))
    assert out['kd'].item() > 0.1
    assert out['total'].item() == pytest.approx(math_log(4.))   # kd_weight 0 by default


def math_log(v):
    return float(torch.log(torch.tensor(v, dtype=torch.float64)))


# ---- finetune: route sampling, trainable parts, the trainer's defaults -------------------------------------------
ROUTES = ['r0', 'r1', 'r2', 'r3', 'r4']


def test_route_sampler_default_seed_is_zero():
    g = torch.Generator().manual_seed(0)
    want = [ROUTES[int(torch.randint(5, (1,), generator=g))] for _ in range(8)]
    s = RouteSampler(ROUTES)
    assert [s.draw() for _ in range(8)] == want


def test_route_sampler_takes_every_route_per_step_and_refuses_non_integers():
    s = RouteSampler(ROUTES, per_step=5)
    for _ in range(3):
        assert sorted(s.draw_step()) == ROUTES
    for bad in (True, 1.5, 0):
        with pytest.raises(ValueError, match=r'routes per step must be a whole number >= 1'):
            RouteSampler(ROUTES, per_step=bad)
    with pytest.raises(ValueError, match='^no routes to train$'):
        RouteSampler([])


def test_set_trainable_freezes_what_the_mode_does_not_train():
    pool = _pool()
    for p in pool.parameters():
        p.requires_grad_(False)
    routes = set_trainable(pool, 'stitches')
    # 2 members of depth 6, kernel 2, stride 1: 3 * 6 - 2 = 16 stitched routes, the 2 members alone excluded
    assert len(routes) == 16 and all(len(r) == 2 for r in routes)
    assert not any(p.requires_grad for p in pool.members.parameters())
    assert all(p.requires_grad for p in pool.stitches.parameters())
    assert not any(p.requires_grad for p in pool.transforms.parameters())
    for p in pool.transforms.parameters():
        p.requires_grad_(True)
    routes = set_trainable(pool, 'all')
    assert len(routes) == 18 and sum(len(r) == 1 for r in routes) == 2
    assert all(p.requires_grad for p in pool.members.parameters())
    assert all(p.requires_grad for p in pool.stitches.parameters())
    assert not any(p.requires_grad for p in pool.transforms.parameters())
    assert len(set_trainable(_pool(distill=False), 'stitches')) == 16   # no transforms to freeze
    with pytest.raises(ValueError, match=r"^unknown train mode 'some'; choose one of \('all', 'stitches'\)$"):
        set_trainable(pool, 'some')


def test_descendant_trainer_defaults_freezing_and_train_mode():
    pool, teacher = _pool(), _teacher()
    t = DescendantTrainer(pool, teacher)
    # design step 7 defaults (docs/design.md): CE and KD weighted 0.5 each, T 1, no smoothing
    assert (t.ce_weight, t.kd_weight, t.temperature, t.smoothing) == (0.5, 0.5, 1.0, 0.0)
    assert not any(p.requires_grad for p in teacher.parameters())
    t.eval()
    t.train()
    assert pool.training and not teacher.training
    # kd_weight 0: the ancestry is dropped, so no KD term and no teacher forward
    t0 = DescendantTrainer(pool, _teacher(), kd_weight=0)
    assert t0.teacher is None
    out = t0(_images(), torch.tensor([0, 1]), (('tiny', 0, DEPTH),))
    assert 'kd' not in out
    with pytest.raises(ValueError, match=r'^KD needs an ancestry: pass a teacher, or set kd_weight to 0 '
                                         r'\(labels only\)$'):
        DescendantTrainer(pool)
    with pytest.raises(ValueError, match=r'^no route given: pass a route, a descendant name, or a non-empty list '
                                         r'of them$'):
        t0(_images(), torch.tensor([0, 1]), [])


# ---- select: the message, metric choice, ties, budgets after a non-fitting descendant ----------------------------
def test_select_message_names_the_smallest_descendant():
    spec = get_pool_spec('deit_base_l6')
    # s1 = tiny6 at 224 px: 641,388,288 MACs and 3,048,232 params (tests/test_known_values.py)
    msg = ('no descendant fits max_gmacs=None, max_params=3048231, max_latency_ms=None; the smallest is s1 '
           '(0.641 GMACs, 3.05M params)')
    with pytest.raises(BudgetError, match='^' + re.escape(msg) + '$'):
        select(spec, max_params=3_048_231)
    with pytest.raises(TypeError, match=r'^select takes a pool folder, a LearngenePool or a PoolSpec, got int$'):
        select(42)


def _metric_pool(metrics):
    pool = _pool(distill=False)
    pool.metrics = metrics
    return pool


def test_select_prefers_val_top1_then_top1_and_breaks_ties_by_fewer_macs():
    names = [f's{i}' for i in range(1, 19)]
    # val_top1 everywhere: s3 best on validation (s17 best on test)
    m = {n: {'top1': 50.0, 'val_top1': 40.0} for n in names}
    m['s3']['val_top1'], m['s17']['top1'] = 60.0, 90.0
    assert select(_metric_pool(m)) == 's3'
    # top1 only: s17; one descendant without val_top1 is enough to fall back to top1
    del m['s5']['val_top1']
    assert select(_metric_pool(m)) == 's17'
    # equal accuracy: the cheaper one (s2 has fewer MACs than s9)
    m = {n: {'top1': 10.0} for n in names}
    m['s2']['top1'] = m['s9']['top1'] = 70.0
    assert select(_metric_pool(m)) == 's2'


def test_select_latency_budget_skips_a_slow_descendant_and_reports_its_latency(tmp_path):
    from timm_learngene.profiling import Profile, device_signature, write_profile
    names = [f's{i}' for i in range(1, 19)]
    ms = {n: 5.0 for n in names}
    ms['s1'], ms['s2'] = 9.0, 1.5   # the smallest is slow, the next fits
    folder = timm_learngene.save_pool(_pool(distill=False), tmp_path / 'pool')
    sig = device_signature('cpu')
    write_profile(folder, Profile(sig, {n: dict(median_ms=v, q1_ms=v, q3_ms=v) for n, v in ms.items()}))
    assert select(folder, max_latency_ms=2.0) == 's2'
    msg = ('no descendant fits max_gmacs=None, max_params=None, max_latency_ms=1.0; the smallest is s1 '
           f'(0.000 GMACs, 0.02M params, 9.00 ms on {sig.label})')
    with pytest.raises(BudgetError, match='^' + re.escape(msg) + '$'):
        select(folder, max_latency_ms=1.0)


def test_select_params_budget_skips_a_larger_descendant_ranked_before_a_smaller_one():
    # 256 tokens (16 px, patch 1): base2 alone has fewer MACs than tiny2[0..0]->base2[0..1] but more params
    spec = PoolSpec('wide_grid', (MemberSpec('tiny', 8, 1, 2), MemberSpec('base', 32, 1, 2)), img_size=16,
                    patch_size=1, in_chans=1, num_classes=2)
    infos = {d.name: d for d in enumerate_descendants(spec)}
    # base2: embed 32+32, cls 32, pos 257*32, 2 blocks of 12,704 (32 wide, hidden 128), norm 64, head 66 = 33,858
    # tiny2[0..0]->base2[0..1]: embed 8+8, cls 8, pos 257*8, 1 tiny block of 872, 2 base blocks, stitch 8*32+32,
    # norm 64, head 66 = 28,778
    assert (infos['s4'].route_label, infos['s4'].params) == ('base2', 33_858)
    assert (infos['s5'].route_label, infos['s5'].params) == ('tiny2[0..0]->base2[0..1]', 28_778)
    assert max((d for d in infos.values() if d.params <= 28_778), key=lambda d: d.macs).name == 's5'
    assert select(spec, max_params=28_778) == 's5'


# ---- evaluation: rows, tables, latency -----------------------------------------------------------------------------
def test_descendant_rows_round_and_filter():
    pool = _pool(distill=False)
    infos = {d.name: d for d in pool.descendants}
    acc = {'s2': 81.23456, 's2_top5': 99.12345, 's2_val': 80.4567, 's5': 12.3, 's1': 1.0}
    speed = {'s5': {'img_s': 100.5, 'latency_ms': 2.25}}
    rows = descendant_rows(pool, acc, speed, names=['s5', 's2'])   # in the pool's order, s1 left out
    d2, d5 = infos['s2'], infos['s5']
    assert rows == [
        dict(name='s2', route=d2.route_label, params=d2.params, gmacs=round(d2.macs / 1e9, 4), top1=81.235,
             top5=99.123, val_top1=80.457),
        dict(name='s5', route=d5.route_label, params=d5.params, gmacs=round(d5.macs / 1e9, 4), top1=12.3,
             img_s=100.5, latency_ms=2.25),
    ]
    assert rows[0]['gmacs'] == 0.0006   # 592,768 MACs
    plain = descendant_rows(pool)
    assert [r['name'] for r in plain] == [f's{i}' for i in range(1, 19)]
    assert set(plain[0]) == {'name', 'route', 'params', 'gmacs'}


def test_write_markdown_and_csv_known_text(tmp_path):
    rows = [dict(name='s1', params=3_048_232, gmacs=0.64139, top1=81.234),
            dict(name='s2', params=10_416_616, gmacs=1.0, top1=None, note='x'),
            dict(name='s3', params=2.5, gmacs=12.3456, top1='', note=7),
            dict(name='s4', params=1_005_001, gmacs=0.5, top1=0.5)]
    want = ('## Title\n\n'
            '| name | params | gmacs | top1 | note |\n'
            '|---|---|---|---|---|\n'
            '| s1 | 3.05M | 0.641 | 81.23 |  |\n'
            '| s2 | 10.42M | 1.00 |  | x |\n'
            '| s3 | 2.50 | 12.35 |  | 7 |\n'
            '| s4 | 1.01M | 0.5 | 0.50 |  |\n')   # 1,005,001 / 10^6 = 1.005001 rounds up
    assert write_markdown(rows, tmp_path / 't.md', title='Title') == want
    assert (tmp_path / 't.md').read_text() == want
    assert write_markdown(rows[:1]).startswith('| name |')
    path = write_csv(rows, tmp_path / 't.csv')
    assert path == tmp_path / 't.csv'
    assert path.read_bytes() == (b'name,params,gmacs,top1,note\r\n'
                                 b's1,3048232,0.64139,81.234,\r\n'
                                 b's2,10416616,1.0,,x\r\n'
                                 b's3,2.5,12.3456,,7\r\n'
                                 b's4,1005001,0.5,0.5,\r\n')


def test_ridge_compose_default_lambda_is_one_hundredth():
    # W_e = diag(1, 2) (D = d_end = 2), W_f = I, b_f - b_e = (1, 1): gram = diag(1, 4), m = 2.5, reg = 0.025 I
    we, wf = torch.tensor([[1., 0.], [0., 2.]]), torch.eye(2)
    w, b = ridge_compose(wf, torch.ones(2), we, torch.zeros(2))
    torch.testing.assert_close(w, torch.tensor([[1 / 1.025, 0.], [0., 2 / 4.025]]))
    torch.testing.assert_close(b, torch.tensor([1 / 1.025, 2 / 4.025]))


# ---- checksum: more than one word past the 8-byte boundary ----------------------------------------------------------
def test_checksum_of_ten_whole_words():
    from timm_learngene.checksum import checksum_bytes
    # bytes 0..79 as ten little-endian words: byte b of word i is 8i + b, so the words sum to
    # sum_b 256^b * sum_i (8i + b) = sum_b 256^b * (360 + 10 b), taken mod 2^64
    want = sum(256 ** b * (360 + 10 * b) for b in range(8)) % 2 ** 64
    assert f'{want:016x}' == 'afa59b91877d7368'
    assert checksum_bytes(bytes(range(80))) == 'afa59b91877d7368'


# ---- accuracy and stitch init: mutmut skips decorated functions, so these were found on a copy with the
# @torch.no_grad() decorators turned into with-blocks (docs/mutants.md, "Not mutated")
def test_accuracy_of_one_and_two_samples():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from timm_learngene.training.metrics import accuracy
    try:
        acc = Accelerator(cpu=True)
        logits = torch.tensor([[0., 2., 1.], [3., 0., 1.]])
        one = [(logits[:1], torch.tensor([1]))]
        assert accuracy(acc, lambda x: {'m': x}, one) == {'m': 100.0}       # 1 of 1, not 1 of max(2, 1)
        two = [(logits, torch.tensor([1, 2]))]
        assert accuracy(acc, lambda x: {'m': x}, two, topk=(1, 2)) == {'m': 50.0, 'm_top2': 100.0}
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()


def _stitches(pool):
    return {k: v.detach().clone() for k, v in pool.stitches.state_dict().items()}


def test_init_stitches_defaults_lstsq_and_lambda_one_hundredth():
    from timm_learngene.stitch_init import init_stitches
    images = _images(3)
    a, b = _pool(), _pool()
    init_stitches(a, images=images)
    init_stitches(b, 'lstsq', images)
    assert _stitches(a).keys() == _stitches(b).keys()
    for k, v in _stitches(a).items():
        torch.testing.assert_close(v, _stitches(b)[k], rtol=0, atol=0)
    a, b, c = _pool(), _pool(), _pool()
    init_stitches(a, 'learngene')
    init_stitches(b, 'learngene', lam=0.01)
    init_stitches(c, 'learngene', lam=0.5)
    sa, sb, sc = _stitches(a), _stitches(b), _stitches(c)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    assert all((sa[k] - sc[k]).abs().max() > 1e-3 for k in sa if k.endswith('weight'))   # lam reaches the solve


def test_init_stitches_refuses_what_it_cannot_solve():
    from timm_learngene.stitch_init import init_stitches
    with pytest.raises(PoolSpecError, match=r"^stitch init 'transpose' needs the distillation transforms, and pool "
                                            r"'tiny_l6' has none"):
        init_stitches(_pool(distill=False), 'transpose')
    with pytest.raises(ValueError, match=r"^stitch init 'lstsq' needs calibration images \(SN-Net uses ~100 "
                                         r"training images\)$"):
        init_stitches(_pool(), 'lstsq', torch.empty(0, 3, IMG, IMG))


# ---- spec: registered specs, (de)serialisation, names, messages ---------------------------------------------------
def _deit(depth, member_blocks):
    return PoolSpec(name=f'deit_base_l{depth}',
                    members=(MemberSpec('tiny', 192, 3, depth), MemberSpec('base', 768, 12, depth)),
                    distill=DistillSpec(teacher='deit_base_patch16_224', teacher_width=768, teacher_depth=12,
                                        member_blocks=member_blocks, teacher_blocks=(3, 7, 11)))


def test_deit_base_pools_are_the_papers_and_registration_returns_the_spec():
    assert _deit_base_pool(6) == _deit(6, (1, 3, 5))
    assert _deit_base_pool(9) == _deit(9, (2, 5, 8))
    assert get_pool_spec('deit_base_l6') == _deit(6, (1, 3, 5))
    spec = tiny_spec(4, name='kv2_registered')
    try:
        assert register_pool_spec(spec) is spec
        assert get_pool_spec('kv2_registered') is spec
    finally:
        _SPECS.pop('kv2_registered', None)


def _small():
    return PoolSpec('small', (MemberSpec('tiny', 16, 2, 2), MemberSpec('base', 32, 4, 2)), img_size=32,
                    patch_size=8, num_classes=5, distill=DistillSpec('t', 48, 3, (0, 1), (1, 2)))


SMALL_DICT = {
    'name': 'small', 'img_size': 32, 'patch_size': 8, 'in_chans': 3, 'num_classes': 5, 'stitch_kernel': 2,
    'stitch_stride': 1,
    'members': [{'name': 'tiny', 'width': 16, 'heads': 2, 'depth': 2, 'mlp_ratio': 4.0},
                {'name': 'base', 'width': 32, 'heads': 4, 'depth': 2, 'mlp_ratio': 4.0}],
    'distill': {'teacher': 't', 'teacher_width': 48, 'teacher_depth': 3, 'member_blocks': [0, 1],
                'teacher_blocks': [1, 2]},
}


def test_to_dict_to_json_and_from_any_round_trip():
    spec = _small()
    assert spec.to_dict() == SMALL_DICT
    assert type(spec.to_dict()['distill']['member_blocks']) is list
    assert type(spec.to_dict()['distill']['teacher_blocks']) is list
    assert spec.to_json() == json.dumps(SMALL_DICT, sort_keys=True)
    assert PoolSpec.from_any('  \n' + spec.to_json()) == spec
    assert PoolSpec.from_any('deit_base_l6') is get_pool_spec('deit_base_l6')
    with pytest.raises(PoolSpecError, match=r'^pool spec JSON is malformed: Expecting'):
        PoolSpec.from_any('{"name": ')
    with pytest.raises(PoolSpecError, match=r'^pool spec "members" must be a list, got int$'):
        PoolSpec.from_dict({'name': 'x', 'members': 3})


def test_same_weights_as_names_the_first_difference():
    a = _small()
    b = a.replace(members=(MemberSpec('tiny', 16, 2, 2), MemberSpec('base', 48, 4, 2)))
    tiny = {'name': 'tiny', 'width': 16, 'heads': 2, 'depth': 2, 'mlp_ratio': 4.0}
    assert a.same_weights_as(b) == (
        f"members differ: {[tiny, {'name': 'base', 'width': 32, 'heads': 4, 'depth': 2, 'mlp_ratio': 4.0}]} vs "
        f"{[tiny, {'name': 'base', 'width': 48, 'heads': 4, 'depth': 2, 'mlp_ratio': 4.0}]}")
    assert a.same_weights_as(a.replace(patch_size=4)) == 'patch_size differ: 8 vs 4'
    assert a.same_weights_as(a.replace(num_classes=7, img_size=64)) is None


def test_route_name_find_descendant_metrics_and_pool_params_without_transforms():
    spec = tiny_spec(DEPTH)
    assert route_name(spec, (('tiny', 0, 6),)) == 'tiny6'
    assert route_name(spec, (('base', 0, 6),)) == 'base6'
    assert route_name(spec, (('tiny', 0, 4), ('base', 3, 6))) == 'tiny6[0..3]->base6[3..5]'
    assert find_descendant(spec, 's2', {'s2': {'top1': 5.0}}).metrics == {'top1': 5.0}
    assert pool_params(tiny_spec(DEPTH, distill=False))['transforms'] == 0
    # 2 kinds x 3 positions x (width * 48 + 48) for widths 16 and 32
    assert pool_params(spec)['transforms'] == 6 * (16 * 48 + 48) + 6 * (32 * 48 + 48)


def test_route_errors_name_the_segment():
    spec = tiny_spec(DEPTH)
    with pytest.raises(RouteError, match=r'^a route needs at least one \(member, first_block, end_block\) '
                                         r'segment$'):
        validate_route(spec, [])
    with pytest.raises(RouteError, match=r"the embedding\), got \('tiny', 1, 6\)$"):
        validate_route(spec, [('tiny', 1, 6)])
    with pytest.raises(RouteError, match=r"\(end_block 6\), got \('tiny', 0, 5\)$"):
        validate_route(spec, [('tiny', 0, 5)])
    with pytest.raises(RouteError, match=r"^route stitches 'tiny' into 'tiny', skipping nothing; stitches join "
                                         r"nearest members only"):
        validate_route(spec, [('tiny', 0, 3), ('tiny', 3, 6)])
    valid = ('[(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 2), (3, 3), (3, 4), (4, 3), '
             '(4, 4), (4, 5), (5, 4), (5, 5)]')
    with pytest.raises(RouteError, match=re.escape(f'the valid (last front block, first end block) pairs are '
                                                   f'{valid}') + '$'):
        stitch_window(spec, 0, 3)


# ---- spec: the bounds of every checked field, at the boundary --------------------------------------------------
def _one(**kw):
    args = dict(name='b', members=(MemberSpec('m', 8, 1, 2),), img_size=8, patch_size=4, num_classes=2)
    args.update(kw)
    return PoolSpec(**args)


def test_spec_accepts_every_bound():
    MemberSpec('a', 1, 1, 1)
    MemberSpec('a', 8, 1, 1, mlp_ratio=0.5)
    MemberSpec('a', 8, 1, 1, mlp_ratio=64)
    DistillSpec('t', 1, 1, (0,), (0,))
    _one(patch_size=1, img_size=4)
    _one(in_chans=64)
    _one(stitch_kernel=1, members=(MemberSpec('a', 8, 1, 2), MemberSpec('b', 8, 1, 2)))   # equal widths
    _one(img_size=256, patch_size=1)                                                      # a 256-patch grid
    many = tuple(MemberSpec(f'm{i}', 4, 1, 1) for i in range(16))
    assert len(_one(members=many).members) == 16
    listed = _one(members=[MemberSpec('a', 4, 1, 1), MemberSpec('b', 8, 1, 1)])
    assert isinstance(listed.members, tuple) and hash(listed) == hash(listed)


@pytest.mark.parametrize('make,message', [
    (lambda: MemberSpec('a', 8, 0, 1), r"^member 'a' heads must be in \[1, 16384\], got 0$"),
    (lambda: MemberSpec('a', 8, 1, 1, mlp_ratio=0), r"^member 'a': mlp_ratio must be a number in \(0, 64\], got 0$"),
    (lambda: MemberSpec('a', 8, 1, 1, mlp_ratio=64.5), r"^member 'a': mlp_ratio must be a number in \(0, 64\], got "
                                                       r"64\.5$"),
    (lambda: DistillSpec('', 8, 1, (0,), (0,)), r"^distill\.teacher must be a model name, got ''$"),
    (lambda: DistillSpec(3, 8, 1, (0,), (0,)), r"^distill\.teacher must be a model name, got 3$"),
    (lambda: DistillSpec('t', 0, 1, (0,), (0,)), r'^distill\.teacher_width must be in \[1, 16384\], got 0$'),
    (lambda: DistillSpec('t', 8, 0, (0,), (0,)), r'^distill\.teacher_depth must be in \[1, 256\], got 0$'),
    (lambda: _one(in_chans=65), r'^in_chans must be in \[1, 64\], got 65$'),
    (lambda: _one(stitch_kernel=0), r'^stitch_kernel must be in \[1, 256\], got 0$'),
    (lambda: _one(stitch_stride=0), r'^stitch_stride must be in \[1, 256\], got 0$'),
    (lambda: _one(img_size=257, patch_size=1), r'^img_size 257 at patch_size 1 gives a 257-patch-wide grid, more '
                                               r'than 256$'),
])
def test_spec_rejects_just_past_every_bound(make, message):
    with pytest.raises(PoolSpecError, match=message):
        make()


def test_descendant_count_limit_is_inclusive():
    # kernel K, stride 1, depth L: every (j, k) with |j - k| <= K - 1, i.e. (2K - 1) L - K (K - 1) positions
    two = (MemberSpec('a', 4, 1, 100), MemberSpec('b', 8, 1, 100))
    assert (2 * 99 - 1) * 100 - 99 * 98 == 9998
    _one(name='c', members=two, stitch_kernel=99)                      # 2 + 9,998 = 10,000 descendants
    assert (2 * 48 - 1) * 129 - 48 * 47 == 9999
    two = (MemberSpec('a', 4, 1, 129), MemberSpec('b', 8, 1, 129))
    with pytest.raises(PoolSpecError, match=r"^pool 'c' would have 10,001 descendants, more than 10,000; use fewer "
                                            r"members or a smaller stitch_kernel$"):
        _one(name='c', members=two, stitch_kernel=48)


def test_parameter_limit_is_inclusive_and_counts_the_transforms():
    # one member 4096 wide, depth 1, hidden 255,161 (mlp_ratio 255161/4096, exact in binary), 1 channel, 8 px
    # patches of 32 px (17 tokens), C classes, and 130 distillation positions into a 16,384-wide ancestry
    w, h, classes, npos, tw = 4096, 255_161, 95_047, 130, 16_384
    block = (3 * w * w + 3 * w) + (w * w + w) + 4 * w + (w * h + h) + (h * w + w)
    member = (8 * 8 * w + w) + w + 17 * w + block + 2 * w + (w * classes + classes)
    transforms = 2 * npos * (w * tw + tw)
    assert member + transforms == 20_000_000_000 and member < 20_000_000_000 // 2

    def spec(c):
        return PoolSpec('edge', (MemberSpec('m', w, 1, 1, mlp_ratio=h / w),), img_size=32, patch_size=8,
                        in_chans=1, num_classes=c,
                        distill=DistillSpec('t', tw, 1, (0,) * npos, (0,) * npos))

    spec(classes)
    with pytest.raises(PoolSpecError, match=r"^pool 'edge' would hold 20,000,004,097 parameters, more than the "
                                            r"20,000,000,000 this library builds"):
        spec(classes + 1)
