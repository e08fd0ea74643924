"""Known-value tests (issue 17): every expected value here is worked out by hand on tiny tensors, or with a few
lines of plain torch written in the test, never by calling the helper under test.

Pinned: the distillation loss terms and total (docs/design.md, step 3), ``kd_loss`` and ``soft_cross_entropy``, the
finetune loss weights (step 7), top-1 / top-k accuracy with ties, the budget boundary of ``select``,
``pareto_front``, the checkpoint checksum format, the stitch-init features / least squares / ridge composition
(step 6) and the stitch positions and descendants of a depth-6 pool (step 5).
"""
import math
import struct

import pytest
import timm
import torch

import timm_learngene  # noqa: F401  (registers the models)
from timm_learngene.checksum import checksum as _checksum, checksum_bytes as _checksum_bytes
from timm_learngene.distill import DenseDistiller
from timm_learngene.evaluation import pareto_front
from timm_learngene.finetune import DescendantTrainer
from timm_learngene.losses import kd_loss, label_kd_loss, soft_cross_entropy
from timm_learngene.selection import BudgetError, select
from timm_learngene.spec import (
    DistillSpec, default_matched_blocks, enumerate_descendants, get_pool_spec, stitch_positions, stitch_window,
)
from timm_learngene.stitch_init import init_stitches, lstsq_affine, member_features, ridge_compose
from timm_learngene.training.metrics import accuracy

from conftest import NUM_CLASSES, tiny_spec

DEPTH = 6
MEMBER_BLOCKS = (1, 3, 5)       # {L/3-1, 2L/3-1, L-1} for L = 6, written out
TEACHER_BLOCKS = (3, 7, 11)     # {D/3-1, 2D/3-1, D-1} for D = 12
TEACHER_WIDTH = 48
# kernel 2, stride 1: window i = blocks {i, i+1} owns the (last front block j, first end block k) pairs with j, k in
# the window that no earlier window owns; k in {j-1, j, j+1}: 4 + 3 * 4 = 16 = 3L - 2 positions
WINDOW_POSITIONS = {
    0: [(0, 0), (0, 1), (1, 0), (1, 1)],
    1: [(1, 2), (2, 1), (2, 2)],
    2: [(2, 3), (3, 2), (3, 3)],
    3: [(3, 4), (4, 3), (4, 4)],
    4: [(4, 5), (5, 4), (5, 5)],
}


@pytest.fixture(autouse=True)
def _reset_accelerate():
    yield
    from accelerate.state import AcceleratorState, PartialState
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


# ---- helpers: tiny models with non-trivial weights ---------------------------------------------------------------
def _spec():
    """A depth-6 tiny pool whose matched blocks are the literal SPEC positions (not computed by the package)."""
    return tiny_spec(DEPTH, distill=False).replace(distill=DistillSpec(
        teacher='vit_tiny_test', teacher_width=TEACHER_WIDTH, teacher_depth=12,
        member_blocks=MEMBER_BLOCKS, teacher_blocks=TEACHER_BLOCKS))


def _randomise(modules, gen, std):
    with torch.no_grad():
        for m in modules:
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * std)


def _pool(seed=0):
    torch.manual_seed(seed)
    pool = timm.create_model('learngene_pool', pool=_spec())
    g = torch.Generator().manual_seed(seed + 100)
    # heads and transforms far from their ~0 init, so every loss term is O(1) and the terms are distinguishable
    _randomise([m.head for m in pool.members.values()], g, 1.0)
    _randomise([lin for tr in pool.transforms.values() for kind in tr.values() for lin in kind], g, 0.5)
    return pool


def _teacher(seed=1):
    torch.manual_seed(seed)
    t = timm.create_model('vit_tiny_patch16_224', embed_dim=TEACHER_WIDTH, depth=12, num_heads=3, img_size=32,
                          patch_size=8, num_classes=NUM_CLASSES)
    _randomise([t.head], torch.Generator().manual_seed(seed + 100), 1.0)
    return t.eval()


class _Capture:
    """Own forward hooks: block outputs, attention-module outputs and head outputs (logits)."""

    def __init__(self):
        self.out, self.handles = {}, []

    def hook(self, module, key):
        def keep(mod, inputs, output):
            self.out[key] = output.detach().double()
        self.handles.append(module.register_forward_hook(keep))

    def vit(self, prefix, model):
        for i, blk in enumerate(model.blocks):
            self.hook(blk, (prefix, 'block', i))
            self.hook(blk.attn, (prefix, 'attn', i))
        self.hook(model.head, (prefix, 'logits'))

    def remove(self):
        for h in self.handles:
            h.remove()


def _log_softmax(z):
    z = z.double()
    return z - torch.log(torch.exp(z).sum(-1, keepdim=True))


def _kl_batchmean(zs, zt, T):
    """T^2 * KL(softmax(zt/T) || softmax(zs/T)), summed over classes, averaged over the batch, by hand."""
    lt, ls = _log_softmax(zt / T), _log_softmax(zs / T)
    return T * T * (lt.exp() * (lt - ls)).sum(-1).sum() / zs.shape[0]


def _ce_smoothed(z, y, eps):
    """(1-eps) * NLL + eps * mean over classes of -log p, batch mean."""
    lp = _log_softmax(z)
    nll = -lp[torch.arange(len(y)), y]
    return ((1 - eps) * nll + eps * (-lp).mean(-1)).mean()


def _mse(a, b):
    return ((a - b) ** 2).sum() / a.numel()


# ---- kd_loss and soft_cross_entropy against hand values ----------------------------------------------------------
def test_kd_loss_hand_value_direction_temperature_and_batchmean():
    # row 0: p_t = softmax([ln 3, 0]) = (3/4, 1/4), p_s = (1/2, 1/2); row 1: equal logits, KL 0
    # KL(p_t || p_s) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.130812 (the reverse direction would be 1/2 ln(4/3) = 0.143841)
    kl_row0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    s = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(3.0), 0.0], [1.0, -2.0]], dtype=torch.float64)
    # batchmean: sum over the batch / B (= 2), not / (B * C)
    torch.testing.assert_close(kd_loss(s, t).double(), torch.tensor(kl_row0 / 2, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    # T = 2 with logits scaled by 2 gives the same distributions: the loss is T^2 = 4 times larger (not T times)
    torch.testing.assert_close(kd_loss(2 * s, 2 * t, temperature=2.0).double(),
                               torch.tensor(4 * kl_row0 / 2, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_kd_loss_matches_plain_formula_on_random_logits():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(5, 7, generator=g, dtype=torch.float64) * 2, torch.randn(5, 7, generator=g, dtype=torch.float64)
    for T in (1.0, 2.0, 0.5):
        torch.testing.assert_close(kd_loss(s, t, T).double(), _kl_batchmean(s, t, T), rtol=1e-10, atol=1e-12)


def test_soft_cross_entropy_hand_values_with_smoothing_and_soft_targets():
    # logits (0, ln 2, 0): p = (1/4, 1/2, 1/4), -log p = (2 ln2, ln2, 2 ln2)
    ln2 = math.log(2.0)
    z = torch.tensor([[0.0, ln2, 0.0], [0.0, ln2, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    # no smoothing: mean(ln2, 2 ln2) = 1.5 ln2
    torch.testing.assert_close(soft_cross_entropy(z, y).double(), torch.tensor(1.5 * ln2, dtype=torch.float64))
    # smoothing 0.1: (1 - 0.1) * NLL + 0.1 * mean_c(-log p_c); mean_c = 5/3 ln2 for both rows
    want = 0.9 * 1.5 * ln2 + 0.1 * 5 / 3 * ln2
    torch.testing.assert_close(soft_cross_entropy(z, y, smoothing=0.1).double(),
                               torch.tensor(want, dtype=torch.float64))
    # soft targets (mixup): row 0 (0.2, 0.5, 0.3) -> 0.4 ln2 + 0.5 ln2 + 0.6 ln2 = 1.5 ln2; row 1 (1, 0, 0) -> 2 ln2
    soft = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(soft_cross_entropy(z, soft).double(), torch.tensor(1.75 * ln2, dtype=torch.float64))


def test_label_kd_loss_hand_values():
    # student (0, 0), teacher (ln 3, 0), label 0: CE = ln 2, KD = 3/4 ln(3/2) + 1/4 ln(1/2)
    ln2, kl = math.log(2.0), 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    out = label_kd_loss(s, torch.tensor([0]), t, ce_weight=0.3, kd_weight=0.7)
    torch.testing.assert_close(out['ce'].double(), torch.tensor(ln2, dtype=torch.float64))
    torch.testing.assert_close(out['kd'].double(), torch.tensor(kl, dtype=torch.float64))
    torch.testing.assert_close(out['total'].double(), torch.tensor(0.3 * ln2 + 0.7 * kl, dtype=torch.float64))
    alone = label_kd_loss(s, torch.tensor([0]), None, ce_weight=0.3, kd_weight=0.7)
    assert 'kd' not in alone
    torch.testing.assert_close(alone['total'].double(), torch.tensor(0.3 * ln2, dtype=torch.float64))


# ---- dense distillation: every term and the total ------------------------------------------------------------
def test_default_matched_blocks_are_the_paper_positions():
    assert default_matched_blocks(6) == MEMBER_BLOCKS
    assert default_matched_blocks(9) == (2, 5, 8)
    assert default_matched_blocks(12) == TEACHER_BLOCKS


def test_distillation_terms_and_total_match_the_spec_formula():
    alpha, T, b_blk, b_att, eps = 0.3, 2.0, 0.3, 0.7, 0.1
    pool, teacher = _pool(), _teacher()
    d = DenseDistiller(pool, teacher, alpha=alpha, temperature=T, beta_block=b_blk, beta_attn=b_att, smoothing=eps)
    cap = _Capture()
    cap.vit('teacher', teacher)
    for name, member in pool.members.items():
        cap.vit(name, member)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 3, 1, 4])
    try:
        losses = d(x, y)
    finally:
        cap.remove()
    f = cap.out
    zt = f[('teacher', 'logits')]
    want = {k: 0.0 for k in ('ce', 'kd', 'block', 'attn', 'total')}
    for name in ('tiny', 'base'):
        zs = f[(name, 'logits')]
        ce = _ce_smoothed(zs, y, eps)
        kd = _kl_batchmean(zs, zt, T)
        blk = att = 0.0
        for p, (i, q) in enumerate(zip(MEMBER_BLOCKS, TEACHER_BLOCKS)):
            W, V = pool.transforms[name]['block'][p], pool.transforms[name]['attn'][p]
            hs, os_ = f[(name, 'block', i)], f[(name, 'attn', i)]
            blk = blk + _mse(hs @ W.weight.double().T + W.bias.double(), f[('teacher', 'block', q)])
            att = att + _mse(os_ @ V.weight.double().T + V.bias.double(), f[('teacher', 'attn', q)])
        total = alpha * ce + (1 - alpha) * (kd + b_blk * blk + b_att * att)
        torch.testing.assert_close(losses[name].double(), total, rtol=2e-5, atol=1e-6, msg=name)
        for k, v in (('ce', ce), ('kd', kd), ('block', blk), ('attn', att), ('total', total)):
            want[k] = want[k] + v
    for k, v in want.items():
        torch.testing.assert_close(losses[k].double(), v, rtol=2e-5, atol=1e-6, msg=k)
    # the terms are far apart, so a swapped weight or pairing cannot hide inside the tolerance
    assert min(abs(want['kd'] - want['ce']), abs(want['block'] - want['attn'])) > 1e-2


def test_distillation_feature_terms_pair_each_member_block_with_its_teacher_block():
    """Only the block term, one position at a time: with every other transform zeroed and W_p the identity into
    the first d_member teacher channels, the block term is the MSE between [h_s[p], 0] and h_t[q(p)]."""
    pool, teacher = _pool(seed=2), _teacher(seed=3)
    d = DenseDistiller(pool, teacher, alpha=0.0, temperature=1.0, beta_block=1.0, beta_attn=0.0,
                       members=['tiny'])
    cap = _Capture()
    cap.vit('teacher', teacher)
    cap.vit('tiny', pool.members['tiny'])
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for lin in pool.transforms['tiny']['block']:
            lin.weight.copy_(torch.eye(TEACHER_WIDTH, 16))
            lin.bias.zero_()
    try:
        losses = d(x, torch.tensor([0, 1]))
    finally:
        cap.remove()
    f = cap.out
    want = 0.0
    for i, q in zip(MEMBER_BLOCKS, TEACHER_BLOCKS):
        h = torch.nn.functional.pad(f[('tiny', 'block', i)], (0, TEACHER_WIDTH - 16))
        want = want + ((h - f[('teacher', 'block', q)]) ** 2).mean()
    torch.testing.assert_close(losses['block'].double(), want, rtol=2e-5, atol=1e-6)


# ---- finetune loss --------------------------------------------------------------------------------------------
def test_finetune_loss_honours_each_weight():
    pool, teacher = _pool(seed=5), _teacher(seed=6)
    trainer = DescendantTrainer(pool, teacher, ce_weight=0.3, kd_weight=0.7, temperature=2.0, smoothing=0.1)
    route = (('tiny', 0, 3), ('base', 2, DEPTH))
    cap = _Capture()
    cap.hook(pool.members['base'].head, 'student')
    cap.hook(teacher.head, 'teacher')
    x, y = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(8)), torch.tensor([2, 0, 4])
    try:
        out = trainer(x, y, route)
    finally:
        cap.remove()
    zs, zt = cap.out['student'], cap.out['teacher']
    ce, kd = _ce_smoothed(zs, y, 0.1), _kl_batchmean(zs, zt, 2.0)
    torch.testing.assert_close(out['ce'].double(), ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out['kd'].double(), kd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out['total'].double(), 0.3 * ce + 0.7 * kd, rtol=1e-5, atol=1e-6)
    assert abs(ce - kd) > 1e-2


def test_finetune_without_kd_is_the_weighted_ce_alone():
    pool = _pool(seed=9)
    trainer = DescendantTrainer(pool, None, ce_weight=0.3, kd_weight=0.0)
    cap = _Capture()
    cap.hook(pool.members['tiny'].head, 'student')
    x, y = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 3])
    try:
        out = trainer(x, y, (('tiny', 0, DEPTH),))
    finally:
        cap.remove()
    torch.testing.assert_close(out['total'].double(), 0.3 * _ce_smoothed(cap.out['student'], y, 0.0),
                               rtol=1e-5, atol=1e-6)


# ---- accuracy ---------------------------------------------------------------------------------------------------
def test_accuracy_top1_top2_top5_on_a_hand_made_batch_with_ties():
    from accelerate import Accelerator
    acc = Accelerator(cpu=True)
    # 6 classes; for each row: the label and how many classes beat it strictly (its rank is unambiguous even
    # where other classes tie among themselves)
    logits_a = torch.tensor([
        [5., 1., 1., 1., 1., 1.],   # y=0: strict max, the others tie           -> top1 top2 top5
        [3., 4., 0., 0., 0., 0.],   # y=0: second                               -> top2 top5, NOT top1
        [2., 2., 1., 0., 0., 0.],   # y=2: two classes tie above it             -> top5 only
    ])
    y_a = torch.tensor([0, 0, 2])
    logits_b = torch.tensor([
        [0., 1., 2., 3., 4., 5.],   # y=0: the strict minimum, five above it   -> none
        [1., 1., 1., 1., 9., 1.],   # y=4: strict max                           -> top1 top2 top5
    ])
    y_b = torch.tensor([0, 4])
    loader = [(logits_a, y_a), (logits_b, y_b)]
    got = accuracy(acc, lambda x: {'m': x, 'neg': -x}, loader, topk=(1, 2, 5))
    # 'm': top1 2/5, top2 3/5, top5 4/5
    # 'neg' = -logits: row 0 y strict min -> none; row 1 (-3,-4,0,0,0,0): four classes above y -> top5 only;
    # row 2 (-2,-2,-1,0,0,0): three above y -> top5 only; row 3 y strict max -> all; row 4 y strict min -> none
    assert got == pytest.approx({'m': 40.0, 'm_top2': 60.0, 'm_top5': 80.0,
                                 'neg': 20.0, 'neg_top2': 20.0, 'neg_top5': 60.0}, abs=1e-9)


def test_accuracy_with_topk_larger_than_the_classes():
    from accelerate import Accelerator
    acc = Accelerator(cpu=True)
    loader = [(torch.tensor([[0., 1.], [3., 2.], [1., 0.]]), torch.tensor([0, 0, 1]))]
    got = accuracy(acc, lambda x: {'m': x}, loader, topk=(1, 5))
    assert got == pytest.approx({'m': 100.0 / 3, 'm_top5': 100.0})


# ---- select: budgets are inclusive ------------------------------------------------------------------------------
def test_select_budget_is_inclusive_at_the_boundary():
    spec = get_pool_spec('deit_base_l6')
    # docs/design.md: s1 tiny6 3,048,232 params; s2 10,416,616; s3 10,861,480; s4 17,059,624; s5 17,504,488
    assert select(spec, max_params=3_048_232) == 's1'
    with pytest.raises(BudgetError, match=r'no descendant fits.*max_params=3048231.*smallest is s1'):
        select(spec, max_params=3_048_231)
    assert select(spec, max_params=17_059_624) == 's4'
    assert select(spec, max_params=17_059_623) == 's3'
    infos = {d.name: d for d in enumerate_descendants(spec)}
    assert select(spec, max_gmacs=infos['s1'].gmacs) == 's1'
    assert select(spec, max_gmacs=infos['s7'].gmacs) == 's7'
    assert select(spec, max_gmacs=infos['s18'].gmacs) == 's18'
    assert select(spec, max_gmacs=infos['s18'].gmacs, max_params=44_521_384) == 's18'
    # tiny6 at 224 px, by hand: patch embed 196*768*192 + 6 blocks of 197*(4*192^2 + 2*192*768) + 2*197^2*192,
    # head 192*1000 = 641,388,288 MACs
    assert infos['s1'].macs == 641_388_288
    assert select(spec, max_gmacs=0.641388288) == 's1'


# ---- pareto_front -----------------------------------------------------------------------------------------------
def test_pareto_front_on_a_hand_made_table():
    rows = [
        dict(name='E', gmacs=4.0, top1=58.0),   # beaten by B (cheaper, better)
        dict(name='C', gmacs=2.0, top1=55.0),   # same cost as B, worse: beaten (listed before B on purpose)
        dict(name='D', gmacs=3.0, top1=60.0),   # tie in accuracy with the cheaper B: beaten
        dict(name='B', gmacs=2.0, top1=60.0),   # on the front
        dict(name='A', gmacs=1.0, top1=50.0),   # on the front
        dict(name='F', gmacs=5.0, top1=70.0),   # on the front
        dict(name='H', gmacs=0.5, top1=40.0),   # cheapest: on the front
        dict(name='G', gmacs=6.0, top1=69.9),   # beaten by F
    ]
    assert [r['name'] for r in pareto_front(rows)] == ['H', 'A', 'B', 'F']
    # exact duplicates: one representative stays
    dup = [dict(name='X', gmacs=1.0, top1=50.0), dict(name='Y', gmacs=1.0, top1=50.0)]
    front = pareto_front(dup)
    assert len(front) == 1 and (front[0]['gmacs'], front[0]['top1']) == (1.0, 50.0)
    # other column names
    assert [r['n'] for r in pareto_front([dict(n=1, c=2, a=1), dict(n=2, c=1, a=2)], x='c', y='a')] == [2]


# ---- checkpoint checksum ----------------------------------------------------------------------------------------
def test_checksum_of_arange5_float32_is_a_known_constant():
    t = torch.arange(5, dtype=torch.float32)   # 20 bytes: two whole words and a zero-padded half word
    raw = struct.pack('<5f', 0.0, 1.0, 2.0, 3.0, 4.0) + b'\0' * 4
    words = struct.unpack('<3Q', raw)
    # 0.0|1.0 -> 0x3f800000_00000000, 2.0|3.0 -> 0x40400000_40000000, 4.0|pad -> 0x00000000_40800000
    assert words == (0x3F80000000000000, 0x4040000040000000, 0x0000000040800000)
    assert f'{sum(words) % 2 ** 64:016x}' == '7fc0000080800000'
    assert _checksum(t) == '7fc0000080800000'
    assert _checksum_bytes(t.numpy().tobytes()) == '7fc0000080800000'


def test_checksum_pads_the_last_word_wraps_mod_2_64_and_reads_the_contiguous_layout():
    assert _checksum_bytes(b'\x01\x02\x03') == '0000000000030201'
    assert _checksum_bytes(b'') == '0000000000000000'
    assert _checksum_bytes(b'\xff' * 16) == 'fffffffffffffffe'               # 2 * (2^64 - 1) mod 2^64
    assert _checksum(torch.full((2,), -1, dtype=torch.int64)) == 'fffffffffffffffe'
    assert _checksum_bytes(b'\xff' * 9) == '00000000000000fe'                # (2^64 - 1) + 0xff wraps to 0xfe
    # [[0, 1], [2, 3]].T is stored as 0, 2, 1, 3: words 0x40000000_00000000 and 0x40400000_3f800000
    t = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).T
    assert _checksum(t) == '804000003f800000'
    assert _checksum(torch.tensor([1], dtype=torch.int16)) == '0000000000000001'


# ---- stitch init ------------------------------------------------------------------------------------------------
def test_member_features_are_the_embedding_and_block_outputs():
    pool = _pool(seed=11).eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    member = pool.members['tiny']
    seen = {}
    handles = [member.blocks[0].register_forward_pre_hook(lambda m, a: seen.__setitem__('emb', a[0].detach()))]
    for i, blk in enumerate(member.blocks):
        handles.append(blk.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o.detach())))
    try:
        with torch.no_grad():
            pool(images, (('tiny', 0, DEPTH),))
    finally:
        for h in handles:
            h.remove()
    feats = member_features(pool, 'tiny', images, batch_size=2)   # two chunks: 2 + 1 images
    assert len(feats) == DEPTH + 1
    torch.testing.assert_close(feats[0], seen['emb'].flatten(0, 1), rtol=1e-5, atol=1e-6)
    for i in range(DEPTH):
        assert feats[i + 1].shape == (3 * 17, 16)
        torch.testing.assert_close(feats[i + 1], seen[i].flatten(0, 1), rtol=1e-5, atol=1e-6)


def test_lstsq_affine_solves_an_exact_hand_problem():
    x = torch.tensor([[0., 0.], [1., 0.], [0., 1.], [1., 1.], [2., -1.]])
    # Y = X W^T + b with W = [[2, -1], [0.5, 3], [1, 1]], b = (1, -2, 0.5), written out
    y = torch.tensor([[1., -2., 0.5], [3., -1.5, 1.5], [0., 1., 1.5], [2., 1.5, 2.5], [6., -4., 1.5]])
    w, b = lstsq_affine(x, y)
    torch.testing.assert_close(w, torch.tensor([[2., -1.], [0.5, 3.], [1., 1.]]), rtol=0, atol=1e-5)
    torch.testing.assert_close(b, torch.tensor([1., -2., 0.5]), rtol=0, atol=1e-5)


def test_ridge_compose_hand_value():
    # W_end = [[1, 0], [0, 2], [0, 0]]: W_endᵀW_end = diag(1, 4), m = mean(diag) = 2.5, λ = 0.1 -> + 0.25 I
    we, be = torch.tensor([[1., 0.], [0., 2.], [0., 0.]]), torch.tensor([0., 1., 0.])
    wf, bf = torch.tensor([[1., 0.], [0., 1.], [1., 1.]]), torch.tensor([1., 2., 3.])
    # W_endᵀ W_front = [[1, 0], [0, 2]] -> S = diag(1 / 1.25, 2 / 4.25); W_endᵀ(b_f - b_e) = (1, 2)
    s, sb = ridge_compose(wf, bf, we, be, lam=0.1)
    torch.testing.assert_close(s, torch.tensor([[0.8, 0.], [0., 2 / 4.25]]), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(sb, torch.tensor([0.8, 2 / 4.25]), rtol=1e-6, atol=1e-7)


def test_ridge_compose_random_against_the_spec_formula():
    g = torch.Generator().manual_seed(21)
    wf, bf = torch.randn(12, 4, generator=g, dtype=torch.float64), torch.randn(12, generator=g, dtype=torch.float64)
    we, be = torch.randn(12, 6, generator=g, dtype=torch.float64), torch.randn(12, generator=g, dtype=torch.float64)
    lam = 0.3
    gram = we.T @ we
    m = sum(gram[i, i] for i in range(6)) / 6
    inv = torch.linalg.inv(gram + lam * m * torch.eye(6, dtype=torch.float64))
    s, sb = ridge_compose(wf, bf, we, be, lam=lam)
    torch.testing.assert_close(s.double(), inv @ we.T @ wf, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sb.double(), inv @ we.T @ (bf - be), rtol=1e-5, atol=1e-6)


def _own_lstsq(x, y):
    xa = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(xa, y.double(), driver='gelsd').solution
    return sol[:-1].T, sol[-1]


def test_lstsq_init_uses_front_block_j_and_end_block_k_minus_1_outputs():
    pool = _pool(seed=13).eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(14))
    feats = {}
    handles = []
    for name, member in pool.members.items():
        handles.append(member.blocks[0].register_forward_pre_hook(
            lambda m, a, name=name: feats.__setitem__((name, -1), a[0].detach().flatten(0, 1))))
        for i, blk in enumerate(member.blocks):
            handles.append(blk.register_forward_hook(
                lambda m, a, o, name=name, i=i: feats.__setitem__((name, i), o.detach().flatten(0, 1))))
    try:
        with torch.no_grad():
            for name in pool.members:
                pool(images, ((name, 0, DEPTH),))
    finally:
        for h in handles:
            h.remove()
    init_stitches(pool, 'lstsq', images)
    for w, positions in WINDOW_POSITIONS.items():
        sols = [_own_lstsq(feats[('tiny', j)], feats[('base', k - 1)]) for j, k in positions]
        layer = pool.stitches['tiny-base'][w]
        torch.testing.assert_close(layer.weight.double(), torch.stack([s[0] for s in sols]).mean(0),
                                   rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(layer.bias.double(), torch.stack([s[1] for s in sols]).mean(0),
                                   rtol=1e-3, atol=1e-4)


def test_learngene_init_composes_the_nearest_matched_transforms():
    pool = _pool(seed=15)
    init_stitches(pool, 'learngene', lam=0.01)
    # matched member blocks (1, 3, 5); nearest position index of a block, ties to the earlier position
    nearest = {-1: 0, 0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 2}

    def ridge(tf, te):
        we, wf = te.weight.double(), tf.weight.double()
        gram = we.T @ we
        inv = torch.linalg.inv(gram + 0.01 * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=torch.float64))
        return inv @ we.T @ wf, inv @ we.T @ (tf.bias.double() - te.bias.double())

    for w, positions in WINDOW_POSITIONS.items():
        sols = [ridge(pool.transforms['tiny']['block'][nearest[j]], pool.transforms['base']['block'][nearest[k - 1]])
                for j, k in positions]
        layer = pool.stitches['tiny-base'][w]
        torch.testing.assert_close(layer.weight.double(), torch.stack([s[0] for s in sols]).mean(0),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.bias.double(), torch.stack([s[1] for s in sols]).mean(0),
                                   rtol=1e-4, atol=1e-5)


# ---- stitch positions and descendants of a depth-6 pool ---------------------------------------------------------
def test_stitch_positions_and_windows_of_depth_6():
    spec = tiny_spec(DEPTH)
    expected = [(j, k, w) for w, pos in WINDOW_POSITIONS.items() for j, k in pos]
    assert len(expected) == 16
    assert sorted(stitch_positions(spec)) == sorted(expected)
    assert [w for _, _, w in stitch_positions(spec)] == sorted(w for _, _, w in expected)   # window order
    for j, k, w in expected:
        assert stitch_window(spec, j, k) == w
    assert {(j, k) for j, k, _ in expected} == {(j, k) for j in range(6) for k in (j - 1, j, j + 1) if 0 <= k < 6}


def test_depth_6_pool_has_18_descendants_with_the_hand_written_routes():
    spec = tiny_spec(DEPTH)
    infos = enumerate_descendants(spec)
    assert len(infos) == 18
    assert [d.name for d in infos] == [f's{i}' for i in range(1, 19)]
    routes = {(('tiny', 0, 6),), (('base', 0, 6),)}
    routes |= {(('tiny', 0, j + 1), ('base', k, 6)) for pos in WINDOW_POSITIONS.values() for j, k in pos}
    assert {d.route for d in infos} == routes
    assert len(enumerate_descendants(tiny_spec(9))) == 27
