"""What a run shows: plain progress lines with an ETA off a terminal, evaluation lines, accelerate's trackers, and
log messages once, on the main process, through a handler that is on by default."""
import json
import logging

import pytest

from timm_learngene.errors import ConfigError
from timm_learngene.logs import PACKAGE_LOGGER, get_logger, setup_logging
from timm_learngene.recipes import train_vit
from timm_learngene.training.progress import Progress, check_trackers, format_seconds, progress_mode

TINY_VIT = json.dumps(dict(embed_dim=16, depth=1, num_heads=2, img_size=16, patch_size=8, in_chans=3, num_classes=5))


def _reset():
    from accelerate.state import AcceleratorState, PartialState
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def _train(out, *extra):
    try:
        train_vit.main(['--dataset', 'synthetic', '--model-args', TINY_VIT, '--batch-size', '4', '--max-steps', '3',
                        '--num-workers', '0', '--train-limit', '12', '--eval-limit', '8', '--eval-batch-size', '8',
                        '--cpu', '--mixed-precision', 'no', '--output', str(out), *extra])
    finally:
        _reset()


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 59.6, 61, 3600 + 62)] == ['0:00', '1:00', '1:01', '1:01:02']


def test_off_a_terminal_progress_is_plain_lines_with_an_eta(capsys):
    assert progress_mode('auto') == 'lines'  # pytest's captured stdout is not a terminal
    p = Progress(5, desc='distill', mode='auto', every=2)
    for _ in range(5):
        p.step(1, {'loss': '1.000'})
    p.close()
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [line.split(',')[0] for line in lines] == ['distill step 2/5 (40%)', 'distill step 4/5 (80%)',
                                                      'distill step 5/5 (100%)']
    assert 'loss 1.000' in lines[0] and 'eta ' in lines[0] and 'eta ' not in lines[-1] and '\r' not in out
    quiet = Progress(5, mode='lines', every=1, enabled=False)  # another process than the main one
    quiet.step()
    quiet.write('nothing')
    assert capsys.readouterr().out == ''
    with pytest.raises(ConfigError, match='bar, lines, none'):
        progress_mode('fancy')


@pytest.mark.curves
def test_a_training_run_prints_progress_and_evaluation_lines(tmp_path, capsys):
    _train(tmp_path / 'run', '--log-every', '2', '--progress', 'lines')
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith('train_vit step ')]
    assert [s.split(',')[0] for s in steps] == ['train_vit step 2/3 (67%)', 'train_vit step 3/3 (100%)']
    assert all('lr ' in s and 'img/s ' in s for s in steps)
    assert any(line.startswith('epoch 0 step 3: top1 ') for line in out.splitlines())
    assert (tmp_path / 'run' / 'curves.png').read_bytes()[:4] == b'\x89PNG'  # the loss/lr curves beside the log


def test_log_with_refuses_what_accelerate_does_not_have():
    with pytest.raises(ConfigError, match="unknown tracker.*'tensorbord'"):
        check_trackers(['tensorbord'])


def test_log_with_tensorboard(tmp_path):
    from accelerate.tracking import get_available_trackers
    if 'tensorboard' not in {str(getattr(t, 'value', t)) for t in get_available_trackers()}:
        # accelerate alone would drop the tracker with a debug message; the run stops before anything is built
        with pytest.raises(ConfigError, match=r"timm-learngene\[tensorboard\]"):
            _train(tmp_path / 'run', '--log-with', 'tensorboard')
        assert not (tmp_path / 'run' / 'log.jsonl').exists()
        return
    _train(tmp_path / 'run', '--log-with', 'tensorboard', '--log-every', '1')
    assert list((tmp_path / 'run' / 'trackers').rglob('events.out.tfevents.*'))


def test_logging_is_on_by_default_and_once(monkeypatch, capsys):
    _reset()
    logger = logging.getLogger(PACKAGE_LOGGER)
    monkeypatch.setattr(logging.getLogger(), 'handlers', [])  # a program that configured no logging
    monkeypatch.setattr(logger, 'handlers', [])
    monkeypatch.setattr(logger, 'level', logging.NOTSET)
    setup_logging()
    setup_logging()  # idempotent: one handler
    assert len(logger.handlers) == 1
    log = get_logger('timm_learngene.test')
    log.info('push done')
    log.warning('head not loaded')
    monkeypatch.setenv('RANK', '1')  # another process of a launched run, before any Accelerator exists
    log.warning('not from rank 1')
    err = capsys.readouterr().err
    assert err.splitlines() == ['push done', 'warning: head not loaded']


def test_pareto_points_are_labelled_with_descendant_names(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.axes import Axes
    from timm_learngene.evaluation import pareto_plot
    labels = []
    real = Axes.annotate
    monkeypatch.setattr(Axes, 'annotate',
                        lambda self, text, *a, **kw: labels.append(text) or real(self, text, *a, **kw))
    rows = [dict(name='s1', gmacs=0.1, top1=50.0), dict(name='s2', gmacs=0.2, top1=60.0), dict(name='s3', gmacs=0.3)]
    path = pareto_plot({'pool': rows}, tmp_path / 'p.png')
    assert labels == ['s1', 's2'] and path.read_bytes()[:4] == b'\x89PNG'


def test_accuracy_steps_a_progress_display_per_batch(capsys):
    import torch
    from accelerate import Accelerator

    from timm_learngene.training.metrics import accuracy
    _reset()
    accelerator = Accelerator(cpu=True)
    data = torch.utils.data.TensorDataset(torch.randn(10, 4), torch.arange(10) % 2)
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    acc = accuracy(accelerator, lambda x: {'m': torch.stack([x[:, 0], -x[:, 0]], 1)}, loader,
                   progress=lambda total: Progress(total, desc='evaluate', mode='lines', every=1, unit='batch'))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(',')[0] for line in lines] == ['evaluate batch 1/3 (33%)', 'evaluate batch 2/3 (67%)',
                                                      'evaluate batch 3/3 (100%)']
    want = 100.0 * sum(int((x[0] < 0).item()) == int(y) for x, y in data) / 10  # class 1 wins when -x0 > x0
    assert acc['m'] == pytest.approx(want)
    _reset()
