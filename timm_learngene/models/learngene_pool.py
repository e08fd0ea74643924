"""Learngene Pool models: the pool (every member and stitch layer) and its stitched descendants.

Learngene Pool, "Building Variable-sized Models via Learngene Pool" (Shi et al., AAAI 2024, arXiv 2312.05743);
stitching as in SN-Net, "Stitchable Neural Networks" (Pan et al., CVPR 2023).

Blocks are timm's own ``Block`` and a member's tensors carry the names of a timm ``VisionTransformer``
(``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.i``, ``norm``, ``head``), so a member loads a
timm ViT's weights key for key. A :class:`Descendant` is a plain timm-style ViT whose blocks change width once
per stitch; :meth:`LearngenePool.descendant` returns one that shares the pool's modules, and the pool's
``forward(x, route)`` runs exactly that module, so a standalone descendant and the pool agree bit for bit.
"""
import contextlib
from functools import partial
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models._features import feature_take_indices
from timm.models._input import update_model_input_size
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models.vision_transformer import Block

from ..data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from ..errors import PoolSpecError
from ..pool_format import (
    FORMAT_VERSION, check_format_version, check_model_args, check_pretrained_cfg, descendant_metrics,
)
from ..pool_reader import check_weights_file, load_pool_weights, pool_weights_file
from ..spec import (
    DEIT_BASE_L6, DEIT_BASE_L9, DescendantInfo, MemberSpec, PoolSpec, Route, enumerate_descendants,
    find_descendant, stitch_window,
)

__all__ = ['Member', 'LearngenePool', 'Descendant', 'FORMAT_VERSION', 'HUB_REPOS']

HUB_REPOS = {
    'deit_base_l6': 'timm-learngene/learngene-pool-deit-base-l6',
    'deit_base_l9': 'timm-learngene/learngene-pool-deit-base-l9',
}

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


class _TimmModel:
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


class Descendant(_TimmModel, nn.Module):
    """A stitched ViT: front member's embedding and blocks, stitch layer(s), end member's blocks, norm, head.

    Build one with ``timm.create_model('learngene_pool_s3')`` (fresh modules) or :meth:`LearngenePool.descendant`
    (modules shared with the pool). Speaks timm's model API.
    """
    __jit_unused_properties__ = ['_model_args']

    def __init__(
            self,
            pool: Union[PoolSpec, dict, str] = DEIT_BASE_L6,
            descendant: Union[str, Sequence, DescendantInfo] = 's1',
            num_classes: Optional[int] = None,
            img_size=None,
            in_chans: Optional[int] = None,
            global_pool: str = 'token',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            descendants: Optional[List[dict]] = None,
            dynamic_img_size: bool = False,
    ):
        """A descendant with modules of its own, freshly initialised (``timm.create_model('learngene_pool_s3')``)."""
        spec = _apply_overrides(PoolSpec.from_any(pool), num_classes, img_size, in_chans)
        info = find_descendant(spec, descendant, descendant_metrics(descendants))
        self._build(spec, info, self._fresh_parts(spec, info.route, drop_path_rate), global_pool, drop_rate,
                    dynamic_img_size, shared=False)

    @classmethod
    def sharing(cls, spec: PoolSpec, info: DescendantInfo, parts: Dict[str, Any], global_pool: str = 'token',
                drop_rate: float = 0., dynamic_img_size: bool = False) -> 'Descendant':
        """A descendant that runs ``parts``, modules owned by a pool (:meth:`LearngenePool.descendant`): no copy,
        training it trains the pool, and resizing its embeddings is the pool's business."""
        model = cls.__new__(cls)
        model._build(spec, info, parts, global_pool, drop_rate, dynamic_img_size, shared=True)
        return model

    def _build(self, spec: PoolSpec, info: DescendantInfo, parts: Dict[str, Any], global_pool: str,
               drop_rate: float, dynamic_img_size: bool, shared: bool) -> None:
        nn.Module.__init__(self)
        _check_global_pool(global_pool)
        self.pool_spec = spec
        self.info: DescendantInfo = info
        self.route: Route = info.route
        end = spec.member(self.route[-1][0])
        self.num_classes = spec.num_classes
        self.in_chans = spec.in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = end.width
        self.num_prefix_tokens = 1
        self.has_class_token = True
        self.grad_checkpointing = False
        self.dynamic_img_size = bool(dynamic_img_size)
        self._shared = shared  # modules belong to a pool: resizing them is the pool's business
        self.patch_embed = parts['patch_embed']
        self.cls_token = parts['cls_token']
        self.pos_embed = parts['pos_embed']
        self.blocks = nn.ModuleList(parts['blocks'])
        self.stitches = nn.ModuleDict(parts['stitches'])
        self.norm = parts['norm']
        self.head_drop = nn.Dropout(drop_rate)
        self.head = parts['head']
        self._pool_keys = parts['pool_keys']
        self._index_blocks()

    def runs(self, parts: Dict[str, Any]) -> bool:
        """Whether this descendant runs exactly the modules ``parts`` (the same objects, not copies)."""
        return (self.patch_embed is parts['patch_embed'] and self.cls_token is parts['cls_token']
                and self.pos_embed is parts['pos_embed'] and self.norm is parts['norm'] and self.head is parts['head']
                and len(self.blocks) == len(parts['blocks']) and all(a is b for a, b in zip(self.blocks, parts['blocks']))
                and self.stitches.keys() == parts['stitches'].keys()
                and all(self.stitches[k] is v for k, v in parts['stitches'].items()))

    def _index_blocks(self) -> None:
        """Widths, stitch positions and feature_info of the current blocks (after building or pruning)."""
        self.block_widths = [b.norm1.normalized_shape[0] for b in self.blocks]
        # the stitch layer after each block, or None: looked up once here, not per block on every forward
        # (a plain list, not registered: the layers are registered in self.stitches)
        self._stitch_after: List[Optional[nn.Module]] = [
            self.stitches[str(i)] if str(i) in self.stitches else None for i in range(len(self.blocks))]
        # forward_intermediates returns a block's output after the stitch that follows it (the next block's width)
        out_widths = [st.out_features if st is not None else w
                      for st, w in zip(self._stitch_after, self.block_widths)]
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=w, reduction=self.pool_spec.patch_size)
            for i, w in enumerate(out_widths)]

    @staticmethod
    def _fresh_parts(spec: PoolSpec, route: Route, drop_path_rate: float) -> Dict[str, Any]:
        front, end = spec.member(route[0][0]), spec.member(route[-1][0])
        depth = sum(b - a for _, a, b in route)
        dpr = _drop_path_rates(drop_path_rate, depth)
        blocks = []
        for name, a, b in route:
            m = spec.member(name)
            blocks += [_block(m, dpr[len(blocks) + i]) for i in range(b - a)]
        stitches = {}
        for (fa, _, fb), (ea, _, _) in zip(route, route[1:]):
            stitches[str(_stitch_after(route, fa, fb))] = nn.Linear(spec.member(fa).width, spec.member(ea).width)
        parts = dict(
            patch_embed=PatchEmbed(spec.img_size, spec.patch_size, spec.in_chans, front.width),
            cls_token=nn.Parameter(torch.zeros(1, 1, front.width)),
            pos_embed=nn.Parameter(torch.zeros(1, spec.num_tokens, front.width)),
            blocks=blocks, stitches=stitches, norm=_norm_layer(end.width),
            head=nn.Linear(end.width, spec.num_classes) if spec.num_classes else nn.Identity(),
            pool_keys=_pool_key_prefixes(spec, route),
        )
        trunc_normal_(parts['pos_embed'], std=.02)
        nn.init.normal_(parts['cls_token'], std=1e-6)
        for mod in [*blocks, *stitches.values(), parts['head']]:
            mod.apply(_init_linear)
        return parts

    # ---- pool checkpoint mapping --------------------------------------------------------------------------
    def pool_key_map(self, keys: Optional[Iterable[str]] = None) -> Dict[str, str]:
        """``{name in this model's state_dict: name of the same tensor in the pool checkpoint}`` (for ``keys``,
        default every key of ``state_dict()``)."""
        out = {}
        for key in (self.state_dict() if keys is None else keys):
            for prefix, pool_prefix in self._pool_keys:
                if key == prefix or key.startswith(prefix + '.'):
                    out[key] = pool_prefix + key[len(prefix):]
                    break
        return out

    # ---- timm API -----------------------------------------------------------------------------------------
    def _descendant_rows(self) -> Dict[str, Any]:
        """``_model_args`` names this descendant and carries its measured values."""
        return dict(descendant=self.info.name, descendants=[self.info.to_dict()])

    @torch.jit.ignore
    def set_input_size(self, img_size=None, patch_size=None) -> None:
        """New input size (and patch size), as timm's ViT: the position embedding is resampled to the new grid
        (and the patch kernel, for a new patch size). Square sizes only. A descendant that shares its modules
        with a pool (``pool.descendant(...)``) is resized through the pool."""
        if self._shared:
            raise RuntimeError('this descendant shares its modules with a pool (pool.descendant(...)); call '
                               'pool.set_input_size(...) and take the descendant again, or build a standalone one '
                               "with timm.create_model('learngene_pool_sN', ...)")
        spec = _resized_spec(self.pool_spec, img_size, patch_size)
        self.pos_embed = _resized(self.patch_embed, self.pos_embed, spec.img_size, patch_size)
        self.pool_spec = spec
        self._index_blocks()
        update_model_input_size(self, self.patch_embed.img_size)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {'pos_embed', 'cls_token'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(
            stem=r'^cls_token|pos_embed|patch_embed',
            # a stitch layer joins the group of the block it follows
            # one capture group: timm turns every group into a float, and an unmatched alternative gives None
            blocks=[(r'^(?:blocks|stitches)\.(\d+)', None), (r'^norm', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self._set_classes(num_classes, global_pool)
        self.head = _new_head(self.num_features, num_classes, self.patch_embed.proj.weight, self.training)

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks (and stitch layers) after the last index taken, as timm's ViT does; returns the
        indices kept. The final norm is the end member's: it goes too when the last block kept is narrower."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        for key in [k for k in self.stitches if int(k) > max_index]:
            del self.stitches[key]
        self._index_blocks()
        width = self.feature_info[-1]['num_chs']
        if prune_norm or width != self.num_features:
            self.norm = nn.Identity()
        self.num_features = self.head_hidden_size = width
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` image -> ``B x (1 + N) x D`` tokens with the class token and position embedding.

        With ``dynamic_img_size`` (timm ViT semantics) any image size the patch divides is taken and the position
        embedding is resampled to its grid. The patch embedding's projection is called without the module's size
        check, so a descendant that shares its modules with a pool can be dynamic while the pool is not.
        """
        if self.dynamic_img_size:
            ph, pw = self.patch_embed.patch_size
            torch._assert(x.shape[-2] % ph == 0 and x.shape[-1] % pw == 0,
                          'dynamic_img_size: image height and width must be multiples of the patch size')
            x = self.patch_embed.proj(x)  # B x D x H' x W'
            grid = (x.shape[-2], x.shape[-1])
            x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
            pos = resample_abs_pos_embed(self.pos_embed, new_size=grid, old_size=self.patch_embed.grid_size,
                                         num_prefix_tokens=1)
        else:
            x = self.patch_embed(x)
            pos = self.pos_embed
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + pos

    @torch.jit.ignore
    def _run_block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        blk = self.blocks[i]
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint(blk, x, use_reentrant=False)
        else:
            x = blk(x)
        stitch = self._stitch_after[i]
        return stitch(x) if stitch is not None else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` image -> ``B x N x D_end`` normalised tokens."""
        x = self._embed(x)
        if torch.jit.is_scripting():
            # TorchScript takes neither a variable index into a ModuleList nor a variable ModuleDict key
            for i, blk in enumerate(self.blocks):
                x = blk(x)
                for key, stitch in self.stitches.items():
                    if int(key) == i:
                        x = stitch(x)
        else:
            for i in range(len(self.blocks)):
                x = self._run_block(i, x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = _pool_tokens(x, self.global_pool)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ):
        """Block outputs (after the stitch where one follows the block), as timm's ViT returns them.

        Widths change along a descendant, so ``norm=True`` (the final norm) is only valid for blocks of the end
        member's width.
        """
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        B, _, height, width = x.shape
        x = self._embed(x)
        last = max_index if stop_early else len(self.blocks) - 1
        intermediates = []
        for i in range(last + 1):
            x = self._run_block(i, x)
            if i in take_indices:
                if norm and x.shape[-1] != self.num_features:
                    raise ValueError(
                        f'norm=True applies the final norm ({self.num_features} wide) but block {i} outputs '
                        f'{x.shape[-1]} channels; take indices of end-member blocks or pass norm=False')
                intermediates.append(self.norm(x) if norm else x)
        prefix = [y[:, :1] for y in intermediates]
        intermediates = [y[:, 1:] for y in intermediates]
        if output_fmt == 'NCHW':
            H, W = self.patch_embed.dynamic_feat_size((height, width))
            intermediates = [y.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        for i in range(last + 1, len(self.blocks)):
            x = self._run_block(i, x)
        return self.norm(x), intermediates


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


class LearngenePool(_TimmModel, nn.Module):
    """The whole pool: every member, every stitch layer and the distillation transforms.

    ``forward(x, route)`` runs one descendant (a route or a name such as ``'s3'``); this is the training-time
    model. Tensor names are the checkpoint's: ``members.<m>.…``, ``stitches.<front>-<end>.<window>.…``,
    ``transforms.<m>.<block|attn>.<position>.…``.
    """
    __jit_unused_properties__ = ['_model_args']

    def __init__(
            self,
            pool: Union[PoolSpec, dict, str] = DEIT_BASE_L6,
            num_classes: Optional[int] = None,
            img_size=None,
            in_chans: Optional[int] = None,
            global_pool: str = 'token',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            descendants: Optional[List[dict]] = None,
            dynamic_img_size: bool = False,
    ):
        super().__init__()
        spec = _apply_overrides(PoolSpec.from_any(pool), num_classes, img_size, in_chans)
        self.pool_spec = spec
        self.num_classes = spec.num_classes
        self.in_chans = spec.in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.dynamic_img_size = bool(dynamic_img_size)
        self.metrics: Dict[str, Dict[str, float]] = descendant_metrics(descendants)
        self.members = nn.ModuleDict({m.name: Member(m, spec, drop_path_rate) for m in spec.members})
        self.stitches = nn.ModuleDict({
            f'{a.name}-{b.name}': nn.ModuleList([nn.Linear(a.width, b.width) for _ in range(spec.num_windows)])
            for a, b in spec.pairs})
        self.stitches.apply(_init_linear)
        if spec.distill is not None:
            tw = spec.distill.teacher_width
            npos = len(spec.distill.member_blocks)
            self.transforms = nn.ModuleDict({
                m.name: nn.ModuleDict({kind: nn.ModuleList([nn.Linear(m.width, tw) for _ in range(npos)])
                                       for kind in ('block', 'attn')})
                for m in spec.members})
            self.transforms.apply(_init_linear)
        else:
            self.transforms = None
        # the largest member alone: the route forward takes by default
        self.default_member = spec.members[-1].name
        self.default_route: Route = ((self.default_member, 0, spec.members[-1].depth),)
        self.num_features = self.head_hidden_size = spec.members[-1].width
        self.grad_checkpointing = False
        self._views: Dict[Any, Descendant] = {}  # forward's descendant views, by route (not registered)

    @property
    def descendants(self) -> List[DescendantInfo]:
        """Every descendant, ranked and named, with measured metrics where known."""
        return enumerate_descendants(self.pool_spec, self.metrics)

    def descendant(self, name_or_route: Union[str, Sequence, DescendantInfo]) -> Descendant:
        """A :class:`Descendant` that shares this pool's modules (no copy: training it trains the pool).
        Takes a name (``'s3'``), a route, or a :class:`DescendantInfo` of this pool (used as found, not looked up
        again)."""
        spec = self.pool_spec
        info = name_or_route if isinstance(name_or_route, DescendantInfo) else \
            find_descendant(spec, name_or_route, self.metrics)
        parts = dict(self._parts(info.route), pool_keys=_pool_key_prefixes(spec, info.route))
        model = Descendant.sharing(spec, info, parts, global_pool=self.global_pool, drop_rate=self.drop_rate,
                                   dynamic_img_size=self.dynamic_img_size)
        model.set_grad_checkpointing(self.grad_checkpointing)
        cfg = getattr(self, 'pretrained_cfg', None)
        if cfg is not None:  # timm's save_for_hf reads it (architecture, preprocessing); stem and head are its own
            model.pretrained_cfg = model.default_cfg = dict(cfg, first_conv='patch_embed.proj', classifier='head')
        return model

    def _parts(self, route: Route) -> Dict[str, Any]:
        """The pool's modules that descendant ``route`` runs, as :class:`Descendant` takes them."""
        spec = self.pool_spec
        front, end = self.members[route[0][0]], self.members[route[-1][0]]
        blocks = [self.members[name].blocks[i] for name, a, b in route for i in range(a, b)]
        stitches = {
            str(_stitch_after(route, fa, fb)): self.stitches[f'{fa}-{ea}'][stitch_window(spec, fb - 1, eb)]
            for (fa, _, fb), (ea, eb, _) in zip(route, route[1:])}
        return dict(patch_embed=front.patch_embed, cls_token=front.cls_token, pos_embed=front.pos_embed,
                    blocks=blocks, stitches=stitches, norm=end.norm, head=end.head)

    def forward_features(self, x: torch.Tensor, route=None) -> torch.Tensor:
        """``B x C x H x W`` -> ``B x N x D`` normalised tokens of descendant ``route`` (default: the largest
        member alone, a plain ViT, so the pool is a timm model like any other)."""
        return self._view(self.default_route if route is None else route).forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False, route=None) -> torch.Tensor:
        return self._view(self.default_route if route is None else route).forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor, route=None) -> torch.Tensor:
        """``B x C x H x W`` -> ``B x num_classes`` logits of the descendant ``route`` (a name, a route or a
        :class:`DescendantInfo`; default: the largest member alone).

        The descendant view of each route is built once and kept: a training step looks it up instead of
        validating the route and building a module tree again."""
        return self._view(self.default_route if route is None else route)(x)

    def _view(self, route) -> 'Descendant':
        key = route.route if isinstance(route, DescendantInfo) else \
            route if isinstance(route, str) else tuple(tuple(seg) for seg in route)
        view = self._views.get(key)
        if view is None or not view.runs(self._parts(view.route)):  # a member's module replaced since: rebuild
            view = self._views[key] = self.descendant(route)
        if view.training != self.training:
            view.train(self.training)
        return view

    def _drop_views(self) -> None:
        """Forget the kept descendant views (they hold the modules they were built from; a view whose modules
        were replaced is rebuilt on its next use anyway, this also frees them)."""
        self._views.clear()

    def pool_key_map(self, keys: Optional[Iterable[str]] = None) -> Dict[str, str]:
        return {k: k for k in (self.state_dict() if keys is None else keys)}

    def _descendant_rows(self) -> Dict[str, Any]:
        """``_model_args`` carries the whole descendant table."""
        return dict(descendants=[d.to_dict() for d in self.descendants])

    @torch.jit.ignore
    def set_input_size(self, img_size=None, patch_size=None) -> None:
        """New input size (and patch size) for every member, as timm's ViT: position embeddings resampled to the
        new grid (patch kernels too, for a new patch size). Square sizes only."""
        spec = _resized_spec(self.pool_spec, img_size, patch_size)
        for m in self.members.values():
            m.pos_embed = _resized(m.patch_embed, m.pos_embed, spec.img_size, patch_size)
        self.pool_spec = spec
        self._drop_views()  # they hold the old position embeddings
        update_model_input_size(self, (spec.img_size, spec.img_size))

    @torch.jit.ignore
    def no_weight_decay(self):
        return {f'members.{m}.{n}' for m in self.members for n in ('pos_embed', 'cls_token')}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        """Checkpoint every block of the descendants that ``forward`` runs (timm's train.py calls this)."""
        self.grad_checkpointing = enable
        for view in self._views.values():
            view.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.members[self.pool_spec.members[-1].name].head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        """New heads on every member (each descendant uses its end member's head)."""
        self._set_classes(num_classes, global_pool)
        self._drop_views()  # they hold the old heads
        for m in self.members.values():
            m.head = _new_head(m.spec.width, num_classes, m.patch_embed.proj.weight, self.training)


# ---- configs and entrypoints ------------------------------------------------------------------------------
# the normalisation of the data set a registered spec was made for; other specs get ImageNet's
SPEC_MEAN_STD = {'fashion_mnist_l6': (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
                 'fashion_mnist_l6_mid': (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
                 'fashion_mnist_l6_w4': (FASHION_MNIST_MEAN, FASHION_MNIST_STD)}


def spec_data_config(spec: PoolSpec) -> Dict[str, Any]:
    """The preprocessing a model of ``spec`` takes, for its pretrained cfg: ``input_size`` from the spec's channels
    and image size; ``mean`` / ``std`` of the data set the spec is registered for (:data:`SPEC_MEAN_STD`), else
    ImageNet's (for a channel count other than 3, the mean of ImageNet's three values on every channel)."""
    mean, std = SPEC_MEAN_STD.get(spec.name, (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    if len(mean) != spec.in_chans:
        mean, std = (tuple([round(sum(v) / len(v), 4)] * spec.in_chans) for v in (mean, std))
    return dict(input_size=(spec.in_chans, spec.img_size, spec.img_size), mean=tuple(mean), std=tuple(std))


def _cfg(pool: str = 'deit_base_l6', **kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': None,
        'crop_pct': .875, 'interpolation': 'bicubic', 'fixed_input_size': True,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2312.05743',
        'paper_name': 'Building Variable-sized Models via Learngene Pool',
        **kwargs,
    }


def _create_learngene_pool(variant: str, pretrained: bool = False, pool=DEIT_BASE_L6, descendant=None,
                           format_version: Optional[int] = None, cache_dir=None, **kwargs) -> nn.Module:
    """Build the whole pool, or with ``descendant=`` one descendant of it; load weights from the pool
    checkpoint named by the pretrained cfg (``file`` or ``hf_hub_id``) when ``pretrained``."""
    check_format_version(format_version)
    source_args = kwargs.get('pretrained_model_args')  # timm passes a config.json's model_args here
    if source_args is not None:
        check_model_args(source_args, 'config.json')
    if kwargs.get('descendants') is not None and not isinstance(kwargs['descendants'], list):
        raise PoolSpecError(f'descendants must be a list of objects, got {type(kwargs["descendants"]).__name__}')
    if kwargs.get('features_only') and descendant is None:
        raise ValueError("features_only needs one descendant (its blocks are the features); pass descendant='s3' "
                         "or create a learngene_pool_s* model")
    # timm's factory kwargs: build on the device (meta included) and in the dtype asked for
    device, dtype = kwargs.pop('device', None), kwargs.pop('dtype', None)
    # build_model_with_cfg fills num_classes / in_chans from the pretrained cfg (1000 classes, RGB) when they are
    # not passed; for a pool those defaults come from its spec, so a spec with other classes is built as written.
    spec = PoolSpec.from_any(pool)
    kwargs.setdefault('num_classes', spec.num_classes)
    kwargs.setdefault('in_chans', spec.in_chans)
    kwargs.setdefault('img_size', spec.img_size)  # fixed_input_size makes timm pass the cfg's 224 otherwise
    file = None
    built = _apply_overrides(spec, kwargs['num_classes'], kwargs['img_size'], kwargs['in_chans'])
    if kwargs.get('pretrained_cfg') is None:  # the registry's cfg, written for deit_base_l6's 224 px RGB
        kwargs['pretrained_cfg_overlay'] = dict(spec_data_config(built), **(kwargs.get('pretrained_cfg_overlay') or {}))
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    check_pretrained_cfg({k: v for k, v in cfg.to_dict().items() if v is not None}, 'pretrained_cfg')
    if pretrained:
        # the checkpoint's header is checked against the spec before anything is built, so a config that
        # describes a far larger pool than its weights file holds fails here, not after allocating it
        file = pool_weights_file(cfg.to_dict(), cache_dir=cache_dir)
        route = None
        if descendant is not None:
            route = descendant.route if isinstance(descendant, DescendantInfo) else \
                find_descendant(built, descendant).route
        check_weights_file(file, spec, route)

    def construct(cls, **kw):
        # timm's builder calls this, then wraps the model for features_only: the weights go in before the wrapper
        # (and its pruning) exists, as timm's own pretrained loads do
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = cls(**kw)
        if dtype is not None:
            model = model.to(dtype=dtype)
        if pretrained:
            load_pool_weights(model, cfg.to_dict(), file=file)
        return model

    if descendant is None:
        model = build_model_with_cfg(partial(construct, LearngenePool), variant, pretrained=False, pool=pool,
                                     **kwargs)
    else:
        # features_only: timm's getter over forward_intermediates, as for its own ViTs
        out_indices = kwargs.pop('out_indices', 3)
        model = build_model_with_cfg(partial(construct, Descendant), variant, pretrained=False, pool=pool,
                                     descendant=descendant,
                                     feature_cfg=dict(out_indices=out_indices, feature_cls='getter'), **kwargs)
    return model


# No pretrained tag (``.in1k``): in timm a tag means published weights, and no pool is published yet. A pool
# saved with save_pool loads with 'local-dir:…' / 'hf-hub:…' or pretrained_cfg_overlay=dict(file=…).
# the whole pool's stems and heads are its members'
_pool_cfg = dict(first_conv=('members.tiny.patch_embed.proj', 'members.base.patch_embed.proj'),
                 classifier=('members.tiny.head', 'members.base.head'))
default_cfgs = {'learngene_pool': _cfg('deit_base_l6', **_pool_cfg),
                'learngene_pool_l9': _cfg('deit_base_l9', **_pool_cfg)}
default_cfgs.update({f'learngene_pool_s{i}': _cfg('deit_base_l6') for i in range(1, 19)})
default_cfgs.update({f'learngene_pool_l9_s{i}': _cfg('deit_base_l9') for i in range(1, 28)})
default_cfgs = generate_default_cfgs(default_cfgs)


@register_model
def learngene_pool(pretrained: bool = False, **kwargs) -> nn.Module:
    """The whole ``deit_base_l6`` pool (``forward(x, route)``); ``descendant='s3'`` returns that descendant.
    ``pool=`` takes any spec (a :class:`PoolSpec`, its dict, or a registered name)."""
    model_args = dict(pool=DEIT_BASE_L6)
    return _create_learngene_pool('learngene_pool', pretrained, **dict(model_args, **kwargs))


@register_model
def learngene_pool_l9(pretrained: bool = False, **kwargs) -> nn.Module:
    """The whole ``deit_base_l9`` pool."""
    model_args = dict(pool=DEIT_BASE_L9)
    return _create_learngene_pool('learngene_pool_l9', pretrained, **dict(model_args, **kwargs))


def _register_descendants(prefix: str, spec: PoolSpec, count: int) -> None:
    # Entrypoints are generated (45 of them) but registered exactly as a hand-written one would be.
    import sys
    module = sys.modules[__name__]
    for i in range(1, count + 1):
        name = f'{prefix}_s{i}'

        def entry(pretrained: bool = False, _name=name, _i=i, **kwargs) -> nn.Module:
            model_args = dict(pool=spec, descendant=f's{_i}')
            return _create_learngene_pool(_name, pretrained, **dict(model_args, **kwargs))

        entry.__name__ = entry.__qualname__ = name
        entry.__module__ = __name__
        entry.__doc__ = f'Descendant s{i} of the ``{spec.name}`` learngene pool.'
        setattr(module, name, entry)
        register_model(entry)


_register_descendants('learngene_pool', DEIT_BASE_L6, 18)
_register_descendants('learngene_pool_l9', DEIT_BASE_L9, 27)
