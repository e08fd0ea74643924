"""Tiny pool specs shared by the tests.

Members are 16 wide (2 heads) and 32 wide (4 heads) on 32 px images with 8 px patches (17 tokens), so every
model in the suite builds and runs in milliseconds. Depths 6 and 9 match the registered ``deit_base_l6`` and
``deit_base_l9`` pools, so every registered entrypoint can be built at tiny size with ``pool=``.
"""
import os

import pytest
import torch

from timm_learngene import DistillSpec, MemberSpec, PoolSpec
from timm_learngene.spec import default_matched_blocks

NUM_CLASSES = 5
IMG = 32
PATCH = 8

# The models here are a few thousand FLOPs per op; with more than one intra-op thread the OpenMP hand-off costs
# far more than the work (100x slower on a 2-core runner).
torch.set_num_threads(1)

# Recipes default to mixed_precision auto, which times fp32 against bf16 on the actual model (tens of seconds on a
# CPU without bf16). Tests take accelerate launch's way of fixing it; tests/test_precision.py covers the probe.
os.environ.setdefault('ACCELERATE_MIXED_PRECISION', 'no')


def tiny_spec(depth: int = 6, name: str = None, widths=((16, 2), (32, 4)), names=('tiny', 'base'),
              distill: bool = True, **kw) -> PoolSpec:
    """A pool of ``len(widths)`` members of depth ``depth``; with ``distill`` it also stores transforms."""
    members = tuple(MemberSpec(n, w, h, depth) for n, (w, h) in zip(names, widths))
    d = None
    if distill:
        d = DistillSpec(teacher='vit_tiny_test', teacher_width=48, teacher_depth=12,
                        member_blocks=default_matched_blocks(depth), teacher_blocks=default_matched_blocks(12))
    args = dict(name=name or f'tiny_l{depth}', members=members, img_size=IMG, patch_size=PATCH,
                num_classes=NUM_CLASSES, distill=d)
    args.update(kw)
    return PoolSpec(**args)


@pytest.fixture(scope='session')
def tiny6() -> PoolSpec:
    return tiny_spec(6)


@pytest.fixture(scope='session')
def tiny9() -> PoolSpec:
    return tiny_spec(9)


@pytest.fixture(scope='session')
def tiny3m() -> PoolSpec:
    """Three members (tiny -> small -> base), so a route can skip one."""
    return tiny_spec(4, name='tiny3m', widths=((16, 2), (24, 3), (32, 4)), names=('tiny', 'small', 'base'),
                     distill=False)


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, IMG, IMG, generator=g)


@pytest.fixture(autouse=True)
def _curves_only_where_checked(request, monkeypatch):
    """A training run ends by drawing its loss/lr curves (``curves.png``, matplotlib, ~0.2 s); the suite runs ~80
    tiny runs in this process, so the figure is drawn only in tests marked ``curves`` (the ones that check it).
    Runs the tests start as subprocesses still draw it."""
    if request.node.get_closest_marker('curves') is None:
        monkeypatch.setattr('timm_learngene.training.loop.plot_log', lambda log_file, path=None: None)
