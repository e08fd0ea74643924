"""pytest plugin that runs timm's own ``tests/test_models.py`` (from the timm sdist) over the learngene models.

Loaded with ``-p conftest_plugin`` (``make timm-tests``); timm's test file is never edited. It

- imports ``timm_learngene``, which registers the ``learngene_pool*`` models in timm's registry;
- files our models in timm's own filter lists, the way timm files its own ViTs: ``NON_STD_FILTERS`` gets
  ``learngene_pool*`` (a ViT's ``forward_features`` is ``B x N x D`` tokens, not the ``B x C x H x W`` map the
  standard cfg test asserts; timm lists ``vit_*``, ``deit*`` … there for the same reason) and
  ``FEAT_INTER_FILTERS`` gets the ``learngene_pool`` module (models with ``forward_intermediates`` and timm's
  feature-getter ``features_only``, tested by ``test_model_forward_intermediates*``). timm builds its test
  parameters from these lists through ``timm.list_models``; the plugin extends the lists where they reach it;
- excludes the whole-pool models (``learngene_pool``, ``learngene_pool_l9``) from the TorchScript tests (through
  ``EXCLUDE_JIT_FILTERS``: their ``forward(x, route)`` takes a route as a name, a list of tuples or a
  DescendantInfo, which TorchScript cannot type; script a descendant instead) and from the feature tests (the
  pool has no single stack of blocks to tap: its features are its descendants', ``features_only`` on a
  ``learngene_pool_s*`` model);
  The FX tests likewise (through ``EXCLUDE_FX_FILTERS``): FX records one graph, and the route that picks the
  graph is an input; trace a descendant, or the pool with ``concrete_args={'route': ...}``;
- skips, with the reason in the report, ``test_model_backward`` for the whole pools: a pool's forward runs one
  descendant, so the other member, the stitch layers and the distillation transforms get no gradient in that
  step (timm's test asks every parameter for one). timm has no filter list for the backward test alone;
- keeps only the tests of the models named by ``LEARNGENE_TIMM_MODELS`` (fnmatch patterns, comma separated;
  default every learngene model) and deselects the rest (timm's own models, model-independent tests).
"""
import fnmatch
import os

import timm
import timm_learngene  # noqa: F401  registers learngene_pool_* in timm's registry

OUR_NAMES = 'learngene_pool*'
OUR_MODULE = 'learngene_pool'
_timm_list_models = timm.list_models


def _is_non_std(filters) -> bool:
    # timm's NON_STD_FILTERS (and EXCLUDE_FEAT_FILTERS, a copy of it) are the lists that file its ViTs
    return isinstance(filters, (list, tuple)) and 'vit_*' in filters and 'deit*' in filters


def _is_feat_inter(modules) -> bool:
    return isinstance(modules, (list, tuple)) and 'vision_transformer' in modules


WHOLE_POOLS = ['learngene_pool', 'learngene_pool_l9']


def _is_jit_exclude(filters) -> bool:
    return isinstance(filters, (list, tuple)) and 'hrnet*' in filters and 'selecsls*' in filters


def _is_fx_exclude(filters) -> bool:
    return isinstance(filters, (list, tuple)) and 'vit_gi*' in filters and 'hiera*' in filters


def list_models(filter='', module='', *args, exclude_filters='', **kwargs):
    if _is_jit_exclude(exclude_filters) or _is_fx_exclude(exclude_filters) or _is_feat_inter(module):
        exclude_filters = [*exclude_filters, *WHOLE_POOLS]
    if _is_non_std(filter):
        filter = [*filter, OUR_NAMES]
    if _is_non_std(exclude_filters):
        exclude_filters = [*exclude_filters, OUR_NAMES]
    if _is_feat_inter(module):
        module = [*module, OUR_MODULE]
    return _timm_list_models(filter, module, *args, exclude_filters=exclude_filters, **kwargs)


list_models.__doc__ = _timm_list_models.__doc__
timm.list_models = list_models  # test_models does `from timm import list_models` when it is collected


def _patterns():
    return [p.strip() for p in os.environ.get('LEARNGENE_TIMM_MODELS', OUR_NAMES).split(',') if p.strip()]


def pytest_configure(config):
    for mark in ('timeout', 'cfg', 'cfg_nonstd', 'base', 'features', 'torchscript', 'fxforward', 'fxbackward'):
        config.addinivalue_line('markers', f'{mark}: timm test marker')


NOT_APPLICABLE = {
    'test_model_backward': (WHOLE_POOLS, 'a pool forward runs one descendant: the other member, the stitch layers '
                                         'and the transforms get no gradient in one step (README: timm tests)'),
}


def pytest_collection_modifyitems(config, items):
    import pytest
    keep, drop = [], []
    pats = _patterns()
    for item in items:
        callspec = getattr(item, 'callspec', None)
        name = callspec.params.get('model_name') if callspec is not None else None
        ours = isinstance(name, str) and any(fnmatch.fnmatch(name, p) for p in pats)
        (keep if ours else drop).append(item)
        rule = NOT_APPLICABLE.get(getattr(item, 'originalname', None))
        if ours and rule and name in rule[0]:
            item.add_marker(pytest.mark.skip(reason=f'{name}: {rule[1]}'))
    items[:] = keep
    if drop:
        config.hook.pytest_deselected(items=drop)
