"""timm-learngene: Learngene Pool (AAAI 2024) for timm.

``import timm_learngene`` registers the ``learngene_pool*`` models with timm.
"""
from .version import __version__
from .errors import (
    CheckpointError, FormatVersionError, LearngeneError, PoolSpecError, RouteError, UnknownDescendantError,
)
from .spec import (
    DescendantInfo, DistillSpec, MemberSpec, PoolSpec, enumerate_descendants, get_pool_spec, list_pool_specs,
    pool_params, register_pool_spec, route_name, validate_route,
)
from .pool_format import FORMAT_VERSION
from .pool_reader import descendant_table, load_pool_weights, read_pool_config
from .models import Descendant, LearngenePool, Member
from .pool_writer import load_pool, save_descendant, save_pool, update_pool_metrics
from .selection import BudgetError, select

__all__ = [
    '__version__', 'CheckpointError', 'FormatVersionError', 'LearngeneError', 'PoolSpecError', 'RouteError',
    'UnknownDescendantError', 'DescendantInfo', 'DistillSpec', 'MemberSpec', 'PoolSpec', 'enumerate_descendants',
    'get_pool_spec', 'list_pool_specs', 'pool_params', 'register_pool_spec', 'route_name', 'validate_route',
    'Descendant', 'LearngenePool', 'Member', 'FORMAT_VERSION', 'load_pool', 'load_pool_weights',
    'read_pool_config', 'save_descendant', 'save_pool', 'update_pool_metrics', 'BudgetError', 'select',
    'descendant_table',
]
from .hub import load_from_hub, push_to_hub, stage_for_hub

__all__ += ['load_from_hub', 'push_to_hub', 'stage_for_hub']
