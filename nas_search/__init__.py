"""Generic differentiable architecture search engine: search cells run by registered search
strategies (:mod:`nas_search.strategies`), supernets and the bilevel search loop.

The names below import on first use, so that light readers of the package (the strategy
registry, read by ``asfd genotypes validate`` and the CLI's choices) do not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module defining it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("FixedCell", "SearchCell"), "nas_search.cell"),
    **dict.fromkeys(("hard_gumbel_softmax", "linear_temperature"), "nas_search.gumbel"),
    **dict.fromkeys(("MixedOp", "channel_shuffle", "channel_unshuffle"), "nas_search.mixed_op"),
    **dict.fromkeys(("build_op", "get_op_set", "register_op", "register_op_set"),
                    "nas_search.registry"),
    "NonFiniteLossError": "nas_search.runtime",
    **dict.fromkeys(("SearchConfig", "SearchResult", "search"), "nas_search.search"),
    **dict.fromkeys(("SearchStrategy", "get_strategy", "list_strategies", "register_strategy"),
                    "nas_search.strategies"),
    "Supernet": "nas_search.supernet",
    "SearchTask": "nas_search.task",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas_search' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
