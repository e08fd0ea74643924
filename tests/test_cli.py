"""The recipes' command line: a documented error is one line on stderr and exit status 2, not a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, env=None):
    base = {k: v for k, v in os.environ.items() if k != 'TIMM_LEARNGENE_TRACEBACK'}
    env = dict(base, OMP_NUM_THREADS='1', **(env or {}))
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


@pytest.mark.slow
def test_bad_input_is_one_line(tmp_path):
    missing = tmp_path / 'nope.yaml'
    res = _run(ROOT / 'recipes' / 'distill.py', '--config', missing)
    assert res.returncode == 2, res.stderr
    assert 'Traceback' not in res.stderr
    assert res.stderr.strip() == f'distill.py: error: config file {missing} not found'

    res = _run(ROOT / 'recipes' / 'train_vit.py', '--dataset', 'folder', '--data-dir', tmp_path / 'no_data',
               '--output', tmp_path / 'out')
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert 'Traceback' not in res.stderr and lines[-1].startswith('train_vit.py: error: ') and 'no_data' in lines[-1]


@pytest.mark.slow
def test_traceback_on_request(tmp_path):
    res = _run(ROOT / 'recipes' / 'distill.py', '--config', tmp_path / 'nope.yaml',
               env={'TIMM_LEARNGENE_TRACEBACK': '1'})
    assert res.returncode == 1 and 'Traceback' in res.stderr and 'ConfigError' in res.stderr
