"""Joint finetuning of every descendant of a pool (SPEC step 7): one route per step, drawn from a seeded
generator that every process advances identically, loss ``ce_weight * CE + kd_weight * KD`` from the ancestry."""
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from .losses import label_kd_loss
from .models.learngene_pool import LearngenePool
from .spec import Route

__all__ = ['RouteSampler', 'DescendantTrainer', 'TRAIN_MODES', 'set_trainable']

TRAIN_MODES = ('all', 'stitches')


class RouteSampler:
    """Draws one descendant route per step from a seeded generator; its state is saved in checkpoints, and the
    same seed gives the same sequence on every process (so DDP syncs gradients of one route)."""

    def __init__(self, routes: Sequence[Route], seed: int = 0):
        if not routes:
            raise ValueError('no routes to train')
        self.routes = list(routes)
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> Route:
        return self.routes[int(torch.randint(len(self.routes), (1,), generator=self.generator))]

    def state_dict(self):
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state['generator'])


def set_trainable(pool: LearngenePool, mode: str) -> List[Route]:
    """Freeze what ``mode`` does not train; returns the routes worth drawing (a member alone has no stitch, so
    ``stitches`` mode draws only stitched routes). Distillation transforms are never trained here."""
    if mode not in TRAIN_MODES:
        raise ValueError(f'unknown train mode {mode!r}; choose one of {TRAIN_MODES}')
    for p in pool.members.parameters():
        p.requires_grad_(mode == 'all')
    for p in pool.stitches.parameters():
        p.requires_grad_(True)
    if pool.transforms is not None:
        for p in pool.transforms.parameters():
            p.requires_grad_(False)
    return [d.route for d in pool.descendants if mode == 'all' or len(d.route) > 1]


class DescendantTrainer(nn.Module):
    """The pool and an optional frozen ancestry; ``forward(x, y, route)`` returns ``total``, ``ce``, ``kd``."""

    def __init__(self, pool: LearngenePool, teacher: Optional[nn.Module] = None, ce_weight: float = 0.5,
                 kd_weight: float = 0.5, temperature: float = 1.0, smoothing: float = 0.0):
        super().__init__()
        if kd_weight and teacher is None:
            raise ValueError('KD needs an ancestry: pass a teacher, or set kd_weight to 0 (labels only)')
        self.pool = pool
        self.teacher = teacher.eval() if teacher is not None and kd_weight else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.ce_weight, self.kd_weight = ce_weight, kd_weight
        self.temperature, self.smoothing = temperature, smoothing

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, route) -> Dict[str, torch.Tensor]:
        logits = self.pool(x, route)
        t_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                t_logits = self.teacher(x)
        return label_kd_loss(logits, y, t_logits, self.ce_weight, self.kd_weight, self.temperature, self.smoothing)
