"""The recipes' command line: a documented error is one line on stderr and exit status 2, not a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from timm_learngene.errors import ConfigError
from timm_learngene.training.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bad_input_is_one_line_from_the_shell(tmp_path):
    missing = tmp_path / 'nope.yaml'
    env = {k: v for k, v in os.environ.items() if k != 'TIMM_LEARNGENE_TRACEBACK'}
    res = subprocess.run([sys.executable, str(ROOT / 'recipes' / 'distill.py'), '--config', str(missing)],
                         capture_output=True, text=True, env=dict(env, OMP_NUM_THREADS='1'), cwd=ROOT, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == f'distill.py: error: config file {missing} not found'


def test_dataset_error_is_one_line(tmp_path, capsys, monkeypatch):
    from timm_learngene.recipes import train_vit
    monkeypatch.delenv('TIMM_LEARNGENE_TRACEBACK', raising=False)
    from accelerate.state import AcceleratorState, PartialState
    try:
        with pytest.raises(SystemExit) as e:
            run_cli(train_vit.main, ['--dataset', 'folder', '--data-dir', str(tmp_path / 'no_data'), '--output',
                                     str(tmp_path / 'out'), '--model', 'vit_tiny_patch16_224', '--cpu'])
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ': error: ' in err[0] and 'no_data' in err[0] and 'Traceback' not in err[0]


def test_traceback_on_request(monkeypatch):
    def main(argv):
        raise ConfigError('bad option')
    monkeypatch.setenv('TIMM_LEARNGENE_TRACEBACK', '1')
    with pytest.raises(ConfigError, match='bad option'):
        run_cli(main, [])
    monkeypatch.delenv('TIMM_LEARNGENE_TRACEBACK')
    with pytest.raises(SystemExit) as e:
        run_cli(main, [])
    assert e.value.code == 2


def test_other_errors_are_not_swallowed():
    def main(argv):
        raise KeyError('a bug')
    with pytest.raises(KeyError, match='a bug'):
        run_cli(main, [])
