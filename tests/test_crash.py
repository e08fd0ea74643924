"""Crash safety of training runs: kill -9 at a random step, during a checkpoint write and during the pool write;
a damaged ``latest.json``; damaged checkpoint files; a non-finite loss or gradient; run-to-run determinism and
the random state across a resume.

Every interrupted run, continued with ``--resume``, must end with the weights of a straight run, bit for bit on
CPU. Kills are real ``SIGKILL``s of a child process; faults inside a write come from ``tests/crash_wrapper.py``,
which patches the writers in the child, so the production code has no test hooks.
"""
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import load as accelerate_load
from safetensors.torch import load_file
from timm.models import save_for_hf

from timm_learngene.pool_writer import load_pool
from timm_learngene.errors import CheckpointError, ResumeError
from timm_learngene.finetune import RouteSampler
from timm_learngene.recipes import distill, finetune
from timm_learngene.training.loop import (
    NonFiniteLossError, PreparedRun, cosine_schedule, fit, latest_checkpoint, make_accelerator, make_optimizer,
    save_checkpoint,
)

from test_distill import _args as _distill_args, _teacher
from test_descendants import _ft_args

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / 'recipes'
WRAPPER = Path(__file__).resolve().parent / 'crash_wrapper.py'

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
    out = tmp_path_factory.mktemp('straight')
    distill.main(_dargs(out, teacher_dir))
    _reset()
    return out


# ---- determinism ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_same_config_gives_identical_weights(tmp_path, straight, teacher_dir):
    distill.main(_dargs(tmp_path, teacher_dir))
    _assert_same_weights(straight, tmp_path)


# ---- kill -9 at a random step --------------------------------------------------------------------------------
@pytest.mark.slow
def test_distill_killed_at_a_random_step_resumes_to_the_same_weights(tmp_path, straight, teacher_dir):
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
def test_finetune_killed_at_a_random_step_resumes_to_the_same_weights(tmp_path, straight, teacher_dir):
    # finetune never opens the ancestry path a pool records: name it (the last --teacher-checkpoint wins)
    args = ('--max-steps', str(FT_STEPS), '--checkpoint-every', '2', '--teacher-checkpoint', str(teacher_dir))
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
    _crash_in_write('distill', '*pool*', _dargs(tmp_path, teacher_dir))
    with pytest.raises(CheckpointError, match=r'pool not found; a pool folder holds'):  # no half pool folder appears
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
def _tiny_fit(out: Path, loss_fn, resume=False, steps=6, extra_state=(), loader_generator=True, **overrides):
    """``fit`` on a linear model and 48 random points: 12 steps per epoch, checkpoint every 2 (``overrides``
    replace config values). The loader has its own generator, as the recipes' loaders do."""
    cfg = SimpleNamespace(output=str(out), resume=str(out) if resume else '', cpu=True, mixed_precision='no',
                          grad_accum=1, seed=0, log_every=1, checkpoint_every=2, keep_checkpoints=2, stop_after=0,
                          clip_grad=0.0)
    vars(cfg).update(overrides)
    acc = make_accelerator(cfg)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True,
                                         generator=torch.Generator().manual_seed(2) if loader_generator else None)
    opt = make_optimizer(model, 1e-2, 0.05)
    model, opt, loader = acc.prepare(model, opt, loader)
    try:
        fit(cfg, acc, PreparedRun(model, opt, loader, None, cosine_schedule(opt, 1, steps), len(loader), steps), loss_fn,
            extra_state=extra_state)
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

    with pytest.raises(NonFiniteLossError, match=r"loss terms .*'kd' = nan at step index 3") as e:
        _tiny_fit(tmp_path / 'run', nan_at_3)
    msg = str(e.value)
    assert "'kd' = nan" in msg and 'step index 3' in msg and 'step_00000002' in msg, msg
    ckpts = tmp_path / 'run' / 'checkpoints'
    assert json.loads((ckpts / 'latest.json').read_text())['dir'] == 'step_00000002'
    assert _snapshot(ckpts) == before, 'the failing step must not touch the saved checkpoint'
    assert before  # the snapshot was taken

    resumed = _tiny_fit(tmp_path / 'run', _ce, resume=True)
    assert torch.equal(resumed, _tiny_fit(tmp_path / 'straight', _ce))


class _BadGrad(torch.autograd.Function):
    """The identity forward; backward sends ``value`` (inf or nan) to every input element."""

    @staticmethod
    def forward(ctx, x, value):
        ctx.value = value
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, ctx.value), None


@pytest.mark.parametrize('value, clip', [(float('inf'), 0.0), (float('nan'), 1.0)], ids=['inf', 'nan-clipped'])
def test_non_finite_gradient_with_a_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, value, clip):
    def bad_grad_at_3(model, x, y, step):
        losses = _ce(model, x, y, step)
        if step == 3:  # adds 0 to the loss, and a non-finite gradient to every weight
            losses['total'] = losses['total'] + 0 * _BadGrad.apply(model(x), value).sum()
        return losses

    with pytest.raises(NonFiniteLossError, match=r'gradient norm = .* at step index 3') as e:
        _tiny_fit(tmp_path, bad_grad_at_3, checkpoint_every=1, keep_checkpoints=1, clip_grad=clip)
    msg = str(e.value)
    assert 'gradient norm' in msg and 'step index 3' in msg and 'step_00000003' in msg, msg
    ckpts = tmp_path / 'checkpoints'
    assert sorted(p.name for p in ckpts.iterdir()) == ['latest.json', 'step_00000003']
    assert json.loads((ckpts / 'latest.json').read_text())['dir'] == 'step_00000003'
    weights = load_file(ckpts / 'step_00000003' / 'model.safetensors')
    assert weights and all(torch.isfinite(w).all() for w in weights.values())


# ---- random state across a resume ----------------------------------------------------------------------------
def test_resume_restores_the_random_state(tmp_path):
    """accelerate only logs a random-state file it cannot load, and with no random draws the bit-exact tests
    would not notice: here every step draws a dropout mask, and the generator's state at the first resumed step
    must be the one saved in the checkpoint, which is the straight run's at that step."""
    seen = {}

    def ce_dropout(model, x, y, step):
        seen.setdefault(step, torch.get_rng_state())  # before this step draws anything
        ce = torch.nn.functional.cross_entropy(torch.nn.functional.dropout(model(x), 0.5, training=True), y)
        return {'total': ce, 'ce': ce}

    straight = _tiny_fit(tmp_path / 'straight', ce_dropout)
    reference = dict(seen)
    _tiny_fit(tmp_path / 'run', ce_dropout, stop_after=3)
    saved = accelerate_load(tmp_path / 'run' / 'checkpoints' / 'step_00000003' / 'random_states_0.pkl',
                            weights_only=True)['torch_manual_seed']
    assert torch.equal(saved, reference[3])
    seen.clear()
    resumed = _tiny_fit(tmp_path / 'run', ce_dropout, resume=True)
    assert min(seen) == 3 and torch.equal(seen[3], saved), 'the resumed run did not continue the saved random state'
    assert torch.equal(resumed, straight)


def test_mid_epoch_resume_warns_about_a_loader_without_a_generator(tmp_path, caplog):
    _tiny_fit(tmp_path, _ce, stop_after=3, loader_generator=False)
    with caplog.at_level('WARNING', logger='timm_learngene.training.loop'):
        _tiny_fit(tmp_path, _ce, resume=True, loader_generator=False)
    assert 'no generator' in caplog.text


# ---- damaged checkpoint files --------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny run with a route sampler (a tensor in train_state.json), checkpoints step_2 and step_4."""
    out = tmp_path_factory.mktemp('trained')
    _tiny_fit(out, _ce, steps=4, extra_state=[RouteSampler([0, 1, 2], seed=1)])
    _reset()
    return out


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _edit_state(edit):
    def damage(path: Path):
        states = json.loads(path.read_text())
        edit(states)
        path.write_text(json.dumps(states))
    return damage


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(states):
        d = states
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


DAMAGE = {
    'model-truncated': ('model.safetensors', _truncate),
    'model-garbage': ('model.safetensors', lambda p: p.write_bytes(b'\xff' * 64)),
    'optimizer-truncated': ('optimizer.bin', _truncate),
    'optimizer-empty': ('optimizer.bin', lambda p: p.write_bytes(b'')),
    'random-states-truncated': ('random_states_0.pkl', _truncate),
    'state-truncated': ('train_state.json', _truncate),
    'state-deeply-nested': ('train_state.json', lambda p: p.write_text('[' * 100_000)),
    'state-bad-base64': ('train_state.json', _edit_state(_set(2, 'generator', 'data', '!!not base64!!'))),
    'state-huge-shape': ('train_state.json', _edit_state(_set(2, 'generator', 'shape', [2 ** 40]))),
    'state-huge-shape-no-data': ('train_state.json', _edit_state(lambda s: s[2]['generator'].update(
        shape=[2 ** 40], data=''))),
    'state-shape-not-sizes': ('train_state.json', _edit_state(_set(2, 'generator', 'shape', ['a']))),
    'state-wrong-dtype': ('train_state.json', _edit_state(_set(2, 'generator', '__tensor__', 'float64'))),
    'state-unhashable-dtype': ('train_state.json', _edit_state(_set(2, 'generator', '__tensor__', ['uint8']))),
    'state-data-not-text': ('train_state.json', _edit_state(_set(2, 'generator', 'data', 5))),
    'state-tensor-is-list': ('train_state.json', _edit_state(_set(2, 'generator', [1, 2, 3]))),
    'state-step-is-text': ('train_state.json', _edit_state(_set(0, 'step', '4'))),
    'state-step-missing': ('train_state.json', _edit_state(_set(0, {}))),
    'state-step-is-another': ('train_state.json', _edit_state(_set(0, 'step', 2))),
    'state-not-a-dict': ('train_state.json', _edit_state(_set(1, None))),
}


@pytest.mark.parametrize('damage', list(DAMAGE))
def test_damaged_checkpoint_is_a_resume_error_naming_it(tmp_path, trained, damage):
    name, spoil = DAMAGE[damage]
    run = tmp_path / 'run'
    shutil.copytree(trained, run)
    spoil(run / 'checkpoints' / 'step_00000004' / name)
    with pytest.raises(ResumeError, match='step_00000004') as e:
        _tiny_fit(run, _ce, resume=True, steps=4, extra_state=[RouteSampler([0, 1, 2], seed=1)])
    msg = str(e.value)
    assert 'step_00000004' in msg and '--resume' in msg, msg


def test_undamaged_copy_resumes(tmp_path, trained):
    """The damage tests fail for the damage, not for the copy."""
    shutil.copytree(trained, tmp_path / 'run')
    _tiny_fit(tmp_path / 'run', _ce, resume=True, steps=4, extra_state=[RouteSampler([0, 1, 2], seed=1)])


def test_decode_never_allocates_more_than_the_data():
    from timm_learngene.training.resume import _decode, _encode
    t = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    assert torch.equal(_decode(_encode(t)), t) and _decode(_encode(torch.zeros(0, 4))).shape == (0, 4)
    for shape, data in (([2 ** 40], ''), ([7], _encode(t)['data']), ([2, 3], base64.b64encode(b'x').decode())):
        with pytest.raises(ValueError, match=r'a int64 tensor of shape .* needs \d+ bytes, the data holds \d+'):
            _decode({'__tensor__': 'int64', 'shape': shape, 'data': data})


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
