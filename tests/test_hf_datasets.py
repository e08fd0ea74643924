"""--dataset hfds/NAME: a Hugging Face dataset (here a local folder of parquet files the test writes, no network)
through timm's reader, with the validation hold-out, limits, class checks and errors of ``folder`` (issue 30)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from timm_learngene.data import build_dataset, check_data_source
from timm_learngene.errors import DatasetError

datasets = pytest.importorskip('datasets')

CLASSES = ['shirt', 'shoe', 'bag']


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
    """train (30 images) and validation (9) splits of 20x20 RGB images, 3 classes, written as parquet files."""
    root = tmp_path_factory.mktemp('hf')
    feats = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=CLASSES)})
    rng = np.random.default_rng(0)
    for split, n in (('train', 30), ('validation', 9)):
        images = [Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)) for _ in range(n)]
        ds = datasets.Dataset.from_dict({'image': images, 'label': [i % 3 for i in range(n)]}, features=feats)
        ds.to_parquet(str(root / 'data' / f'{split}-00000-of-00001.parquet'))
    return root


def _cfg(hf_dir, tmp_path, **kw):
    return dict(dataset=f'hfds/{hf_dir}', data_dir=str(tmp_path / 'cache'), crop_pct=1.0, **kw)


def test_splits_hold_out_and_limit_as_folder_does(hf_dir, tmp_path):
    cfg = _cfg(hf_dir, tmp_path, val_size=5, val_seed=0)
    check_data_source(cfg, ('train', 'eval'))
    train, val = (build_dataset(cfg, s, 16, 1, 3) for s in ('train', 'val'))
    test = build_dataset(cfg, 'eval', 16, 1, 3)
    assert (len(train), len(val), len(test)) == (25, 5, 9)
    x, y = train[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and 0 <= y < 3
    # the held-out images are never trained on, and the same whatever the run
    tr = {float(train[i][0].sum()) for i in range(len(train))}
    assert not tr & {float(val[i][0].sum()) for i in range(len(val))}
    assert [float(v[0].sum()) for v in build_dataset(cfg, 'val', 16, 1, 3)] == [float(v[0].sum()) for v in val]
    assert len(build_dataset(dict(cfg, train_limit=7), 'train', 16, 3, 3)) == 7
    assert len(build_dataset(dict(cfg, val_size=0, eval_limit=4), 'eval', 16, 3, 3)) == 4
    assert build_dataset(dict(cfg, val_size=0), 'train', 16, 3, 3)[0][0].shape == (3, 16, 16)


def test_errors_say_what_to_do(hf_dir, tmp_path):
    cfg = _cfg(hf_dir, tmp_path)
    with pytest.raises(DatasetError, match=r'has 3 classes but the model has 2 outputs'):
        build_dataset(cfg, 'train', 16, 1, 2)
    with pytest.raises(DatasetError, match=r"Unknown split \"test\".*'train', 'validation'.*--eval-split"):
        build_dataset(dict(cfg, eval_split='test'), 'eval', 16, 1, 3)
    with pytest.raises(DatasetError, match=r"cannot open dataset 'hfds/.*nothere' split 'train'.*local folder"):
        build_dataset(dict(cfg, dataset=f'hfds/{tmp_path / "nothere"}'), 'train', 16, 1, 3)


def test_a_bad_image_stops_the_run_or_is_skipped(hf_dir, tmp_path):
    root = tmp_path / 'bad'
    feats = datasets.Features({'image': datasets.Image(decode=False), 'label': datasets.ClassLabel(names=CLASSES)})
    good = io.BytesIO()
    Image.new('RGB', (20, 20)).save(good, format='PNG')
    images = [{'bytes': good.getvalue(), 'path': None}, {'bytes': b'not an image', 'path': None}]
    datasets.Dataset.from_dict({'image': images, 'label': [0, 1]}, features=feats).to_parquet(
        str(root / 'data' / 'train-00000-of-00001.parquet'))
    cfg = dict(_cfg(root, tmp_path), data_dir=str(tmp_path / 'cache2'))
    ds = build_dataset(cfg, 'train', 16, 1, 3)
    with pytest.raises(DatasetError, match=r'cannot read image 1 of hfds/.*--bad-images skip'):
        ds[1]
    skipping = build_dataset(dict(cfg, bad_images='skip'), 'train', 16, 1, 3)
    assert skipping[1][1] == 0  # the next readable image in its place


def test_a_recipe_trains_on_it(hf_dir, tmp_path):
    from accelerate.state import AcceleratorState, PartialState
    from timm_learngene.recipes import train_vit
    try:
        train_vit.main(['--dataset', f'hfds/{hf_dir}', '--data-dir', str(tmp_path / 'cache'), '--val-size', '6',
                        '--model', 'vit_tiny_patch16_224', '--model-args',
                        '{"embed_dim": 16, "depth": 1, "num_heads": 2, "img_size": 16, "patch_size": 8, '
                        '"in_chans": 1, "num_classes": 3}', '--max-steps', '2', '--batch-size', '4',
                        '--num-workers', '0', '--cpu', '--mixed-precision', 'no',
                        '--output', str(tmp_path / 'run')])
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    assert (tmp_path / 'run' / 'model' / 'model.safetensors').is_file()
