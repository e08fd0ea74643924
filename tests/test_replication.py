"""The replication report's accounting and statistics (timm_learngene/recipes/replication.py): training compute per
stage, the paired comparison rule, the stretch line and issue 28's goal."""
import json

import pytest
import yaml

from timm_learngene.recipes.replication import (_vit_macs, compare, distill_macs_per_image, finetune_macs_per_image,
                                                goal, nested_macs_per_image, stage_images)
from timm_learngene.spec import DistillSpec, MemberSpec, PoolSpec, enumerate_descendants, get_pool_spec, route_macs

KD = dict(kd_weight=0.5, teacher_checkpoint='ancestry/model')


def _stage(path, steps, launch=None, **cfg):
    path.mkdir()
    (path / 'config.yaml').write_text(yaml.safe_dump(dict(dict(batch_size=128), **cfg)))
    (path / 'log.jsonl').write_text('\n'.join(json.dumps(dict(step=s, total=1.0)) for s in range(50, steps + 1, 50)))
    if launch is not None:
        (path / 'launch.json').write_text(json.dumps(dict(num_processes=launch)))
    return path


def test_stage_images_count_gradient_accumulation_and_processes(tmp_path):
    assert stage_images(_stage(tmp_path / 'a', 200)) == 200 * 128  # no launch.json: one process
    assert stage_images(_stage(tmp_path / 'b', 200, launch=1, grad_accum=1)) == 200 * 128
    assert stage_images(_stage(tmp_path / 'c', 200, launch=2, grad_accum=3, batch_size=32)) == 200 * 32 * 3 * 2


def _toy():
    return PoolSpec('toy', (MemberSpec('tiny', 16, 1, 4), MemberSpec('base', 32, 2, 4)), img_size=32, patch_size=8,
                    in_chans=1, num_classes=10, distill=DistillSpec('anc', 48, 8, (1, 3), (3, 7)))


def test_distillation_counts_every_member_and_its_feature_transforms():
    spec = _toy()
    members = route_macs(spec, (('tiny', 0, 4),)) + route_macs(spec, (('base', 0, 4),))
    # two matched positions x (block, attention) transforms, each a Linear(width -> 48) over 17 tokens
    transforms = 2 * 2 * 17 * (16 + 32) * 48
    assert distill_macs_per_image(spec, 1000) == 1000 + 3 * (members + transforms)


def test_nested_counts_the_sandwich_sizes_and_the_expected_draws():
    args = dict(depth=6, img_size=32, patch_size=8, in_chans=1, num_classes=10)
    spec = PoolSpec('x', (MemberSpec('m', 64, 1, 6),), img_size=32, patch_size=8, in_chans=1, num_classes=10)
    m = {w: _vit_macs(w, h, 6, spec) for w, h in ((64, 1), (96, 2), (128, 2), (192, 3))}
    cfg = dict(model_args=args, sizes=['192x3', '64x1', '96x2', '128x2'], sizes_per_step=3, kd_weight=0.5)
    assert nested_macs_per_image(cfg, 1000) == 1000 + 3 * (m[64] + m[192] + (m[96] + m[128]) / 2)
    assert nested_macs_per_image(dict(cfg, sizes_per_step=4, kd_weight=0), 1000) == 3 * sum(m.values())
    assert nested_macs_per_image(dict(cfg, sizes=['192x3']), 1000) == 1000 + 3 * m[192]
    # the two narrowest in every step (train_nested --narrowest-every-step 2): with 3 sizes a step, no draw is left
    assert nested_macs_per_image(dict(cfg, narrowest_every_step=2), 1000) == 1000 + 3 * (m[64] + m[96] + m[192])


def test_finetune_counts_every_route_of_a_step():
    spec = _toy()
    infos = enumerate_descendants(spec)
    alone = [d.macs for d in infos if len(d.route) == 1]
    stitched = [d.macs for d in infos if len(d.route) > 1]
    mean_stitched = sum(stitched) / len(stitched)
    # sandwich rule: smallest + largest member every step, the rest drawn from the stitched routes
    assert finetune_macs_per_image(spec, dict(KD, routes_per_step=3, train='all'), 1000) == \
        pytest.approx(1000 + 3 * (sum(alone) + mean_stitched))
    assert finetune_macs_per_image(spec, dict(KD, routes_per_step=6, train='all'), 1000) == \
        pytest.approx(1000 + 3 * (sum(alone) + 4 * mean_stitched))
    # one or two routes a step: uniform over every route; no KD: no ancestry forward
    mean_all = sum(d.macs for d in infos) / len(infos)
    assert finetune_macs_per_image(spec, dict(routes_per_step=2, train='all', kd_weight=0.0), 1000) == \
        pytest.approx(3 * 2 * mean_all)
    # stitches mode draws stitched routes only, and no member is always in the step
    assert finetune_macs_per_image(spec, dict(KD, routes_per_step=3, train='stitches'), 1000) == \
        pytest.approx(1000 + 3 * 3 * mean_stitched)
    # every member in every step (a 3-member pool): 3 + 2 drawn stitched routes
    three = spec.replace(members=(MemberSpec('tiny', 16, 1, 4), MemberSpec('mid', 24, 2, 4), MemberSpec('base', 32, 2, 4)))
    infos3 = enumerate_descendants(three)
    alone3 = [d.macs for d in infos3 if len(d.route) == 1]
    mean3 = sum(d.macs for d in infos3 if len(d.route) > 1) / sum(len(d.route) > 1 for d in infos3)
    assert len(alone3) == 3
    assert finetune_macs_per_image(three, dict(KD, routes_per_step=5, train='all', sandwich='members'), 1000) == \
        pytest.approx(1000 + 3 * (sum(alone3) + 2 * mean3))
    # cost buckets: each bucket's mean once; with one drawn route the one bucket is every stitched route
    assert finetune_macs_per_image(spec, dict(KD, routes_per_step=3, train='all', route_sampling='macs'), 1000) == \
        pytest.approx(1000 + 3 * (sum(alone) + mean_stitched))
    lo, hi = min(stitched), max(stitched)
    halves = [[m for m in stitched if m < (lo + hi) / 2], [m for m in stitched if m >= (lo + hi) / 2]]
    assert all(halves)
    assert finetune_macs_per_image(spec, dict(KD, routes_per_step=4, train='all', route_sampling='macs'), 1000) == \
        pytest.approx(1000 + 3 * (sum(alone) + sum(sum(h) / len(h) for h in halves)))


def test_the_old_replication_presets_lgp_compute_is_counted_in_full():
    """Issue 28: the earlier preset (ancestry 1400 steps, distill 940, finetune 3 routes x 600, batch 128) was
    reported as 92.7 TMACs for the LGP arm, counting one route per finetune step and no transforms."""
    spec = get_pool_spec('fashion_mnist_l6')
    anc = _vit_macs(192, 3, 12, spec)
    images = 128
    total = 3 * anc * 1400 * images + 940 * images * distill_macs_per_image(spec, anc) + \
        600 * images * finetune_macs_per_image(spec, dict(KD, routes_per_step=3, train='all'), anc)
    assert total / 1e12 == pytest.approx(106.5, abs=0.05)  # 104.7 without the transforms' 1.8
    one_route = 600 * images * (anc + 3 * sum(d.macs for d in enumerate_descendants(spec)) / 18)
    without = 3 * anc * 1400 * images + 940 * images * (anc + 3 * (route_macs(spec, (('tiny', 0, 6),))
                                                                 + route_macs(spec, (('base', 0, 6),)))) + one_route
    assert without / 1e12 == pytest.approx(92.7, abs=0.05)


def test_compare_pairs_seeds_and_keeps_one_evaluations_binomial_error():
    # every seed 0.5 better: paired, that is a difference (an unpaired test sees two spreads of 1 point)
    assert compare([80.0, 81.0, 82.0], [79.5, 80.5, 81.5], None) == 'higher'
    assert compare([79.5, 80.5, 81.5], [80.0, 81.0, 82.0], None) == 'lower'
    # the same 10,000 test images for every seed: the binomial error of a difference (~0.57 point) is not divided
    # by the number of seeds, so 1 point over four seeds is still a tie
    assert compare([80.0] * 4, [79.0] * 4, 10000) == 'tie'
    assert compare([80.0] * 4, [78.8] * 4, 10000) == 'higher'
    # a paired difference that moves with the seed: its own spread decides
    assert compare([80.0, 82.0, 80.0], [80.0, 80.0, 80.0], None) == 'tie'
    with pytest.raises(ValueError, match='pairs values by seed'):
        compare([80.0, 81.0], [80.0], None)


def _row(name, gmacs, top1, val, route='t->b'):
    return dict(name=name, route=route, params=1, gmacs=gmacs, top1=top1, val_top1=val)


def test_goal_reports_each_part_met_or_not():
    students = {0: [_row('direct 64w', 1.0, 80.0, None, 'ViT'), _row('direct 192w', 3.0, 85.0, None, 'ViT')]}
    sizes = [(1.0 + 0.2 * i, 79.8 + 0.5 * i) for i in range(11)]  # 11 sizes from 1.0 to 3.0, rising
    pool = {0: [_row(f's{i}', g, t, t, 't' if i in (0, 10) else 't->b') for i, (g, t) in enumerate(sizes)]}
    line, = goal({'lgp_lstsq finetuned': pool, 'direct': students}, {'lgp_lstsq finetuned': 90.0, 'direct': 100.0})
    assert 'direct 64w -0.20, direct 192w -0.20 (>= -0.3: met; stretch >= 0: not met)' in line
    assert '(0.90x): met' in line
    assert 'Pareto front (val-chosen) 11 sizes from the smallest to s10 (3 GMACs), rises on test: met' in line
    # a pool 0.5 short at the top, more expensive, with a front of two sizes
    pool = {0: [_row('s1', 1.0, 80.1, 80.1, 't'), _row('s2', 3.0, 84.5, 84.5, 't')]}
    line, = goal({'lgp_lstsq finetuned': pool, 'direct': students}, {'lgp_lstsq finetuned': 110.0, 'direct': 100.0})
    assert 'direct 64w +0.10, direct 192w -0.50 (>= -0.3: not met' in line
    assert '(1.10x): not met' in line and '2 sizes' in line and ': not met.' in line


def test_stretch_line_interpolates_the_students_and_counts_every_stitched_descendant():
    from timm_learngene.recipes.replication import _interpolated, _stretch
    pts = [(1.0, 80.0), (3.0, 84.0)]
    assert _interpolated(pts, 2.0) == pytest.approx(82.0) and _interpolated(pts, 3.0) == pytest.approx(84.0)
    assert _interpolated(pts, 0.5) is None and _interpolated(pts, 3.5) is None
    direct = {0: [_row('direct 64w', 1.0, 80.0, None, 'ViT'), _row('direct 192w', 3.0, 84.0, None, 'ViT')],
              1: [_row('direct 64w', 1.0, 80.0, None, 'ViT'), _row('direct 192w', 3.0, 84.0, None, 'ViT')]}
    # s2 at 2.0 GMACs: seed mean 81.2 >= 82.0 - 1 (within); s3 at 2.5: 81.9 < 83.0 - 1; s4 past 3.0: not compared
    lgp = {s: [_row('s1', 1.0, 80.0, 80.0, 't'), _row('s2', 2.0, 81.0 + 0.4 * s, 1.0),
               _row('s3', 2.5, 81.9, 1.0), _row('s4', 3.5, 90.0, 1.0)] for s in (0, 1)}
    students = [(1.0, 'direct 64w'), (3.0, 'direct 192w')]
    assert _stretch(lgp, direct, students) == (
        'Stretch goal (every stitched descendant within 1 point of the direct students interpolated at its GMACs): '
        "1 of 2 compared, 1 of the 3 stitched descendants outside the students' GMACs range.")
