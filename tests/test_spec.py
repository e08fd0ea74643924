"""Pool specs, routes, descendant enumeration and the reference sizes of docs/design.md (all analytic)."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import timm_learngene  # noqa: F401  (registers the models)
from timm_learngene import (
    DistillSpec, MemberSpec, PoolSpec, PoolSpecError, RouteError, UnknownDescendantError, enumerate_descendants,
    get_pool_spec, pool_params, validate_route,
)
from timm_learngene.spec import find_descendant, route_macs, route_name, route_params, stitch_positions

from conftest import tiny_spec

L6_TABLE = [  # docs/design.md: name, route label, params, GMACs
    ('s1', 'tiny6', 3_048_232, 0.64),
    ('s2', 'tiny6[0..4]->base6[5..5]', 10_416_616, 2.02),
    ('s3', 'tiny6[0..5]->base6[5..5]', 10_861_480, 2.12),
    ('s4', 'tiny6[0..3]->base6[4..5]', 17_059_624, 3.37),
    ('s5', 'tiny6[0..4]->base6[4..5]', 17_504_488, 3.48),
    ('s6', 'tiny6[0..5]->base6[4..5]', 17_949_352, 3.58),
    ('s7', 'tiny6[0..2]->base6[3..5]', 23_702_632, 4.73),
    ('s8', 'tiny6[0..3]->base6[3..5]', 24_147_496, 4.83),
    ('s9', 'tiny6[0..4]->base6[3..5]', 24_592_360, 4.93),
    ('s10', 'tiny6[0..1]->base6[2..5]', 30_345_640, 6.08),
    ('s11', 'tiny6[0..2]->base6[2..5]', 30_790_504, 6.18),
    ('s12', 'tiny6[0..3]->base6[2..5]', 31_235_368, 6.28),
    ('s13', 'tiny6[0..0]->base6[1..5]', 36_988_648, 7.43),
    ('s14', 'tiny6[0..1]->base6[1..5]', 37_433_512, 7.53),
    ('s15', 'tiny6[0..2]->base6[1..5]', 37_878_376, 7.63),
    ('s16', 'base6', 44_040_424, 8.84),
    ('s17', 'tiny6[0..0]->base6[0..5]', 44_076_520, 8.88),
    ('s18', 'tiny6[0..1]->base6[0..5]', 44_521_384, 8.99),
]


def _within(value, ref, rel=0.01):
    return abs(value - ref) <= rel * ref


# ---- registration ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_import_registers_models_without_overwriting_timm():
    # A fresh interpreter, so the registry is seen before and after the import.
    code = textwrap.dedent('''
        import json, warnings
        import timm
        from timm.models import _registry
        before = set(timm.list_models())
        entry_before = {n: _registry._model_entrypoints[n] for n in before}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import timm_learngene
        after = set(timm.list_models())
        print(json.dumps(dict(
            added=sorted(after - before),
            lost=sorted(before - after),
            replaced=sorted(n for n in before if _registry._model_entrypoints[n] is not entry_before[n]),
            warnings=[str(w.message) for w in caught if 'Overwriting' in str(w.message)],
            hub={n: timm.models.get_pretrained_cfg(n).hf_hub_id for n in after - before},
        )))
    ''')
    root = Path(__file__).resolve().parents[1]  # '-c' puts the cwd on sys.path: import this checkout
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=120,
                         cwd=root)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    expected = ({'learngene_pool', 'learngene_pool_l9'} | {f'learngene_pool_s{i}' for i in range(1, 19)}
                | {f'learngene_pool_l9_s{i}' for i in range(1, 28)})
    assert set(res['added']) == expected
    assert res['lost'] == [] and res['replaced'] == [] and res['warnings'] == []
    # no pool is published: no registered cfg names a Hub repo (README "Pretrained weights")
    assert res['hub'] == {name: None for name in expected}


def test_registered_pool_specs():
    assert {'deit_base_l6', 'deit_base_l9', 'snnet_deit'} <= set(timm_learngene.list_pool_specs())
    with pytest.raises(PoolSpecError, match="unknown pool spec 'nope'"):
        get_pool_spec('nope')


# ---- PoolSpec round trip and validation -----------------------------------------------------------------------
@pytest.mark.parametrize('name', ['deit_base_l6', 'deit_base_l9', 'snnet_deit', 'tiny'])
def test_spec_round_trip(name):
    spec = tiny_spec(6) if name == 'tiny' else get_pool_spec(name)
    d = spec.to_dict()
    assert PoolSpec.from_dict(d) == spec
    text = spec.to_json()
    back = PoolSpec.from_dict(json.loads(text))
    assert back == spec and back.to_json() == text
    assert PoolSpec.from_any(json.loads(text)) == spec
    # tuples, not lists, after the round trip (specs are hashable and comparable)
    assert isinstance(back.members, tuple)
    if back.distill is not None:
        assert isinstance(back.distill.member_blocks, tuple)
    hash(back)


def test_spec_round_trip_keeps_every_field():
    spec = tiny_spec(6, in_chans=1, stitch_kernel=3, stitch_stride=2, num_classes=0).replace(name='odd')
    back = PoolSpec.from_dict(json.loads(spec.to_json()))
    for f in ('name', 'in_chans', 'stitch_kernel', 'stitch_stride', 'num_classes', 'img_size', 'patch_size'):
        assert getattr(back, f) == getattr(spec, f), f
    assert back.distill.teacher_blocks == spec.distill.teacher_blocks


def _spec_dict(**changes):
    d = tiny_spec(6).to_dict()
    d.update(changes)
    return d


@pytest.mark.parametrize('d, match', [
    (_spec_dict(members=[]), r'1 to 16 members, got 0'),
    (_spec_dict(members='tiny'), r'"members" must be a list'),
    (_spec_dict(members=[dict(name='tiny', width=16, heads=3, depth=6)]), r'width 16 is not divisible by heads 3'),
    (_spec_dict(members=[dict(name='9x', width=16, heads=2, depth=6)]), r"member name '9x' is invalid"),
    (_spec_dict(members=[dict(name='tiny', width=16, heads=2)]), r'members\[0\] is incomplete'),
    (_spec_dict(members=[dict(name='a', width=16, heads=2, depth=6), dict(name='a', width=32, heads=4, depth=6)]),
     r'member names must be unique'),
    (_spec_dict(members=[dict(name='big', width=32, heads=4, depth=6), dict(name='small', width=16, heads=2, depth=6)]),
     r"smallest first: 'big' \(width 32\) comes before 'small' \(width 16\)"),
    (_spec_dict(members=[dict(name='a', width=16, heads=2, depth=6), dict(name='b', width=32, heads=4, depth=4)]),
     r"same depth, got \{'a': 6, 'b': 4\}"),
    (_spec_dict(colour='red'), r"unknown pool spec fields \['colour'\]"),
    (_spec_dict(members=[dict(name='tiny', width=16, heads=2, depth=6, extra=1)]),
     r"unknown fields \['extra'\] in pool spec members\[0\]"),
    (_spec_dict(img_size='32'), r"img_size must be an integer, got '32' \(str\)"),
    (_spec_dict(num_classes=True), r'num_classes must be an integer, got True \(bool\)'),
    (_spec_dict(patch_size=8.0), r'patch_size must be an integer, got 8.0 \(float\)'),
    (_spec_dict(members=[dict(name='tiny', width='16', heads=2, depth=6)]), r"width must be an integer, got '16'"),
    (_spec_dict(members=[dict(name='tiny', width=16, heads=2, depth=6, mlp_ratio='4')]), r'mlp_ratio must be'),
    (_spec_dict(img_size=30), r'img_size 30 is not a multiple of patch_size 8'),
    (_spec_dict(img_size=0), r'img_size must be in \[1, 8192\], got 0'),
    (_spec_dict(name=''), r'pool name must be a non-empty string'),
    (_spec_dict(distill=dict(_spec_dict()['distill'], member_blocks=[1, 3, 6])), r'member_blocks entry must be in'),
    (_spec_dict(distill=dict(_spec_dict()['distill'], teacher_blocks=[3, 7])), r'must be non-empty and of equal'),
    (_spec_dict(distill='x'), r'distill must be a mapping, got str'),
    ({k: v for k, v in _spec_dict().items() if k != 'members'}, r"missing the required field 'members'"),
    ([1, 2], r'must be a mapping, got list'),
])
def test_spec_validation_errors(d, match):
    with pytest.raises(PoolSpecError, match=match):
        PoolSpec.from_dict(d)


def test_spec_direct_construction_validates():
    with pytest.raises(PoolSpecError, match='smallest first'):
        PoolSpec('x', (MemberSpec('b', 32, 4, 6), MemberSpec('a', 16, 2, 6)))
    with pytest.raises(PoolSpecError, match='same depth'):
        PoolSpec('x', (MemberSpec('a', 16, 2, 6), MemberSpec('b', 32, 4, 9)))
    with pytest.raises(PoolSpecError, match='depth must be in'):
        MemberSpec('a', 16, 2, 0)
    with pytest.raises(PoolSpecError, match='teacher_blocks entry must be in'):
        DistillSpec('t', 48, 12, (1, 2), (3, 12))
    # errors are ValueErrors, so generic callers can catch bad input
    assert issubclass(PoolSpecError, ValueError)


# ---- routes ---------------------------------------------------------------------------------------------------
def test_validate_route_accepts_and_normalises(tiny6):
    assert validate_route(tiny6, [['tiny', 0, 4], ['base', 3, 6]]) == (('tiny', 0, 4), ('base', 3, 6))
    assert validate_route(tiny6, [('base', 0, 6)]) == (('base', 0, 6),)
    assert route_name(tiny6, (('tiny', 0, 4), ('base', 3, 6))) == 'tiny6[0..3]->base6[3..5]'


@pytest.mark.parametrize('route, match', [
    ([('huge', 0, 6)], r"unknown member 'huge'; this pool has \['tiny', 'base'\]"),
    ([('tiny', 0, 7)], r"blocks \[0, 7\) are out of range for member 'tiny'; need 0 <= first < end <= 6"),
    ([('tiny', 0, 3), ('base', 3, 3)], r'blocks \[3, 3\) are out of range'),
    ([('tiny', -1, 6)], r'out of range'),
    ([('tiny', 1, 3), ('base', 2, 6)], r'must start at block 0 of its first member'),
    ([('tiny', 0, 3), ('base', 2, 5)], r'must run to the last block of its last member \(end_block 6\)'),
    ([('base', 0, 3), ('tiny', 3, 6)], r"stitches 'base' into 'tiny': stitches go from a smaller member to a larger"),
    ([('tiny', 0, 3), ('tiny', 3, 6)], r"stitches 'tiny' into 'tiny'"),
    ([('tiny', 0, 2), ('base', 4, 6)], r'no stitch layer joins front block 1 to end block 4'),
    ([('tiny', 0, 5), ('base', 2, 6)], r'no stitch layer joins front block 4 to end block 2'),
    ([], r'at least one'),
    ([('tiny', 0)], r'segment 0 must be \(member: str, first_block: int, end_block: int\)'),
    ([('tiny', 0, 6.0)], r'segment 0 must be'),
    ([('tiny', False, 6)], r'segment 0 must be'),
    (3, r'a route is a list of'),
])
def test_route_errors(tiny6, route, match):
    with pytest.raises(RouteError, match=match):
        validate_route(tiny6, route)


def test_route_may_not_skip_a_member(tiny3m):
    validate_route(tiny3m, [('tiny', 0, 2), ('small', 2, 4)])
    validate_route(tiny3m, [('small', 0, 2), ('base', 1, 4)])
    with pytest.raises(RouteError, match=r"stitches 'tiny' into 'base', skipping \['small'\]; stitches join nearest"):
        validate_route(tiny3m, [('tiny', 0, 2), ('base', 2, 4)])
    with pytest.raises(RouteError, match="from a smaller member to a larger one"):
        validate_route(tiny3m, [('small', 0, 2), ('tiny', 2, 4)])
    # two stitches are a valid route but not a descendant of a pool with one stitch per descendant
    two = [('tiny', 0, 1), ('small', 1, 2), ('base', 2, 4)]
    assert validate_route(tiny3m, two)
    with pytest.raises(RouteError, match='not one of pool'):
        find_descendant(tiny3m, two)


def test_unknown_descendant_lists_valid_names():
    with pytest.raises(UnknownDescendantError, match=r"unknown descendant 's40'.*s1\.\.s18"):
        find_descendant(get_pool_spec('deit_base_l6'), 's40')
    with pytest.raises(UnknownDescendantError, match=r"'s40'.*s1\.\.s18"):
        timm.create_model('learngene_pool', descendant='s40')
    with pytest.raises(UnknownDescendantError, match=r"'s0'.*s1\.\.s27"):
        timm.create_model('learngene_pool_l9', descendant='s0')


def test_find_descendant_by_route(tiny6):
    info = find_descendant(tiny6, 's3')
    assert find_descendant(tiny6, [list(s) for s in info.route]).name == 's3'


# ---- stitching positions and enumeration ----------------------------------------------------------------------
@pytest.mark.parametrize('depth', [2, 4, 6, 9, 12])
def test_stitch_positions_sliding_window(depth):
    spec = tiny_spec(depth, distill=False)
    pos = stitch_positions(spec)
    assert len(pos) == 3 * depth - 2
    pairs = {(j, k) for j, k, _ in pos}
    assert pairs == {(j, k) for j in range(depth) for k in range(depth) if abs(j - k) <= 1}
    assert {w for *_, w in pos} == set(range(depth - 1))
    for j, k, w in pos:
        assert {j, k} <= {w, w + 1}
        # owned by the first window holding both blocks
        assert w == max(0, max(j, k) - 1)


def test_descendants_of_three_member_pool(tiny3m):
    infos = enumerate_descendants(tiny3m)
    assert len(infos) == 3 + 2 * (3 * 4 - 2)
    pairs = {tuple(s[0] for s in d.route) for d in infos if len(d.route) == 2}
    assert pairs == {('tiny', 'small'), ('small', 'base')}


def test_ranking_by_macs_then_params(tiny6):
    infos = enumerate_descendants(tiny6)
    keys = [(d.macs, d.params) for d in infos]
    assert keys == sorted(keys)
    assert [d.name for d in infos] == [f's{i}' for i in range(1, len(infos) + 1)]
    info = infos[2]
    d = info.to_dict()
    assert d['name'] == 's3' and d['route'] == [list(s) for s in info.route] and d['params'] == info.params
    assert d['label'] == info.route_label and d['gmacs'] == round(info.macs / 1e9, 4)
    json.dumps(d)


def test_metrics_kept_on_descendants(tiny6):
    infos = enumerate_descendants(tiny6, {'s2': {'top1': 71.5}})
    assert infos[1].metrics == {'top1': 71.5} and infos[1].to_dict()['top1'] == 71.5
    assert infos[0].metrics == {}


# ---- reference numbers (docs/design.md) ----------------------------------------------------------------------
def test_deit_base_l6_table():
    spec = get_pool_spec('deit_base_l6')
    infos = enumerate_descendants(spec)
    assert len(infos) == 18
    for info, (name, label, params, gmacs) in zip(infos, L6_TABLE):
        assert info.name == name
        assert info.route_label == label, name
        assert info.params == params, name
        assert _within(info.gmacs, gmacs), (name, info.gmacs, gmacs)
    assert infos[0].route == (('tiny', 0, 6),) and infos[15].route == (('base', 0, 6),)
    assert infos[2].route == (('tiny', 0, 6), ('base', 5, 6))


def test_deit_base_l9_sizes():
    spec = get_pool_spec('deit_base_l9')
    infos = enumerate_descendants(spec)
    assert len(infos) == 27
    assert infos[0].route_label == 'tiny9' and infos[0].params == 4_382_824 and _within(infos[0].gmacs, 0.95)
    big = max(infos, key=lambda d: d.params)
    assert big is infos[-1] and big.route == (('tiny', 0, 2), ('base', 0, 9))  # design.md: (1, 0)
    assert _within(big.params, 65.78e6, 0.0001) and _within(big.gmacs, 13.36)
    base = next(d for d in infos if d.route_label == 'base9')
    assert base.params == 65_304_040


def test_member_params():
    from timm_learngene.spec import member_params
    assert member_params(get_pool_spec('deit_base_l6'), 'tiny') == 3_048_232
    assert member_params(get_pool_spec('deit_base_l6'), 'base') == 44_040_424
    assert member_params(get_pool_spec('deit_base_l9'), 'tiny') == 4_382_824
    assert member_params(get_pool_spec('deit_base_l9'), 'base') == 65_304_040
    l6 = get_pool_spec('deit_base_l6')  # five 192 -> 768 stitch layers of 148,224 params
    assert pool_params(l6)['stitches'] == 5 * 148_224


def test_snnet_deit_sizes():
    spec = get_pool_spec('snnet_deit')
    infos = enumerate_descendants(spec)
    assert len(infos) == 71
    alone = {d.route_label: d for d in infos if len(d.route) == 1}
    assert {k: v.params for k, v in alone.items()} == {
        'tiny12': 5_717_416, 'small12': 22_050_664, 'base12': 86_567_656}
    assert _within(alone['tiny12'].gmacs, 1.26) and _within(alone['small12'].gmacs, 4.61)
    assert _within(alone['base12'].gmacs, 17.58)
    assert infos[0] is alone['tiny12']
    assert _within(infos[-1].gmacs, 18.34)
    ts = [d.gmacs for d in infos if len(d.route) == 2 and d.route[0][0] == 'tiny']
    sb = [d.gmacs for d in infos if len(d.route) == 2 and d.route[0][0] == 'small']
    assert len(ts) == len(sb) == 34
    assert _within(min(ts), 1.55) and _within(max(ts), 4.80)
    assert _within(min(sb), 5.74) and _within(max(sb), 18.34)


@pytest.mark.parametrize('name, pool', [('deit_base_l6', 47_829_776), ('deit_base_l9', 70_872_656),
                                        ('snnet_deit', 118_403_448)])
def test_pool_params(name, pool):
    p = pool_params(get_pool_spec(name))
    assert p['pool'] == pool == p['members'] + p['stitches']


# ---- analytic counts against real modules ---------------------------------------------------------------------
def _tiny_pool(spec):
    return timm.create_model('learngene_pool', pool=spec).eval()


@pytest.mark.parametrize('depth', [6, 9])
def test_analytic_params_match_built_models(depth):
    spec = tiny_spec(depth)
    pool = _tiny_pool(spec)
    for info in enumerate_descendants(spec):
        d = pool.descendant(info.name)
        assert sum(p.numel() for p in d.parameters()) == route_params(spec, info.route) == info.params, info.name
        fresh = timm.create_model('learngene_pool', pool=spec, descendant=info.name)
        assert sum(p.numel() for p in fresh.parameters()) == info.params, info.name
    counts = pool_params(spec)
    stored = sum(p.numel() for p in pool.parameters())
    assert stored == counts['pool'] + counts['transforms']
    assert sum(p.numel() for n, p in pool.named_parameters() if n.startswith('transforms.')) == counts['transforms']
    assert sum(p.numel() for n, p in pool.named_parameters() if n.startswith('stitches.')) == counts['stitches']


def test_analytic_params_three_members(tiny3m):
    pool = _tiny_pool(tiny3m)
    for info in enumerate_descendants(tiny3m):
        assert sum(p.numel() for p in pool.descendant(info.route).parameters()) == info.params, info.name
    assert sum(p.numel() for p in pool.parameters()) == pool_params(tiny3m)['pool']


def _counted_macs(model, x):
    # Unfused attention, so the two attention matmuls are real matmuls the counter sees.
    fused = {m: m.fused_attn for m in model.modules() if hasattr(m, 'fused_attn')}
    assert fused, 'no attention modules found'
    try:
        for m in fused:
            m.fused_attn = False
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        for m, v in fused.items():
            m.fused_attn = v
    return counter.get_total_flops() // 2


def test_analytic_macs_match_flop_counter(tiny6, tiny3m):
    x = torch.randn(1, 3, tiny6.img_size, tiny6.img_size)
    for spec in (tiny6, tiny3m):
        pool = _tiny_pool(spec)
        for info in enumerate_descendants(spec):
            assert _counted_macs(pool.descendant(info.name), x) == route_macs(spec, info.route) == info.macs, \
                info.name


def test_analytic_macs_count_classes_and_image_size(tiny6):
    spec = tiny6.replace(img_size=64, num_classes=0)
    pool = _tiny_pool(spec)
    x = torch.randn(1, 3, 64, 64)
    for name in ('s1', 's3', 's12'):
        assert _counted_macs(pool.descendant(name), x) == find_descendant(spec, name).macs


def test_the_middle_member_pool_stitches_nearest_members_only():
    from timm_learngene.spec import get_pool_spec, pool_params
    spec = get_pool_spec('fashion_mnist_l6_mid')
    infos = enumerate_descendants(spec)
    assert len(infos) == 35 and [m.width for m in spec.members] == [64, 128, 192]
    assert {(r[0][0], r[-1][0]) for r in (d.route for d in infos) if len(r) > 1} == {('tiny', 'mid'), ('mid', 'base')}
    pool = timm.create_model('learngene_pool', pool=spec)
    assert sum(p.numel() for n, p in pool.named_parameters() if not n.startswith('transforms')) == \
        pool_params(spec)['pool'] == 4360670


def test_the_four_member_pool_has_a_member_at_every_small_student_width():
    from timm_learngene.spec import get_pool_spec, pool_params
    spec = get_pool_spec('fashion_mnist_l6_w4')
    infos = enumerate_descendants(spec)
    assert len(infos) == 4 + 3 * 16 and [(m.width, m.heads) for m in spec.members] == [(64, 1), (96, 2), (128, 2),
                                                                                      (192, 3)]
    assert {(r[0][0], r[-1][0]) for r in (d.route for d in infos) if len(r) > 1} == {
        ('tiny', 'small'), ('small', 'mid'), ('mid', 'base')}
    pool = timm.create_model('learngene_pool', pool=spec)
    assert sum(p.numel() for n, p in pool.named_parameters() if not n.startswith('transforms')) == \
        pool_params(spec)['pool'] == 5092520


def test_the_four_member_pool_goes_through_the_pool_file_and_timm(tmp_path):
    """The design issue 28 measures best (docs/stitching.md section 8) as a user gets it: pool folder -> timm's
    local-dir: loader -> a descendant through every middle member, and a single descendant's folder."""
    from timm_learngene import save_descendant, save_pool
    torch.manual_seed(0)
    pool = timm.create_model('learngene_pool', pool='fashion_mnist_l6_w4').eval()
    save_pool(pool, tmp_path / 'pool')
    x = torch.randn(2, 1, 32, 32)
    crossing = [d for d in enumerate_descendants(pool.pool_spec) if len(d.route) > 1 and d.route[0][0] == 'small']
    with torch.no_grad():
        for name in ('s1', crossing[0].name, 's52'):
            loaded = timm.create_model(f'local-dir:{tmp_path / "pool"}', descendant=name, pretrained=True).eval()
            assert torch.equal(loaded(x), pool(x, name)), name
        save_descendant(pool, tmp_path / 'one', crossing[0].name)
        one = timm.create_model(f'local-dir:{tmp_path / "one"}', pretrained=True).eval()
        assert torch.equal(one(x), pool(x, crossing[0].name))
    from timm_learngene.data.fashion_mnist import FASHION_MNIST_MEAN
    assert tuple(one.pretrained_cfg['input_size']) == (1, 32, 32)  # the spec's images, not ImageNet's
    assert tuple(one.pretrained_cfg['mean']) == tuple(FASHION_MNIST_MEAN)


def test_two_way_spec_stitches_both_ways_between_nearest_members_only(tiny3m):
    """``two_way``: every nearest pair also larger -> smaller (after the smaller -> larger ones), so the route count,
    the stitch parameters and the validation all follow; the field is left out of a one-way spec's dict."""
    two = tiny3m.replace(two_way=True)
    positions = len(stitch_positions(tiny3m))
    assert [(a.name, b.name) for a, b in two.pairs] == [('tiny', 'small'), ('small', 'base'), ('small', 'tiny'),
                                                        ('base', 'small')]
    assert len(enumerate_descendants(two)) == 3 + 4 * positions == len(enumerate_descendants(tiny3m)) + 2 * positions
    windows = tiny3m.num_windows
    assert pool_params(two)['stitches'] - pool_params(tiny3m)['stitches'] == windows * ((24 * 16 + 16) + (32 * 24 + 24))
    assert validate_route(two, [('small', 0, 2), ('tiny', 2, 4)]) == (('small', 0, 2), ('tiny', 2, 4))
    with pytest.raises(RouteError, match=r"stitches 'base' into 'tiny', skipping \['small'\]; stitches join nearest"):
        validate_route(two, [('base', 0, 2), ('tiny', 2, 4)])
    with pytest.raises(RouteError, match="a two_way pool also stitches larger -> smaller"):
        validate_route(tiny3m, [('small', 0, 2), ('tiny', 2, 4)])
    # a large-front route: the larger member's embedding and blocks first, its width into the stitch
    route = (('base', 0, 2), ('small', 2, 4))
    info = find_descendant(two, route)
    assert info.route_label == 'base4[0..1]->small4[2..3]'
    n, p = two.num_tokens, two.patch_size
    base, small = two.member('base'), two.member('small')
    block = {m.name: n * (4 * m.width ** 2 + 2 * m.width * m.hidden) + 2 * n * n * m.width for m in (base, small)}
    assert route_macs(two, route) == ((n - 1) * 3 * p * p * 32 + 2 * block['base'] + n * 32 * 24 + 2 * block['small']
                                      + 24 * two.num_classes)
    assert 'two_way' not in tiny3m.to_dict() and two.to_dict()['two_way'] is True
    assert PoolSpec.from_dict(two.to_dict()) == two and PoolSpec.from_dict(tiny3m.to_dict()) == tiny3m
    assert tiny3m.same_weights_as(two) == 'two_way differ: False vs True'
    with pytest.raises(PoolSpecError, match="two_way must be true or false, got 'yes'"):
        tiny3m.replace(two_way='yes')
