"""A stitched descendant of a Learngene Pool: a plain timm-style ViT whose blocks change width once per stitch.

Built fresh by ``timm.create_model('learngene_pool_s3')``, or sharing a pool's modules through
:meth:`~timm_learngene.models.learngene_pool.LearngenePool.descendant`, in which case it and the pool's
``forward(x, route)`` run the same modules and agree bit for bit.
"""
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from timm.layers import PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models._features import feature_take_indices
from timm.models._input import update_model_input_size

from ..pool_format import descendant_metrics
from ..spec import DEIT_BASE_L6, DescendantInfo, PoolSpec, Route, find_descendant

from .parts import (
    TimmModelAPI, _apply_overrides, _block, _check_global_pool, _drop_path_rates, _init_linear, _new_head,
    _norm_layer, _pool_key_prefixes, _pool_tokens, _resized, _resized_spec, _stitch_after,
)


class Descendant(TimmModelAPI, nn.Module):
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
