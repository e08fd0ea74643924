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


def test_one_entry_point_runs_every_job(capsys):
    """``timm-learngene SUBCOMMAND``: the training jobs through their recipes' option tables, the pool jobs through
    their own parsers; the console script is installed with the package."""
    from importlib.metadata import entry_points

    from timm_learngene.__main__ import TRAINING_COMMANDS, console, main
    scripts = {e.name: e.value for e in entry_points(group='console_scripts')}
    assert scripts.get('timm-learngene') == 'timm_learngene.__main__:console' and callable(console)
    with pytest.raises(SystemExit) as e:
        main(['--help'])
    assert e.value.code == 0
    listed = capsys.readouterr().out
    for job in ('distill', 'finetune', 'evaluate', 'train-vit', 'pipeline', 'profile', 'select', 'export', 'push',
                'describe'):
        assert job in listed, job
    for job, (module, _) in TRAINING_COMMANDS.items():
        with pytest.raises(SystemExit) as e:
            main([job, '--help'])
        assert e.value.code == 0
        assert capsys.readouterr().out.startswith('usage: '), job
    assert main(['describe', 'deit_base_l6']) == 0
    assert '| s18 | tiny6[0..1]->base6[0..5] |' in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # a recipe's documented error: one line, status 2
        main(['describe', 'no_such_pool'])
    assert e.value.code == 2
    assert 'no_such_pool' in capsys.readouterr().err


@pytest.mark.slow
def test_recipes_run_as_modules_for_accelerate_launch(tmp_path):
    """``accelerate launch -m timm_learngene.recipes.NAME`` runs the module as ``__main__``; here plain ``python -m``,
    from a folder that is not the checkout (nothing in the job needs one). One module: each fresh interpreter costs
    ~3.5 s of the suite, and every recipe's ``__main__`` is the same ``run_cli`` call."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, '-m', 'timm_learngene.recipes.describe_pool', 'fashion_mnist_l6'],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert 'fashion_mnist_l6: 18 descendants' in res.stdout


def test_an_unknown_pipeline_stage_is_one_line(capsys, monkeypatch):
    from timm_learngene.recipes import pipeline
    monkeypatch.delenv('TIMM_LEARNGENE_TRACEBACK', raising=False)
    with pytest.raises(SystemExit) as e:
        run_cli(pipeline.main, ['--preset', 'replication', '--until', 'nope'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'Traceback' not in err, err
    assert "error: pipeline: --until 'nope' is not a stage of the replication: give 'ancestry' or a stage name" \
        in err.strip().splitlines()[-1], err
    with pytest.raises(SystemExit) as e:
        run_cli(pipeline.main, ['--preset', 'demo', '--until', 'seed 0 distill'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip().endswith(
        "--until 'seed 0 distill' is not a stage of the demo; give one of ancestry, distill, eval_distilled, "
        "finetune, evaluate"), err


def test_presets_and_configs_ship_inside_the_package():
    import timm_learngene
    from timm_learngene.recipes.pipeline import PRESETS
    pkg = Path(timm_learngene.__file__).parent
    assert all(p.is_file() and pkg in p.parents for p in PRESETS.values())
    assert (ROOT / 'recipes' / 'configs' / 'pipeline_demo.yaml').resolve() == PRESETS['demo'].resolve()


def test_stitch_init_accuracy_is_a_recipe(tmp_path, capsys):
    import timm

    from timm_learngene import save_pool
    from timm_learngene.__main__ import main
    from conftest import tiny_spec
    torch = pytest.importorskip('torch')
    torch.manual_seed(0)
    save_pool(timm.create_model('learngene_pool', pool=tiny_spec(6)), tmp_path / 'pool')
    from timm_learngene.recipes import stitch_init_accuracy
    table = stitch_init_accuracy.main([str(tmp_path / 'pool'), '--dataset', 'synthetic', '--val-size', '16',
                                       '--init-images', '8', '--batch-size', '8', '--methods', 'lstsq,learngene'])
    assert set(table) == {'lstsq', 'learngene'} and len(table['lstsq']) == 18
    assert table['lstsq']['s1'] == table['learngene']['s1']  # a member alone has no stitch
    assert all(0 <= v <= 100 for t in table.values() for v in t.values())
    assert '| s18 |' in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(['stitch-init-accuracy', str(tmp_path / 'pool'), '--methods', 'lstsq,nope', '--dataset', 'synthetic'])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith('timm-learngene stitch-init-accuracy: error: unknown stitch init nope')
