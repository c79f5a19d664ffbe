"""AutoFEM search spaces (Sec. 3.2): op sets S_FPN / S_CPM, FPN and CPM supernets, baselines.

Importing the package registers the genotype schemas of its search spaces
(:mod:`search_spaces.schemas`, no torch), so that their genotype files load. The names below
import on first use; importing :mod:`search_spaces.ops` (which every module building a network
does) registers the candidate ops and op sets with ``nas_search.registry``, and the modules
register their feature modules (:func:`search_spaces.baselines.register_feature_module`).
"""
from nas_search.runtime.lazy import lazy_exports
from search_spaces import schemas  # noqa: F401  (registers the genotype schemas)

__getattr__, __all__ = lazy_exports(__name__, {
    "baselines": ("build_feature_module", "list_feature_modules", "register_feature_module"),
    "cpm": ("AutoFEMCPM", "AutoFEMCPMSearch"),
    "fpn": ("AutoFEMFPN", "AutoFEMFPNSearch"),
})
