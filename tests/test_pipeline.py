"""The main job end to end at toy size, and the Fashion-MNIST IDX reader."""
import csv
import gzip
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

import timm_learngene
from timm_learngene.data.fashion_mnist import FASHION_MNIST_DIR, FashionMNIST, find_fashion_mnist, read_idx
from timm_learngene.errors import ConfigError
from timm_learngene.recipes import distill, evaluate, finetune, pipeline, train_vit
from timm_learngene.spec import DistillSpec, MemberSpec, PoolSpec

ROOT = Path(__file__).resolve().parents[1]


def _write_idx(path: Path, array: np.ndarray, gz: bool = True):
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
    data = head + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, 'wb') as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_fashion_mnist(root: Path, n_train=160, n_test=64, seed=0) -> Path:
    """A Fashion-MNIST-shaped folder: class c images are bright in a class-specific row band, so it is learnable."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (('train', n_train), ('t10k', n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 4: 2 * c + 8] = 230
        _write_idx(root / f'{split}-images-idx3-ubyte.gz', images)
        _write_idx(root / f'{split}-labels-idx1-ubyte.gz', labels)
    return root


def test_idx_reader_round_trip_and_errors(tmp_path):
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    _write_idx(tmp_path / 'a.gz', a)
    _write_idx(tmp_path / 'a', a, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / 'a.gz'), a)
    np.testing.assert_array_equal(read_idx(tmp_path / 'a'), a)
    raw = (tmp_path / 'a').read_bytes()
    (tmp_path / 'short').write_bytes(raw[:-5])
    with pytest.raises(ValueError, match='truncated'):
        read_idx(tmp_path / 'short')
    (tmp_path / 'bad').write_bytes(b'\x01\x02' + raw[2:])
    with pytest.raises(ValueError, match='not an IDX file'):
        read_idx(tmp_path / 'bad')


def test_fashion_mnist_dataset_on_written_files(tmp_path):
    root = _fake_fashion_mnist(tmp_path / 'fm')
    ds = FashionMNIST(root, 'train')
    assert len(ds) == 160 and len(FashionMNIST(root, 'test')) == 64
    img, label = ds[3]
    assert img.size == (28, 28) and img.mode == 'L' and 0 <= label < 10
    assert len(FashionMNIST(root, 'train', limit=10)) == 10
    with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'):
        find_fashion_mnist(tmp_path / 'empty')


@pytest.mark.skipif(not (FASHION_MNIST_DIR / 'train-images-idx3-ubyte.gz').is_file(),
                    reason='Debian dataset-fashion-mnist not installed')
def test_real_fashion_mnist_files():
    images = read_idx(FASHION_MNIST_DIR / 'train-images-idx3-ubyte.gz')
    labels = read_idx(FASHION_MNIST_DIR / 'train-labels-idx1-ubyte.gz')
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert sorted(np.unique(labels)) == list(range(10)) and np.bincount(labels).tolist() == [6000] * 10
    assert read_idx(FASHION_MNIST_DIR / 't10k-images-idx3-ubyte.gz').shape == (10000, 28, 28)


def _argv(options):
    """The command line that means ``options``: ``{'max_steps': 4, 'eval': False}`` -> ``--max-steps 4 --no-eval``."""
    argv = []
    for k, v in options.items():
        flag = '--' + k.replace('_', '-')
        if isinstance(v, bool):
            argv.append(flag if v else '--no-' + k.replace('_', '-'))
        elif isinstance(v, (list, tuple)):
            argv += [flag, ','.join(str(x) for x in v)]
        elif isinstance(v, dict):
            argv += [flag, json.dumps(v)]
        else:
            argv += [flag, str(v)]
    return argv


@pytest.mark.parametrize('preset_name', ['demo', 'replication'])
def test_preset_stages_get_the_config_of_the_equivalent_command_line(preset_name):
    """A stage's config, resolved from the preset's dicts through the recipe's option table, is the config the
    recipe parses from the equivalent flags; every value keeps its type and value."""
    preset = pipeline.load_preset(pipeline.parse_args(['--preset', preset_name]))
    shared = {k: preset[k] for k in pipeline.SHARED if k in preset}
    stages = [('ancestry', train_vit, {}), ('distill', distill, {}), ('finetune', finetune, {'pool': 'x'}),
              ('evaluate', evaluate, {'pool': 'x'})]
    stages += [(f'replication.{arm}', train_vit, {'teacher_checkpoint': 'x'} if arm == 'direct' else {})
               for arm in ('anchor', 'direct') if arm in preset.get('replication', {})]
    for stage, module, extra in stages:
        section = preset['replication'][stage.split('.')[1]] if '.' in stage else preset[stage]
        options = dict(section, **extra)
        cfg = pipeline.stage_config(module, shared, options)
        flags = {k: v for k, v in shared.items() if k in module.OPTIONS}
        assert cfg == module.parse_args(_argv(dict(flags, **options))), stage
        assert {k: getattr(cfg, k) for k in options} == options, stage
        for k, v in options.items():
            assert type(getattr(cfg, k)) is type(module.OPTIONS[k].default), (stage, k)


def test_pipeline_stage_options_are_checked_before_any_stage_runs(tmp_path):
    preset = yaml.safe_load((ROOT / 'recipes' / 'configs' / 'pipeline_demo.yaml').read_text())
    preset['finetune']['stitch_init'] = 'lstq'
    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump(preset))
    with pytest.raises(timm_learngene.LearngeneError, match="'finetune'.*stitch_init.*did you mean 'lstsq'"):
        pipeline.main(['--preset', str(path), '--output', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()
    with pytest.raises(timm_learngene.LearngeneError, match="unknown option 'epoch'; did you mean 'epochs'"):
        pipeline.main(['--set', 'distill.epoch=3', '--output', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_demo_preset_matches_its_pool_spec():
    preset = pipeline.load_preset(pipeline.parse_args([]))
    spec = PoolSpec.from_any(preset['distill']['pool'])
    anc = preset['ancestry']['model_args']
    assert (spec.distill.teacher_width, spec.distill.teacher_depth) == (anc['embed_dim'], anc['depth'])
    assert (spec.img_size, spec.patch_size, spec.in_chans, spec.num_classes) == (
        anc['img_size'], anc['patch_size'], anc['in_chans'], anc['num_classes'])


@pytest.mark.slow
def test_pipeline_end_to_end_at_toy_size(tmp_path, capsys):
    data = _fake_fashion_mnist(tmp_path / 'fm')
    spec = PoolSpec('toy', (MemberSpec('tiny', 16, 1, 3), MemberSpec('base', 32, 2, 3)), img_size=32, patch_size=8,
                    in_chans=1, num_classes=10, distill=DistillSpec('toy_ancestry', 32, 4, (0, 1, 2), (0, 2, 3)))
    preset = yaml.safe_load((ROOT / 'recipes' / 'configs' / 'pipeline_demo.yaml').read_text())
    preset.update(data_dir=str(data), num_workers=0, name='toy', val_size=16)
    preset['ancestry']['model_args'].update(embed_dim=32, depth=4, num_heads=2)
    preset['distill']['pool'] = spec.to_dict()
    for stage in ('ancestry', 'distill', 'finetune'):
        preset[stage].update(batch_size=32, log_every=1, max_steps=3)
    preset['evaluate'].update(repeats=1, throughput_batch=4)
    path = tmp_path / 'toy.yaml'
    path.write_text(yaml.safe_dump(preset))
    out = tmp_path / 'out'
    report = pipeline.main(['--preset', str(path), '--output', str(out)])
    text = report.read_text()
    printed = capsys.readouterr().out
    for stage in ('ancestry', 'distill', 'eval_distilled', 'finetune', 'evaluate'):  # one summary line per stage
        assert re.search(rf'^\[{stage}\] done in \d+:\d\d -> ', printed, flags=re.M), stage
    n = len(timm_learngene.enumerate_descendants(spec))
    assert sum(bool(re.match(r'\| s\d+ \|', line)) for line in text.splitlines()) == n
    assert (out / 'report' / 'pareto.png').read_bytes()[:4] == b'\x89PNG'
    assert 'Wall time per stage' in text and 'fused_attn' in text
    # the ancestry carries the preprocessing it was trained with, and no claim to the architecture's published weights
    anc_cfg = json.loads((out / 'ancestry' / 'model' / 'config.json').read_text())['pretrained_cfg']
    assert anc_cfg['mean'] == [0.286] and anc_cfg['std'] == [0.353] and anc_cfg['crop_pct'] == 1.0
    assert anc_cfg['input_size'] == [1, 32, 32] and anc_cfg['num_classes'] == 10
    assert not {'hf_hub_id', 'tag', 'url', 'license'} & set(anc_cfg)
    anc = timm.create_model(f'local-dir:{out / "ancestry" / "model"}', pretrained=True)
    assert tuple(timm.data.resolve_data_config(model=anc)['mean']) == (0.286,)
    model = timm.create_model(f'local-dir:{out / "finetune" / "pool"}', descendant='s3', pretrained=True)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    measured = json.loads((out / 'finetune' / 'pool' / 'config.json').read_text())['model_args']['descendants']
    assert all('top1' in d and 'val_top1' in d for d in measured)
    # the demo's targets, each measured and marked met or not
    assert '## Targets' in text and 'distilled tiny3 top-1 (test)' in text and 'change in joint finetuning' in text
    assert len(list(csv.DictReader(open(out / 'eval_distilled' / 'descendants.csv')))) == 2  # the members alone
    stitched = [r for r in csv.DictReader(open(out / 'eval' / 'descendants.csv')) if '->' in r['route']]
    tops = [float(r['top1']) for r in stitched]
    assert f'Stitched descendants ({n - 2}): test top-1 mean {sum(tops) / len(tops):.2f} ' \
           f'({min(tops):.2f}-{max(tops):.2f}), validation mean ' in text
    # a second run reuses every stage, each reported with the wall time it took when it ran
    first = dict(re.findall(r'(\w+) (\d+)', text.split('Wall time per stage (s): ')[1].split(' (total')[0]))
    assert list(first) == ['ancestry', 'distill', 'eval_distilled', 'finetune', 'evaluate']
    again = pipeline.main(['--preset', str(path), '--output', str(out)]).read_text()
    line = again.split('Wall time per stage (s): ')[1].split('\n')[0]
    assert line.startswith(', '.join(f'{k} {v} (reused)' for k, v in first.items()))
    assert 'a reused stage shows the time it took when it ran' in line
    # --until stops after a stage (and returns its result)
    assert pipeline.main(['--preset', str(path), '--output', str(out), '--until', 'distill']) == \
        out / 'distill' / 'pool' / 'model.safetensors'


@pytest.mark.slow
def test_replication_arms_end_to_end_at_toy_size(tmp_path):
    data = _fake_fashion_mnist(tmp_path / 'fm', n_train=96, n_test=32)
    spec = PoolSpec('toy', (MemberSpec('tiny', 16, 1, 2), MemberSpec('base', 32, 2, 2)), img_size=32, patch_size=8,
                    in_chans=1, num_classes=10, distill=DistillSpec('toy_ancestry', 32, 3, (0, 1), (0, 2)))
    preset = yaml.safe_load((ROOT / 'recipes' / 'configs' / 'pipeline_replication.yaml').read_text())
    preset.update(data_dir=str(data), num_workers=0, name='toy_replication', val_size=16)
    preset['ancestry']['model_args'].update(embed_dim=32, depth=3, num_heads=2)
    preset['distill']['pool'] = spec.to_dict()
    rep = preset['replication']
    for section in (preset['ancestry'], preset['distill'], preset['finetune'], rep['anchor'], rep['direct'],
                    rep['scratch']):
        section.update(batch_size=32, log_every=1, max_steps=2, checkpoint_every=0)
    rep.update(seeds=[0, 1], zero_shot_seeds=[0], stitch_inits=['lstsq'],  # learngene's claim: the verdicts test
               anchor_widths=[[16, 1]], direct_widths=[[16, 1], [24, 2]], direct_lrs=[1e-3, 3e-2],
               candidates=[dict(name='ws', distill=dict(member_init='weight_selection'))],
               nested=dict(rep['direct'], sizes=['8x1', '16x1', '24x2', '32x2'], sizes_per_step=3,
                           member_init='weight_selection'))
    path = tmp_path / 'toy.yaml'
    path.write_text(yaml.safe_dump(preset))
    report = pipeline.main(['--preset', str(path), '--output', str(tmp_path / 'out')])
    text = report.read_text()
    for label in ('LGP, lstsq init, finetuned', 'LGP, lstsq init, zero-shot',
                  "SN-Net (anchors at the ancestry's depth, lstsq), finetuned", "members' shapes from scratch",
                  'direct logit-KD students'):
        assert f'| {label} | ' in text, label
    assert '| LGP, lstsq init, finetuned | 2 |' in text and '| LGP, lstsq init, zero-shot | 1 |' in text
    for claim in ('LGP >= SN-Net at equal GMACs', 'LGP builds smaller models', 'LGP stores fewer parameters',
                  'Best descendant vs direct distillation'):
        assert f'**{claim}' in text, claim
    assert '## Goal (issue 28)' in text and "- LGP, lstsq init, finetuned: best descendant minus student" in text
    assert '| candidate ws, finetuned | 2 |' in text and '- candidate ws, finetuned: best descendant minus' in text
    nested = next(line for line in text.splitlines() if line.startswith('| nested pool (width slices of one ViT) | 2 |'))
    assert '| 0.03M |' in nested  # stored: the widest size alone
    assert '- nested pool (width slices of one ViT): best descendant minus student' in text
    assert not (tmp_path / 'out' / 'seed0' / 'ws_zeroshot').exists()  # zero-shot rows: the paper's arms only
    ws_cfg = yaml.safe_load((tmp_path / 'out' / 'seed1' / 'ws_distill' / 'config.yaml').read_text())
    assert ws_cfg['member_init'] == 'weight_selection' and ws_cfg['seed'] == 1
    assert ' +- ' in text  # two seeds: mean +- sd
    # the students' lr: both lrs trained at seed 0, the one better on val (a tie keeps 1e-3) alone at seed 1
    import json
    for width in (16, 24):
        vals = {lr: json.loads((tmp_path / 'out' / 'seed0' / name / 'val_top1.json').read_text())['val_top1']
                for lr, name in ((1e-3, f'direct_{width}w'), (3e-2, f'direct_{width}w_lr0.03'))}
        best = 3e-2 if vals[3e-2] > vals[1e-3] else 1e-3
        line = next(x for x in text.splitlines() if x.startswith("Direct students' learning rate"))
        cell = next(c for c in line.split(': ', 1)[1].split('; ') if c.startswith(f'{width}w '))
        assert f"**{best:g}: {vals[best]:.2f}**" in cell and cell.count('**') == 2, cell
        trained = {lr for lr, name in ((1e-3, f'direct_{width}w'), (3e-2, f'direct_{width}w_lr0.03'))
                   if (tmp_path / 'out' / 'seed1' / name / '.stage_done.json').exists()}
        assert trained == {best}, (width, vals, trained)
    assert "Direct students' learning rate, chosen per width on the validation split at seed 0" in text
    # the stage times: a total against the preset's bar, the probed precision, the time per kind of stage
    wall = next(line for line in text.splitlines() if line.startswith('Wall time: '))
    assert 'bar: <= 150 min on 2 cores with bf16: met' in wall, wall
    for kind in ('ancestry', 'distill', 'lgp_lstsq', 'snnet_anchor', 'snnet', 'direct', 'scratch', 'nested'):
        assert f' {kind} ' in wall, kind
    assert '0 of ' in wall
    assert (tmp_path / 'out' / 'report' / 'replication.png').read_bytes()[:4] == b'\x89PNG'
    n = len(timm_learngene.enumerate_descendants(spec))
    seed0 = tmp_path / 'out' / 'seed0'
    zero = list(csv.DictReader(open(seed0 / 'eval_lgp_lstsq_zeroshot' / 'descendants.csv')))
    assert len(zero) == n and all(r['val_top1'] for r in zero)
    assert not (tmp_path / 'out' / 'seed1' / 'lgp_lstsq_zeroshot').exists()
    # SN-Net's anchors have the ancestry's depth; its widest anchor is the ancestry itself
    snnet = timm_learngene.read_pool_config(seed0 / 'snnet_finetuned' / 'pool')['model_args']['pool']
    assert [(m.width, m.depth) for m in snnet.members] == [(16, 3), (32, 3)]
    # each seed distilled its own pool; the zero-shot pool kept the distilled members
    from safetensors.torch import load_file
    a = load_file(seed0 / 'distill' / 'pool' / 'model.safetensors')
    a1 = load_file(tmp_path / 'out' / 'seed1' / 'distill' / 'pool' / 'model.safetensors')
    assert any(not torch.equal(a[k], a1[k]) for k in a if k.startswith('members.'))
    # the screen of candidate pools: a demo-layout run of the same pool reads back as the replication's own
    from timm_learngene.recipes.replication import screen
    cand = tmp_path / 'cand'
    cand.mkdir()
    for src, dst in (('distill', 'distill'), ('lgp_lstsq_finetuned', 'finetune'), ('eval_lgp_lstsq_finetuned', 'eval')):
        (cand / dst).symlink_to(seed0 / src)
    table = screen(tmp_path / 'out', {'same': cand}).splitlines()
    lgp = next(line for line in table if line.startswith('| LGP lstsq (replication) |'))
    assert next(line for line in table if line.startswith('| same |')) == lgp.replace('LGP lstsq (replication)', 'same')
    assert '<= direct 16w' in table[0] and '<= direct 24w' in table[0] and '| direct students | one each | 2 |' in table[2]
    assert any(line.startswith("- same: best descendant minus student") for line in table)
    nested = next(line for line in screen(tmp_path / 'out', {'n': seed0 / 'nested'}).splitlines()
                  if line.startswith('| n |'))
    assert nested.startswith('| n | nested 8 / 16 / 24 / 32 | 4 | ')
    # the demo's targets on a replication arm (recipes/demo_targets.sh): only the members' evaluation runs
    demo = yaml.safe_load((ROOT / 'recipes' / 'configs' / 'pipeline_demo.yaml').read_text())
    demo.update({k: preset[k] for k in ('data_dir', 'val_size', 'ancestry', 'distill')}, name='toy_demo')
    (tmp_path / 'demo.yaml').write_text(yaml.safe_dump(demo))
    script = [str(ROOT / 'recipes' / 'demo_targets.sh'), str(tmp_path / 'out'), '0']
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(script + ['ws', str(tmp_path / 'dt'), '--preset', str(tmp_path / 'demo.yaml')], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    demo_report = (tmp_path / 'dt' / 'report' / 'report.md').read_text()
    assert '## Targets' in demo_report and 'every stitched descendant above tiny' in demo_report
    wall = next(line for line in demo_report.splitlines() if line.startswith('Wall time per stage'))
    assert all(re.search(fr'\b{s} \d+ \(reused\)', wall) for s in ('ancestry', 'distill', 'finetune', 'evaluate'))
    assert wall.count('(reused)') == 4 and re.search(r'eval_distilled \d+,', wall), wall
    assert (tmp_path / 'dt' / 'finetune').resolve() == (seed0 / 'ws_finetuned').resolve()
    assert (tmp_path / 'dt' / 'distill').resolve() == (seed0 / 'ws_distill').resolve()  # from the finetune config
    missing = subprocess.run(script + ['nope', str(tmp_path / 'dt2')], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and 'error: ' in missing.stderr and 'nope_finetuned' in missing.stderr
    assert not (tmp_path / 'dt2').exists()
    b = load_file(seed0 / 'lgp_lstsq_zeroshot' / 'pool' / 'model.safetensors')
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith('members.'))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith('stitches.'))
    # --until takes a replication stage name as the run prints it (finished stages count as reached)
    assert pipeline.main(['--preset', str(path), '--output', str(tmp_path / 'out'), '--until', 'seed 1 ws distill']) \
        == tmp_path / 'out' / 'seed1' / 'ws_distill' / 'pool' / 'model.safetensors'
    # --report-only trains nothing: an arm with an unfinished stage is left out for that seed, the rest reported
    (tmp_path / 'out' / 'seed1' / 'snnet_finetuned' / '.stage_done.json').unlink()
    (seed0 / 'eval_lgp_lstsq_zeroshot' / '.stage_done.json').unlink()  # hides only the zero-shot row
    stamp = (seed0 / 'distill' / 'pool' / 'model.safetensors').stat().st_mtime_ns
    from timm_learngene.recipes import replication
    drawn, plot = [], replication.pareto_plot
    replication.pareto_plot = lambda *a, **k: drawn.append(a[1]) or plot(*a, **k)
    try:  # nothing runs: the report is written after the first arm and once at the end, not after every arm
        again = pipeline.main(['--preset', str(path), '--output', str(tmp_path / 'out'), '--report-only']).read_text()
    finally:
        replication.pareto_plot = plot
    assert len(drawn) == 2, drawn
    assert "| SN-Net (anchors at the ancestry's depth, lstsq), finetuned | 1 |" in again
    assert '| LGP, lstsq init, finetuned | 2 |' in again and '| candidate ws, finetuned | 2 |' in again
    assert '| LGP, lstsq init, zero-shot |' not in again
    assert not (tmp_path / 'out' / 'seed1' / 'snnet_finetuned' / '.stage_done.json').exists()
    assert (seed0 / 'distill' / 'pool' / 'model.safetensors').stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match='has not finished, and --report-only trains nothing'):
        pipeline.main(['--preset', str(path), '--output', str(tmp_path / 'fresh'), '--report-only'])


def test_replication_candidates_with_the_same_distill_share_one_distilled_pool():
    from timm_learngene.recipes.replication import candidate_distill_dirs
    w4 = dict(pool='fashion_mnist_l6_w4', member_init='weight_selection')
    cands = [dict(name='w4_ws_members', distill=dict(w4), finetune=dict(sandwich='members')),
             dict(name='w4_ws', distill=dict(reversed(list(w4.items())))),  # same overrides in another order
             dict(name='mid3_ws', distill=dict(w4, pool='fashion_mnist_l6_mid')), dict(name='plain')]
    assert candidate_distill_dirs(cands) == {'w4_ws_members': 'w4_ws_members_distill',
                                             'w4_ws': 'w4_ws_members_distill', 'mid3_ws': 'mid3_ws_distill',
                                             'plain': 'plain_distill'}


def test_replication_stage_times_group_by_kind_over_the_seeds():
    from timm_learngene.recipes.replication import stage_groups
    timings = {'ancestry': 60.0, 'seed 0 distill': 10.0, 'seed 1 distill': 12.0,
               'seed 0 lgp_lstsq finetuned (finetune)': 5.0, 'seed 0 lgp_lstsq finetuned (evaluate)': 1.0,
               'seed 1 snnet_anchor 64w/12': 7.0, 'seed 0 snnet finetuned (finetune)': 3.0}
    assert stage_groups(timings) == {'ancestry': 60.0, 'distill': 22.0, 'lgp_lstsq': 6.0, 'snnet_anchor': 7.0,
                                     'snnet': 3.0}


def test_replication_verdicts_follow_the_numbers():
    from timm_learngene.recipes.replication import best_at, claims, compare
    rows = [dict(name='a', route='t', gmacs=1.0, top1=80.0, val_top1=70.0),
            dict(name='b', route='t->b', gmacs=2.0, top1=90.0, val_top1=60.0)]
    assert best_at(rows, 2.0) == 80.0  # chosen on val, reported on test
    assert best_at(rows, 0.5) is None
    assert best_at([dict(r, val_top1=None) for r in rows], 2.0) == 90.0  # no val: the largest model
    assert compare([80.0, 80.2, 79.8], [75.0, 75.1, 74.9], None) == 'higher'
    assert compare([80.0, 81.0], [80.3, 80.6], 10000) == 'tie'
    assert compare([70.0], [80.0], 10000) == 'lower'
    lgp = {0: [dict(name='s1', route='t', params=1, gmacs=1.0, top1=80.0, val_top1=80.0),
               dict(name='s2', route='t->b', params=2, gmacs=1.5, top1=81.0, val_top1=81.0)]}
    sn = {0: [dict(name='s1', route='t', params=3, gmacs=2.0, top1=70.0, val_top1=70.0)]}
    text = '\n'.join(claims({'lgp_lstsq finetuned': lgp, 'snnet finetuned': sn}, [1.0, 2.0], 3, 4, 10000))
    assert 'LGP >= SN-Net at equal GMACs** (LGP, lstsq init, finetuned vs SN-Net, best top-1 chosen on val): holds: ' \
        'higher at 1, tied at 0, lower at 0 of the 1 budgets' in text
    assert 'LGP builds smaller models**: holds' in text and 'LGP stores fewer parameters**: holds' in text
    text = '\n'.join(claims({'lgp_lstsq finetuned': sn, 'snnet finetuned': lgp}, [1.0, 2.0], 4, 3, 10000))
    assert 'does not hold: higher at 0, tied at 0, lower at 1' in text and 'smaller models**: does not hold' in text
    # learngene vs lstsq: the stitched descendants' mean, paired by seed
    worse = {0: [dict(r, top1=r['top1'] - 5) for r in lgp[0]]}
    text = '\n'.join(claims({'lgp_lstsq finetuned': lgp, 'lgp_learngene finetuned': worse}, [1.0], 3, None, 10000))
    assert '**`learngene` init >= `lstsq` after the same finetune**: does not hold (lower): mean top-1 of the ' \
        'stitched descendants 76.00 vs 81.00' in text, text
    text = '\n'.join(claims({'lgp_lstsq finetuned': lgp, 'lgp_learngene finetuned': lgp}, [1.0], 3, None, 10000))
    assert '`learngene` init >= `lstsq` after the same finetune**: holds (tie)' in text


def test_publish_demo_copies_the_report_and_its_targets_into_the_readme(tmp_path):
    from timm_learngene.errors import ConfigError
    from timm_learngene.recipes.publish_demo import END, START, publish
    out, docs, readme = tmp_path / 'out', tmp_path / 'docs', tmp_path / 'README.md'
    (out / 'report').mkdir(parents=True)
    (out / 'report' / 'report.md').write_text('# Demo\n\n## Targets\n\n| target | met |\n|---|---|\n| a | yes |\n\n'
                                               '## Settings\n\nx\n\n![p](pareto.png)\n')
    (out / 'report' / 'pareto.png').write_bytes(b'\x89PNG')
    readme.write_text(f'intro\n{START}\nold numbers\n{END}\nrest\n')
    publish(out, docs, readme)
    assert readme.read_text() == f'intro\n{START}\n| target | met |\n|---|---|\n| a | yes |\n{END}\nrest\n'
    assert '](demo_pareto.png)' in (docs / 'demo.md').read_text()
    assert (docs / 'demo_pareto.png').read_bytes() == b'\x89PNG'
    readme.write_text('no markers')
    with pytest.raises(ConfigError, match='markers'):
        publish(out, docs, readme)
    with pytest.raises(ConfigError, match='run make demo first'):
        publish(tmp_path / 'nothing', docs, readme)


def test_publish_replication_copies_its_claims_and_table_into_the_readme(tmp_path):
    from timm_learngene.recipes.publish_demo import END, REP_END, REP_START, START, publish
    out, docs, readme = tmp_path / 'out', tmp_path / 'docs', tmp_path / 'README.md'
    (out / 'report').mkdir(parents=True)
    (out / 'report' / 'replication.md').write_text(
        '# Replication\n\nSeeds per arm: 2.\n\n## Claims\n\n- **x**: holds\n\n![p](replication.png)\n\n'
        '## Best top-1 within a GMACs budget\n\n| method | top1 |\n|---|---|\n| LGP | 80 |\n\n## Settings\n\ny\n')
    (out / 'report' / 'replication.png').write_bytes(b'\x89PNG')
    readme.write_text(f'a\n{START}\ndemo\n{END}\nb\n{REP_START}\nold\n{REP_END}\nc\n')
    publish(out, docs, readme)
    assert readme.read_text() == (f'a\n{START}\ndemo\n{END}\nb\n{REP_START}\nSeeds per arm: 2.\n\n- **x**: holds\n\n'
                                  f'![p](docs/replication.png)\n\n| method | top1 |\n|---|---|\n| LGP | 80 |\n{REP_END}\nc\n')
    assert (docs / 'replication.md').read_text().startswith('# Replication')
    assert (docs / 'replication.png').read_bytes() == b'\x89PNG'


@pytest.mark.parametrize('change, match', [(dict(val_size=0), 'val_size is 0'),
                                           (dict(direct_lrs=[1e-3, 1e-3]), 'distinct positive'),
                                           (dict(direct_lrs=['fast']), 'a list of learning rates')])
def test_replication_students_lr_choice_is_checked_before_any_stage(tmp_path, change, match):
    preset = yaml.safe_load((ROOT / 'recipes' / 'configs' / 'pipeline_replication.yaml').read_text())
    preset['replication']['direct_lrs'] = change.pop('direct_lrs', [1e-3, 2e-3])
    preset.update(change)
    path = tmp_path / 'p.yaml'
    path.write_text(yaml.safe_dump(preset))
    with pytest.raises(ConfigError, match=match):
        pipeline.main(['--preset', str(path), '--output', str(tmp_path / 'out')])
    assert not (tmp_path / 'out' / 'ancestry').exists()
