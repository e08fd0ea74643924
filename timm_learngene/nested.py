"""A nested pool: one timm ViT whose width slices are models of their own (issue 28's last candidate design).

Scala (NeurIPS 2024), HydraViT, MatFormer and US-Nets train one network so that its narrower slices work alone:
every step trains the full width and the narrowest (the sandwich rule) plus a few widths between, each with the
loss a stitched pool's routes get (labels and logit KD from the ancestry). Here a slice of width ``w`` with ``h``
heads is the network's tensors selected as :mod:`~timm_learngene.weight_selection` selects a member from an
ancestry (evenly spaced residual channels, evenly spaced heads and head dimensions, evenly spaced MLP units, every
block), so a nested ViT initialised from the ancestry by weight selection starts with each slice equal to the
weight-selected member of that width. A slice is exported as a plain timm ViT (:meth:`NestedViT.slice_model`).

``slicing='prefix'`` takes the first channels, heads, head dimensions and MLP units instead (Scala's and
HydraViT's rule): a narrower slice then lies inside every wider one with as many heads or more, so the sizes
share what they learn; evenly spaced slices of two widths share only some channels.

Sizes are named ``w<width>`` (``w64``); the largest must be the network's own shape.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import timm
import torch
from torch import nn
from torch.func import functional_call

from .errors import PoolSpecError
from .spec import MemberSpec, PoolSpec, pool_params, route_macs
from .weight_selection import SPACINGS, select_weights

__all__ = ['NestedViT', 'parse_sizes', 'size_name', 'size_cost', 'every_step']


def size_name(width: int) -> str:
    return f'w{width}'


def parse_sizes(items: Sequence) -> List[Tuple[int, int]]:
    """``['64x1', '96x2']`` or ``[[64, 1], [96, 2]]`` -> ``[(64, 1), (96, 2)]`` (width, heads), sorted by width;
    PoolSpecError for anything else, a repeated width, or a width that is not a multiple of its heads."""
    out = []
    for item in items:
        try:
            w, h = (int(v) for v in (item.lower().split('x') if isinstance(item, str) else item))
        except (ValueError, TypeError, AttributeError):
            raise PoolSpecError(f"a nested size is WIDTHxHEADS (e.g. '96x2'), got {item!r}") from None
        if w < 1 or h < 1 or w % h:
            raise PoolSpecError(f'nested size {item!r}: the width must be a positive multiple of the heads')
        out.append((w, h))
    widths = [w for w, _ in out]
    if len(set(widths)) != len(widths):
        raise PoolSpecError(f'nested sizes repeat a width: {sorted(widths)}')
    if not out:
        raise PoolSpecError('a nested ViT needs at least one size (WIDTHxHEADS)')
    return sorted(out)


def every_step(count: int, narrowest: int = 1) -> List[int]:
    """Indices (narrowest first) of the sizes trained in every step of a nested ViT with ``count`` sizes: the
    widest and the ``narrowest`` narrowest (the sandwich rule; one size alone is trained alone). ValueError when
    ``narrowest`` leaves no size between them to be both (1 to ``count - 1``)."""
    if count == 1:
        return [0]
    if isinstance(narrowest, bool) or not isinstance(narrowest, int) or not 1 <= narrowest < count:
        raise ValueError(f'give 1 to {count - 1} (there are {count} sizes, and the widest always trains), got '
                         f'{narrowest!r}')
    return [*range(narrowest), count - 1]


def size_cost(width: int, heads: int, depth: int, img_size: int, patch_size: int, in_chans: int,
              num_classes: int) -> Tuple[int, int]:
    """``(params, MACs per image)`` of a plain ViT of that shape, counted as the pool's descendants are."""
    one = PoolSpec('one', (MemberSpec('m', width, heads, depth),), img_size=img_size, patch_size=patch_size,
                   in_chans=in_chans, num_classes=num_classes)
    return pool_params(one)['pool'], route_macs(one, (('m', 0, depth),))


class NestedViT(nn.Module):
    """A timm ViT (``model`` with ``model_args``, the widest size) whose width slices ``sizes`` ((width, heads)
    pairs) run as models of their own: ``forward(x, 'w96')``. Only the full network's parameters exist (its state
    dict is the plain timm ViT's, under ``base.``); a slice selects from them on every call, so training a slice
    trains the network."""

    def __init__(self, model: str, model_args: Dict, sizes: Sequence, slicing: str = 'prefix', **kwargs):
        super().__init__()
        if slicing not in SPACINGS:
            raise PoolSpecError(f'nested slicing is one of {sorted(SPACINGS)}, got {slicing!r}')
        self.slicing = slicing
        self.base = timm.create_model(model, **model_args, **kwargs)
        self.model_name, self.model_args = model, dict(model_args)
        self.sizes = parse_sizes(sizes)
        full = (self.base.embed_dim, self.base.blocks[0].attn.num_heads)
        if self.sizes[-1] != full:
            raise PoolSpecError(f'the widest nested size must be the network itself ({full[0]}x{full[1]}), got '
                                f'{self.sizes[-1][0]}x{self.sizes[-1][1]}')
        self.depth = len(self.base.blocks)
        self.names = [size_name(w) for w, _ in self.sizes]
        # each size's structure: a timm ViT of that shape whose own parameters are never used (not registered)
        self._templates: Dict[str, nn.Module] = {}
        for (w, h), name in zip(self.sizes, self.names):
            template = timm.create_model(model, **dict(model_args, embed_dim=w, num_heads=h))
            for p in template.parameters():
                p.requires_grad_(False)
            self._templates[name] = template
            self.slice_state(name, detach=True)  # a size that cannot be sliced fails here, not in training

    def size(self, name: str) -> Tuple[int, int]:
        if name not in self.names:
            raise PoolSpecError(f'unknown nested size {name!r}; this network has {self.names}')
        return self.sizes[self.names.index(name)]

    def slice_state(self, name: str, detach: bool = False) -> Dict[str, torch.Tensor]:
        """The state dict of size ``name``, selected from the network's parameters (differentiable unless
        ``detach``)."""
        w, h = self.size(name)
        template = self._templates[name]
        source = self.base.state_dict(keep_vars=not detach)
        return select_weights(template.state_dict(), w, h, self.depth, source, self.base, self.slicing)

    def forward(self, x: torch.Tensor, name: Optional[str] = None) -> torch.Tensor:
        name = name or self.names[-1]
        if name == self.names[-1]:
            return self.base(x)
        template = self._templates[name]
        template.train(self.training)
        return functional_call(template, self.slice_state(name), (x,))

    @torch.no_grad()
    def slice_model(self, name: str) -> nn.Module:
        """Size ``name`` as a standalone timm ViT (a copy of its weights)."""
        w, h = self.size(name)
        model = timm.create_model(self.model_name, **dict(self.model_args, embed_dim=w, num_heads=h))
        model.load_state_dict({k: v.clone() for k, v in self.slice_state(name, detach=True).items()})
        return model.to(next(self.base.parameters()).device)
