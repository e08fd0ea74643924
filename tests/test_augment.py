"""Every shipped recipe config trains on real images: its transforms run on thousands of generated PIL images, and
the recipes run a few steps on on-disk image sets (JPEG ImageFolder, Fashion-MNIST IDX files) with their own
augmentation, not only on the ``synthetic`` tensors."""
import json
import random
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
import yaml
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

from timm_learngene.data import build_dataset, build_loader, build_transform, guard_posterize
from timm_learngene.data.augment import POSTERIZE_OPS, _augment_ops
from timm_learngene.errors import DatasetError, TransformError
from timm_learngene.spec import DistillSpec, MemberSpec, PoolSpec
from timm_learngene.training.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'recipes' / 'configs'

TRANSFORM_KEYS = ('dataset', 'aug_scale', 'hflip', 'color_jitter', 'auto_augment', 're_prob', 'crop_pct',
                  'interpolation')
PIPELINE_STAGES = {'ancestry': 'train_vit', 'distill': 'distill', 'finetune': 'finetune', 'evaluate': 'evaluate'}
PIPELINE_SHARED = ('dataset', 'data_dir', 'bad_images', 'seed', 'num_workers')


def _recipe(name):
    import importlib
    return importlib.import_module(f'timm_learngene.recipes.{name}')


def _shipped_configs():
    """(where, recipe module name, options) for every recipe's defaults, every recipe YAML and every stage of every
    pipeline preset."""
    found = [(f'{name} defaults', name, {}) for name in ('train_vit', 'distill', 'finetune', 'evaluate')]
    for path in sorted(CONFIGS.glob('*.yaml')):
        data = yaml.safe_load(path.read_text())
        if path.name.startswith('pipeline_'):
            shared = {k: data[k] for k in PIPELINE_SHARED if k in data}
            for stage, module in PIPELINE_STAGES.items():
                if stage in data:
                    found.append((f'{path.name}:{stage}', module, dict(shared, **data[stage])))
            for section in ('anchor', 'direct'):
                if section in data.get('replication', {}):
                    found.append((f'{path.name}:replication.{section}', 'train_vit',
                                  dict(shared, **data['replication'][section])))
        else:
            module = 'train_vit' if 'model' in data else 'distill'
            found.append((path.name, module, data))
    return found


def _resolved(module_name, options):
    """The config a recipe resolves from ``options`` (through its own parser and defaults)."""
    module = _recipe(module_name)
    options = {k: v for k, v in options.items() if k in module.OPTIONS}
    # what the pipeline adds to a stage (the transforms do not depend on it): finetune and evaluate need a pool,
    # KD needs a teacher
    if 'pool' in module.OPTIONS and not options.get('pool') and not options.get('anchors'):
        options['pool'] = 'POOL'
    if options.get('kd_weight') and not (options.get('teacher') or options.get('teacher_checkpoint')):
        options['teacher_checkpoint'] = 'ANCESTRY'
    return vars(module.OPTIONS.resolve(options, source=module_name))


def _transform_key(cfg):
    return json.dumps({k: cfg.get(k) for k in TRANSFORM_KEYS}, sort_keys=True)


def _images(n, channels, seed=0):
    rng = np.random.default_rng(seed)
    mode = 'L' if channels == 1 else 'RGB'
    out = []
    for _ in range(n):
        h, w = rng.integers(20, 48, 2)
        shape = (h, w) if channels == 1 else (h, w, 3)
        out.append(Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode))
    return out


def test_posterize_at_the_top_of_the_magnitude_range_keeps_one_bit():
    img = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16).repeat(2, 0), mode='L').convert('RGB')
    ra = rand_augment_transform('rand-m9-mstd0.5-inc1', {'img_mean': (124, 116, 104)})
    op = next(o for o in ra.ops if o.name == 'PosterizeIncreasing')
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # what mstd 0.5 reaches once clipped at 10
    if tuple(int(v) for v in PIL.__version__.split('.')[:2]) >= (13, 0):
        with pytest.raises(ValueError, match='bits'):  # timm asks for 0 bits, which Pillow >= 13 refuses
            op(img)
    assert guard_posterize(ra) == 1 and guard_posterize(ra) == 0  # idempotent
    out = np.asarray(op(img))
    assert sorted(np.unique(out).tolist()) == [0, 128]  # one bit kept
    plain = next(o for o in rand_augment_transform('rand-m9-mstd0.5-inc0', {}).ops if o.name == 'Posterize')
    guard_posterize(plain)
    plain.prob, plain.magnitude, plain.magnitude_std = 1.0, 0, 0  # 'Posterize' keeps 0 bits at magnitude 0
    assert sorted(np.unique(np.asarray(plain(img))).tolist()) == [0, 128]


def test_build_transform_guards_every_posterize_op():
    for policy in ('rand-m9-mstd0.5-inc1', 'rand-m9-mstd0.5-inc0', 'original', 'v0', 'augmix-m5-w4-d2'):
        tf = build_transform({'dataset': 'folder', 'auto_augment': policy}, 32, 3, augment=True)
        ops = [op for op in _augment_ops(tf) if op.name in POSTERIZE_OPS]
        assert ops, policy
        assert all(op.aug_fn.__name__ == 'posterize_at_least_one_bit' for op in ops), policy


def test_every_shipped_config_transforms_5000_real_images():
    configs = _shipped_configs()
    assert len(configs) >= 12  # 4 recipe defaults, 4 recipe YAMLs, the demo and replication stages
    distinct = {}
    for where, module, options in configs:
        cfg = _resolved(module, options)
        channels = 1 if cfg.get('dataset') == 'fashion_mnist' else 3
        distinct.setdefault((_transform_key(cfg), channels), (where, cfg))
    assert any('"auto_augment": "rand-m9-mstd0.5-inc1"' in key for key, _ in distinct)
    for (key, channels), (where, cfg) in distinct.items():
        random.seed(0)
        torch.manual_seed(0)
        imgs = _images(100, channels)
        for augment in (True, False):
            tf = build_transform(cfg, 32, channels, augment)
            for i in range(5000 if augment else 500):
                x = tf(imgs[i % len(imgs)])
                assert x.shape == (channels, 32, 32), (where, augment)
            assert torch.isfinite(x).all()


def test_a_transform_error_names_the_image_and_the_op(tmp_path):
    (tmp_path / 'train' / 'a').mkdir(parents=True)
    Image.new('RGB', (20, 20)).save(tmp_path / 'train' / 'a' / 'x.jpg')
    ds = build_dataset({'dataset': 'folder', 'data_dir': str(tmp_path), 'auto_augment': 'rand-m9-n1-mstd0'},
                       'train', 32, 3, 1)
    ra = next(t for t in ds.transform.tf.transforms if type(t).__name__ == 'RandAugment')
    op = ra.ops[0]
    op.prob = 1.0
    ra.ops = [op]

    def broken(img, *args, **kwargs):
        raise ValueError('op exploded')
    op.aug_fn = broken
    with pytest.raises(TransformError, match=rf'x\.jpg \(index 0\) in RandAugment > {op.name}: ValueError: op '
                                             r'exploded.*--bad-images skip does not skip it'):
        ds[0]
    assert not isinstance(TransformError('x'), DatasetError)  # never skipped as an unreadable image
    skipping = build_dataset({'dataset': 'folder', 'data_dir': str(tmp_path), 'bad_images': 'skip'}, 'train', 32, 3,
                             1)
    skipping.dataset.transform = ds.transform
    with pytest.raises(TransformError, match='op exploded'):
        skipping[0]


def test_a_transform_error_in_a_dataloader_worker_is_one_error_line(tmp_path, capsys):
    (tmp_path / 'train' / 'a').mkdir(parents=True)
    Image.new('RGB', (20, 20)).save(tmp_path / 'train' / 'a' / 'x.jpg')
    ds = build_dataset({'dataset': 'folder', 'data_dir': str(tmp_path)}, 'train', 32, 3, 1)

    def boom(img):
        raise RuntimeError('boom')
    ds.transform.tf.transforms.insert(0, boom)

    def main(argv):
        for _ in build_loader(ds, 1, False, num_workers=1):
            pass
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert 'RuntimeError: boom' in err and 'x.jpg (index 0)' in err and 'worker process 0' in err
    assert 'Traceback' not in err


# ---- the recipes on image files ------------------------------------------------------------------------------
def _jpeg_folder(root: Path, classes=3, per_class=6, size=40) -> Path:
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for c in range(classes):
            folder = root / split / f'class{c}'
            folder.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size, size + 4 * i, 3), dtype=np.uint8)
                Image.fromarray(arr).save(folder / f'{i}.jpg', quality=85)
    return root


def _toy_spec(in_chans, num_classes):
    return PoolSpec('toy_rgb', (MemberSpec('tiny', 16, 1, 3), MemberSpec('base', 32, 2, 3)), img_size=32,
                    patch_size=8, in_chans=in_chans, num_classes=num_classes,
                    distill=DistillSpec('toy_ancestry', 32, 4, (0, 1, 2), (0, 2, 3)))


def _run_chain(tmp_path, data_args, in_chans, num_classes, recipe_options):
    """train_vit -> distill -> finetune -> evaluate, two steps each, with the given recipe options."""
    from timm_learngene.recipes import distill, evaluate, finetune, train_vit
    common = ['--num-workers', '0', '--batch-size', '6', '--max-steps', '2', '--log-every', '1', '--no-fused-attn']
    anc = tmp_path / 'ancestry'
    model_args = dict(embed_dim=32, depth=4, num_heads=2, img_size=32, patch_size=8, in_chans=in_chans,
                      num_classes=num_classes)
    train_vit.main(data_args + common + recipe_options.get('train_vit', []) + [
        '--model-args', json.dumps(model_args), '--eval-batch-size', '6', '--output', str(anc)])
    dist = tmp_path / 'distill'
    distill.main(data_args + common + recipe_options.get('distill', []) + [
        '--pool', _toy_spec(in_chans, num_classes).to_json(), '--teacher-checkpoint', str(anc / 'model'),
        '--eval-batch-size', '6', '--output', str(dist)])
    ft = tmp_path / 'finetune'
    finetune.main(data_args + common + recipe_options.get('finetune', []) + [
        '--pool', str(dist / 'pool'), '--teacher-checkpoint', str(anc / 'model'), '--init-images', '8',
        '--output', str(ft)])
    rows = evaluate.main(data_args + ['--pool', str(ft / 'pool'), '--num-workers', '0', '--batch-size', '6',
                                      '--no-throughput', '--output', str(tmp_path / 'eval')])
    assert len(rows) == 9 and all(0 <= r['top1'] <= 100 for r in rows)


def _reset_accelerate():
    from accelerate.state import AcceleratorState, PartialState
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


@pytest.mark.slow
def test_recipes_run_on_a_jpeg_folder_with_the_paper_augmentation(tmp_path):
    """The DeiT recipe of recipes/configs/deit_base_l6.yaml (RandAugment m9 mstd0.5, random erasing, mixup,
    cutmix) on JPEG files."""
    data = _jpeg_folder(tmp_path / 'data')
    paper = yaml.safe_load((CONFIGS / 'deit_base_l6.yaml').read_text())
    aug = ['--auto-augment', paper['auto_augment'], '--re-prob', str(paper['re_prob']), '--mixup',
           str(paper['mixup']), '--cutmix', str(paper['cutmix']), '--smoothing', str(paper['smoothing'])]
    try:
        _run_chain(tmp_path / 'out', ['--dataset', 'folder', '--data-dir', str(data)], 3, 3,
                   {'train_vit': aug, 'distill': aug, 'finetune': []})  # finetune: its own defaults (RandAugment)
    finally:
        _reset_accelerate()


@pytest.mark.slow
def test_recipes_run_on_fashion_mnist_idx_files_with_their_default_augmentation(tmp_path):
    from test_pipeline import _fake_fashion_mnist
    data = _fake_fashion_mnist(tmp_path / 'fm', n_train=48, n_test=24)
    args = ['--dataset', 'fashion_mnist', '--data-dir', str(data)]
    default_aug = ['--auto-augment', 'rand-m9-mstd0.5-inc1', '--re-prob', '0.25']  # distill's and finetune's defaults
    try:
        _run_chain(tmp_path / 'out', args, 1, 10, {'train_vit': default_aug, 'distill': [], 'finetune': []})
    finally:
        _reset_accelerate()
