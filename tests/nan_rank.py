"""Run by tests/test_crash.py under ``accelerate launch`` with two processes: process 1's loss turns NaN at
step index 2 and both processes must stop with NonFiniteLossError (neither waits forever for the other)."""
import sys
from types import SimpleNamespace

import torch

from timm_learngene.training.loop import (
    NonFiniteLossError, PreparedRun, cosine_schedule, finish, fit, make_accelerator, make_optimizer,
)

out = sys.argv[1]
cfg = SimpleNamespace(output=out, resume='', cpu=True, mixed_precision='no', grad_accum=1, seed=0, log_every=1,
                      checkpoint_every=1, keep_checkpoints=2, stop_after=0, clip_grad=0.0)
acc = make_accelerator(cfg)
torch.manual_seed(0)
model = torch.nn.Linear(4, 3)
data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
opt = make_optimizer(model, 1e-2, 0.05)
model, opt, loader = acc.prepare(model, opt, loader)


def loss_fn(model, x, y, step):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    if step == 2 and acc.process_index == 1:
        loss = loss * float('nan')
    return {'total': loss}


try:
    fit(cfg, acc, PreparedRun(model, opt, loader, None, cosine_schedule(opt, 1, 8), len(loader), 8), loss_fn)
except NonFiniteLossError as e:
    print(f'rank {acc.process_index} stopped: {e}', flush=True)
    finish(acc)
    sys.exit(3)
finish(acc)
