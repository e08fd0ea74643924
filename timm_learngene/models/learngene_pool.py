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
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models._input import update_model_input_size
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from ..data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from ..errors import PoolSpecError
from ..pool_format import (
    FORMAT_VERSION, check_format_version, check_model_args, check_pretrained_cfg, descendant_metrics,
)
from ..pool_reader import check_weights_file, load_pool_weights, pool_weights_file
from ..spec import (
    DEIT_BASE_L6, DEIT_BASE_L9, DescendantInfo, PoolSpec, Route, enumerate_descendants, find_descendant,
    stitch_window,
)

from .parts import (
    Member, TimmModelAPI, _apply_overrides, _init_linear, _new_head, _pool_key_prefixes, _resized, _resized_spec,
    _stitch_after,
)
from .descendant import Descendant

__all__ = ['Member', 'LearngenePool', 'Descendant', 'FORMAT_VERSION', 'HUB_REPOS']

HUB_REPOS = {
    'deit_base_l6': 'timm-learngene/learngene-pool-deit-base-l6',
    'deit_base_l9': 'timm-learngene/learngene-pool-deit-base-l9',
}


class LearngenePool(TimmModelAPI, nn.Module):
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
    def add_two_way_stitches(self) -> int:
        """Make the pool two-way (SN-Netv2's two-way stitching, spec ``two_way``): one stitch layer per window for
        every nearest member pair larger -> smaller, so the large-front routes become descendants too. The new
        layers start at timm's init (give them a stitch init before use); every existing tensor is kept. The
        descendants are ranked and named again (s1..sN over more routes), so the measured metrics, keyed by name,
        are dropped. Returns how many stitch layers were added (0 for a pool that is two-way already)."""
        spec = self.pool_spec
        if spec.two_way:
            return 0
        two = spec.replace(two_way=True)  # checked like any spec: the descendant count and the size limits
        like = next(iter(self.stitches.values()))[0].weight if len(self.stitches) else None
        added = 0
        for a, b in two.pairs[len(spec.pairs):]:
            layers = nn.ModuleList([nn.Linear(a.width, b.width) for _ in range(two.num_windows)])
            layers.apply(_init_linear)
            self.stitches[f'{a.name}-{b.name}'] = layers if like is None else layers.to(like.device, like.dtype)
            added += len(layers)
        self.pool_spec = two
        self.metrics = {}
        self._drop_views()
        return added

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
