"""PC-DARTS (Xu et al. 2019; the paper's Eq. 3): edge normalisation over every parent.

``x_j = sum_i softmax(gamma_{:,j})_i * MixedOp_ij(x_i)``: every candidate edge runs. A derived
node keeps the ``min(top_k, j)`` parents of largest ``softmax(gamma)_i * op_strength_i``, a DAG.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from nas_search.strategies.base import EdgeFn, NodeSampler, SearchStrategy, register_strategy

if TYPE_CHECKING:
    from torch import Tensor


@register_strategy
class PCDarts(SearchStrategy):
    """Eq. 3: the edge-normalised sum of all incoming edges; top-``k`` parents derived."""

    name = "pcdarts"

    def node_forward(self, gamma: Tensor, edge: EdgeFn, sampler: NodeSampler) -> Tensor:
        w = gamma.softmax(dim=0)
        return sum(w[i] * edge(i) for i in range(len(gamma)))

    def derive_parents(self, gamma: Tensor, op_strength: Sequence[float],
                       top_k: int) -> list[int]:
        """Ties go to the lower parent."""
        p = gamma.softmax(dim=0).tolist()
        strength = [p[i] * op_strength[i] for i in range(len(p))]
        return sorted(sorted(range(len(p)), key=lambda i: -strength[i])[:top_k])
