"""Run by tests/test_preemption.py, alone or under ``accelerate launch``: the distill recipe on a tiny pool for 6
steps through the recipes' command line (``run_cli``), or with ``--finetune POOL`` the finetune recipe on that pool
for 3 steps; with ``--kill-rank R --kill-at S`` process R sends itself SIGTERM during step index S (the other
processes get no signal)."""
import argparse
import os
import signal

from timm_learngene.recipes import distill
from timm_learngene.training.cli import run_cli

from test_distill import _args

parser = argparse.ArgumentParser()
parser.add_argument('out')
parser.add_argument('teacher')
parser.add_argument('--kill-rank', type=int, default=-1)
parser.add_argument('--kill-at', type=int, default=-1)
parser.add_argument('--resume', action='store_true')
parser.add_argument('--stop-after', type=int, default=0)
parser.add_argument('--finetune', default='')
parser.add_argument('--per-rank', action='store_true', help="also write each process's pool weights to OUT/rankN")
a = parser.parse_args()

if a.finetune:
    from timm_learngene.recipes import finetune
    run_cli(finetune.main, ['--pool', a.finetune, '--teacher-checkpoint', a.teacher, '--dataset', 'synthetic',
                            '--train-limit', '48', '--batch-size', '8', '--num-workers', '0', '--output', a.out,
                            '--warmup-epochs', '0', '--init-images', '16', '--max-steps', '3', '--no-eval', '--cpu',
                            '--checkpoint-every', '0', '--seed', '3'])
    raise SystemExit(0)


if a.kill_rank >= 0:
    fit = distill.fit

    def fit_with_a_signal(cfg, accelerator, run, loss_fn, *args, **kwargs):
        def signalling_loss(model, x, y, step):
            if step == a.kill_at and accelerator.process_index == a.kill_rank:
                os.kill(os.getpid(), signal.SIGTERM)
            return loss_fn(model, x, y, step)
        return fit(cfg, accelerator, run, signalling_loss, *args, **kwargs)

    distill.fit = fit_with_a_signal

extra = ['--max-steps', '6', '--no-eval', '--cpu', '--checkpoint-every', '0']
extra += ['--resume', a.out] if a.resume else []
extra += ['--stop-after', str(a.stop_after)] if a.stop_after else []


def main(argv):
    pool = distill.main(argv)
    if a.per_rank:
        from accelerate import PartialState
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in pool.state_dict().items()},
                  f'{a.out}/rank{PartialState().process_index}.safetensors')


run_cli(main, _args(a.out, a.teacher, *extra))
