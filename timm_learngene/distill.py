"""Dense distillation of an ancestry ViT into every member of a pool, all members from one teacher forward.

For each member ``m`` (SPEC step 3)::

    L_m = a * CE(z_m, y) + (1 - a) * [ T^2 KL(softmax(z_t / T) || softmax(z_m / T))
            + b_blk * sum_p MSE(W_p(h_m[p]), h_t[q(p)]) + b_att * sum_p MSE(V_p(o_m[p]), o_t[q(p)]) ]

``h[i]`` is block i's output, ``o[i]`` its attention module's output (after the output projection, before the
residual add); ``W_p``, ``V_p`` are the pool's learnable ``transforms`` (member width -> ancestry width). The loss
is the sum over members. Features are read with forward hooks, so neither timm's nor our model code changes.
"""
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PoolSpecError
from .losses import kd_loss, soft_cross_entropy
from .models.learngene_pool import LearngenePool

__all__ = ['FeatureRecorder', 'DenseDistiller', 'check_teacher', 'kd_loss', 'teacher_shape']


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


class DenseDistiller(nn.Module):
    """The pool's members and a frozen ancestry; ``forward(x, y)`` returns the distillation losses.

    The teacher stays in eval mode with no gradients; the pool's stitch layers are frozen (they are not part of
    distillation), so every trainable parameter receives a gradient each step (DDP needs no unused-parameter
    search).
    """

    def __init__(self, pool: LearngenePool, teacher: nn.Module, alpha: float = 0.1, temperature: float = 1.0,
                 beta_block: float = 1.0, beta_attn: float = 1.0, smoothing: float = 0.0,
                 members: Optional[Sequence[str]] = None):
        super().__init__()
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

    def member_losses(self, x, y, t_logits, t_feats, members: Sequence[str]) -> Dict[str, torch.Tensor]:
        a = self.alpha
        terms = {k: x.new_zeros(()) for k in ('ce', 'kd', 'block', 'attn')}
        out = {}
        L = self.pool.pool_spec.depth
        for name in members:
            logits = self.pool(x, ((name, 0, L),))
            feats = self._member_rec[name].pop()
            tr = self.pool.transforms[name]
            ce = soft_cross_entropy(logits, y, self.smoothing)
            kd = kd_loss(logits, t_logits.float(), self.temperature)
            blk = sum(F.mse_loss(tr['block'][p](feats[('block', i)]).float(), t_feats[('block', q)].float())
                      for p, (i, q) in enumerate(zip(self.member_blocks, self.teacher_blocks)))
            att = sum(F.mse_loss(tr['attn'][p](feats[('attn', i)]).float(), t_feats[('attn', q)].float())
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
