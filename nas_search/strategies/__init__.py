"""Search strategies, one file per algorithm, registered by name.

A strategy is a :class:`~nas_search.strategies.base.SearchStrategy` subclass decorated with
:func:`register_strategy`; :class:`~nas_search.cell.SearchCell` (and the AutoFEM-FPN search)
take one by name or as an object. Importing this package registers ``pcdarts`` (Eq. 3) and
``top1_tree`` (Eq. 4-5).
"""
from nas_search.strategies.base import (
    STRATEGIES, EdgeFn, NodeSampler, SearchStrategy, get_strategy, list_strategies,
    register_strategy, strategy_problems, validate_for_strategy,
)
from nas_search.strategies import pcdarts, top1_tree  # noqa: F401  (registers the two)
