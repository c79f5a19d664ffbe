"""AutoFEM-CPM (Sec. 3.2): one searched context cell per pyramid level, with its own architecture.

The paper searches "Context Prediction Modules for each pyramid level so as to suit the specific
receptive fields": each level gets a :class:`nas_search.cell.SearchCell` over ``S_CPM`` with its
own ``arch_alpha`` / ``arch_gamma``, searched by a registered strategy (``pcdarts``, Eq. 3, or
the top-1 Gumbel tree ``top1_tree``, Eq. 4-5), and derives to its own
:class:`~genotypes.schema.CellGenotype`. The cells report their own ``arch_weights`` to the
enclosing :class:`~nas_search.supernet.Supernet`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from genotypes.schema import CellGenotype, ConcatMode, Genotype
from nas_search.cell import FixedCell, SearchCell
from nas_search.registry import get_op_set
from nas_search.strategies import SearchStrategy
from search_spaces.baselines import PerLevel, register_feature_module
from search_spaces.schemas import LEVELS


class AutoFEMCPMSearch(PerLevel):
    """The AutoFEM-CPM supernet: a ``SearchCell`` of ``n_nodes`` nodes over ``op_set`` per level."""

    blocks: Mapping[str, SearchCell]

    def __init__(self, channels: int, n_nodes: int = 6,
                 strategy: str | SearchStrategy = "top1_tree", concat: ConcatMode = "cat_leaf",
                 k: int = 4, op_set: str = "S_CPM", levels: Sequence[str] = LEVELS,
                 op_sampling: bool = False) -> None:
        op_names = get_op_set(op_set)
        super().__init__(channels, {
            lv: SearchCell(channels, n_nodes, op_names, strategy, concat, k, op_sampling)
            for lv in levels
        })
        self.op_set = op_set

    @torch.no_grad()
    def derive(self, top_k: int = 2) -> dict[str, CellGenotype]:
        """Each level's derived cell, by its strategy (``top1_tree``: a tree; ``pcdarts``: a
        top-``top_k`` DAG)."""
        return {lv: cell.derive(top_k) for lv, cell in self.blocks.items()}


class AutoFEMCPM(PerLevel):
    """The derived AutoFEM-CPM: a ``FixedCell`` per level from ``cells`` (keyed by level)."""

    blocks: Mapping[str, FixedCell]

    def __init__(self, channels: int, cells: Mapping[str, CellGenotype],
                 levels: Sequence[str] = LEVELS) -> None:
        missing = [lv for lv in levels if lv not in cells]
        if missing:
            raise ValueError(f"AutoFEM-CPM genotype has no cell for levels {missing} "
                             f"(has {sorted(cells)})")
        super().__init__(channels, {lv: FixedCell(channels, cells[lv]) for lv in levels})

    @torch.no_grad()
    def load_from_search(self, search: AutoFEMCPMSearch) -> None:
        """Inherit every level's chosen ops and projection from a ``k = 1`` supernet
        (:meth:`FixedCell.from_search_cell`)."""
        if search.levels != self.levels:
            raise ValueError(f"supernet levels {search.levels} differ from {self.levels}")
        for lv, block in self.blocks.items():
            inherited = FixedCell.from_search_cell(search.blocks[lv], block.genotype)
            block.load_state_dict(inherited.state_dict())


@register_feature_module("autofem_cpm")
def autofem_cpm(channels: int, genotype: Genotype, levels: Sequence[str] = LEVELS) -> AutoFEMCPM:
    """The derived AutoFEM-CPM of a whole ``Genotype`` (its per-level ``cells``)."""
    return AutoFEMCPM(channels, genotype.cells, levels)
