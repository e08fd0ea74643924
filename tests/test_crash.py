"""Crash safety of training runs: kill -9 at a random step, during a checkpoint write and during the pool write;
a damaged ``latest.json``; a non-finite loss; run-to-run determinism.

Every interrupted run, continued with ``--resume``, must end with the weights of a straight run, bit for bit on
CPU. Kills are real ``SIGKILL``s of a child process; faults inside a write come from ``tests/crash_wrapper.py``,
which patches the writers in the child, so the production code has no test hooks.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from timm.models import save_for_hf

from timm_learngene.checkpoint import load_pool
from timm_learngene.errors import CheckpointError
from timm_learngene.training.loop import (
    NonFiniteLossError, cosine_schedule, fit, latest_checkpoint, make_accelerator, make_optimizer, save_checkpoint,
)

from test_distill import _args as _distill_args, _teacher
from test_descendants import _ft_args

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / 'recipes'
WRAPPER = Path(__file__).resolve().parent / 'crash_wrapper.py'
sys.path.insert(0, str(RECIPES))

pytestmark = pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs POSIX SIGKILL')

STEPS = 10  # 8 per epoch on 64 images of batch 8: the runs cross an epoch boundary
FT_STEPS = 16
TIMEOUT = 120.0  # seconds a child may take to reach the step it is killed at (imports included)


def _reset():
    from accelerate.state import AcceleratorState, PartialState
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


@pytest.fixture(autouse=True)
def _reset_accelerate():
    yield
    _reset()


def _weights(run_dir: Path):
    return load_file(Path(run_dir) / 'pool' / 'model.safetensors')


def _assert_same_weights(a_dir, b_dir):
    a, b = _weights(a_dir), _weights(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f'{k} differs between {a_dir} and {b_dir}'


def _logged_steps(run_dir: Path):
    lines = (Path(run_dir) / 'log.jsonl').read_text().splitlines()
    return [json.loads(line)['step'] for line in lines if 'total' in json.loads(line)]


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT), TQDM_DISABLE='1')


def _last_logged_step(log: Path) -> int:
    if not log.is_file():
        return 0
    step = 0
    for line in log.read_text().splitlines():
        try:
            step = max(step, json.loads(line)['step'])
        except (ValueError, KeyError):
            pass  # the line being written
    return step


def _kill_at(cmd, out: Path, step: int, rng: random.Random) -> None:
    """Run ``cmd``, SIGKILL it once ``out/log.jsonl`` shows ``step`` (plus up to 20 ms drawn from ``rng``, so the
    kill lands anywhere in that step's checkpoint or the next step), and check it died of the kill."""
    out.mkdir(parents=True, exist_ok=True)
    child_log = out.parent / f'{out.name}.child.txt'
    with open(child_log, 'w') as f:
        proc = subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT
    try:
        while _last_logged_step(out / 'log.jsonl') < step:
            if proc.poll() is not None:
                pytest.fail(f'the run exited ({proc.returncode}) before step {step}:\n{child_log.read_text()[-3000:]}')
            if time.monotonic() > deadline:
                pytest.fail(f'the run did not reach step {step} in {TIMEOUT:.0f} s:\n{child_log.read_text()[-3000:]}')
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.02))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (
        f'the run finished before it could be killed at step {step}; give it more steps\n'
        f'{child_log.read_text()[-3000:]}')


def _crash_in_write(recipe: str, pattern: str, args) -> str:
    """Run ``recipe`` under the crash wrapper; it must die of SIGKILL inside the write matching ``pattern``."""
    proc = subprocess.run([sys.executable, str(WRAPPER), recipe, pattern, '--', *args], env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == -signal.SIGKILL, f'expected a SIGKILL inside {pattern}, got {proc.returncode}:\n' \
                                               f'{out[-3000:]}'
    return out


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('teacher')
    save_for_hf(_teacher(), d)
    return d


def _dargs(out, teacher_dir, *extra):
    return _distill_args(out, teacher_dir, '--max-steps', str(STEPS), '--checkpoint-every', '1', '--no-eval',
                         *extra)


@pytest.fixture(scope='module')
def straight(tmp_path_factory, teacher_dir):
    """An uninterrupted distill run, in-process: the reference every interrupted run must reproduce."""
    import distill
    out = tmp_path_factory.mktemp('straight')
    distill.main(_dargs(out, teacher_dir))
    _reset()
    return out


# ---- determinism ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_same_config_gives_identical_weights(tmp_path, straight, teacher_dir):
    import distill
    distill.main(_dargs(tmp_path, teacher_dir))
    _assert_same_weights(straight, tmp_path)


# ---- kill -9 at a random step --------------------------------------------------------------------------------
@pytest.mark.slow
def test_distill_killed_at_a_random_step_resumes_to_the_same_weights(tmp_path, straight, teacher_dir):
    import distill
    rng = random.Random(8)
    step = rng.randint(2, STEPS - 5)
    out = tmp_path / 'run'
    _kill_at([sys.executable, str(RECIPES / 'distill.py'), *_dargs(out, teacher_dir)], out, step, rng)
    assert not (out / 'pool').exists()
    done = latest_checkpoint(out)
    assert done is not None and done.name >= f'step_{step - 1:08d}', done
    distill.main(_dargs(out, teacher_dir, '--resume', str(out)))
    _assert_same_weights(straight, out)
    assert _logged_steps(out) == list(range(1, STEPS + 1)), 'the resumed log must read like one straight run'
    assert not [p.name for p in (out / 'checkpoints').iterdir() if p.name.startswith('.tmp_')]


@pytest.mark.slow
def test_finetune_killed_at_a_random_step_resumes_to_the_same_weights(tmp_path, straight):
    import finetune
    args = ('--max-steps', str(FT_STEPS), '--checkpoint-every', '2')
    finetune.main(_ft_args(straight, tmp_path / 'a', *args))
    _reset()
    rng = random.Random(5)
    step = rng.randint(3, FT_STEPS - 8)
    out = tmp_path / 'b'
    _kill_at([sys.executable, str(RECIPES / 'finetune.py'), *_ft_args(straight, out, *args)], out, step, rng)
    finetune.main(_ft_args(straight, out, *args, '--resume', str(out)))
    _assert_same_weights(tmp_path / 'a', out)
    assert _logged_steps(out) == list(range(1, FT_STEPS + 1))


# ---- kill -9 inside a write ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_while_writing_a_checkpoint_resumes_from_the_previous_one(tmp_path, straight, teacher_dir):
    import distill
    k = 4
    half = f'.tmp_step_{k:08d}'
    _crash_in_write('distill', f'checkpoints/{half}/optimizer.bin', _dargs(tmp_path, teacher_dir))
    ckpts = tmp_path / 'checkpoints'
    assert (ckpts / half / 'optimizer.bin').is_file(), 'the fault left no half-written checkpoint'
    assert not (ckpts / f'step_{k:08d}').exists()
    assert latest_checkpoint(tmp_path) == ckpts / f'step_{k - 1:08d}'
    (ckpts / 'latest.json').unlink()  # the fallback must skip the half folder too
    assert latest_checkpoint(tmp_path) == ckpts / f'step_{k - 1:08d}'
    distill.main(_dargs(tmp_path, teacher_dir, '--resume', str(tmp_path)))
    assert not (ckpts / half).exists(), 'the leftover .tmp_ folder is removed on resume'
    _assert_same_weights(straight, tmp_path)
    assert _logged_steps(tmp_path) == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_kill_while_writing_the_pool_is_not_a_finished_pool(tmp_path, straight, teacher_dir):
    import distill
    _crash_in_write('distill', '*pool*', _dargs(tmp_path, teacher_dir))
    with pytest.raises(CheckpointError):
        load_pool(tmp_path / 'pool')
    assert latest_checkpoint(tmp_path) == tmp_path / 'checkpoints' / f'step_{STEPS:08d}'
    distill.main(_dargs(tmp_path, teacher_dir, '--resume', str(tmp_path)))  # no training left: writes the pool
    _assert_same_weights(straight, tmp_path)
    assert load_pool(tmp_path / 'pool') is not None


# ---- latest.json damaged, leftovers --------------------------------------------------------------------------
def _fake_run(root: Path, steps, pointer=None) -> Path:
    ckpts = root / 'checkpoints'
    for s in steps:
        (ckpts / f'step_{s:08d}').mkdir(parents=True)
    (ckpts / '.tmp_step_99999999').mkdir(parents=True)  # a save killed half way: never a candidate
    if pointer is not None:
        (ckpts / 'latest.json').write_bytes(pointer)
    return ckpts


@pytest.mark.parametrize('pointer', [None, b'', b'{"dir": "step_0000', b'\xff\xfe', b'[]', b'{"step": 3}',
                                     b'{"dir": "step_00000007"}', b'{"dir": ".tmp_step_99999999"}',
                                     b'{"dir": "../elsewhere"}'],
                         ids=['missing', 'empty', 'truncated', 'binary', 'list', 'no-dir', 'gone', 'tmp', 'escape'])
def test_damaged_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path, pointer):
    ckpts = _fake_run(tmp_path, [2, 10, 9], pointer)
    assert latest_checkpoint(tmp_path) == ckpts / 'step_00000010'


def test_good_pointer_wins_and_no_checkpoint_is_none(tmp_path):
    ckpts = _fake_run(tmp_path / 'a', [2, 4], b'{"dir": "step_00000002", "step": 2}')
    assert latest_checkpoint(tmp_path / 'a') == ckpts / 'step_00000002'
    _fake_run(tmp_path / 'b', [], b'{"dir": ".tmp_step_99999999"}')
    assert latest_checkpoint(tmp_path / 'b') is None
    assert latest_checkpoint(tmp_path / 'c') is None


def test_save_removes_leftovers_and_keeps_the_newest(tmp_path):
    from accelerate import Accelerator
    acc = Accelerator(cpu=True)
    ckpts = tmp_path / 'checkpoints'
    (ckpts / '.tmp_step_00000003').mkdir(parents=True)
    (ckpts / '.tmp_step_00000003' / 'optimizer.bin').write_bytes(b'half')
    (ckpts / '.tmp_del_step_00000001').mkdir()
    (ckpts / '.tmp_latest.json').write_text('{"di')
    for step in (1, 2, 3):
        save_checkpoint(acc, ckpts, step, keep=2)
    assert sorted(p.name for p in ckpts.iterdir()) == ['latest.json', 'step_00000002', 'step_00000003']
    assert json.loads((ckpts / 'latest.json').read_text()) == {'dir': 'step_00000003', 'step': 3}


# ---- non-finite loss -----------------------------------------------------------------------------------------
def _tiny_fit(out: Path, loss_fn, resume=False, steps=6):
    """``fit`` on a linear model and 48 random points: 12 steps per epoch, checkpoint every 2."""
    cfg = SimpleNamespace(output=str(out), resume=str(out) if resume else '', cpu=True, mixed_precision='no',
                          grad_accum=1, seed=0, log_every=1, checkpoint_every=2, keep_checkpoints=2, stop_after=0,
                          clip_grad=0.0)
    acc = make_accelerator(cfg)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
    opt = make_optimizer(model.named_parameters(), 1e-2, 0.05)
    model, opt, loader = acc.prepare(model, opt, loader)
    try:
        fit(cfg, acc, model, loader, loss_fn, opt, cosine_schedule(opt, 1, steps), steps)
    finally:
        _reset()
    return model.weight.detach().clone()


def _ce(model, x, y, step):
    ce = torch.nn.functional.cross_entropy(model(x), y)
    return {'total': ce, 'ce': ce}


def _snapshot(ckpts: Path):
    return {p.relative_to(ckpts): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(ckpts.rglob('*'))
            if p.is_file()}


def test_nan_loss_stops_with_the_step_and_term_and_leaves_the_checkpoint(tmp_path):
    before = {}

    def nan_at_3(model, x, y, step):
        losses = _ce(model, x, y, step)
        if step == 3:
            before.update(_snapshot(tmp_path / 'run' / 'checkpoints'))
            losses['kd'] = torch.tensor(float('nan'))
            losses['total'] = losses['total'] + losses['kd']
        return losses

    with pytest.raises(NonFiniteLossError) as e:
        _tiny_fit(tmp_path / 'run', nan_at_3)
    msg = str(e.value)
    assert "'kd' = nan" in msg and 'step index 3' in msg and 'step_00000002' in msg, msg
    ckpts = tmp_path / 'run' / 'checkpoints'
    assert json.loads((ckpts / 'latest.json').read_text())['dir'] == 'step_00000002'
    assert _snapshot(ckpts) == before, 'the failing step must not touch the saved checkpoint'
    assert before  # the snapshot was taken

    resumed = _tiny_fit(tmp_path / 'run', _ce, resume=True)
    assert torch.equal(resumed, _tiny_fit(tmp_path / 'straight', _ce))


@pytest.mark.slow
@pytest.mark.distributed
def test_nan_on_one_process_stops_every_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
           str(ROOT / 'tests' / 'nan_rank.py'), str(tmp_path / 'run')]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "rank 1 stopped: loss term 'total' = nan at step index 2" in text, text[-3000:]
    assert 'rank 0 stopped: a loss became non-finite on process [1] at step index 2' in text, text[-3000:]
    assert (tmp_path / 'run' / 'checkpoints' / 'step_00000002').is_dir()
    assert not (tmp_path / 'run' / 'checkpoints' / 'step_00000003').exists()
