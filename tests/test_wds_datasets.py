"""--dataset wds/NAME: webdataset tar shards (written here, no network) streamed through timm's reader: splits,
sharding by process and worker without accelerate sharding again, and the errors a stream has instead of
folder's hold-out and limits (issue 30)."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from timm_learngene.data import StreamLoader, build_dataset, build_loader, check_data_source
from timm_learngene.errors import DatasetError

wds = pytest.importorskip('webdataset')


def _write_shards(root, splits, classes=3, bad_class=None):
    """``splits``: name -> (shards, samples per shard); PNG images 12x12 gray, class = index % classes."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    info = {'name': 'toy', 'splits': {}}
    for split, (shards, per) in splits.items():
        names = []
        for s in range(shards):
            name = f'toy-{split}-{s:06d}.tar'
            with wds.TarWriter(str(root / name)) as sink:
                for i in range(per):
                    k = s * per + i
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(buf, format='PNG')
                    cls = bad_class if (bad_class is not None and k == 1) else k % classes
                    sink.write({'__key__': f'{split}{k:06d}', 'png': buf.getvalue(), 'cls': cls})
            names.append(name)
        info['splits'][split] = {'name': split, 'num_samples': shards * per, 'filenames': names,
                                 'shard_lengths': [per] * shards}
    (root / '_info.json').write_text(json.dumps(info))
    return root


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
    return _write_shards(tmp_path_factory.mktemp('wds'), {'train': (4, 8), 'validation': (2, 5)})


def _cfg(root, **kw):
    return dict(dataset='wds/toy', data_dir=str(root), crop_pct=1.0, batch_size=4, seed=0, **kw)


def test_splits_stream_every_sample_once_per_epoch(shards):
    cfg = _cfg(shards)
    check_data_source(cfg, ('train', 'eval'))
    train = build_dataset(cfg, 'train', 8, 1, 3)
    test = build_dataset(cfg, 'eval', 8, 1, 3)
    assert (len(train), len(test)) == (32, 10)
    xs = list(train)
    assert len(xs) == 32 and xs[0][0].shape == (1, 8, 8) and {y for _, y in xs} == {0, 1, 2}
    assert len({float(x.sum()) for x, _ in xs}) == 32  # every training sample, once
    assert len(list(test)) == 10
    loader = build_loader(train, 4, True, num_workers=0, seed=0)
    assert len(loader) == 8 and sum(x.shape[0] for x, _ in loader) == 32


def test_each_process_reads_its_own_shards(shards):
    """What timm's reader does with 2 processes: disjoint halves of the shards, together all of them."""
    seen = []
    for rank in (0, 1):
        ds = build_dataset(_cfg(shards), 'train', 8, 1, 3)
        reader = ds.dataset.reader
        reader.dist_rank, reader.dist_num_replicas = rank, 2
        reader.global_num_workers, reader.global_worker_id = 2, rank
        ds.set_epoch(0)  # the shard order both ranks split comes from (seed, epoch)
        seen.append({float(x.sum()) for x, _ in ds})
    assert len(seen[0]) == len(seen[1]) == 16 and not seen[0] & seen[1]


def test_a_stream_has_no_hold_out_or_limit_and_says_what_to_do(shards, tmp_path):
    for key in ('val_size', 'train_limit'):
        with pytest.raises(DatasetError, match=rf"'wds/toy' is a stream of shards: --{key.replace('_', '-')} needs "
                                               r'random access; set it to 0 and give the shards a validation split'):
            build_dataset(_cfg(shards, **{key: 4}), 'train', 8, 1, 3)
    with pytest.raises(DatasetError, match=r"needs --data-dir, a folder holding the shards and their _info.json"):
        check_data_source(_cfg(tmp_path), ('train',))
    with pytest.raises(DatasetError, match=r"cannot open split 'test' of dataset 'wds/toy'.*_info.json must list it"):
        build_dataset(_cfg(shards, eval_split='test'), 'eval', 8, 1, 3)
    bad = _write_shards(tmp_path / 'bad', {'train': (1, 4)}, bad_class=7)
    with pytest.raises(DatasetError, match=r'sample 1 of this stream has class 7, but the model has 3 outputs'):
        list(build_dataset(_cfg(bad), 'train', 8, 1, 3))


def test_recipes_train_and_evaluate_on_it_without_accelerate_sharding_it_again(shards, tmp_path):
    from accelerate.state import AcceleratorState, PartialState
    from timm_learngene.recipes import train_vit
    from timm_learngene.training import setup
    made = []
    real = setup.StreamLoader

    def recording(loader, device):
        made.append(loader)
        return real(loader, device)

    setup.StreamLoader = recording
    try:
        train_vit.main(['--dataset', 'wds/toy', '--data-dir', str(shards), '--model', 'vit_tiny_patch16_224',
                        '--model-args', '{"embed_dim": 16, "depth": 1, "num_heads": 2, "img_size": 8, '
                        '"patch_size": 4, "in_chans": 1, "num_classes": 3}', '--epochs', '1', '--batch-size', '4',
                        '--num-workers', '2', '--cpu', '--mixed-precision', 'no',
                        '--output', str(tmp_path / 'run')])
    finally:
        setup.StreamLoader = real
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    assert len(made) == 2  # the training and the evaluation stream, neither prepared by accelerate
    log = [json.loads(line) for line in (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in log if 'lr' in r][-1] == 8  # one epoch = 32 samples / 4
    assert any('eval' in r for r in log)
    assert (tmp_path / 'run' / 'model' / 'model.safetensors').is_file()


def test_stream_loader_moves_batches_and_skips_on_resume():
    data = torch.utils.data.TensorDataset(torch.arange(8.0)[:, None], torch.arange(8))
    loader = StreamLoader(torch.utils.data.DataLoader(data, batch_size=2), torch.device('cpu'))
    assert len(loader) == 4 and [int(y[0]) for _, y in loader.skip_first_batches(2)] == [4, 6]
    assert [int(y[0]) for _, y in loader] == [0, 2, 4, 6]
