"""SN-Net's pool: independently trained anchors of equal depth, stitched between nearest anchors (the baseline
Learngene Pool is compared with). The same finetune and evaluate recipes run it."""
import re
from typing import List, Optional, Sequence, Union

import timm
from torch import nn

from .ancestry import load_ancestry
from .errors import PoolSpecError
from .models.learngene_pool import LearngenePool
from .spec import MemberSpec, PoolSpec

__all__ = ['anchor_spec', 'anchor_pool']

_SIZE_WORDS = ('tiny', 'small', 'medium', 'base', 'large', 'huge', 'giant')


def _anchor_name(label: str, i: int) -> str:
    for word in _SIZE_WORDS:
        if re.search(rf'(^|[_/\-]){word}([_/\-]|$)', label):
            return word
    return f'anchor{i}'


def _shape(model: nn.Module, label: str) -> MemberSpec:
    blocks = getattr(model, 'blocks', None)
    if blocks is None or not hasattr(model, 'patch_embed') or getattr(model, 'num_prefix_tokens', 1) != 1 \
            or getattr(model, 'global_pool', 'token') != 'token':
        raise PoolSpecError(f'anchor {label!r} must be a plain timm ViT with one class token and token pooling '
                            f'(DeiT-style); got {type(model).__name__}')
    width = model.embed_dim
    hidden = blocks[0].mlp.fc1.out_features
    return MemberSpec(_anchor_name(label, 0), width, blocks[0].attn.num_heads, len(blocks), hidden / width)


def anchor_spec(anchors: Sequence[nn.Module], labels: Sequence[str], name: str = 'snnet',
                stitch_kernel: int = 2, stitch_stride: int = 1) -> PoolSpec:
    """The pool spec of ``anchors`` (sorted smallest first), checked for a common input, patch and classes."""
    first = anchors[0]
    members = []
    for i, (model, label) in enumerate(zip(anchors, labels)):
        m = _shape(model, label)
        for attr in ('patch_size', 'img_size'):
            if getattr(model.patch_embed, attr) != getattr(first.patch_embed, attr):
                raise PoolSpecError(f'anchors must share {attr}: {labels[0]!r} has '
                                    f'{getattr(first.patch_embed, attr)}, {label!r} has '
                                    f'{getattr(model.patch_embed, attr)}')
        if model.num_classes != first.num_classes:
            raise PoolSpecError(f'anchors must share num_classes: {labels[0]!r} has {first.num_classes}, {label!r} '
                                f'has {model.num_classes}')
        name_i = _anchor_name(label, i)
        members.append(MemberSpec(name_i, m.width, m.heads, m.depth, m.mlp_ratio))
    order = sorted(range(len(members)), key=lambda i: members[i].width)
    return PoolSpec(
        name=name, members=tuple(members[i] for i in order), img_size=first.patch_embed.img_size[0],
        patch_size=first.patch_embed.patch_size[0], in_chans=first.patch_embed.proj.in_channels,
        num_classes=first.num_classes, stitch_kernel=stitch_kernel, stitch_stride=stitch_stride)


def anchor_pool(anchors: Sequence[Union[str, nn.Module]], name: str = 'snnet',
                labels: Optional[Sequence[str]] = None, num_classes: int = 0) -> LearngenePool:
    """Build an SN-Net pool from ``anchors``: timm names (pretrained from the Hub), ``local-dir:PATH`` /
    ``hf-hub:REPO``, timm model folders, or modules. Each anchor's weights become a member, key for key.
    ``num_classes`` > 0 gives every anchor a new head of that many classes first (``reset_classifier``)."""
    models: List[nn.Module] = []
    labels = list(labels or [a if isinstance(a, str) else f'anchor{i}' for i, a in enumerate(anchors)])
    for a, label in zip(anchors, labels):
        if isinstance(a, nn.Module):
            models.append(a)
        elif a.startswith(('local-dir:', 'hf-hub:')) or '/' not in a and timm.is_model(a):
            models.append(load_ancestry(a))
        else:
            models.append(load_ancestry('', checkpoint=a))
    if len(models) < 2:
        raise PoolSpecError(f'SN-Net needs at least two anchors, got {len(models)}')
    if num_classes:
        for m in models:
            if m.num_classes != num_classes:
                m.reset_classifier(num_classes)
    spec = anchor_spec(models, labels, name=name)
    pool = timm.create_model('learngene_pool', pool=spec)
    by_name = {_anchor_name(label, i): m for i, (m, label) in enumerate(zip(models, labels))}
    for member_name, member in pool.members.items():
        state = by_name[member_name].state_dict()
        missing, unexpected = member.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise PoolSpecError(f'anchor {member_name!r} does not load key for key into a pool member: missing '
                                f'{missing[:5]}, unexpected {unexpected[:5]}; use plain timm ViT anchors')
    for p in pool.parameters():
        p.requires_grad_(True)
    return pool
