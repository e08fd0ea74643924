"""Joint finetuning of every descendant of a pool (docs/design.md, step 7).

Each optimizer step trains ``per_step`` routes drawn by a :class:`RouteSampler` from a seeded generator that every
process advances identically (so data-parallel processes train the same routes); the sandwich rule of slimmable
networks (:func:`sandwich_routes`) puts the smallest and the largest member alone in every step, so the stitched
routes that share a member's blocks and head cannot drag it down unopposed. :class:`DescendantTrainer` runs the
ancestry once per batch and averages ``ce_weight * CE + kd_weight * KD`` over the step's routes.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .losses import label_kd_loss
from .models.learngene_pool import LearngenePool
from .spec import DescendantInfo, PoolSpec, Route, enumerate_descendants

__all__ = ['RouteSampler', 'DescendantTrainer', 'TRAIN_MODES', 'SANDWICH', 'set_trainable', 'sandwich_routes',
           'LoRAStitch',
           'add_lora_stitches', 'merge_lora_stitches']

TRAIN_MODES = ('all', 'stitches')


class RouteSampler:
    """Draws the routes of each optimizer step from a seeded generator.

    ``draw_step()`` returns the ``always`` routes (in the order given) followed by ``per_step - len(always)``
    distinct other routes drawn uniformly without replacement. The same seed gives the same sequence on every
    process, so data-parallel processes train the same routes; :meth:`state_dict` (the generator state, one uint8
    tensor) goes into training checkpoints so a resumed run continues the sequence.

    ``macs`` (one value per route, e.g. each route's MACs) switches the draw to cost buckets (SN-Netv2's
    FLOPs-bucketed sampling): the range of the other routes' costs is cut into as many equal-width buckets as routes
    are drawn per step, and each step draws one route uniformly from each non-empty bucket (the rest, when buckets
    are empty, uniformly from the routes left). A uniform draw trains the cost range where routes are dense (the
    middle of a stitched pool) most; buckets spread the steps over the whole range.

    Raises ValueError when ``routes`` is empty or repeats a route, when an ``always`` route is not among ``routes``
    or is repeated, when ``per_step`` is below 1, below ``len(always)`` or above ``len(routes)``, and when ``macs``
    does not have one value per route.
    """

    def __init__(self, routes: Sequence[Route], seed: int = 0, per_step: int = 1, always: Sequence[Route] = (),
                 macs: Optional[Sequence[float]] = None):
        if not routes:
            raise ValueError('no routes to train')
        self.routes = list(routes)
        self.always = list(always)
        n = len(self.routes)
        if any(self.routes.count(r) > 1 for r in self.routes):
            raise ValueError(f'routes to train must be distinct, got {self.routes}')
        if isinstance(per_step, bool) or not isinstance(per_step, int) or per_step < 1:
            raise ValueError(f'routes per step must be a whole number >= 1, got {per_step!r}')
        if per_step > n:
            raise ValueError(f'{per_step} routes per step, but there are only {n} routes to train; set routes per '
                             f'step to at most {n}')
        for r in self.always:
            if r not in self.routes:
                raise ValueError(f'route {r} is to be drawn in every step but is not one of the routes to train (in '
                                 f"'stitches' mode only stitched routes train, so a member alone cannot be one); "
                                 f'drop it from the always-drawn routes')
            if self.always.count(r) > 1:
                raise ValueError(f'route {r} is listed twice in the always-drawn routes {self.always}')
        if len(self.always) > per_step:
            raise ValueError(f'{len(self.always)} routes are drawn in every step ({self.always}), more than the '
                             f'{per_step} routes per step; set routes per step to at least {len(self.always)}')
        self.per_step = per_step
        self._others = [r for r in self.routes if r not in self.always]
        self._buckets: Optional[List[List[int]]] = None
        if macs is not None:
            if len(macs) != n:
                raise ValueError(f'{len(macs)} costs for {n} routes; give one cost per route')
            cost = dict(zip(self.routes, macs))
            self._buckets = cost_buckets([cost[r] for r in self._others], per_step - len(self.always))
        self.generator = torch.Generator().manual_seed(seed)
        self._step: Optional[int] = None
        self._routes: List[Route] = []

    def routes_for(self, step: int) -> List[Route]:
        """The routes of optimizer step ``step``: drawn (:meth:`draw_step`) on the step's first call, the same for
        its later calls (the micro-batches of a gradient accumulation)."""
        if step != self._step:
            self._step, self._routes = step, self.draw_step()
        return self._routes

    def draw_step(self) -> List[Route]:
        """The routes of the next optimizer step: the ``always`` routes, then the drawn ones."""
        k = self.per_step - len(self.always)
        if self._buckets is not None and k > 0:
            drawn = [b[int(torch.randint(len(b), (1,), generator=self.generator))] for b in self._buckets]
            if len(drawn) < k:  # empty buckets: the rest uniformly from the routes not drawn yet
                left = [i for i in range(len(self._others)) if i not in drawn]
                drawn += [left[i] for i in torch.randperm(len(left), generator=self.generator)[:k - len(drawn)]]
        elif k == 1:  # one uniform draw, as draw() always made (per_step=1 keeps the sequences of earlier runs)
            drawn = [int(torch.randint(len(self._others), (1,), generator=self.generator))]
        elif k > 1:
            drawn = torch.randperm(len(self._others), generator=self.generator)[:k].tolist()
        else:
            drawn = []
        return self.always + [self._others[i] for i in drawn]

    def draw(self) -> Route:
        """The one route of the next step, for a sampler of one route per step."""
        if self.per_step != 1:
            raise ValueError(f'draw() gives one route, but this sampler draws {self.per_step} per step; call '
                             f'draw_step()')
        return self.draw_step()[0]

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state['generator'])


def cost_buckets(costs: Sequence[float], k: int) -> List[List[int]]:
    """The indices of ``costs`` in ``k`` equal-width buckets over ``[min, max]`` (the last bucket closed), empty
    buckets dropped; one bucket when ``k < 1`` or every cost is equal."""
    if not costs:
        return []
    lo, hi = min(costs), max(costs)
    if k < 1 or hi == lo:
        return [list(range(len(costs)))]
    buckets: List[List[int]] = [[] for _ in range(k)]
    for i, c in enumerate(costs):
        buckets[min(int((c - lo) / (hi - lo) * k), k - 1)].append(i)
    return [b for b in buckets if b]


SANDWICH = ('ends', 'members')


def sandwich_routes(pool: Union[LearngenePool, PoolSpec], which: str = 'ends') -> List[Route]:
    """The members alone that train in every step: ``ends``, the smallest and the largest (fewest and most MACs,
    ties by params; one route for a pool of one member), or ``members``, every member, smallest first (a pool with
    middle members: they are descendants users deploy as they are, and drawn only now and then they trail the
    ends). Pass them as :class:`RouteSampler`'s ``always``."""
    if which not in SANDWICH:
        raise ValueError(f'unknown sandwich {which!r}; choose one of {SANDWICH}')
    infos = pool.descendants if isinstance(pool, LearngenePool) else enumerate_descendants(pool)
    alone = [d.route for d in infos if len(d.route) == 1]  # ranked by MACs, so the ends are smallest and largest
    if which == 'members':
        return alone
    return alone[:1] if alone[0] == alone[-1] else [alone[0], alone[-1]]


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
    """The pool and an optional frozen ancestry; ``forward(x, y, route_or_routes)`` returns the finetuning loss.

    Each route's loss is ``ce_weight * CE + kd_weight * KD`` (:func:`~timm_learngene.losses.label_kd_loss`, the
    ancestry's logits computed once for all routes); the returned ``total`` is their mean, so a learning rate means
    the same for any number of routes per step. The routes' graphs are all kept until ``total.backward()``, so
    activation memory grows with the number of routes.
    """

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
        # the loss dict's route:<name> keys (a nested ViT has no descendant table: its routes are size names)
        self._names = {d.route: d.name for d in getattr(pool, 'descendants', ())}

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, route_or_routes) -> Dict[str, torch.Tensor]:
        """``x``: B x C x H x W; ``y``: B class indices or B x classes soft targets; ``route_or_routes``: one
        descendant (a route, a name such as ``'s3'`` or a :class:`DescendantInfo`) or a list of them.

        Returns ``total``, ``ce`` and ``kd`` (each the mean over the routes; no ``kd`` without a teacher) and
        ``route:<name>`` (that route's total, detached, e.g. ``route:s3``) for each route."""
        routes = _as_routes(route_or_routes)
        t_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                t_logits = self.teacher(x)
        sums: Dict[str, torch.Tensor] = {}
        out: Dict[str, torch.Tensor] = {}
        for route in routes:
            losses = label_kd_loss(self.pool(x, route), y, t_logits, self.ce_weight, self.kd_weight,
                                   self.temperature, self.smoothing)
            for k, v in losses.items():
                sums[k] = sums[k] + v if k in sums else v
            out[f'route:{self._name(route)}'] = losses['total'].detach()
        n = len(routes)
        return dict({k: v / n for k, v in sums.items()}, **out)

    def _name(self, route) -> str:
        if isinstance(route, str):
            return route
        if isinstance(route, DescendantInfo):
            return route.name
        return self._names[tuple(tuple(seg) for seg in route)]  # the pool has already checked the route


def _as_routes(route_or_routes) -> list:
    """``route_or_routes`` as a list of descendants: a name, a :class:`DescendantInfo` or a route (a sequence of
    ``(member, first, end)`` segments) is one; a sequence of those is a list."""
    if isinstance(route_or_routes, (str, DescendantInfo)):
        return [route_or_routes]
    items = list(route_or_routes)
    if not items:
        raise ValueError('no route given: pass a route, a descendant name, or a non-empty list of them')
    first = items[0]
    if isinstance(first, (str, DescendantInfo)):
        return items  # names or infos (a route's segments are sequences, never strings)
    return [route_or_routes] if isinstance(first[0], str) else items  # a segment starts with its member's name


class LoRAStitch(nn.Module):
    """A frozen stitch layer plus a trained low-rank update (SN-Netv2's LoRA stitch): ``base(x) + x A^T B^T``, with
    ``A`` (``rank x in``) drawn as nn.Linear draws its weights and ``B`` (``out x rank``) zero, so it starts as the
    base (e.g. the least-squares fit) exactly. :meth:`merged` folds the update into one ``nn.Linear``."""

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        if rank < 1 or rank > min(base.in_features, base.out_features):
            raise ValueError(f'LoRA rank {rank} must be between 1 and the stitch layer\'s smaller width '
                             f'{min(base.in_features, base.out_features)}')
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Parameter(nn.Linear(base.in_features, rank, bias=False).weight.detach().to(base.weight))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + nn.functional.linear(nn.functional.linear(x, self.lora_a), self.lora_b)

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features).to(self.base.weight)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.lora_b @ self.lora_a)
            out.bias.copy_(self.base.bias)
        return out


def add_lora_stitches(pool: LearngenePool, rank: int) -> int:
    """Freeze every stitch layer of ``pool`` and put a trained rank-``rank`` update on it (:class:`LoRAStitch`);
    returns how many. The pool's descendant views pick up the new modules on their next use."""
    n = 0
    for layers in pool.stitches.values():
        for i, layer in enumerate(layers):
            layers[i] = LoRAStitch(layer, rank)
            n += 1
    return n


def merge_lora_stitches(pool: LearngenePool) -> int:
    """Fold every :class:`LoRAStitch` of ``pool`` back into one ``nn.Linear`` (the pool file's format); returns
    how many."""
    n = 0
    for layers in pool.stitches.values():
        for i, layer in enumerate(layers):
            if isinstance(layer, LoRAStitch):
                layers[i] = layer.merged()
                n += 1
    return n

