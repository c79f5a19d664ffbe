"""The paper's top-1 Gumbel tree (Eq. 4-5): one sampled parent per node.

In training mode node ``j`` draws one parent ``i`` by a hard Gumbel-softmax of
``gamma_{:,j}`` and only ``MixedOp_ij`` runs: ``x_j = G(gamma_{:,j})_i * MixedOp_ij(x_i)``, a
forward weight of exactly 1 and a gradient scaled by the parent count ``j`` (Eq. 5). In eval
mode the argmax parent runs. A derived node keeps its argmax parent: the cell is a tree.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from nas_search.strategies.base import EdgeFn, NodeSampler, SearchStrategy, register_strategy

if TYPE_CHECKING:
    from torch import Tensor


@register_strategy
class Top1Tree(SearchStrategy):
    """Eq. 4-5: ``n`` of the ``n(n+1)/2`` edges run per forward; one edge per derived node."""

    name = "top1_tree"
    samples_path = True
    edges_per_node = 1

    def node_forward(self, gamma: Tensor, edge: EdgeFn, sampler: NodeSampler) -> Tensor:
        if not sampler.training:
            return edge(int(gamma.argmax()))
        w, i = sampler.gumbel_sample(gamma)  # length-scaled straight-through gradient (Eq. 5)
        return sampler.scale_by_sample(w[i], edge(i))  # saves one tensor per node

    def derive_parents(self, gamma: Tensor, op_strength: Sequence[float],
                       top_k: int) -> list[int]:
        return [int(gamma.argmax())]
