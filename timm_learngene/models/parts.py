"""The pieces both Learngene Pool models are built from: a pool member (:class:`Member`, with a timm
``VisionTransformer``'s tensor names), the part of timm's model API a descendant and a pool share
(:class:`TimmModelAPI`), and the helpers for blocks, heads, pooling, input size and the stitch-layer names.
"""
from functools import partial
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from timm.layers import PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block

from ..errors import PoolSpecError
from ..pool_format import FORMAT_VERSION
from ..spec import MemberSpec, PoolSpec, Route, stitch_window

_norm_layer = partial(nn.LayerNorm, eps=1e-6)


def _block(m: MemberSpec, drop_path: float = 0.) -> Block:
    return Block(m.width, m.heads, mlp_ratio=m.mlp_ratio, qkv_bias=True, drop_path=drop_path,
                 norm_layer=_norm_layer)


def _drop_path_rates(rate: float, depth: int) -> List[float]:
    """``torch.linspace(0, rate, depth)`` in plain Python: a tensor op would fail under ``torch.device('meta')``."""
    return [rate * i / (depth - 1) if depth > 1 else 0. for i in range(depth)]


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _check_global_pool(global_pool: str) -> None:
    if global_pool not in ('token', 'avg', ''):
        raise ValueError(f"global_pool must be 'token', 'avg' or '' (no pooling: every token), got {global_pool!r}")


def _pool_tokens(x: torch.Tensor, global_pool: str) -> torch.Tensor:
    if global_pool == 'avg':
        return x[:, 1:].mean(dim=1)
    if global_pool == 'token':
        return x[:, 0]
    return x


def _new_head(width: int, num_classes: int, ref: torch.Tensor, training: bool) -> nn.Module:
    """A fresh classifier on the device and in the dtype of ``ref`` (the model's own parameters), in the model's
    train/eval mode."""
    if num_classes <= 0:
        return nn.Identity().train(training)
    head = nn.Linear(width, num_classes, device=ref.device, dtype=ref.dtype)
    if ref.device.type != 'meta':
        head.apply(_init_linear)
    return head.train(training)


def _resolve_img_size(img_size) -> Optional[int]:
    if img_size is None or isinstance(img_size, int):
        return img_size
    h, w = img_size
    if h != w:
        raise PoolSpecError(f'learngene pools take square images; got img_size={tuple(img_size)}')
    return int(h)


def _resized(patch_embed: PatchEmbed, pos_embed: nn.Parameter, img_size, patch_size) -> nn.Parameter:
    """Resize ``patch_embed`` in place (timm's PatchEmbed.set_input_size) and return ``pos_embed`` resampled to
    its new grid (the same parameter when the grid did not change), keeping its requires_grad."""
    prev = patch_embed.grid_size
    patch_embed.set_input_size(img_size=img_size, patch_size=patch_size)
    if patch_embed.grid_size == prev:
        return pos_embed
    with torch.no_grad():
        new = resample_abs_pos_embed(pos_embed, new_size=patch_embed.grid_size, old_size=prev, num_prefix_tokens=1)
    return nn.Parameter(new, requires_grad=pos_embed.requires_grad)


def _resized_spec(spec: PoolSpec, img_size, patch_size) -> PoolSpec:
    """The spec after ``set_input_size`` (validated before anything changes: square, patch divides image)."""
    img = _resolve_img_size(img_size) if img_size is not None else spec.img_size
    if patch_size is not None:
        ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        if ph != pw:
            raise PoolSpecError(f'learngene pools take square patches; got patch_size={tuple(patch_size)}')
        patch = int(ph)
    else:
        patch = spec.patch_size
    return spec.replace(img_size=img, patch_size=patch)


# create_model's keyword arguments that the pool spec in model_args already records (set_input_size records
# patch_size, which no entrypoint takes: the spec holds it)
_SPEC_ARGS = ('pool', 'patch_size')


def _export_args(recorded: Dict[str, Any], spec: PoolSpec, **extra) -> Dict[str, Any]:
    """A model's reconstruction arguments as JSON (what timm's save_for_hf writes to config.json's model_args):
    the factory's recorded kwargs, with the pool spec as its dict and the format version."""
    args = {k: v for k, v in recorded.items() if k not in _SPEC_ARGS}
    args.update(pool=spec.to_dict(), format_version=FORMAT_VERSION, **extra)
    return args


def _apply_overrides(spec: PoolSpec, num_classes=None, img_size=None, in_chans=None) -> PoolSpec:
    # only a real change builds (and validates) a new spec: the one passed in was validated when it was made
    changes = dict(num_classes=num_classes, img_size=_resolve_img_size(img_size), in_chans=in_chans)
    changes = {k: v for k, v in changes.items() if v is not None and getattr(spec, k) != v}
    return spec.replace(**changes) if changes else spec


class Member(nn.Module):
    """One auxiliary ViT of the pool, with a timm ``VisionTransformer``'s tensor names."""

    def __init__(self, m: MemberSpec, spec: PoolSpec, drop_path_rate: float = 0.):
        super().__init__()
        self.spec = m
        self.patch_embed = PatchEmbed(spec.img_size, spec.patch_size, spec.in_chans, m.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, m.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.num_tokens, m.width))
        dpr = _drop_path_rates(drop_path_rate, m.depth)
        self.blocks = nn.ModuleList([_block(m, dpr[i]) for i in range(m.depth)])
        self.norm = _norm_layer(m.width)
        self.head = nn.Linear(m.width, spec.num_classes) if spec.num_classes else nn.Identity()
        trunc_normal_(self.pos_embed, std=.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_linear)


class TimmModelAPI:
    """What a descendant and a pool share of timm's model API: ``_model_args`` (what ``timm.create_model``
    recorded, exported as JSON that rebuilds the model, with :meth:`_descendant_rows`; timm's ``save_for_hf``
    writes it to config.json's ``model_args``) and the bookkeeping of a new classifier."""

    def _descendant_rows(self) -> Dict[str, Any]:
        raise NotImplementedError

    @property
    def _model_args(self) -> Dict[str, Any]:
        return _export_args(self.__dict__.get('_recorded_args', {}), self.pool_spec, **self._descendant_rows())

    @_model_args.setter
    def _model_args(self, args: Dict[str, Any]) -> None:
        self.__dict__['_recorded_args'] = dict(args)

    def _set_classes(self, num_classes: int, global_pool: Optional[str]) -> None:
        """``reset_classifier``'s bookkeeping: the pooling (checked), the class count, the spec; the heads are the
        caller's."""
        if global_pool is not None:
            _check_global_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.pool_spec = self.pool_spec.replace(num_classes=num_classes)


def _stitch_after(route: Route, fa: str, fb: int) -> int:
    """Descendant block index after which the stitch that leaves segment (fa, *, fb) sits."""
    n = 0
    for name, a, b in route:
        n += b - a
        if (name, b) == (fa, fb):
            return n - 1
    raise AssertionError('segment not in route')


def _pool_key_prefixes(spec: PoolSpec, route: Route) -> List[Tuple[str, str]]:
    front, end = route[0][0], route[-1][0]
    keys = [('patch_embed', f'members.{front}.patch_embed'), ('cls_token', f'members.{front}.cls_token'),
            ('pos_embed', f'members.{front}.pos_embed')]
    n = 0
    for name, a, b in route:
        for blk in range(a, b):
            keys.append((f'blocks.{n}', f'members.{name}.blocks.{blk}'))
            n += 1
    for (fa, _, fb), (ea, eb, _) in zip(route, route[1:]):
        w = stitch_window(spec, fb - 1, eb)
        keys.append((f'stitches.{_stitch_after(route, fa, fb)}', f'stitches.{fa}-{ea}.{w}'))
    keys += [('norm', f'members.{end}.norm'), ('head', f'members.{end}.head')]
    return keys
