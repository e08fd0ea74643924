"""Preemption (SIGTERM / SIGINT -> checkpoint at the step boundary, exit 75, exact resume), a changed process count
refused on resume, and a two-node run on loopback (issue 30)."""
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from timm_learngene.errors import ResumeError
from timm_learngene.training.cli import run_cli
from timm_learngene.training.preemption import EXIT_PREEMPTED, Preempted, StopSignals
from timm_learngene.training.resume import check_process_count

from test_crash import _ce, _reset, _tiny_fit

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'tests' / 'preempt_rank.py'


def _signal_at(step_index, signum=signal.SIGTERM, times=1):
    def loss_fn(model, x, y, step):
        if step == step_index:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return _ce(model, x, y, step)
    return loss_fn


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_the_resume_is_exact(tmp_path, signum, capsys):
    before = signal.getsignal(signum)
    whole = _tiny_fit(tmp_path / 'whole', _ce, steps=6, checkpoint_every=0)
    with pytest.raises(Preempted) as e:  # the signal arrives during step index 2, the run stops after step 3
        _tiny_fit(tmp_path / 'cut', _signal_at(2, signum), steps=6, checkpoint_every=0)
    name = signal.Signals(signum).name
    assert (e.value.signame, e.value.step) == (name, 3)
    assert str(e.value) == (f'stopped by {name} after step 3; checkpoint {tmp_path}/cut/checkpoints/step_00000003 '
                            f'written; continue with --resume {tmp_path}/cut')
    assert f'received {name}: stopping after this optimizer step' in capsys.readouterr().err
    assert [p.name for p in (tmp_path / 'cut' / 'checkpoints').glob('step_*')] == ['step_00000003']
    assert signal.getsignal(signum) is before  # the handler is the caller's again
    resumed = _tiny_fit(tmp_path / 'cut', _ce, resume=True, steps=6, checkpoint_every=0)
    assert torch.equal(resumed, whole)
    steps = [json.loads(line)['step'] for line in (tmp_path / 'cut' / 'log.jsonl').read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _tiny_fit(tmp_path / 'run', _signal_at(1, signal.SIGINT, times=2), steps=6, checkpoint_every=0)
    _reset()
    assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_the_signal_on_any_process_stops_all_of_them():
    class Acc:  # what accelerate's gather returns on 2 processes: every process's value, rank order
        num_processes, device = 2, 'cpu'

        def __init__(self, other):
            self.other = other

        def gather(self, t):
            return torch.cat([t, torch.tensor([self.other])])

    sig = StopSignals()
    assert sig.agreed(Acc(0)) is None
    assert sig.agreed(Acc(int(signal.SIGINT))) == 'SIGINT'
    sig.received = 'SIGTERM'
    assert sig.agreed(Acc(0)) == 'SIGTERM' and sig.agreed(Acc(int(signal.SIGINT))) == 'SIGTERM'


def test_the_command_line_says_how_to_continue_and_exits_75(tmp_path, capsys):
    def main(argv):
        raise Preempted('SIGTERM', 3, tmp_path / 'checkpoints' / 'step_00000003', tmp_path)

    with pytest.raises(SystemExit) as e:
        run_cli(main, [])
    assert e.value.code == EXIT_PREEMPTED == 75
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f'stopped by SIGTERM after step 3; checkpoint {tmp_path}/checkpoints/'
                                             f'step_00000003 written; continue with --resume {tmp_path}')


def test_a_checkpoint_of_another_process_count_is_refused(tmp_path):
    _tiny_fit(tmp_path / 'run', _ce, steps=4)
    ckpt = tmp_path / 'run' / 'checkpoints' / 'step_00000004'
    assert json.loads((ckpt / 'train_state.json').read_text())[0]['num_processes'] == 1
    check_process_count(ckpt, 1)
    with pytest.raises(ResumeError, match=r'written by a run of 1 process\(es\) and this run has 2; .* Resume with 1 '
                                          r'process\(es\) \(accelerate launch --num_processes 1 \.\.\.\)') as e:
        check_process_count(ckpt, 2)
    assert e.value.all_ranks
    # a checkpoint from before the count was recorded is not refused
    state = json.loads((ckpt / 'train_state.json').read_text())
    del state[0]['num_processes']
    (ckpt / 'train_state.json').write_text(json.dumps(state))
    check_process_count(ckpt, 2)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=f'{ROOT}:{ROOT / "tests"}')
    env.pop('TIMM_LEARNGENE_TRACEBACK', None)
    return env


def _launch(*args, port=29531):
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port',
           str(port), str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _two_nodes(out, *args, port=29533):
    """Two ``accelerate launch`` commands, one per "machine" (machine rank 0 and 1, one process each), meeting on
    127.0.0.1; their combined output. Each writes to a file, not a pipe: a pipe nobody reads while the other
    launcher is waited for would fill up and stall that machine, and with it the other one at the next barrier."""
    logs = [Path(f'{out}.machine{rank}.log') for rank in (0, 1)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank, log in enumerate(logs):
        with open(log, 'w') as f:
            procs.append(subprocess.Popen(
                [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
                 '--num_machines', '2', '--machine_rank', str(rank), '--main_process_ip', '127.0.0.1',
                 '--main_process_port', str(port), '--mixed_precision', 'no', '--dynamo_backend', 'no', str(SCRIPT),
                 str(out), *map(str, args)], env=_env(), stdout=f, stderr=subprocess.STDOUT))
    for p in procs:
        p.wait(timeout=300)
    return ''.join(log.read_text() for log in logs)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_stop_together_on_sigterm_resume_exactly_and_other_counts_are_refused(tmp_path, capsys,
                                                                                            monkeypatch):
    """A 2-process distill run of 6 steps, as two machines of one process each on loopback (every rank ends with
    the same weights; then finetuning its pool 3 steps is one run of two processes); the same run on one machine of
    two processes with SIGTERM to rank 1 alone during step index 2 (both ranks stop after step 3 with one
    checkpoint, exit 75, one line); that checkpoint resumed by 1 process is refused with one error line; by 2 it ends
    with the two machines' weights, byte for byte. (The other way, a 1-process checkpoint resumed by 2, is the same
    check: test_a_checkpoint_of_another_process_count_is_refused.) Four launches: each costs ~7 s of the suite."""
    from timm.models import save_for_hf
    from test_distill import _teacher
    monkeypatch.delenv('TIMM_LEARNGENE_TRACEBACK', raising=False)
    teacher = tmp_path / 'teacher'
    save_for_hf(_teacher(), teacher)
    nodes = _two_nodes(tmp_path / 'nodes', teacher, '--per-rank')
    assert (tmp_path / 'nodes' / 'pool' / 'model.safetensors').is_file(), nodes[-3000:]
    assert '2 process(es)' in nodes
    assert json.loads((tmp_path / 'nodes' / 'launch.json').read_text())['num_processes'] == 2
    r0, r1 = (load_file(tmp_path / 'nodes' / f'rank{r}.safetensors') for r in (0, 1))  # every rank ends alike
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    written = load_file(tmp_path / 'nodes' / 'pool' / 'model.safetensors')
    common = written.keys() & r0.keys()
    assert common and all(torch.equal(written[k], r0[k]) for k in common)
    # finetuning that pool 3 steps on the two machines: one run of two processes, not two runs of one
    ft_nodes = _two_nodes(tmp_path / 'ft2', teacher, '--finetune', tmp_path / 'nodes' / 'pool', port=29535)
    assert (tmp_path / 'ft2' / 'pool' / 'model.safetensors').is_file(), ft_nodes[-3000:]
    assert json.loads((tmp_path / 'ft2' / 'launch.json').read_text())['num_processes'] == 2
    tuned = load_file(tmp_path / 'ft2' / 'pool' / 'model.safetensors')
    assert any(not torch.equal(tuned[k], v) for k, v in written.items() if k in tuned)

    cut = _launch(tmp_path / 'cut', teacher, '--kill-rank', '1', '--kill-at', '2')
    text = cut.stdout + cut.stderr
    assert cut.returncode != 0 and 'exitcode  : 75' in text, text[-3000:]
    assert 'received SIGTERM: stopping after this optimizer step' in text, text[-3000:]
    said = [line for line in text.splitlines() if 'after step 3; checkpoint' in line]
    assert len(said) == 1 and f'continue with --resume {tmp_path / "cut"}' in said[0], text[-3000:]
    assert sorted(p.name for p in (tmp_path / 'cut' / 'checkpoints').glob('step_*')) == ['step_00000003']
    assert not (tmp_path / 'cut' / 'pool').exists()

    # resumed by this one process: refused, one error line, exit 2, nothing touched
    from timm_learngene.recipes import distill
    from test_distill import _args
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(distill.main, _args(tmp_path / 'cut', teacher, '--max-steps', '6', '--no-eval', '--cpu',
                                    '--checkpoint-every', '0', '--resume', str(tmp_path / 'cut')))
    _reset()
    err = [line for line in capsys.readouterr().err.splitlines() if ': error: ' in line]
    assert e.value.code == 2 and len(err) == 1, err
    assert 'written by a run of 2 process(es) and this run has 1; ' in err[0]
    assert sorted(p.name for p in (tmp_path / 'cut' / 'checkpoints').glob('step_*')) == ['step_00000003']

    resumed = _launch(tmp_path / 'cut', teacher, '--resume')
    assert (tmp_path / 'cut' / 'pool' / 'model.safetensors').is_file(), resumed.stdout[-3000:] + resumed.stderr[-3000:]
    a = load_file(tmp_path / 'nodes' / 'pool' / 'model.safetensors')  # one machine, cut and resumed: the same bytes
    b = load_file(tmp_path / 'cut' / 'pool' / 'model.safetensors')
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_log_records_say_how_long_the_loader_kept_training_waiting(tmp_path):
    """``data_wait``: the fraction of wall time the host spent blocked on the loader since the last record: most of
    it when each batch takes 4 x 15 ms to load and the step nothing, little when the step takes 40 ms and a batch
    nothing."""
    import time
    from types import SimpleNamespace
    from timm_learngene.training.loop import PreparedRun, cosine_schedule, fit, make_accelerator, make_optimizer

    class Slow(torch.utils.data.Dataset):
        def __init__(self, delay):
            self.delay = delay

        def __len__(self):
            return 16

        def __getitem__(self, i):
            time.sleep(self.delay)
            return torch.randn(4), i % 3

    def slow_step(delay):
        def loss_fn(model, x, y, step):
            time.sleep(delay)
            return _ce(model, x, y, step)
        return loss_fn

    waits = {}
    for name, data_delay, step_delay in (('loader-bound', 0.015, 0.0), ('step-bound', 0.0, 0.04)):
        out = tmp_path / name
        cfg = SimpleNamespace(output=str(out), resume='', cpu=True, mixed_precision='no', grad_accum=1, seed=0,
                              log_every=2, checkpoint_every=0, keep_checkpoints=1, stop_after=0, clip_grad=0.0)
        acc = make_accelerator(cfg)
        model = torch.nn.Linear(4, 3)
        loader = torch.utils.data.DataLoader(Slow(data_delay), batch_size=4, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
        opt = make_optimizer(model, 1e-2, 0.0)
        model, opt, loader = acc.prepare(model, opt, loader)
        try:
            fit(cfg, acc, PreparedRun(model, opt, loader, None, cosine_schedule(opt, 0, 6), len(loader), 6),
                slow_step(step_delay))
        finally:
            _reset()
        recs = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
        assert [r['step'] for r in recs] == [2, 4, 6] and all(0 <= r['data_wait'] <= 1 for r in recs)
        waits[name] = [r['data_wait'] for r in recs]
    assert min(waits['loader-bound']) > 0.6 and max(waits['step-bound']) < 0.4, waits


def test_loader_workers_ignore_stop_signals_only_while_training_handles_them():
    import time
    from timm_learngene.data import build_loader
    data = torch.utils.data.TensorDataset(torch.arange(16.0)[:, None], torch.arange(16))
    loader = build_loader(data, 2, True, num_workers=1, seed=0)
    it = iter(loader)
    next(it)
    worker = it._workers[0]
    with StopSignals():
        for sig in (signal.SIGTERM, signal.SIGINT):
            os.kill(worker.pid, sig)
            time.sleep(0.3)
            assert worker.is_alive(), signal.Signals(sig).name
        assert len(list(itertools.islice(it, 7))) == 7  # and it still serves, to the last of its 8 batches
    # The worker is now idle (every index sent and served). Killed while busy, it could die inside the loader's
    # shared `done_event` lock, and the iterator's shutdown at the end of this test would wait on it forever.
    time.sleep(0.2)
    os.kill(worker.pid, signal.SIGTERM)  # no loop handles it now: the worker stops, as a loader shutdown expects
    try:
        worker.join(10)
    except RuntimeError as e:  # torch's SIGCHLD handler (once installed in this process) reports the death
        assert 'is killed by signal: Terminated' in str(e)
        worker.join(10)
    assert not worker.is_alive()


def test_a_process_with_live_loader_workers_exits():
    """Interpreter exit terminates the loader's (daemon) workers with SIGTERM and joins them: a worker that ignored
    SIGTERM for good would hang the exit forever."""
    script = ('import torch\n'
              'from timm_learngene.data import build_loader\n'
              'data = torch.utils.data.TensorDataset(torch.arange(16.0)[:, None], torch.arange(16))\n'
              'loader = build_loader(data, 2, True, num_workers=2, seed=0)\n'
              'it = iter(loader)\n'
              'next(it)\n'
              'print("ok", flush=True)\n')
    proc = subprocess.run([sys.executable, '-c', script], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-2000:]
