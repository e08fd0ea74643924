"""Stitch initialisation, joint finetuning, evaluation, budget selection and the SN-Net baseline."""
import json

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.models import save_for_hf

import timm_learngene
from timm_learngene.errors import PoolSpecError
from timm_learngene.recipes import evaluate, finetune
from timm_learngene.selection import BudgetError, select
from timm_learngene.profiling import NoProfileError, Profile, device_signature, read_profiles, write_profile
from timm_learngene.snnet import anchor_pool, anchor_spec
from timm_learngene.spec import enumerate_descendants, member_params, stitch_positions
from timm_learngene.stitch_init import init_stitches, lstsq_affine, member_features, ridge_compose
from timm_learngene.training.progress import Progress

from conftest import tiny_spec


@pytest.fixture(autouse=True)
def _reset_accelerate():
    from accelerate.state import AcceleratorState, PartialState
    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def _reset():
    from accelerate.state import AcceleratorState, PartialState
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


# ---- stitch initialisation ---------------------------------------------------------------------------------
def test_lstsq_recovers_an_exact_affine_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g)
    w, b = torch.randn(20, 12, generator=g), torch.randn(20, generator=g)
    got_w, got_b = lstsq_affine(x, x @ w.T + b)
    torch.testing.assert_close(got_w, w, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_b, b, atol=1e-4, rtol=1e-4)


def test_ridge_compose_is_the_spec_formula_and_inverts_a_well_posed_end():
    g = torch.Generator().manual_seed(1)
    wf, bf = torch.randn(24, 8, generator=g), torch.randn(24, generator=g)
    we, be = torch.randn(24, 16, generator=g), torch.randn(24, generator=g)
    s, sb = ridge_compose(wf, bf, we, be, lam=0.05)
    gram = we.double().T @ we.double()
    a = gram + 0.05 * gram.diagonal().mean() * torch.eye(16, dtype=torch.float64)
    torch.testing.assert_close(s.double(), torch.linalg.inv(a) @ we.double().T @ wf.double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sb.double(), torch.linalg.inv(a) @ we.double().T @ (bf - be).double(),
                               atol=1e-5, rtol=1e-5)
    # with no ridge and an end matrix of full column rank, the composition maps x to the end feature z whose
    # ancestry image W_e z + b_e is closest to W_f x + b_f; if the front really is W_e M, it recovers M
    m, c = torch.randn(16, 8, generator=g), torch.randn(16, generator=g)
    s0, sb0 = ridge_compose(we @ m, we @ c + be, we, be, lam=0.0)
    torch.testing.assert_close(s0, m, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sb0, c, atol=1e-4, rtol=1e-4)


def _pool(spec=None, seed=0):
    torch.manual_seed(seed)
    return timm.create_model('learngene_pool', pool=spec or tiny_spec(4)).eval()


def test_lstsq_init_fits_each_window_to_the_mean_of_its_positions():
    pool = _pool()
    images = torch.randn(6, 3, 32, 32)
    solved = init_stitches(pool, 'lstsq', images)
    spec = pool.pool_spec
    assert solved == {'tiny-base': 3 * spec.depth - 2}
    ft, fb = member_features(pool, 'tiny', images), member_features(pool, 'base', images)
    for w in range(spec.num_windows):
        sols = [lstsq_affine(ft[j + 1], fb[k]) for j, k, ww in stitch_positions(spec) if ww == w]
        layer = pool.stitches['tiny-base'][w]
        torch.testing.assert_close(layer.weight, torch.stack([s[0] for s in sols]).mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer.bias, torch.stack([s[1] for s in sols]).mean(0), atol=1e-5, rtol=1e-4)


def test_stitch_init_reports_progress_per_feature_pass_and_solve(capsys):
    pool = _pool()
    spec = pool.pool_spec
    shown = lambda total, desc: Progress(total, desc=desc, mode='lines', every=max(1, total // 10), unit='solve')  # noqa: E731
    init_stitches(pool, 'lstsq', torch.randn(4, 3, 32, 32), progress=shown)
    out = capsys.readouterr().out
    total = 2 + 3 * spec.depth - 2  # two members' feature passes, one solve per position
    assert f'stitch init (lstsq) solve {total}/{total} (100%)' in out
    init_stitches(pool, 'learngene')
    assert capsys.readouterr().out == ''


def test_learngene_init_is_the_composition_of_the_nearest_transforms():
    pool = _pool()
    spec = pool.pool_spec
    init_stitches(pool, 'learngene', lam=0.01)
    mb = spec.distill.member_blocks
    near = lambda b: min(range(len(mb)), key=lambda p: (abs(mb[p] - b), p))  # noqa: E731
    for w in range(spec.num_windows):
        sols = []
        for j, k, ww in stitch_positions(spec):
            if ww != w:
                continue
            tf, te = pool.transforms['tiny']['block'][near(j)], pool.transforms['base']['block'][near(k - 1)]
            sols.append(ridge_compose(tf.weight, tf.bias, te.weight, te.bias, 0.01))
        layer = pool.stitches['tiny-base'][w]
        torch.testing.assert_close(layer.weight, torch.stack([s[0] for s in sols]).mean(0))
        torch.testing.assert_close(layer.bias, torch.stack([s[1] for s in sols]).mean(0))


def test_transpose_init_and_its_errors():
    spec = tiny_spec(4).replace(distill=tiny_spec(4).distill.__class__(
        teacher='t', teacher_width=32, teacher_depth=12, member_blocks=(0, 1, 3), teacher_blocks=(3, 7, 11)))
    pool = _pool(spec)
    init_stitches(pool, 'transpose')
    mean = torch.stack([t.weight for t in pool.transforms['tiny']['block']]).mean(0)
    for layer in pool.stitches['tiny-base']:
        torch.testing.assert_close(layer.weight, mean)
        assert torch.all(layer.bias == 0)
    with pytest.raises(PoolSpecError, match="'transpose'.*48 wide"):
        init_stitches(_pool(), 'transpose')  # ancestry 48 wide, end member 32 wide
    with pytest.raises(PoolSpecError, match='has none'):
        init_stitches(_pool(tiny_spec(4, distill=False)), 'learngene')
    with pytest.raises(ValueError, match='calibration images'):
        init_stitches(_pool(), 'lstsq')
    with pytest.raises(ValueError, match='unknown stitch init'):
        init_stitches(_pool(), 'magic')


# ---- recipes: finetune, evaluate, select -------------------------------------------------------------------
@pytest.fixture(scope='module')
def distilled(tmp_path_factory):
    """A tiny pool folder with transforms (ancestry 32 wide) and its ancestry folder."""
    root = tmp_path_factory.mktemp('pool')
    torch.manual_seed(0)
    teacher = timm.create_model('vit_tiny_patch16_224', embed_dim=32, depth=3, num_heads=2, img_size=32,
                                patch_size=8, num_classes=5)
    save_for_hf(teacher, root / 'teacher')
    spec = tiny_spec(3).replace(distill=tiny_spec(3).distill.__class__(
        teacher='t', teacher_width=32, teacher_depth=3, member_blocks=(0, 1, 2), teacher_blocks=(0, 1, 2)))
    pool = timm.create_model('learngene_pool', pool=spec)
    timm_learngene.save_pool(pool, root / 'pool', recipe={'distill': {'teacher': 'x',
                                                                      'teacher_checkpoint': str(root / 'teacher')}})
    return root


def _ft_args(src, out, *extra):
    return ['--pool', str(src / 'pool'), '--teacher-checkpoint', str(src / 'teacher'), '--dataset', 'synthetic',
            '--train-limit', '48', '--eval-limit', '16',
            '--batch-size', '8', '--num-workers', '0', '--output', str(out), '--warmup-epochs', '0',
            '--init-images', '16', '--log-every', '1', '--lr', '1e-3', *extra]


def test_finetune_never_opens_a_path_from_the_pool_config(distilled, tmp_path, monkeypatch):
    """The pool's recipe names its ancestry folder; finetune shows it as a hint but does not load it."""
    opened = []
    monkeypatch.setattr(finetune, 'load_ancestry', lambda *a, **kw: opened.append(a))
    args = _ft_args(distilled, tmp_path, '--max-steps', '1')
    i = args.index('--teacher-checkpoint')
    with pytest.raises(timm_learngene.LearngeneError, match=rf"distilled from '{distilled / 'teacher'}'.*--teacher"):
        finetune.main(args[:i] + args[i + 2:])
    assert opened == []
    _reset()


@pytest.mark.slow
@pytest.mark.parametrize('init', ['lstsq', 'learngene', 'transpose'])
def test_finetune_two_steps_for_each_init(tmp_path, distilled, init):
    """Each init trains; the learngene run is also two-way (--two-way: a two-way pool from a one-way one)."""
    before = load_file(distilled / 'pool' / 'model.safetensors')
    two_way = ['--two-way', '--routes-per-step', '4'] if init == 'learngene' else []
    pool = finetune.main(_ft_args(distilled, tmp_path, '--stitch-init', init, '--max-steps', '2', *two_way))
    after = load_file(tmp_path / 'pool' / 'model.safetensors')
    assert pool.pool_spec.two_way == bool(two_way)
    assert any(k.startswith('stitches.base-tiny.') for k in after) == bool(two_way)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith('stitches.') for k in changed)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith('transforms.'))
    log = [json.loads(line) for line in (tmp_path / 'log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in log] == [1, 2] and all('kd' in r and 'ce' in r for r in log)
    cfg = json.loads((tmp_path / 'pool' / 'config.json').read_text())
    assert cfg['recipe']['finetune']['stitch_init'] == init and 'distill' in cfg['recipe']
    assert isinstance(pool, timm_learngene.LearngenePool)


@pytest.mark.slow
def test_finetune_stitches_mode_keeps_the_learngenes(tmp_path, distilled):
    before = load_file(distilled / 'pool' / 'model.safetensors')
    finetune.main(_ft_args(distilled, tmp_path, '--train', 'stitches', '--max-steps', '3', '--kd-weight', '0',
                           '--ce-weight', '1'))
    after = load_file(tmp_path / 'pool' / 'model.safetensors')
    for k in before:
        if k.startswith('members.'):
            assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith('stitches.'))


@pytest.mark.slow
def test_finetune_resume_equals_straight_run(tmp_path, distilled, monkeypatch):
    finetune.main(_ft_args(distilled, tmp_path / 'a', '--max-steps', '4'))
    _reset()
    finetune.main(_ft_args(distilled, tmp_path / 'b', '--max-steps', '4', '--stop-after', '2'))
    _reset()
    # resuming unpickles nothing: every torch.load is weights_only, the loop's own state is JSON
    checkpoint = tmp_path / 'b' / 'checkpoints' / 'step_00000002'
    assert (checkpoint / 'train_state.json').is_file() and not list(checkpoint.glob('custom_checkpoint_*'))
    loads, real_load = [], torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)
    monkeypatch.setattr(torch, 'load', spy)
    finetune.main(_ft_args(distilled, tmp_path / 'b', '--max-steps', '4', '--resume', str(tmp_path / 'b')))
    monkeypatch.undo()
    assert loads and all(w is True for w in loads), loads
    a = load_file(tmp_path / 'a' / 'pool' / 'model.safetensors')
    b = load_file(tmp_path / 'b' / 'pool' / 'model.safetensors')
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_route_sampler_is_seeded_and_resumable():
    from timm_learngene.finetune import RouteSampler
    routes = [d.route for d in enumerate_descendants(tiny_spec(6))]
    a, b = RouteSampler(routes, seed=3), RouteSampler(routes, seed=3)
    first = [a.draw() for _ in range(5)]
    assert first == [b.draw() for _ in range(5)]
    state = a.state_dict()
    nxt = [a.draw() for _ in range(5)]
    c = RouteSampler(routes, seed=99)
    c.load_state_dict(state)
    assert [c.draw() for _ in range(5)] == nxt
    assert len({r for r in first + nxt}) > 1


@pytest.mark.slow
def test_evaluate_writes_one_row_per_descendant_and_the_pool_metrics(tmp_path, distilled):
    import shutil
    pool_dir = tmp_path / 'pool'
    shutil.copytree(distilled / 'pool', pool_dir)
    rows = evaluate.main(['--pool', str(pool_dir), '--dataset', 'synthetic', '--eval-limit', '24',
                          '--num-workers', '0', '--output', str(tmp_path / 'eval'), '--repeats', '1',
                          '--throughput-batch', '4'])
    spec = timm_learngene.read_pool_config(pool_dir)['model_args']['pool']
    assert [r['name'] for r in rows] == [d.name for d in enumerate_descendants(spec)]
    for r in rows:
        assert 0 <= r['top1'] <= 100 and r['top5'] >= r['top1'] and r['img_s'] > 0
        assert r['latency_ms'] > 0 and r['latency_iqr_ms'] >= 0
    csv_lines = (tmp_path / 'eval' / 'descendants.csv').read_text().strip().splitlines()
    assert len(csv_lines) == len(rows) + 1
    md = (tmp_path / 'eval' / 'descendants.md').read_text()
    assert sum(line.startswith('| s') for line in md.splitlines()) == len(rows)
    png = (tmp_path / 'eval' / 'pareto.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    saved = json.loads((pool_dir / 'config.json').read_text())['model_args']['descendants']
    assert [d['top1'] for d in saved] == [r['top1'] for r in rows]
    # speed is two profiles of this device (batch 1: latency, batch 4: throughput), stored under its signature
    profiles = read_profiles(pool_dir)
    assert [(p.device.kind, p.device.batch_size) for p in profiles] == [('cpu', 1), ('cpu', 4)]
    assert [r['latency_ms'] for r in rows] == [profiles[0].results[r['name']]['median_ms'] for r in rows]
    assert all('latency_ms' not in d and 'img_s' not in d for d in saved)  # not a per-descendant single timing
    assert (tmp_path / 'eval' / 'pareto_latency.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # the weights are untouched, the pool still loads
    assert (pool_dir / 'model.safetensors').read_bytes() == (distilled / 'pool' / 'model.safetensors').read_bytes()
    pool = timm_learngene.load_pool(pool_dir)
    assert pool.descendants[0].metrics['top1'] == rows[0]['top1']


def test_select_honours_every_budget(tmp_path):
    spec = tiny_spec(6)
    pool = timm.create_model('learngene_pool', pool=spec)
    infos = pool.descendants
    timm_learngene.save_pool(pool, tmp_path / 'p')
    # without measured accuracy: the largest that fits
    assert select(tmp_path / 'p') == max(infos, key=lambda d: d.macs).name
    budget = infos[5].gmacs
    assert select(tmp_path / 'p', max_gmacs=budget) == infos[5].name
    assert select(pool, max_params=infos[3].params) == max(
        (d for d in infos if d.params <= infos[3].params), key=lambda d: d.macs).name
    with pytest.raises(NoProfileError, match='no latency measured for cpu: .*python -m timm_learngene profile'):
        select(tmp_path / 'p', max_latency_ms=5)
    with pytest.raises(BudgetError, match='smallest is s1'):
        select(tmp_path / 'p', max_gmacs=infos[0].gmacs / 2)
    # with measured accuracy and latency on this machine: the most accurate within budget
    metrics = {d.name: {'top1': 50.0 + (7 * i) % 13} for i, d in enumerate(infos)}
    latency = {d.name: 1.0 + i for i, d in enumerate(infos)}
    timm_learngene.pool_writer.update_pool_metrics(tmp_path / 'p', metrics)
    write_profile(tmp_path / 'p', Profile(device_signature('cpu'), {
        n: dict(median_ms=v, q1_ms=v, q3_ms=v) for n, v in latency.items()}))
    fits = [d for d in infos if d.gmacs <= infos[10].gmacs and latency[d.name] <= 8.0]
    best = max(fits, key=lambda d: (metrics[d.name]['top1'], -latency[d.name]))
    assert select(tmp_path / 'p', max_gmacs=infos[10].gmacs, max_latency_ms=8.0) == best.name
    with pytest.raises(BudgetError, match=r'no descendant fits .*max_latency_ms=0\.5; the smallest is s1'):
        select(tmp_path / 'p', max_latency_ms=0.5)


# ---- SN-Net -------------------------------------------------------------------------------------------------
def test_snnet_deit_anchor_spec_has_71_descendants_and_the_released_sizes():
    anchors = [timm.create_model(n, pretrained=False) for n in
               ('deit_base_patch16_224', 'deit_tiny_patch16_224', 'deit_small_patch16_224')]
    spec = anchor_spec(anchors, ['deit_base_patch16_224', 'deit_tiny_patch16_224', 'deit_small_patch16_224'])
    assert [m.name for m in spec.members] == ['tiny', 'small', 'base']
    assert [member_params(spec, m.name) for m in spec.members] == [5_717_416, 22_050_664, 86_567_656]
    real = {'tiny': anchors[1], 'small': anchors[2], 'base': anchors[0]}
    for m in spec.members:
        assert member_params(spec, m.name) == sum(p.numel() for p in real[m.name].parameters())
    assert len(enumerate_descendants(spec)) == 71


@pytest.mark.slow
def test_snnet_pool_from_anchor_folders_runs_the_same_finetune(tmp_path):
    paths = []
    for name, width, heads in (('tiny', 16, 2), ('small', 24, 3), ('base', 32, 4)):
        torch.manual_seed(width)
        m = timm.create_model('vit_tiny_patch16_224', embed_dim=width, depth=3, num_heads=heads, img_size=32,
                              patch_size=8, num_classes=5)
        save_for_hf(m, tmp_path / f'anchor_{name}')
        paths.append(str(tmp_path / f'anchor_{name}'))
    pool = anchor_pool(paths[::-1])
    assert [m.name for m in pool.pool_spec.members] == ['tiny', 'small', 'base']
    assert len(pool.descendants) == 2 * (3 * 3 - 2) + 3
    anchor = timm.create_model(f'local-dir:{paths[1]}', pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(pool.eval()(x, (('small', 0, 3),)), anchor(x))
    with pytest.raises(PoolSpecError, match='learngene'):
        init_stitches(pool, 'learngene')
    out = finetune.main(['--anchors', ','.join(paths), '--stitch-init', 'lstsq', '--teacher-checkpoint', paths[2],
                         '--dataset', 'synthetic', '--train-limit', '32', '--batch-size', '8', '--num-workers', '0',
                         '--output', str(tmp_path / 'ft'), '--max-steps', '2', '--init-images', '8'])
    assert len(out.descendants) == 17
    assert timm.create_model(f'local-dir:{tmp_path / "ft" / "pool"}', descendant='s5', pretrained=True)(x).shape == (2, 5)


# ---- two-way stitching (large-front routes) ----------------------------------------------------------------
def test_two_way_pool_adds_the_large_front_routes_and_keeps_every_tensor(tmp_path, images):
    """add_two_way_stitches: one new stitch layer per window for each pair larger -> smaller, the old tensors
    untouched, the large-front routes run through them, and the pool file round-trips as a two-way pool."""
    pool = _pool(tiny_spec(4))
    spec = pool.pool_spec
    pool.metrics = {'s1': {'top1': 50.0}}
    before = {k: v.clone() for k, v in pool.state_dict().items()}
    assert pool.add_two_way_stitches() == spec.num_windows
    assert pool.add_two_way_stitches() == 0  # already two-way
    two = pool.pool_spec
    assert two.two_way and two == spec.replace(two_way=True) and pool.metrics == {}
    state = pool.state_dict()
    assert all(torch.equal(before[k], state[k]) for k in before)
    assert sorted(set(state) - set(before)) == sorted(f'stitches.base-tiny.{w}.{p}' for w in range(spec.num_windows)
                                                      for p in ('weight', 'bias'))
    assert state['stitches.base-tiny.0.weight'].shape == (16, 32)  # base (32 wide) -> tiny (16 wide)
    n_up = len(enumerate_descendants(spec))
    assert len(pool.descendants) == n_up + len(stitch_positions(spec))
    route = (('base', 0, 2), ('tiny', 2, 4))
    with torch.no_grad():
        out = pool(images, route)
        layer = pool.stitches['base-tiny'][stitch_positions(spec)[[(j, k) for j, k, _ in stitch_positions(spec)]
                                                                    .index((1, 2))][2]]
        layer.weight.add_(1.0)
        assert not torch.allclose(pool(images, route), out)  # that route runs the base -> tiny stitch
        layer.weight.sub_(1.0)
    timm_learngene.save_pool(pool, tmp_path / 'pool')
    cfg = json.loads((tmp_path / 'pool' / 'config.json').read_text())
    assert cfg['model_args']['pool']['two_way'] is True
    back = timm_learngene.load_pool(tmp_path / 'pool').eval()
    assert back.pool_spec == two
    name = next(d.name for d in back.descendants if d.route == route)
    with torch.no_grad():
        torch.testing.assert_close(back(images, name), out)
        alone = timm.create_model('local-dir:' + str(tmp_path / 'pool'), pretrained=True, descendant=name).eval()
        torch.testing.assert_close(alone(images), out)
    from timm_learngene.model_card import render_model_card
    card = render_model_card(cfg, 'org/two-way', image=None)
    assert 'members (both ways)' in card and 'two-way, also the first blocks of a larger member' in card
    one_way = render_model_card(dict(cfg, model_args=dict(cfg['model_args'], pool=spec.to_dict())), 'org/a', image=None)
    assert 'members (smaller -> larger)' in one_way and 'two-way' not in one_way


@pytest.mark.parametrize('method', ['lstsq', 'learngene'])
def test_stitch_inits_solve_the_large_front_stitches_too(method):
    pool = _pool(tiny_spec(4))
    pool.add_two_way_stitches()
    spec = pool.pool_spec
    images = torch.randn(6, 3, 32, 32)
    assert init_stitches(pool, method, images) == {'tiny-base': len(stitch_positions(spec)),
                                                   'base-tiny': len(stitch_positions(spec))}
    if method == 'lstsq':
        fb, ft = member_features(pool, 'base', images), member_features(pool, 'tiny', images)
        sols = [lstsq_affine(fb[j + 1], ft[k]) for j, k, w in stitch_positions(spec) if w == 0]
        torch.testing.assert_close(pool.stitches['base-tiny'][0].weight, torch.stack([s[0] for s in sols]).mean(0),
                                   atol=1e-5, rtol=1e-4)


def test_finetune_two_way_with_no_stitch_init_is_refused(tmp_path, distilled):
    with pytest.raises(timm_learngene.LearngeneError, match='--stitch-init none would leave them at random'):
        finetune.main(_ft_args(distilled, tmp_path / 'none', '--two-way', '--stitch-init', 'none', '--max-steps', '1'))
    assert not (tmp_path / 'none' / 'pool').exists()
