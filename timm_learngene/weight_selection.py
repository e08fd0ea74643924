"""Pool members initialised from the ancestry's own weights (weight selection, Xu et al., ICLR 2024).

A member of width ``w`` and depth ``L`` takes, from a timm ViT ancestry of width ``D >= w`` and depth ``L_a >= L``:

- blocks evenly spaced over the ancestry's depth, ending at its last block (``round((i + 1) * L_a / L) - 1``: 6 of
  12 gives blocks 1, 3, 5, 7, 9, 11, the distillation's matched positions included);
- the same ``w`` of the ``D`` residual-stream channels everywhere (evenly spaced, ``i * D // w``), so every block,
  the embeddings, the final norm and the head read and write one consistent sub-stream;
- in each attention layer, the member's heads as evenly spaced ancestry heads (each head's dimensions evenly spaced
  within it), the same for q, k and v, and the matching input columns of the output projection;
- in each MLP, evenly spaced hidden units.

A member as wide and as deep as the ancestry gets the ancestry itself. The head is taken when the classes match,
else left as built. Anything in the ancestry's state that has no place in a member (or the other way round) is an
error, so a non-ViT ancestry fails before training rather than training from a half-copied init.
"""
from typing import Dict, List, Mapping

import torch
from torch import nn

from .errors import PoolSpecError

__all__ = ['select_member_weights', 'select_weights', 'evenly_spaced', 'init_members_from_ancestry']


def evenly_spaced(k: int, n: int) -> torch.Tensor:
    """``k`` of the indices ``0..n-1``, evenly spaced, in order (``i * n // k``)."""
    if not 0 < k <= n:
        raise PoolSpecError(f'cannot select {k} of {n} channels; a member must be at most as wide as the ancestry')
    return torch.arange(k) * n // k


def _layers(depth: int, ancestry_depth: int) -> List[int]:
    if not 0 < depth <= ancestry_depth:
        raise PoolSpecError(f'a member of depth {depth} cannot take blocks of an ancestry of depth {ancestry_depth}')
    return [round((i + 1) * ancestry_depth / depth) - 1 for i in range(depth)]


def first(k: int, n: int) -> torch.Tensor:
    """The first ``k`` of the indices ``0..n-1`` (a nested ViT's prefix slices: each narrower one inside the
    wider)."""
    evenly_spaced(k, n)  # the same bounds
    return torch.arange(k)


SPACINGS = {'even': evenly_spaced, 'prefix': first}


def _heads(member_heads: int, member_dim: int, anc_heads: int, anc_dim: int, pick=evenly_spaced) -> torch.Tensor:
    """Channel indices of the attention dimension: evenly spaced heads, evenly spaced dims within each (or, with
    ``pick=first``, the first heads and the first dims of each)."""
    m_hd, a_hd = member_dim // member_heads, anc_dim // anc_heads
    if member_heads > anc_heads or m_hd > a_hd:
        raise PoolSpecError(f'a member with {member_heads} heads of {m_hd} dims cannot take heads of an ancestry with '
                            f'{anc_heads} heads of {a_hd} dims')
    heads = pick(member_heads, anc_heads)
    within = pick(m_hd, a_hd)
    return (heads[:, None] * a_hd + within[None, :]).reshape(-1)


def select_member_weights(member: nn.Module, ancestry: nn.Module) -> Dict[str, torch.Tensor]:
    """The member's state dict selected from ``ancestry`` (a timm ``VisionTransformer``); see the module docstring.
    ``member`` is a pool member (:class:`~timm_learngene.models.learngene_pool.Member`)."""
    spec = member.spec
    anc = {k: v.detach() for k, v in ancestry.state_dict().items()}
    return select_weights(member.state_dict(), spec.width, spec.heads, spec.depth, anc, ancestry)


def select_weights(target: Mapping[str, torch.Tensor], width: int, heads: int, depth: int,
                   source: Mapping[str, torch.Tensor], source_model: nn.Module,
                   spacing: str = 'even') -> Dict[str, torch.Tensor]:
    """The tensors of a ViT ``width`` wide with ``heads`` heads and ``depth`` blocks (``target``: its state dict,
    for the names, shapes and dtypes) selected from ``source``, the state of the timm ``VisionTransformer``
    ``source_model`` (see the module docstring). Selection is ``index_select`` on the tensors given: pass detached
    tensors to copy, or the parameters themselves (``state_dict(keep_vars=True)``) to train through the selection
    (a nested ViT's width slices). ``spacing='prefix'`` takes the first channels, heads, head dims and MLP units
    instead of evenly spaced ones (blocks stay evenly spaced)."""
    if spacing not in SPACINGS:
        raise PoolSpecError(f"weight selection spacing is one of {sorted(SPACINGS)}, got {spacing!r}")
    pick_ = SPACINGS[spacing]
    anc = source
    if 'pos_embed' not in anc or 'blocks.0.attn.qkv.weight' not in anc:
        raise PoolSpecError('weight selection needs a timm VisionTransformer ancestry (pos_embed, blocks.N.attn.qkv); '
                            f'got {type(source_model).__name__}')
    full = anc['pos_embed'].shape[-1]
    anc_depth = len(source_model.blocks)
    anc_heads = source_model.blocks[0].attn.num_heads
    e = pick_(width, full)
    a = _heads(heads, width, anc_heads, full, pick_)
    hidden = anc['blocks.0.mlp.fc1.weight'].shape[0]
    h = pick_(target['blocks.0.mlp.fc1.weight'].shape[0], hidden)
    layers = _layers(depth, anc_depth)
    qkv = torch.cat([a + i * full for i in range(3)])

    def pick(t, rows=None, cols=None):
        t = t if rows is None else t.index_select(0, rows.to(t.device))
        return t if cols is None else t.index_select(1, cols.to(t.device))

    rules = {  # suffix -> (row indices, column indices)
        'norm1.weight': (e, None), 'norm1.bias': (e, None), 'norm2.weight': (e, None), 'norm2.bias': (e, None),
        'attn.qkv.weight': (qkv, e), 'attn.qkv.bias': (qkv, None),
        'attn.proj.weight': (e, a), 'attn.proj.bias': (e, None),
        'mlp.fc1.weight': (h, e), 'mlp.fc1.bias': (h, None), 'mlp.fc2.weight': (e, h), 'mlp.fc2.bias': (e, None),
    }
    out = {}
    for key, like in target.items():
        if key.startswith('blocks.'):
            _, i, rest = key.split('.', 2)
            src = f'blocks.{layers[int(i)]}.{rest}'
            if rest not in rules or src not in anc:
                raise PoolSpecError(f'weight selection has no rule for member tensor {key!r} (ancestry {src!r})')
            t = pick(anc[src], *rules[rest])
        elif key in ('cls_token', 'pos_embed'):
            t = anc[key].index_select(anc[key].dim() - 1, e.to(anc[key].device))
        elif key.startswith('patch_embed.proj.'):
            t = pick(anc[key], e)
        elif key in ('norm.weight', 'norm.bias'):
            t = pick(anc[key], e)
        elif key.startswith('head.'):
            if anc.get(key) is None or anc[key].shape[0] != like.shape[0]:
                continue  # other classes: the member keeps the head it was built with
            t = pick(anc[key], None, e) if key.endswith('weight') else anc[key]
        else:
            raise PoolSpecError(f'weight selection has no rule for member tensor {key!r}')
        if t.shape != like.shape:
            raise PoolSpecError(f'weight selection made {key!r} of shape {list(t.shape)}, but the member has '
                                f'{list(like.shape)}: the ancestry and the pool spec do not fit (image size, patch '
                                f'size or channels)')
        out[key] = t.to(like.dtype)
    return out


@torch.no_grad()
def init_members_from_ancestry(pool: nn.Module, ancestry: nn.Module) -> None:
    """Copy :func:`select_member_weights` into every member of ``pool`` (all members checked before the first copy)."""
    states = {name: select_member_weights(m, ancestry) for name, m in pool.members.items()}
    for name, state in states.items():
        pool.members[name].load_state_dict(state, strict=False)
