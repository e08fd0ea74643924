"""Pool specs, routes and the enumeration of descendants.

Everything here is plain data: a :class:`PoolSpec` round-trips through ``config.json`` and decides, without
building any module, which descendants a pool has, what they are called, and their params and GMACs.

A *route* is a tuple of segments ``(member, first_block, end_block)`` (end exclusive). ``(("tiny", 0, 4),
("base", 3, 6))`` runs the tiny member's embedding and blocks 0..3, one stitch layer, then the base member's
blocks 3..5, norm and head.
"""
import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import PoolSpecError, RouteError, UnknownDescendantError

__all__ = [
    'MemberSpec', 'DistillSpec', 'PoolSpec', 'DescendantInfo', 'Segment', 'Route',
    'validate_route', 'route_name', 'stitch_window', 'stitch_positions', 'enumerate_descendants',
    'get_pool_spec', 'list_pool_specs', 'register_pool_spec', 'default_matched_blocks',
]

Segment = Tuple[str, int, int]
Route = Tuple[Segment, ...]

_NAME_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_]*$')
# Sizes past these are almost certainly a corrupt or hostile config; refuse them before allocating anything.
_MAX_WIDTH = 16384
_MAX_DEPTH = 256
_MAX_MEMBERS = 16
_MAX_CLASSES = 100_000
_MAX_IMG = 8192
_MAX_GRID = 256  # patches per side: 4096 px at patch 16
_MAX_DESCENDANTS = 10_000
_MAX_PARAMS = 20_000_000_000  # stored parameters of one pool (80 GB in fp32); a ViT-22B ancestry fits under it


def _check_int(where: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PoolSpecError(f'{where} must be an integer, got {value!r} ({type(value).__name__})')
    if not lo <= value <= hi:
        raise PoolSpecError(f'{where} must be in [{lo}, {hi}], got {value}')
    return value


def default_matched_blocks(depth: int, n: int = 3) -> Tuple[int, ...]:
    """Blocks ``{D/n - 1, 2D/n - 1, ..., D - 1}`` (the paper's matched positions for n = 3)."""
    return tuple(sorted({max(0, round(depth * (i + 1) / n) - 1) for i in range(n)}))


@dataclass(frozen=True)
class MemberSpec:
    """One auxiliary model of the pool: a plain ViT of ``width`` channels, ``heads`` heads, ``depth`` blocks."""
    name: str
    width: int
    heads: int
    depth: int
    mlp_ratio: float = 4.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise PoolSpecError(
                f'member name {self.name!r} is invalid; use letters, digits and underscores, starting with a letter')
        _check_int(f'member {self.name!r} width', self.width, 1, _MAX_WIDTH)
        _check_int(f'member {self.name!r} heads', self.heads, 1, _MAX_WIDTH)
        _check_int(f'member {self.name!r} depth', self.depth, 1, _MAX_DEPTH)
        if self.width % self.heads:
            raise PoolSpecError(
                f'member {self.name!r}: width {self.width} is not divisible by heads {self.heads}')
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) \
                or not 0 < self.mlp_ratio <= 64:
            raise PoolSpecError(f'member {self.name!r}: mlp_ratio must be a number in (0, 64], got {self.mlp_ratio!r}')

    @property
    def hidden(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def label(self) -> str:
        return f'{self.name}{self.depth}'


@dataclass(frozen=True)
class DistillSpec:
    """Where the members are matched to the ancestry during distillation.

    ``member_blocks[p]`` of every member is matched to ``teacher_blocks[p]`` of the ancestry through a learnable
    ``Linear(member width -> teacher_width)`` per position and kind (block output, attention output).
    """
    teacher: str
    teacher_width: int
    teacher_depth: int
    member_blocks: Tuple[int, ...]
    teacher_blocks: Tuple[int, ...]

    def __post_init__(self):
        if not isinstance(self.teacher, str) or not self.teacher:
            raise PoolSpecError(f'distill.teacher must be a model name, got {self.teacher!r}')
        _check_int('distill.teacher_width', self.teacher_width, 1, _MAX_WIDTH)
        _check_int('distill.teacher_depth', self.teacher_depth, 1, _MAX_DEPTH)
        object.__setattr__(self, 'member_blocks', tuple(self.member_blocks))
        object.__setattr__(self, 'teacher_blocks', tuple(self.teacher_blocks))
        if len(self.member_blocks) != len(self.teacher_blocks) or not self.member_blocks:
            raise PoolSpecError(
                f'distill.member_blocks {list(self.member_blocks)} and distill.teacher_blocks '
                f'{list(self.teacher_blocks)} must be non-empty and of equal length (one teacher block per position)')
        for b in self.teacher_blocks:
            _check_int('distill.teacher_blocks entry', b, 0, self.teacher_depth - 1)


@dataclass(frozen=True)
class DescendantInfo:
    """A descendant of a pool: its name (``s3``), route, analytic size and cost, and measured metrics."""
    name: str
    route: Route
    params: int
    macs: int
    metrics: Dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def label(self) -> str:
        return self.route_label

    route_label: str = ''

    def to_dict(self) -> Dict[str, Any]:
        d = dict(name=self.name, route=[list(s) for s in self.route], label=self.route_label,
                 params=self.params, gmacs=round(self.gmacs, 4))
        d.update(self.metrics)
        return d


@dataclass(frozen=True)
class PoolSpec:
    """The shape of a learngene pool: its members (smallest first), input, classes, stitching and distillation."""
    name: str
    members: Tuple[MemberSpec, ...]
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    stitch_kernel: int = 2
    stitch_stride: int = 1
    distill: Optional[DistillSpec] = None
    two_way: bool = False  # also stitch each larger member into the next smaller one (large-front routes)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise PoolSpecError(f'pool name must be a non-empty string, got {self.name!r}')
        members = tuple(self.members)
        object.__setattr__(self, 'members', members)
        if not 1 <= len(members) <= _MAX_MEMBERS:
            raise PoolSpecError(f'a pool needs 1 to {_MAX_MEMBERS} members, got {len(members)}')
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise PoolSpecError(f'member names must be unique, got {names}')
        depths = {m.depth for m in members}
        if len(depths) != 1:
            raise PoolSpecError(
                f'all members must have the same depth, got {dict((m.name, m.depth) for m in members)}')
        for a, b in zip(members, members[1:]):
            if b.width < a.width:
                raise PoolSpecError(
                    f'members must be listed smallest first: {a.name!r} (width {a.width}) comes before '
                    f'{b.name!r} (width {b.width}); reorder them')
        _check_int('img_size', self.img_size, 1, _MAX_IMG)
        _check_int('patch_size', self.patch_size, 1, _MAX_IMG)
        _check_int('in_chans', self.in_chans, 1, 64)
        _check_int('num_classes', self.num_classes, 0, _MAX_CLASSES)
        _check_int('stitch_kernel', self.stitch_kernel, 1, _MAX_DEPTH)
        _check_int('stitch_stride', self.stitch_stride, 1, _MAX_DEPTH)
        if not isinstance(self.two_way, bool):
            raise PoolSpecError(f'two_way must be true or false, got {self.two_way!r}')
        if self.img_size % self.patch_size:
            raise PoolSpecError(f'img_size {self.img_size} is not a multiple of patch_size {self.patch_size}')
        if self.img_size // self.patch_size > _MAX_GRID:
            raise PoolSpecError(f'img_size {self.img_size} at patch_size {self.patch_size} gives a '
                                f'{self.img_size // self.patch_size}-patch-wide grid, more than {_MAX_GRID}')
        if self.distill is not None:
            for b in self.distill.member_blocks:
                _check_int('distill.member_blocks entry', b, 0, self.depth - 1)
        count = len(members) + len(self.pairs) * len(stitch_positions(self))
        if count > _MAX_DESCENDANTS:
            raise PoolSpecError(f'pool {self.name!r} would have {count:,} descendants, more than {_MAX_DESCENDANTS:,}; '
                                f'use fewer members or a smaller stitch_kernel')
        sizes = pool_params(self)
        total = sizes['pool'] + sizes['transforms']
        if total > _MAX_PARAMS:
            raise PoolSpecError(
                f'pool {self.name!r} would hold {total:,} parameters, more than the {_MAX_PARAMS:,} this library '
                f'builds; the spec (widths, depth, image or patch size) is corrupt or not meant for it')

    # ---- derived facts ------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self.members[0].depth

    @property
    def num_tokens(self) -> int:
        """Tokens per image: patches plus the class token."""
        return (self.img_size // self.patch_size) ** 2 + 1

    def member(self, name: str) -> MemberSpec:
        for m in self.members:
            if m.name == name:
                return m
        raise RouteError(f'unknown member {name!r}; this pool has {[m.name for m in self.members]}')

    def member_index(self, name: str) -> int:
        return [m.name for m in self.members].index(self.member(name).name)

    @property
    def pairs(self) -> List[Tuple[MemberSpec, MemberSpec]]:
        """Stitched (front, end) member pairs: nearest neighbours, smaller -> larger; with ``two_way`` also
        larger -> smaller (SN-Netv2's two-way stitching: large-front routes), after them."""
        up = list(zip(self.members, self.members[1:]))
        return up + [(b, a) for a, b in up] if self.two_way else up

    @property
    def num_windows(self) -> int:
        return len(_windows(self.depth, self.stitch_kernel, self.stitch_stride))

    def replace(self, **changes) -> 'PoolSpec':
        return dataclasses.replace(self, **changes)

    def same_weights_as(self, other: 'PoolSpec') -> Optional[str]:
        """``None`` when ``other`` stores the same tensors (names and shapes, up to classes and image size),
        else a sentence naming the first difference."""
        for f in ('members', 'patch_size', 'in_chans', 'stitch_kernel', 'stitch_stride', 'two_way'):
            a, b = getattr(self, f), getattr(other, f)
            if a != b:
                return f'{f} differ: {_short(a)} vs {_short(b)}'
        a = self.distill and (self.distill.teacher_width, self.distill.member_blocks)
        b = other.distill and (other.distill.teacher_width, other.distill.member_blocks)
        if a != b:
            return f'distillation transforms differ: {a} vs {b}'
        return None

    # ---- (de)serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d['members'] = [dataclasses.asdict(m) for m in self.members]
        if self.distill is not None:
            d['distill'] = dict(dataclasses.asdict(self.distill),
                                member_blocks=list(self.distill.member_blocks),
                                teacher_blocks=list(self.distill.teacher_blocks))
        if not self.two_way:
            del d['two_way']  # one-way pools keep the format earlier versions read
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> 'PoolSpec':
        if not isinstance(d, Mapping):
            raise PoolSpecError(f'a pool spec must be a mapping, got {type(d).__name__}')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise PoolSpecError(f'unknown pool spec fields {sorted(unknown)}; known fields are {sorted(known)}')
        for req in ('name', 'members'):
            if req not in d:
                raise PoolSpecError(f'pool spec is missing the required field {req!r}')
        kw = dict(d)
        members = kw['members']
        if not isinstance(members, (list, tuple)):
            raise PoolSpecError(f'pool spec "members" must be a list, got {type(members).__name__}')
        kw['members'] = tuple(_from_fields(MemberSpec, m, f'members[{i}]') for i, m in enumerate(members))
        if kw.get('distill') is not None:
            kw['distill'] = _from_fields(DistillSpec, kw['distill'], 'distill')
        return cls(**kw)

    @classmethod
    def from_any(cls, spec: Union['PoolSpec', Mapping[str, Any], str]) -> 'PoolSpec':
        """A spec from a PoolSpec, its dict form, a JSON string of it, or the name of a registered spec."""
        if isinstance(spec, PoolSpec):
            return spec
        if isinstance(spec, str):
            if spec.lstrip().startswith('{'):
                try:
                    return cls.from_dict(json.loads(spec))
                except json.JSONDecodeError as e:
                    raise PoolSpecError(f'pool spec JSON is malformed: {e}') from None
            return get_pool_spec(spec)
        return cls.from_dict(spec)


def _short(v):
    return [dataclasses.asdict(m) for m in v] if isinstance(v, tuple) and v and isinstance(v[0], MemberSpec) else v


def _from_fields(kind, d, where):
    if isinstance(d, kind):
        return d
    if not isinstance(d, Mapping):
        raise PoolSpecError(f'pool spec {where} must be a mapping, got {type(d).__name__}')
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = set(d) - known
    if unknown:
        raise PoolSpecError(f'unknown fields {sorted(unknown)} in pool spec {where}; known: {sorted(known)}')
    try:
        return kind(**d)
    except TypeError as e:
        raise PoolSpecError(f'pool spec {where} is incomplete: {e}') from None


# ---- stitching positions ----------------------------------------------------------------------------------
def _windows(depth: int, kernel: int, stride: int) -> List[Tuple[int, ...]]:
    """SN-Net's sliding windows over block indices, e.g. depth 4, kernel 2, stride 1 -> (0,1), (1,2), (2,3)."""
    out = []
    start = 0
    while True:
        win = tuple(range(start, min(start + kernel, depth)))
        out.append(win)
        if start + kernel >= depth:
            break
        start += stride
    return out


def stitch_positions(spec: PoolSpec) -> List[Tuple[int, int, int]]:
    """Every stitch position ``(j, k, window)`` of a member pair, in window order.

    ``j`` is the front member's last block, ``k`` the end member's first block; the position belongs to the
    first window holding both and uses that window's stitch layer. Kernel 2, stride 1 gives 3L-2 positions.
    """
    seen = set()
    out = []
    for w, win in enumerate(_windows(spec.depth, spec.stitch_kernel, spec.stitch_stride)):
        for j in win:
            for k in win:
                if (j, k) not in seen:
                    seen.add((j, k))
                    out.append((j, k, w))
    return out


def stitch_window(spec: PoolSpec, j: int, k: int) -> int:
    """Index of the stitch layer used between front block ``j`` and end block ``k``."""
    for jj, kk, w in stitch_positions(spec):
        if (jj, kk) == (j, k):
            return w
    valid = sorted((jj, kk) for jj, kk, _ in stitch_positions(spec))
    raise RouteError(
        f'no stitch layer joins front block {j} to end block {k}; with stitch kernel {spec.stitch_kernel} and '
        f'stride {spec.stitch_stride} the valid (last front block, first end block) pairs are {valid}')


# ---- routes -----------------------------------------------------------------------------------------------
def validate_route(spec: PoolSpec, route: Iterable[Sequence]) -> Route:
    """Check ``route`` against ``spec`` and return it as a tuple of ``(member, first, end)`` tuples.

    Raises :class:`RouteError` naming the problem: unknown member, a block range out of bounds, a stitch
    that skips a member or goes from a larger member to a smaller one (unless the pool is ``two_way``), or a
    stitch position with no layer.
    """
    try:
        segs = [tuple(s) for s in route]
    except TypeError:
        raise RouteError(f'a route is a list of (member, first_block, end_block) segments, got {route!r}') from None
    if not segs:
        raise RouteError('a route needs at least one (member, first_block, end_block) segment')
    out = []
    for i, s in enumerate(segs):
        if len(s) != 3 or not isinstance(s[0], str) or any(
                isinstance(v, bool) or not isinstance(v, int) for v in s[1:]):
            raise RouteError(f'route segment {i} must be (member: str, first_block: int, end_block: int), got {s!r}')
        name, a, b = s
        m = spec.member(name)
        if not 0 <= a < b <= m.depth:
            raise RouteError(
                f'route segment {i} {s!r}: blocks [{a}, {b}) are out of range for member {name!r}; '
                f'need 0 <= first < end <= {m.depth}')
        out.append((name, a, b))
    if out[0][1] != 0:
        raise RouteError(f'a route must start at block 0 of its first member (the embedding), got {out[0]!r}')
    if out[-1][2] != spec.depth:
        raise RouteError(
            f'a route must run to the last block of its last member (end_block {spec.depth}), got {out[-1]!r}')
    for (fa, _, fb), (ea, eb, _) in zip(out, out[1:]):
        fi, ei = spec.member_index(fa), spec.member_index(ea)
        if ei < fi and not spec.two_way:
            raise RouteError(
                f'route stitches {fa!r} into {ea!r}: stitches go from a smaller member to a larger one '
                f'(order: {[m.name for m in spec.members]}; a two_way pool also stitches larger -> smaller)')
        if abs(ei - fi) != 1:
            between = [m.name for m in spec.members[min(fi, ei) + 1:max(fi, ei)]]
            raise RouteError(
                f'route stitches {fa!r} into {ea!r}, skipping {between or "nothing"}; stitches join nearest '
                f'members only (order: {[m.name for m in spec.members]})')
        stitch_window(spec, fb - 1, eb)
    return tuple(out)


def route_name(spec: PoolSpec, route: Route) -> str:
    """Human-readable route, e.g. ``tiny6[0..4]->base6[5..5]`` (inclusive block ranges); a member alone is
    its label, e.g. ``tiny6``."""
    if len(route) == 1:
        return spec.member(route[0][0]).label
    return '->'.join(f'{spec.member(n).label}[{a}..{b - 1}]' for n, a, b in route)


# ---- analytic size and cost -------------------------------------------------------------------------------
def _block_params(m: MemberSpec) -> int:
    d, h = m.width, m.hidden
    return (d * 3 * d + 3 * d) + (d * d + d) + 4 * d + (d * h + h) + (h * d + d)


def _block_macs(m: MemberSpec, n: int) -> int:
    d, h = m.width, m.hidden
    return n * (3 * d * d + d * d + 2 * d * h) + 2 * n * n * d


def route_params(spec: PoolSpec, route: Route) -> int:
    """Parameters a descendant holds: front embedding, its blocks, stitch layers, end norm and head."""
    front, end = spec.member(route[0][0]), spec.member(route[-1][0])
    p = spec.patch_size
    total = (spec.in_chans * p * p * front.width + front.width) + front.width + spec.num_tokens * front.width
    for name, a, b in route:
        total += (b - a) * _block_params(spec.member(name))
    for (fa, _, _), (ea, _, _) in zip(route, route[1:]):
        df, de = spec.member(fa).width, spec.member(ea).width
        total += df * de + de
    total += 2 * end.width
    if spec.num_classes:
        total += end.width * spec.num_classes + spec.num_classes
    return total


def route_macs(spec: PoolSpec, route: Route) -> int:
    """Multiply-adds of one image through the descendant (linear, conv and attention matmuls; LayerNorm,
    softmax and GELU excluded, as fvcore and the paper count)."""
    front, end = spec.member(route[0][0]), spec.member(route[-1][0])
    n = spec.num_tokens
    p = spec.patch_size
    total = (n - 1) * spec.in_chans * p * p * front.width
    for name, a, b in route:
        total += (b - a) * _block_macs(spec.member(name), n)
    for (fa, _, _), (ea, _, _) in zip(route, route[1:]):
        total += n * spec.member(fa).width * spec.member(ea).width
    total += end.width * spec.num_classes
    return total


def member_params(spec: PoolSpec, name: str) -> int:
    return route_params(spec, ((name, 0, spec.depth),))


def pool_params(spec: PoolSpec) -> Dict[str, int]:
    """Stored parameter counts: ``members`` + ``stitches`` (the pool proper) and the distillation ``transforms``."""
    members = sum(member_params(spec, m.name) for m in spec.members)
    stitches = sum(spec.num_windows * (a.width * b.width + b.width) for a, b in spec.pairs)
    transforms = 0
    if spec.distill is not None:
        tw = spec.distill.teacher_width
        transforms = sum(2 * len(spec.distill.member_blocks) * (m.width * tw + tw) for m in spec.members)
    return dict(members=members, stitches=stitches, pool=members + stitches, transforms=transforms)


def enumerate_descendants(spec: PoolSpec, metrics: Optional[Mapping[str, Mapping[str, float]]] = None
                          ) -> List[DescendantInfo]:
    """All descendants of ``spec``, ranked by MACs ascending (ties by params) and named ``s1..sN``.

    Every member alone, plus for each stitched pair (:attr:`PoolSpec.pairs`: nearest members, smaller -> larger,
    and with ``two_way`` also larger -> smaller) every stitch position.
    ``metrics`` maps a descendant name to measured values (e.g. ``{'top1': 81.2}``) kept on its info.
    """
    return [DescendantInfo(name=name, route=r, params=params, macs=macs,
                           metrics=dict((metrics or {}).get(name, {})), route_label=label)
            for name, r, params, macs, label in _ranked(spec)]


@functools.lru_cache(maxsize=64)
def _ranked(spec: PoolSpec) -> Tuple[Tuple[str, Route, int, int, str], ...]:
    # Cached per (frozen, hashable) spec: pool(x, route) looks descendants up on every training step.
    routes: List[Route] = [((m.name, 0, spec.depth),) for m in spec.members]
    for a, b in spec.pairs:
        for j, k, _ in stitch_positions(spec):
            routes.append(((a.name, 0, j + 1), (b.name, k, spec.depth)))
    ranked = sorted(routes, key=lambda r: (route_macs(spec, r), route_params(spec, r)))
    return tuple((f's{i + 1}', r, route_params(spec, r), route_macs(spec, r), route_name(spec, r))
                 for i, r in enumerate(ranked))


def find_descendant(spec: PoolSpec, name_or_route, metrics=None) -> DescendantInfo:
    """The descendant named ``name_or_route`` (``'s3'``), or the one running that route."""
    infos = enumerate_descendants(spec, metrics)
    if isinstance(name_or_route, str):
        for info in infos:
            if info.name == name_or_route:
                return info
        raise UnknownDescendantError(
            f'unknown descendant {name_or_route!r}; pool {spec.name!r} has s1..s{len(infos)}')
    route = validate_route(spec, name_or_route)
    for info in infos:
        if info.route == route:
            return info
    raise RouteError(f'route {list(route)} is valid but not one of pool {spec.name!r} descendants')


# ---- registered specs -------------------------------------------------------------------------------------
_SPECS: Dict[str, PoolSpec] = {}


def register_pool_spec(spec: PoolSpec) -> PoolSpec:
    _SPECS[spec.name] = spec
    return spec


def get_pool_spec(name: str) -> PoolSpec:
    if name not in _SPECS:
        raise PoolSpecError(f'unknown pool spec {name!r}; registered specs are {sorted(_SPECS)}')
    return _SPECS[name]


def list_pool_specs() -> List[str]:
    return sorted(_SPECS)


def _deit_base_pool(depth: int) -> PoolSpec:
    return PoolSpec(
        name=f'deit_base_l{depth}',
        members=(MemberSpec('tiny', 192, 3, depth), MemberSpec('base', 768, 12, depth)),
        distill=DistillSpec(
            teacher='deit_base_patch16_224', teacher_width=768, teacher_depth=12,
            member_blocks=default_matched_blocks(depth), teacher_blocks=default_matched_blocks(12)),
    )


DEIT_BASE_L6 = register_pool_spec(_deit_base_pool(6))
DEIT_BASE_L9 = register_pool_spec(_deit_base_pool(9))
SNNET_DEIT = register_pool_spec(PoolSpec(
    name='snnet_deit',
    members=(MemberSpec('tiny', 192, 3, 12), MemberSpec('small', 384, 6, 12), MemberSpec('base', 768, 12, 12)),
))
# A scaled-down analogue of deit_base_l6 that trains on a 2-core CPU: Fashion-MNIST at 32 px, patch 8, one
# channel; ancestry = a 192-wide, 3-head, 12-block ViT (recipes/configs/fashion_mnist_ancestry.yaml); members keep
# DeiT's head width of 64 (tiny 64/1 head, base 192/3 heads).
FASHION_MNIST_L6 = register_pool_spec(PoolSpec(
    name='fashion_mnist_l6',
    members=(MemberSpec('tiny', 64, 1, 6), MemberSpec('base', 192, 3, 6)),
    img_size=32, patch_size=8, in_chans=1, num_classes=10,
    distill=DistillSpec(teacher='fashion_mnist_ancestry', teacher_width=192, teacher_depth=12,
                        member_blocks=default_matched_blocks(6), teacher_blocks=default_matched_blocks(12)),
))
# fashion_mnist_l6 with a middle member, so no stitch spans more than 2x in width (64 -> 128 -> 192; the pool above
# stitches 64 -> 192 in one step): 35 descendants. Screened in docs/stitching.md section 7 (issue 28).
FASHION_MNIST_L6_MID = register_pool_spec(FASHION_MNIST_L6.replace(
    name='fashion_mnist_l6_mid',
    members=(MemberSpec('tiny', 64, 1, 6), MemberSpec('mid', 128, 2, 6), MemberSpec('base', 192, 3, 6)),
))
# fashion_mnist_l6_mid with a 96-wide member as well (2 heads of 48), so every direct student of the replication
# below 160 wide has a member at its width and no stitch spans more than 1.5x (64 -> 96 -> 128 -> 192): 52
# descendants. Screened in docs/stitching.md section 7 (issue 28).
FASHION_MNIST_L6_W4 = register_pool_spec(FASHION_MNIST_L6.replace(
    name='fashion_mnist_l6_w4',
    members=(MemberSpec('tiny', 64, 1, 6), MemberSpec('small', 96, 2, 6), MemberSpec('mid', 128, 2, 6),
             MemberSpec('base', 192, 3, 6)),
))
