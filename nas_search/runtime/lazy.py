"""Lazy re-exports for package ``__init__`` files (PEP 562): a name's module is imported on
first use, so that importing one light module of a package (e.g. the WIDER FACE parser for
``asfd eval-preds``) does not import torch through its siblings."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``, re-exporting ``exports[module]`` names from
    ``package.module``."""
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{home[name]}"), name)

    return __getattr__, list(home)
