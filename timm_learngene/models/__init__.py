from .learngene_pool import Descendant, LearngenePool, Member, FORMAT_VERSION, HUB_REPOS

__all__ = ['Descendant', 'LearngenePool', 'Member', 'FORMAT_VERSION', 'HUB_REPOS']
