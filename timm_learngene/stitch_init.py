"""Stitch-layer initialisation: ``lstsq`` (SN-Net), ``learngene`` (data-free, from the distillation transforms)
and ``transpose`` (the released Learngene Pool code's rule). design step 6 (docs/design.md).

A stitch layer of the pair (front, end) and window w is shared by every position (j, k) the window owns; each
method solves one affine map per position and the layer gets their mean.
"""
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .errors import PoolSpecError
from .models.learngene_pool import LearngenePool
from .spec import stitch_positions

__all__ = ['STITCH_INITS', 'init_stitches', 'lstsq_affine', 'ridge_compose', 'member_features']

STITCH_INITS = ('lstsq', 'learngene', 'transpose')


def lstsq_affine(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``[X, 1] M = Y``: ``x`` is M x d_in, ``y`` M x d_out; returns (weight d_out x d_in, bias)."""
    xa = torch.cat([x.double(), x.new_ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    sol = torch.linalg.lstsq(xa, y.double(), driver='gelsd' if x.device.type == 'cpu' else None).solution
    return sol[:-1].T.float(), sol[-1].float()


def ridge_compose(w_front: torch.Tensor, b_front: torch.Tensor, w_end: torch.Tensor, b_end: torch.Tensor,
                  lam: float = 0.01) -> Tuple[torch.Tensor, torch.Tensor]:
    """Map the front member's space into the ancestry's (``W_front``) and back into the end member's with the
    ridge-regularised inverse of ``W_end``: ``S = (W_eᵀW_e + λ·m·I)⁻¹ W_eᵀ W_f``, ``S_b = (…)⁻¹ W_eᵀ (b_f - b_e)``,
    ``m = mean(diag(W_eᵀW_e))``. ``w_front`` is D x d_front, ``w_end`` D x d_end (D = ancestry width)."""
    we, wf = w_end.double(), w_front.double()
    gram = we.T @ we
    reg = lam * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    rhs = torch.cat([we.T @ wf, (we.T @ (b_front.double() - b_end.double()))[:, None]], dim=1)
    sol = torch.linalg.solve(gram + reg, rhs)
    return sol[:, :-1].float(), sol[:, -1].float()


@torch.no_grad()
def member_features(pool: LearngenePool, name: str, images: torch.Tensor, batch_size: int = 32
                    ) -> List[torch.Tensor]:
    """Tokens of member ``name`` on ``images``: ``[embedding output, block 0 output, …]``, each (B·N) x d."""
    member = pool.members[name]
    feats: Dict[int, List[torch.Tensor]] = defaultdict(list)
    hooks = [member.blocks[0].register_forward_pre_hook(lambda m, a: feats[-1].append(a[0].flatten(0, 1)))]
    for i, blk in enumerate(member.blocks):
        hooks.append(blk.register_forward_hook(lambda m, a, out, i=i: feats[i].append(out.flatten(0, 1))))
    was_training = pool.training
    pool.eval()
    try:
        route = ((name, 0, pool.pool_spec.depth),)
        for chunk in images.split(batch_size):
            pool(chunk, route)
    finally:
        for h in hooks:
            h.remove()
        pool.train(was_training)
    return [torch.cat(feats[i]).float() for i in range(-1, pool.pool_spec.depth)]


def _nearest(blocks: Sequence[int], target: int) -> int:
    return min(range(len(blocks)), key=lambda p: (abs(blocks[p] - target), p))


class _Silent:
    def step(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@torch.no_grad()
def init_stitches(pool: LearngenePool, method: str = 'lstsq', images: Optional[torch.Tensor] = None,
                  lam: float = 0.01, progress: Optional[Callable[[int, str], Any]] = None) -> Dict[str, int]:
    """Set every stitch layer of ``pool`` in place by ``method``; returns the number of positions solved per pair.

    ``lstsq`` needs ``images`` (SN-Net uses ~100 training images, un-augmented): X = front block j output,
    Y = end block k-1 output (the end member's embedding output when k = 0).
    ``learngene`` and ``transpose`` need the pool's distillation transforms and no data.
    ``progress(total, desc)``: a display with ``step()`` and ``close()`` (the recipes pass
    :class:`~timm_learngene.training.progress.Progress`), stepped once per member's feature pass and per solved
    position; None shows nothing.
    """
    if method not in STITCH_INITS:
        raise ValueError(f'unknown stitch init {method!r}; choose one of {STITCH_INITS}')
    spec = pool.pool_spec
    if method in ('learngene', 'transpose') and pool.transforms is None:
        raise PoolSpecError(f"stitch init {method!r} needs the distillation transforms, and pool {spec.name!r} "
                            f"has none (e.g. an SN-Net pool of independent anchors); use 'lstsq'")
    if method == 'lstsq' and (images is None or len(images) == 0):
        raise ValueError("stitch init 'lstsq' needs calibration images (SN-Net uses ~100 training images)")
    positions = stitch_positions(spec)
    total = len(positions) * len(spec.pairs) + (len(spec.members) if method == 'lstsq' else 0)
    bar = progress(total, f'stitch init ({method})') if progress is not None else _Silent()
    feats = {}
    if method == 'lstsq':
        device = next(pool.parameters()).device
        for m in spec.members:
            feats[m.name] = member_features(pool, m.name, images.to(device))
            bar.step()
    solved = {}
    for front, end in spec.pairs:
        layers = pool.stitches[f'{front.name}-{end.name}']
        sums: Dict[int, List[Tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for j, k, w in positions:
            if method == 'lstsq':
                # feats[m][0] is the embedding output, feats[m][i + 1] block i's output
                sums[w].append(lstsq_affine(feats[front.name][j + 1], feats[end.name][k]))
            elif method == 'learngene':
                mb = spec.distill.member_blocks
                tf = pool.transforms[front.name]['block'][_nearest(mb, j)]
                te = pool.transforms[end.name]['block'][_nearest(mb, k - 1)]
                sums[w].append(ridge_compose(tf.weight, tf.bias, te.weight, te.bias, lam))
            else:
                if spec.distill.teacher_width != end.width:
                    raise PoolSpecError(
                        f"stitch init 'transpose' maps {front.name!r} into the ancestry's space "
                        f"({spec.distill.teacher_width} wide), which only fits an end member of that width; "
                        f"{end.name!r} is {end.width} wide. Use 'learngene' or 'lstsq'")
                mats = pool.transforms[front.name]['block']
                weight = torch.stack([t.weight for t in mats]).mean(0)
                sums[w].append((weight, torch.zeros(end.width, device=weight.device)))
            bar.step()
        for w, sols in sums.items():
            layers[w].weight.copy_(torch.stack([s[0] for s in sols]).mean(0))
            layers[w].bias.copy_(torch.stack([s[1] for s in sols]).mean(0))
        solved[f'{front.name}-{end.name}'] = sum(len(v) for v in sums.values())
    bar.close()
    return solved
