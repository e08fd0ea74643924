"""Dense distillation of an ancestry ViT into every member of a pool, all members from one teacher forward.

For each member ``m`` (docs/design.md, step 3)::

    L_m = a * CE(z_m, y) + (1 - a) * [ T^2 KL(softmax(z_t / T) || softmax(z_m / T))
            + b_blk * sum_p MSE(W_p(h_m[p]), h_t[q(p)]) + b_att * sum_p MSE(V_p(o_m[p]), o_t[q(p)]) ]

``h[i]`` is block i's output, ``o[i]`` its attention module's output (after the output projection, before the
residual add); ``W_p``, ``V_p`` are the pool's learnable ``transforms`` (member width -> ancestry width). The loss
is the sum over members. Features are read with forward hooks, so neither timm's nor our model code changes.

``feature_norm`` (:data:`FEATURE_NORMS`) says how each matched position's block and attention term is scaled, since
raw residual-stream MSE grows with the square of the teacher's feature scale and then outweighs CE and KD:

- ``none``: the raw MSE above;
- ``teacher_ms``: that MSE divided by the mean square of the teacher feature at the position (a detached scalar), so
  a term is the error relative to the teacher's own magnitude (1.0 for a student feature of zero);
- ``layernorm``: MSE between layer norms (no affine, over the feature dimension) of the mapped student feature and
  of the teacher feature, so every token counts alike and neither side's scale matters. The norm's epsilon is
  relative (``1e-5`` times the tensor's mean token variance), not ``F.layer_norm``'s absolute ``1e-5``: an untrained
  timm ViT's attention outputs have a variance near ``1e-5`` and mapped member features at init near ``1e-8``, where
  an absolute epsilon would decide the result and the term would depend on scale after all.

Scaling the teacher's features by ``c`` multiplies a ``none`` term by ``c^2``; the other two give the same value when
the transforms are scaled with it (the same student up to ``W_p``), ``layernorm`` even with the transforms fixed.
"""
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PoolSpecError
from .losses import kd_loss, soft_cross_entropy
from .models.learngene_pool import LearngenePool

__all__ = ['FeatureRecorder', 'DenseDistiller', 'FEATURE_NORMS', 'check_teacher', 'feature_loss', 'kd_loss',
           'teacher_shape']

FEATURE_NORMS = ('none', 'teacher_ms', 'layernorm')
# keeps teacher_ms finite for an all-zero teacher feature; far below the mean square of any real activation
_MS_EPS = 1e-12
# layernorm's epsilon, relative to the mean token variance of the tensor normalised (see the module docstring)
_LN_REL_EPS = 1e-5
_LN_MIN_EPS = 1e-30  # only for an all-constant tensor (variance 0); fp32 holds it


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Layer norm over the last dimension without affine, with an epsilon proportional to the mean token variance
    (detached), so ``_layer_norm(c * x) == _layer_norm(x)`` for any ``c != 0``."""
    x = x - x.mean(-1, keepdim=True)
    var = x.pow(2).mean(-1, keepdim=True)
    eps = (_LN_REL_EPS * var.detach().mean()).clamp_min(_LN_MIN_EPS)
    return x * torch.rsqrt(var + eps)


class FeatureRecorder:
    """Records block outputs and attention outputs of chosen blocks of a timm-style ViT through forward hooks.

    ``recorded[('block', i)]`` is block i's output (B x N x D), ``recorded[('attn', i)]`` the output of its
    ``attn`` module (B x N x D).
    """

    def __init__(self, blocks: Sequence[nn.Module], indices: Sequence[int]):
        self.recorded: Dict[Tuple[str, int], torch.Tensor] = {}
        self._handles = []
        for i in sorted(set(indices)):
            self._handles.append(blocks[i].register_forward_hook(partial(self._keep, ('block', i))))
            self._handles.append(blocks[i].attn.register_forward_hook(partial(self._keep, ('attn', i))))

    def _keep(self, key, module, inputs, output):
        self.recorded[key] = output

    def pop(self) -> Dict[Tuple[str, int], torch.Tensor]:
        out, self.recorded = self.recorded, {}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def teacher_shape(teacher: nn.Module) -> Dict[str, int]:
    """Width, depth, tokens per image and classes of a timm ViT-like teacher."""
    if not hasattr(teacher, 'blocks') or not hasattr(teacher, 'patch_embed'):
        raise PoolSpecError(f'the ancestry must be a timm ViT-like model with .blocks and .patch_embed, got '
                            f'{type(teacher).__name__}')
    grid = teacher.patch_embed.grid_size
    return dict(width=teacher.embed_dim if hasattr(teacher, 'embed_dim') else teacher.num_features,
                depth=len(teacher.blocks), tokens=grid[0] * grid[1] + getattr(teacher, 'num_prefix_tokens', 1),
                num_classes=teacher.num_classes)


def check_teacher(teacher: nn.Module, pool: LearngenePool) -> None:
    """Raise :class:`PoolSpecError` naming the mismatch when ``teacher`` cannot be distilled into ``pool``."""
    spec = pool.pool_spec
    ts = teacher_shape(teacher)
    if spec.distill is None:
        raise PoolSpecError(f'pool {spec.name!r} has no distill section (teacher width/depth, matched blocks); '
                            f'it cannot be distilled')
    d = spec.distill
    problems = []
    if ts['width'] != d.teacher_width:
        problems.append(f"width {ts['width']} (spec says {d.teacher_width})")
    if ts['depth'] != d.teacher_depth:
        problems.append(f"depth {ts['depth']} (spec says {d.teacher_depth})")
    if ts['tokens'] != spec.num_tokens:
        problems.append(f"{ts['tokens']} tokens per image (the pool's members have {spec.num_tokens}: img "
                        f"{spec.img_size}, patch {spec.patch_size}, one class token)")
    if ts['num_classes'] != spec.num_classes:
        problems.append(f"{ts['num_classes']} classes (the pool has {spec.num_classes})")
    if problems:
        raise PoolSpecError(f'the ancestry does not fit pool {spec.name!r}: it has ' + '; '.join(problems) +
                            '. Pick a matching pool spec or teacher')


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, norm: str = 'none') -> torch.Tensor:
    """One matched position's feature term: ``student`` (the member feature already mapped by its transform) and
    ``teacher``, both ``B x N x D``, computed in fp32; ``norm`` is one of :data:`FEATURE_NORMS` (module docstring).
    The teacher side never carries a gradient (its mean square is detached too)."""
    if norm not in FEATURE_NORMS:
        raise ValueError(f'unknown feature_norm {norm!r}; choose one of {", ".join(FEATURE_NORMS)}')
    s, t = student.float(), teacher.detach().float()
    if norm == 'layernorm':
        return F.mse_loss(_layer_norm(s), _layer_norm(t))
    mse = F.mse_loss(s, t)
    return mse / t.pow(2).mean().clamp_min(_MS_EPS) if norm == 'teacher_ms' else mse


class DenseDistiller(nn.Module):
    """The pool's members and a frozen ancestry; ``forward(x, y)`` returns the distillation losses.

    The teacher stays in eval mode with no gradients; the pool's stitch layers are frozen (they are not part of
    distillation), so every trainable parameter receives a gradient each step (DDP needs no unused-parameter
    search).

    ``feature_norm`` (one of :data:`FEATURE_NORMS`, default ``'none'``) scales each matched position's block and
    attention term (see the module docstring); ``beta_block`` and ``beta_attn`` weigh the summed terms either way.
    """

    def __init__(self, pool: LearngenePool, teacher: nn.Module, alpha: float = 0.1, temperature: float = 1.0,
                 beta_block: float = 1.0, beta_attn: float = 1.0, smoothing: float = 0.0,
                 members: Optional[Sequence[str]] = None, feature_norm: str = 'none'):
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f'unknown feature_norm {feature_norm!r}; choose one of {", ".join(FEATURE_NORMS)}')
        check_teacher(teacher, pool)
        self.pool = pool
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        for p in self.pool.stitches.parameters():
            p.requires_grad_(False)
        spec = pool.pool_spec
        self.member_names: List[str] = list(members or [m.name for m in spec.members])
        for name in self.member_names:
            spec.member(name)
        self.alpha, self.temperature = alpha, temperature
        self.beta_block, self.beta_attn, self.smoothing = beta_block, beta_attn, smoothing
        self.feature_norm = feature_norm
        self.member_blocks = list(spec.distill.member_blocks)
        self.teacher_blocks = list(spec.distill.teacher_blocks)
        self._teacher_rec = FeatureRecorder(self.teacher.blocks, self.teacher_blocks)
        self._member_rec = {n: FeatureRecorder(pool.members[n].blocks, self.member_blocks)
                            for n in self.member_names}

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_forward(self, x: torch.Tensor):
        with torch.no_grad():
            logits = self.teacher(x)
        return logits, self._teacher_rec.pop()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: B x C x H x W, ``y``: B class indices or B x classes soft targets. Returns ``total``, ``ce``,
        ``kd``, ``block``, ``attn`` (each summed over members) and ``<member>`` (that member's total)."""
        t_logits, t_feats = self.teacher_forward(x)
        return self.member_losses(x, y, t_logits, t_feats, self.member_names)

    def member_losses(self, x: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor,
                      t_feats: Dict[Tuple[str, int], torch.Tensor], members: Sequence[str]) -> Dict[str, torch.Tensor]:
        """The losses of ``members`` against one teacher forward: ``t_logits`` (B x classes) and ``t_feats``, the
        teacher's recorded features by ``('block' | 'attn', teacher block)`` (B x N x D_teacher), as
        :meth:`teacher_forward` returns them. Same dict as :meth:`forward`."""
        a, norm = self.alpha, self.feature_norm
        terms = {k: x.new_zeros(()) for k in ('ce', 'kd', 'block', 'attn')}
        out = {}
        L = self.pool.pool_spec.depth
        for name in members:
            logits = self.pool(x, ((name, 0, L),))
            feats = self._member_rec[name].pop()
            tr = self.pool.transforms[name]
            ce = soft_cross_entropy(logits, y, self.smoothing)
            kd = kd_loss(logits, t_logits.float(), self.temperature)
            blk = sum(feature_loss(tr['block'][p](feats[('block', i)]), t_feats[('block', q)], norm)
                      for p, (i, q) in enumerate(zip(self.member_blocks, self.teacher_blocks)))
            att = sum(feature_loss(tr['attn'][p](feats[('attn', i)]), t_feats[('attn', q)], norm)
                      for p, (i, q) in enumerate(zip(self.member_blocks, self.teacher_blocks)))
            total = a * ce + (1 - a) * (kd + self.beta_block * blk + self.beta_attn * att)
            out[name] = total
            for k, v in (('ce', ce), ('kd', kd), ('block', blk), ('attn', att)):
                terms[k] = terms[k] + v
        out.update(terms)
        out['total'] = sum(out[n] for n in members)
        return out

    def evaluate_logits(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Logits of the teacher and of each member alone (for per-epoch top-1)."""
        L = self.pool.pool_spec.depth
        out = {'teacher': self.teacher_forward(x)[0]}
        for name in self.member_names:
            out[name] = self.pool(x, ((name, 0, L),))
            self._member_rec[name].pop()
        return out
