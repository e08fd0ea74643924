"""``mixed_precision: auto``: pick the autocast precision that trains the actual model faster on this machine.

Whether bf16 autocast pays depends on the CPU: on one without bf16 instructions (no ``avx512_bf16`` / AMX) it was
measured ~20x slower than fp32 on this project's ViTs, on one with ``avx512_bf16`` ~2.1x faster. So ``auto`` on a
CPU times a few training steps of the model in each precision and keeps the faster; on CUDA it is ``bf16`` where the
GPU supports it (no probe: there bf16 is never the slow path), else ``no``.

An explicit precision wins over ``auto``, and so does ``accelerate launch --mixed_precision``, which reaches the
process as the environment variable ``ACCELERATE_MIXED_PRECISION``. Note that ``accelerate launch`` sets that
variable even without the flag (to its config file's value, else ``no``), so under ``accelerate launch`` ``auto``
always takes the launcher's setting.
"""
import os
import random
import statistics
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

__all__ = ['MIXED_PRECISION_CHOICES', 'resolve_mixed_precision', 'make_probe_step']

MIXED_PRECISION_CHOICES = ('auto', 'no', 'fp16', 'bf16')
_ACCELERATE_ENV = 'ACCELERATE_MIXED_PRECISION'
_ACCELERATE_VALUES = ('no', 'fp16', 'bf16', 'fp8')  # what accelerate itself accepts there


def resolve_mixed_precision(requested: str, step: Callable[[Optional[torch.dtype]], None], device: torch.device,
                            steps: int = 3, warmup: int = 1, decisive: Optional[float] = 2.0
                            ) -> Tuple[str, Dict[str, Any]]:
    """The precision to hand to accelerate (``'no'``, ``'fp16'`` or ``'bf16'``) and a JSON-safe record of how it was
    chosen, for the log and the run's saved config.

    ``requested`` is one of :data:`MIXED_PRECISION_CHOICES`; anything but ``'auto'`` is returned as is. For
    ``'auto'``: ``ACCELERATE_MIXED_PRECISION`` wins when set; on CUDA it is ``'bf16'`` if
    ``torch.cuda.is_bf16_supported()`` else ``'no'``; on a CPU, ``step(None)`` (fp32) and ``step(torch.bfloat16)``
    are each run ``warmup`` times untimed and then ``steps`` times timed, alternating which goes first in each round
    (so drift in the machine's speed hits both alike), and the precision with the lower median seconds per step wins
    (a tie keeps fp32); any other device gets ``'no'``. Timing stops early after a round in which one precision took
    more than ``decisive`` times as long as the other (``None``: never): on a CPU without bf16 instructions a bf16
    step of the demo's ancestry (batch 128) took 15.7 s against 0.68 s in fp32, and more rounds change nothing.

    ``step(dtype)`` runs one training step of the actual model and batch, under ``torch.autocast('cpu', dtype)``
    when ``dtype`` is given: forward and backward, then zeroed gradients, with no optimizer step, so the probe leaves
    the weights as they were (:func:`make_probe_step` builds one). The torch, Python and NumPy random states are
    restored afterwards, so a seeded run draws the same numbers whether or not it probed. The record holds
    ``requested``, ``chosen``, ``reason`` and, after a probe, ``seconds_per_step`` (``{'no': s, 'bf16': s}``,
    medians over the timed rounds) and ``probe_steps`` (the rounds timed).

    In a run of several processes, probe on one and broadcast the choice: each process timing its own steps could
    choose differently.
    """
    if requested not in MIXED_PRECISION_CHOICES:
        raise ValueError(f'mixed precision must be one of {", ".join(MIXED_PRECISION_CHOICES)}, got {requested!r}')
    record: Dict[str, Any] = {'requested': requested}
    if requested != 'auto':
        return requested, dict(record, chosen=requested, reason='explicit')
    env = os.environ.get(_ACCELERATE_ENV, '').strip()
    if env:
        if env not in _ACCELERATE_VALUES:
            raise ValueError(f'{_ACCELERATE_ENV}={env!r} is not a precision accelerate knows '
                             f'({", ".join(_ACCELERATE_VALUES)}); fix or unset it')
        return env, dict(record, chosen=env, reason=f'{_ACCELERATE_ENV} (accelerate launch --mixed_precision)')
    device = torch.device(device)
    if device.type == 'cuda':
        chosen = 'bf16' if torch.cuda.is_bf16_supported() else 'no'
        return chosen, dict(record, chosen=chosen,
                            reason='CUDA with bf16 support' if chosen == 'bf16' else 'CUDA without bf16 support')
    if device.type != 'cpu':
        return 'no', dict(record, chosen='no', reason=f'no probe for device type {device.type!r}')
    if steps < 1 or warmup < 0 or (decisive is not None and decisive <= 1):
        raise ValueError(f'the probe needs steps >= 1, warmup >= 0 and decisive > 1 (or None), got steps={steps}, '
                         f'warmup={warmup}, decisive={decisive}')
    seconds = _probe(step, {'no': None, 'bf16': torch.bfloat16}, steps, warmup, decisive)
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    chosen = 'bf16' if medians['bf16'] < medians['no'] else 'no'
    return chosen, dict(record, chosen=chosen, reason='CPU probe: the faster median step',
                        seconds_per_step=medians, probe_steps=len(seconds['no']))


def _probe(step: Callable[[Optional[torch.dtype]], None], dtypes: Mapping[str, Optional[torch.dtype]], steps: int,
           warmup: int, decisive: Optional[float]) -> Dict[str, list]:
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() \
        else None
    names = list(dtypes)
    seconds = {k: [] for k in names}
    try:
        for _ in range(warmup):
            for k in names:
                step(dtypes[k])
        for r in range(steps):
            for k in (names if r % 2 == 0 else names[::-1]):
                start = time.perf_counter()
                step(dtypes[k])
                seconds[k].append(time.perf_counter() - start)
            last = [seconds[k][-1] for k in names]
            if decisive is not None and max(last) > decisive * min(last):
                break
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
    return seconds


def make_probe_step(model: nn.Module, batch: Any,
                    loss_fn: Callable[[nn.Module, Any], Union[torch.Tensor, Mapping[str, torch.Tensor]]]
                    ) -> Callable[[Optional[torch.dtype]], None]:
    """A ``step(dtype)`` for :func:`resolve_mixed_precision`: ``loss_fn(model, batch)`` (a scalar loss, or a dict
    with ``'total'``, as :class:`~timm_learngene.distill.DenseDistiller` and
    :class:`~timm_learngene.finetune.DescendantTrainer` return) under autocast on the batch's device when ``dtype``
    is given, backward, then every gradient set to None. No optimizer step, so the weights stay as they were.

    ``batch`` is anything ``loss_fn`` takes; its first tensor (found in a tensor, tuple, list or dict) names the
    autocast device. Run it on the model in training mode, as training will. Gradients the model held before are
    dropped, so probe before training; a model with BatchNorm would update its running statistics (a ViT has none).
    """
    device_type = _first_tensor(batch).device.type

    def step(dtype: Optional[torch.dtype]) -> None:
        with torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext():
            loss = loss_fn(model, batch)
        if isinstance(loss, Mapping):
            loss = loss['total']
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device_type == 'cuda':
            torch.cuda.synchronize()

    return step


def _first_tensor(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        try:
            return _first_tensor(item)
        except ValueError:
            continue
    raise ValueError(f'make_probe_step needs a batch holding a tensor, got {type(batch).__name__}')
