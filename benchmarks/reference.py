"""Baselines built from a descendant's own modules: plain timm ``VisionTransformer``s that run the same blocks
through timm's forward code (``patch_embed``, ``_pos_embed``, ``nn.Sequential`` blocks, ``norm``,
``forward_head``), so a benchmark compares our model code, not different weights or shapes."""
import copy
from functools import partial
from typing import List, Sequence

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from timm_learngene import Descendant

__all__ = ['vit_shell', 'as_plain_vit', 'split_at_stitches', 'stitch_count']


def vit_shell(desc: Descendant, embed_dim: int) -> VisionTransformer:
    """An empty timm ViT (no blocks, weights not initialised) of the descendant's input and classes."""
    spec = desc.pool_spec
    return VisionTransformer(img_size=spec.img_size, patch_size=spec.patch_size, in_chans=spec.in_chans,
                             num_classes=desc.num_classes, embed_dim=embed_dim, depth=0, num_heads=1,
                             weight_init='skip', norm_layer=partial(nn.LayerNorm, eps=1e-6))


def _segments(desc: Descendant) -> List[List[nn.Module]]:
    """The descendant's blocks cut after every stitch: ``[[front blocks], [next blocks], ...]``."""
    segs = [[]]
    for i, blk in enumerate(desc.blocks):
        segs[-1].append(blk)
        if str(i) in desc.stitches:
            segs.append([])
    return segs


def stitch_count(desc: Descendant) -> int:
    return len(desc.stitches)


def as_plain_vit(desc: Descendant, copy_modules: bool = True) -> VisionTransformer:
    """The descendant as one timm ``VisionTransformer``: its blocks with each stitch layer placed in the
    ``nn.Sequential`` after the block it follows. Same modules, same compute; ``copy_modules`` gives it its own
    parameters (for a training baseline with its own optimizer)."""
    src = copy.deepcopy(desc) if copy_modules else desc
    vit = vit_shell(src, src.patch_embed.proj.out_channels)
    seq = []
    for i, blk in enumerate(src.blocks):
        seq.append(blk)
        if str(i) in src.stitches:
            seq.append(src.stitches[str(i)])
    vit.blocks = nn.Sequential(*seq)
    vit.patch_embed, vit.cls_token, vit.pos_embed = src.patch_embed, src.cls_token, src.pos_embed
    vit.norm, vit.head = src.norm, src.head
    vit.num_features = vit.head_hidden_size = vit.embed_dim = src.num_features
    return vit


def split_at_stitches(desc: Descendant) -> Sequence[VisionTransformer]:
    """The descendant's modules as plain timm ViT chains without its stitch layers (modules shared, not copied).

    Chain 0 runs the embedding and the front blocks (``forward_features``, final norm left out); each later
    chain runs its blocks on a tensor of its own width (``blocks``), the last one also ``norm`` and
    ``forward_head``. Together they do the descendant's work minus the stitches.
    """
    segs = _segments(desc)
    chains = []
    for n, blocks in enumerate(segs):
        width = blocks[0].norm1.normalized_shape[0]
        vit = vit_shell(desc, width)
        vit.blocks = nn.Sequential(*blocks)
        if n == 0:
            vit.patch_embed, vit.cls_token, vit.pos_embed = desc.patch_embed, desc.cls_token, desc.pos_embed
        if n == len(segs) - 1:
            vit.norm, vit.head = desc.norm, desc.head
        else:
            vit.norm, vit.head = nn.Identity(), nn.Identity()
        chains.append(vit)
    return chains
