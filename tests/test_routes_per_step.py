"""Several routes per optimizer step: the sandwich rule, seeded draws, gradients reach every drawn route, the mean."""
import pytest
import timm
import torch

import timm_learngene  # noqa: F401  (registers the models)
from timm_learngene.finetune import DescendantTrainer, RouteSampler, sandwich_routes
from timm_learngene.spec import enumerate_descendants

from conftest import NUM_CLASSES, tiny_spec


def _pool(seed=0):
    torch.manual_seed(seed)
    return timm.create_model('learngene_pool', pool=tiny_spec(6))


def _teacher(seed=1):
    torch.manual_seed(seed)
    return timm.create_model('vit_tiny_patch16_224', embed_dim=16, depth=1, num_heads=2, img_size=32, patch_size=8,
                             num_classes=NUM_CLASSES)


def _batch():
    g = torch.Generator().manual_seed(2)
    return torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, NUM_CLASSES, (4,), generator=g)


def _routes():
    return [d.route for d in enumerate_descendants(tiny_spec(6))]


def test_sandwich_routes_are_the_smallest_and_largest_member_alone():
    pool = _pool()
    assert sandwich_routes(pool) == [(('tiny', 0, 6),), (('base', 0, 6),)]
    assert sandwich_routes(tiny_spec(6)) == sandwich_routes(pool)
    three = tiny_spec(4, name='three', widths=((16, 2), (24, 3), (32, 4)), names=('tiny', 'small', 'base'))
    assert sandwich_routes(three) == [(('tiny', 0, 4),), (('base', 0, 4),)]
    assert sandwich_routes(three, 'members') == [(('tiny', 0, 4),), (('small', 0, 4),), (('base', 0, 4),)]
    one = tiny_spec(4, name='one', widths=((16, 2),), names=('tiny',), distill=False)
    assert sandwich_routes(one) == [(('tiny', 0, 4),)] == sandwich_routes(one, 'members')
    with pytest.raises(ValueError, match=r"unknown sandwich 'all'; choose one of \('ends', 'members'\)"):
        sandwich_routes(three, 'all')


def test_every_step_holds_the_always_routes_and_distinct_others():
    routes, always = _routes(), sandwich_routes(tiny_spec(6))
    sampler = RouteSampler(routes, seed=5, per_step=4, always=always)
    seen = set()
    for _ in range(200):
        step = sampler.draw_step()
        assert step[:2] == always and len(step) == 4 and len(set(step)) == 4
        seen.update(step[2:])
    assert seen == set(routes) - set(always)  # every other route comes up


def test_same_seed_same_draws_and_the_state_round_trips():
    routes, always = _routes(), sandwich_routes(tiny_spec(6))
    a, b = (RouteSampler(routes, seed=3, per_step=5, always=always) for _ in range(2))
    first = [a.draw_step() for _ in range(6)]
    assert first == [b.draw_step() for _ in range(6)]
    other = RouteSampler(routes, seed=4, per_step=5, always=always)
    assert [other.draw_step() for _ in range(6)] != first
    state = a.state_dict()
    assert set(state) == {'generator'} and isinstance(state['generator'], torch.Tensor)
    nxt = [a.draw_step() for _ in range(6)]
    c = RouteSampler(routes, seed=99, per_step=5, always=always)
    c.load_state_dict(state)
    assert [c.draw_step() for _ in range(6)] == nxt


def test_one_route_per_step_keeps_the_earlier_sequence():
    routes = _routes()
    g = torch.Generator().manual_seed(7)
    earlier = [routes[int(torch.randint(len(routes), (1,), generator=g))] for _ in range(10)]
    sampler = RouteSampler(routes, seed=7)
    assert [sampler.draw() for _ in range(5)] + [sampler.draw_step()[0] for _ in range(5)] == earlier
    assert RouteSampler([0, 1, 2], seed=1).draw() in (0, 1, 2)  # any comparable routes, as the loop tests use


def test_all_drawn_routes_may_be_always_routes():
    routes = _routes()
    sampler = RouteSampler(routes, per_step=2, always=routes[:2])
    assert all(sampler.draw_step() == routes[:2] for _ in range(3))


def test_bad_sampler_settings_are_clear_errors():
    routes, always = _routes(), sandwich_routes(tiny_spec(6))
    with pytest.raises(ValueError, match=r'19 routes per step, but there are only 18 routes to train; set routes '
                                         r'per step to at most 18'):
        RouteSampler(routes, per_step=19)
    with pytest.raises(ValueError, match='more than the 1 routes per step; set routes per step to at least 2'):
        RouteSampler(routes, per_step=1, always=always)
    with pytest.raises(ValueError, match='not one of the routes to train'):
        RouteSampler([r for r in routes if len(r) > 1], per_step=3, always=always)
    with pytest.raises(ValueError, match='listed twice'):
        RouteSampler(routes, per_step=3, always=[always[0], always[0]])
    with pytest.raises(ValueError, match='>= 1'):
        RouteSampler(routes, per_step=0)
    with pytest.raises(ValueError, match='distinct'):
        RouteSampler(routes + routes[:1])
    with pytest.raises(ValueError, match='call draw_step'):
        RouteSampler(routes, per_step=2).draw()


def test_every_drawn_route_receives_gradient_and_no_other_stitch_does():
    pool = _pool()
    trainer = DescendantTrainer(pool, _teacher())
    sampler = RouteSampler(_routes(), seed=0, per_step=4, always=sandwich_routes(pool))
    x, y = _batch()
    step = sampler.draw_step()
    trainer(x, y, step)['total'].backward()
    used = set()
    for route in step:
        for name, p in pool.descendant(route).named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (route, name)
            used.add(id(p))
    stitches = list(pool.stitches.parameters())
    assert any(id(p) in used for p in stitches)
    unused = [p for p in stitches if id(p) not in used]
    assert unused and all(p.grad is None for p in unused)


def test_total_is_the_mean_of_the_routes_and_the_teacher_runs_once():
    pool, teacher = _pool(), _teacher()
    trainer = DescendantTrainer(pool, teacher, ce_weight=0.3, kd_weight=0.7, temperature=2.0)
    calls = []
    handle = teacher.register_forward_hook(lambda *a: calls.append(1))
    x, y = _batch()
    names = ['s1', 's3', 's16']
    routes = [pool.descendants[int(n[1:]) - 1].route for n in names]
    with torch.no_grad():
        out = trainer(x, y, routes)
        assert len(calls) == 1
        single = [trainer(x, y, r) for r in routes]
    handle.remove()
    assert set(out) == {'total', 'ce', 'kd'} | {f'route:{n}' for n in names}
    for k in ('total', 'ce', 'kd'):
        torch.testing.assert_close(out[k], sum(s[k] for s in single) / 3)
    for n, s in zip(names, single):
        torch.testing.assert_close(out[f'route:{n}'], s['total'])
        assert set(s) == {'total', 'ce', 'kd', f'route:{n}'}


def test_routes_may_be_names_infos_or_lists():
    pool = _pool()
    trainer = DescendantTrainer(pool, None, ce_weight=1.0, kd_weight=0.0)
    x, y = _batch()
    info = pool.descendants[2]
    as_list = [list(seg) for seg in info.route]
    with torch.no_grad():
        want = trainer(x, y, info.route)['total']
        for form in ('s3', info, as_list, [info.route], ['s3'], [info], [as_list]):
            out = trainer(x, y, form)
            assert set(out) == {'total', 'ce', 'route:s3'}, form
            torch.testing.assert_close(out['total'], want)
        both = trainer(x, y, ['s1', info.route])
    assert set(both) == {'total', 'ce', 'route:s1', 'route:s3'}
    with pytest.raises(ValueError, match='no route given'):
        trainer(x, y, [])


def test_routes_for_draws_once_per_optimizer_step():
    routes = [(('t', 0, 1),), (('b', 0, 1),), (('t', 0, 0), ('b', 0, 1)), (('t', 0, 1), ('b', 1, 1))]
    a, b = RouteSampler(routes, seed=3, per_step=2), RouteSampler(routes, seed=3, per_step=2)
    want = [b.draw_step() for _ in range(5)]
    got = []
    for step in range(5):
        first = a.routes_for(step)
        assert a.routes_for(step) is first and a.routes_for(step) == first  # later micro-batches: the same routes
        got.append(first)
    assert got == want


def test_macs_buckets_draw_one_route_from_each_cost_bucket():
    from timm_learngene.finetune import cost_buckets
    assert cost_buckets([1, 1, 1, 2, 10], 2) == [[0, 1, 2, 3], [4]]
    assert cost_buckets([1, 4, 7, 10], 3) == [[0], [1], [2, 3]]  # the last bucket is closed
    assert cost_buckets([1, 1, 10], 3) == [[0, 1], [2]]  # empty buckets dropped
    assert cost_buckets([5, 5], 2) == [[0, 1]] and cost_buckets([1, 2], 0) == [[0, 1]] and cost_buckets([], 2) == []
    # 9 cheap routes and one dear one: uniform draws of 2 miss the dear one most steps, buckets never do
    routes = list(range(10))
    macs = [1.0] * 8 + [2.0, 10.0]
    bucketed = RouteSampler(routes, seed=0, per_step=2, macs=macs)
    uniform = RouteSampler(routes, seed=0, per_step=2)
    steps = [bucketed.draw_step() for _ in range(50)]
    assert all(len(set(s)) == 2 and 9 in s for s in steps)
    assert {r for s in steps for r in s} == set(routes)
    assert sum(9 in uniform.draw_step() for _ in range(50)) < 25
    # always routes are left out of the buckets; an empty bucket is filled from the routes not drawn
    sampler = RouteSampler(routes, seed=1, per_step=5, always=[0, 9], macs=macs)
    for _ in range(30):
        step = sampler.draw_step()
        assert step[:2] == [0, 9] and len(set(step)) == 5 and 8 in step  # 8 alone in the top bucket of 1..2
    state = sampler.state_dict()
    nxt = [sampler.draw_step() for _ in range(5)]
    again = RouteSampler(routes, seed=7, per_step=5, always=[0, 9], macs=macs)
    again.load_state_dict(state)
    assert [again.draw_step() for _ in range(5)] == nxt
    with pytest.raises(ValueError, match='2 costs for 10 routes; give one cost per route'):
        RouteSampler(routes, per_step=2, macs=[1, 2])


def test_finetune_route_sampling_macs_hands_each_routes_macs_to_the_sampler(tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState, PartialState
    from timm_learngene.pool_writer import save_pool
    from timm_learngene.recipes import finetune
    pool_dir = save_pool(_pool(), tmp_path / 'pool')
    from timm_learngene.spec import route_macs
    from timm_learngene.pool_reader import read_pool_config
    made = []

    class Recording(RouteSampler):
        def __init__(self, routes, **kw):
            made.append((list(routes), kw.get('macs'), list(kw.get('always', ()))))
            super().__init__(routes, **kw)

    monkeypatch.setattr(finetune, 'RouteSampler', Recording)
    args = ['--dataset', 'synthetic', '--num-workers', '0', '--cpu', '--mixed-precision', 'no', '--max-steps', '1',
            '--batch-size', '4', '--train-limit', '8', '--stitch-init', 'none', '--kd-weight', '0',
            '--routes-per-step', '4', '--pool', str(pool_dir)]
    try:
        for sampling in ('macs', 'uniform'):
            finetune.main(args + ['--route-sampling', sampling, '--output', str(tmp_path / sampling)])
            AcceleratorState._reset_state(True)
            PartialState._reset_state()
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    spec = read_pool_config(pool_dir)['model_args']['pool']
    (routes, macs, _), (_, none, _) = made
    assert macs == [route_macs(spec, r) for r in routes] and len(set(macs)) > 2 and none is None


def test_lora_stitches_start_as_the_base_train_only_the_update_and_fold_back():
    from timm_learngene.finetune import LoRAStitch, add_lora_stitches, merge_lora_stitches
    pool = _pool().eval()
    x = _batch()[0]
    route = next(d.route for d in enumerate_descendants(tiny_spec(6)) if len(d.route) > 1)
    before = pool(x, route)
    n = add_lora_stitches(pool, 2)
    assert n == sum(len(v) for v in pool.stitches.values()) and n > 0
    torch.testing.assert_close(pool(x, route), before, rtol=0, atol=0)  # B starts at zero
    layer = next(iter(pool.stitches.values()))[0]
    assert isinstance(layer, LoRAStitch) and layer.lora_a.shape == (2, 16) and layer.lora_b.shape == (32, 2)
    assert not layer.base.weight.requires_grad and layer.lora_a.requires_grad and layer.lora_b.requires_grad
    trainer = DescendantTrainer(pool, None, 1.0, 0.0)
    trainer.train()
    xb, yb = _batch()
    trainer(xb, yb, [route])['total'].backward()
    lora = [s for layers in pool.stitches.values() for s in layers]
    assert all(s.base.weight.grad is None for s in lora) and any(s.lora_b.grad is not None for s in lora)
    with torch.no_grad():
        for layers in pool.stitches.values():
            for s in layers:
                s.lora_b.normal_()
    pool.eval()
    changed = pool(x, route)
    assert not torch.allclose(changed, before)
    w = layer.base.weight + layer.lora_b @ layer.lora_a
    assert merge_lora_stitches(pool) == n and merge_lora_stitches(pool) == 0
    merged = next(iter(pool.stitches.values()))[0]
    assert type(merged) is torch.nn.Linear and merged.weight.requires_grad
    torch.testing.assert_close(merged.weight, w)
    torch.testing.assert_close(pool(x, route), changed, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"LoRA rank 17 must be between 1 and the stitch layer's smaller width 16"):
        LoRAStitch(torch.nn.Linear(16, 32), 17)


def test_finetune_stitch_lora_rank_writes_plain_stitch_layers(tmp_path):
    from accelerate.state import AcceleratorState, PartialState
    from safetensors.torch import load_file
    from timm_learngene.errors import ConfigError
    from timm_learngene.pool_writer import save_pool
    from timm_learngene.recipes import finetune
    pool_dir = save_pool(_pool(), tmp_path / 'pool')
    args = ['--dataset', 'synthetic', '--num-workers', '0', '--cpu', '--mixed-precision', 'no', '--max-steps', '2',
            '--batch-size', '4', '--train-limit', '8', '--stitch-init', 'none', '--kd-weight', '0',
            '--routes-per-step', '4', '--pool', str(pool_dir), '--lr', '0.05', '--warmup-epochs', '0']
    try:
        finetune.main(args + ['--stitch-lora-rank', '2', '--train', 'stitches', '--output', str(tmp_path / 'ft')])
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    a, b = load_file(pool_dir / 'model.safetensors'), load_file(tmp_path / 'ft' / 'pool' / 'model.safetensors')
    assert a.keys() == b.keys()  # no lora_a / lora_b / base. keys: the pool file's format
    moved = [k for k in a if k.startswith('stitches.') and not torch.equal(a[k], b[k])]
    assert moved and all(k.endswith('.weight') for k in moved)  # the update moves weights, never biases
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith('members.'))
    with pytest.raises(ConfigError, match='--stitch-lora-rank must be 0 \\(off\\) or a rank >= 1, got -1'):
        finetune.main(args + ['--stitch-lora-rank', '-1', '--output', str(tmp_path / 'bad')])


def test_finetune_sandwich_members_trains_every_member_in_every_step(tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState, PartialState
    from timm_learngene.pool_writer import save_pool
    from timm_learngene.recipes import finetune
    three = tiny_spec(4, name='three', widths=((16, 2), (24, 3), (32, 4)), names=('tiny', 'small', 'base'))
    torch.manual_seed(0)
    pool_dir = save_pool(timm.create_model('learngene_pool', pool=three), tmp_path / 'pool')
    made = []

    class Recording(RouteSampler):
        def __init__(self, routes, **kw):
            made.append(list(kw.get('always', ())))
            super().__init__(routes, **kw)

    monkeypatch.setattr(finetune, 'RouteSampler', Recording)
    args = ['--dataset', 'synthetic', '--num-workers', '0', '--cpu', '--mixed-precision', 'no', '--max-steps', '1',
            '--batch-size', '4', '--train-limit', '8', '--stitch-init', 'none', '--kd-weight', '0',
            '--pool', str(pool_dir)]
    try:
        finetune.main(args + ['--routes-per-step', '4', '--sandwich', 'members', '--output', str(tmp_path / 'a')])
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
        finetune.main(args + ['--routes-per-step', '4', '--output', str(tmp_path / 'b')])
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    assert made == [sandwich_routes(three, 'members'), sandwich_routes(three)]
    assert len(made[0]) == 3 and len(made[1]) == 2
