"""pytest plugin that runs timm's own ``tests/test_models.py`` (from the timm sdist) over the learngene models.

Loaded with ``-p conftest_plugin`` (``make timm-tests``); timm's test file is never edited. It

- imports ``timm_learngene``, which registers the ``learngene_pool*`` models in timm's registry;
- files our models in timm's own filter lists, the way timm files its own ViTs: ``NON_STD_FILTERS`` gets
  ``learngene_pool*`` (a ViT's ``forward_features`` is ``B x N x D`` tokens, not the ``B x C x H x W`` map the
  standard cfg test asserts; timm lists ``vit_*``, ``deit*`` … there for the same reason) and
  ``FEAT_INTER_FILTERS`` gets the ``learngene_pool`` module (models with ``forward_intermediates`` and timm's
  feature-getter ``features_only``, tested by ``test_model_forward_intermediates*``). timm builds its test
  parameters from these lists through ``timm.list_models``; the plugin extends the lists where they reach it;
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


def list_models(filter='', module='', *args, exclude_filters='', **kwargs):
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


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    pats = _patterns()
    for item in items:
        callspec = getattr(item, 'callspec', None)
        name = callspec.params.get('model_name') if callspec is not None else None
        ours = isinstance(name, str) and any(fnmatch.fnmatch(name, p) for p in pats)
        (keep if ours else drop).append(item)
    items[:] = keep
    if drop:
        config.hook.pytest_deselected(items=drop)
