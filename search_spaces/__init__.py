"""AutoFEM search spaces (Sec. 3.2): op sets S_FPN / S_CPM, FPN and CPM supernets, baselines.

Importing the package registers the candidate ops and op sets with ``nas_search.registry`` and
the feature modules with :func:`search_spaces.baselines.register_feature_module`.
"""
from search_spaces import ops
from search_spaces.baselines import (
    build_feature_module, list_feature_modules, register_feature_module,
)
from search_spaces.cpm import AutoFEMCPM, AutoFEMCPMSearch
from search_spaces.fpn import AutoFEMFPN, AutoFEMFPNSearch
