"""Search cells (run by a registered search strategy) and the derived fixed cell.

Node 0 is the cell input, nodes ``1..n`` are intermediate; node ``j`` may take any ``i < j`` as a
parent, so a cell has ``n(n+1)/2`` candidate edges. Edges are numbered node by node, parents in
order (:func:`edge_index`), and both architecture tensors follow that numbering:

* ``arch_alpha`` ``(n_edges, n_ops)``: op logits of every edge's :class:`MixedOp`;
* ``arch_gamma`` ``(n_edges,)``: parent logits; node ``j``'s vector ``gamma_{:,j}`` is the slice
  of its ``j`` incoming edges (:func:`node_edges`).

Both are initialised ``1e-3 * randn`` as in PC-DARTS.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genotypes.schema import CONCAT_MODES, CellGenotype, ConcatMode, Edge, Genotype, NodeGenotype
from genotypes.validate import NO_LIMITS, validate_genotype
from nas_search.gumbel import GumbelSampled
from nas_search.mixed_op import MixedOp
from nas_search.registry import build_op, list_ops
from nas_search.strategies import SearchStrategy, get_strategy

#: Op names that stand for "no connection"; never chosen when a genotype is derived (DARTS).
NONE_OPS: frozenset[str] = frozenset({"none", "zero"})


def num_edges(n_nodes: int) -> int:
    """Candidate edges of a cell with ``n_nodes`` intermediate nodes: ``n(n+1)/2``."""
    return n_nodes * (n_nodes + 1) // 2


def edge_index(parent: int, node: int) -> int:
    """Row of edge ``parent -> node`` in ``arch_alpha`` / position in ``arch_gamma``."""
    if not 0 <= parent < node:
        raise ValueError(f"edge {parent}->{node}: a parent must precede its node")
    return node * (node - 1) // 2 + parent


def node_edges(node: int) -> slice:
    """The positions of node ``node``'s incoming edges (parents ``0..node-1``)."""
    return slice(edge_index(0, node), edge_index(0, node) + node)


def best_op(scores: Sequence[float], op_names: Sequence[str]) -> int:
    """Index of the op with the largest score (logit or probability) of an edge,
    :data:`NONE_OPS` excluded (DARTS derivation)."""
    allowed = [o for o, name in enumerate(op_names) if name not in NONE_OPS]
    if not allowed:
        raise ValueError(f"no op to derive: every candidate of {list(op_names)} is a none-op")
    return max(allowed, key=lambda o: scores[o])


class SlotProjection(nn.Module):
    """1x1 conv + BN from ``n_slots`` stacked ``channels``-wide slots back to ``channels``.

    ``forward(xs, slots)`` takes the tensors of the present slots only; it equals the projection
    of the full concatenation with every absent slot set to zero, computed without the zeros:
    the conv runs on the weight columns of the present slots. With autograd on it sums one conv
    per slot instead, so that the backward keeps the slot tensors themselves, never a
    concatenated copy (a top-1 tree node's tensor is kept anyway, see
    :func:`~nas_search.gumbel.scale_by_sample`); without, one conv on the concatenation.
    """

    def __init__(self, n_slots: int, channels: int):
        super().__init__()
        self.n_slots, self.channels = n_slots, channels
        self.conv = nn.Conv2d(n_slots * channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def columns(self, slot: int) -> Tensor:
        """The conv weight's input columns of ``slot``."""
        return self.conv.weight[:, slot * self.channels:(slot + 1) * self.channels]

    def slot_weight(self, slots: Sequence[int]) -> Tensor:
        """The conv weight restricted to the input columns of ``slots``."""
        if list(slots) == list(range(self.n_slots)):
            return self.conv.weight
        return torch.cat([self.columns(s) for s in slots], dim=1)

    def forward(self, xs: Sequence[Tensor], slots: Sequence[int]) -> Tensor:
        if not torch.is_grad_enabled():
            return self.bn(F.conv2d(torch.cat(list(xs), dim=1), self.slot_weight(slots)))
        first, *rest = [F.conv2d(x, self.columns(s)) for x, s in zip(xs, slots, strict=True)]
        return self.bn(sum(rest, start=first))


class SearchCell(GumbelSampled, nn.Module):
    """A supernet cell searched by a :class:`~nas_search.strategies.SearchStrategy`.

    The strategy (by registered name or as an object) gives each node's value from its parent
    logits ``gamma_{:,j}`` and the edges it runs (``pcdarts``: Eq. 3, every edge;
    ``top1_tree``: Eq. 4-5, one sampled edge per node), and the parents :meth:`derive` keeps.
    With ``op_sampling`` each executed edge also samples ONE op from ``softmax(alpha)`` (GDAS;
    no length scaling) instead of the weighted sum over ops; eval mode runs the argmax op.

    Output (our choice; the paper's supernet output is silent on this): a search-time cell keeps a
    FIXED output width whichever nodes are output. All ``n`` node slots are concatenated, the
    non-output slots being zero, and a 1x1 conv + BN projects back to ``channels``; the zeros are
    never materialised (:class:`SlotProjection`). Output nodes are all nodes for ``cat_all``; for
    ``cat_leaf`` the leaves of the sub-cell this forward ran (a strategy that ``samples_path``)
    or else of the current derived top-``top_k`` cell (:meth:`derive`). The derived
    :class:`FixedCell` concatenates its output nodes only; :meth:`FixedCell.from_search_cell`
    gives it the matching conv columns.

    ``last_path`` is the sub-cell the last forward ran, for a strategy that ``samples_path``
    (else None): per node the edges run, each with the op run alone (``op_sampling``) or else
    the argmax op.
    """

    def __init__(self, channels: int, n_nodes: int, op_names: Sequence[str],
                 strategy: str | SearchStrategy, concat: ConcatMode, k: int = 4,
                 op_sampling: bool = False, top_k: int = 2):
        super().__init__()
        if concat not in CONCAT_MODES:
            raise ValueError(f"SearchCell: unknown concat {concat!r}; "
                             f"expected one of {CONCAT_MODES}")
        if n_nodes < 1 or top_k < 1:
            raise ValueError(f"SearchCell: need n_nodes >= 1 and top_k >= 1, "
                             f"got {n_nodes}, {top_k}")
        self.strategy = get_strategy(strategy)
        self.channels, self.n_nodes, self.k = channels, n_nodes, k
        self.op_names: tuple[str, ...] = tuple(op_names)
        self.concat, self.op_sampling, self.top_k = concat, op_sampling, top_k
        n_edges = num_edges(n_nodes)
        self.edges = nn.ModuleList(MixedOp(channels, self.op_names, 1, k) for _ in range(n_edges))
        self.arch_alpha = nn.Parameter(1e-3 * torch.randn(n_edges, len(self.op_names)))
        self.arch_gamma = nn.Parameter(1e-3 * torch.randn(n_edges))
        self.project = SlotProjection(n_nodes, channels)
        self.last_path: CellGenotype | None = None

    def forward(self, x: Tensor) -> Tensor:
        states, ran = [x], []
        for j in range(1, self.n_nodes + 1):
            ran.append([])
            edge = functools.partial(self._run_edge, j, states, ran[-1])
            states.append(self.strategy.node_forward(self.arch_gamma[node_edges(j)], edge, self))
        self.last_path = self._path(ran) if self.strategy.samples_path else None
        if self.concat == "cat_all":
            outputs: Sequence[int] = range(1, self.n_nodes + 1)
        else:
            outputs = (self.last_path or self.derive(self.top_k)).leaves
        return self.project([states[j] for j in outputs], [j - 1 for j in outputs])

    def _run_edge(self, j: int, states: list[Tensor], ran: list[tuple[int, int | None]],
                  i: int) -> Tensor:
        """Run edge ``i -> j`` on ``states[i]``, noting ``(i, op run alone or None)`` in ``ran``."""
        y, op = self._edge(i, j, states[i])
        ran.append((i, op))
        return y

    def _path(self, ran: list[list[tuple[int, int | None]]]) -> CellGenotype:
        """The sub-cell of the edges ``ran`` per node, in parent order; an edge that ran every
        op is named by its argmax op."""
        nodes = []
        for j, edges in enumerate(ran, start=1):
            named = [Edge(i, self.op_names[op if op is not None else best_op(
                self.arch_alpha[edge_index(i, j)].tolist(), self.op_names)])
                for i, op in sorted(edges, key=lambda edge: edge[0])]
            nodes.append(NodeGenotype(tuple(named)))
        return CellGenotype(tuple(nodes), self.concat)

    def _edge(self, i: int, j: int, x: Tensor) -> tuple[Tensor, int | None]:
        """Run edge ``i -> j``; return its output and the op run alone (None: weighted sum)."""
        alpha, mixed = self.arch_alpha[edge_index(i, j)], self.edges[edge_index(i, j)]
        if not self.op_sampling:
            return mixed(x, torch.softmax(alpha, dim=0)), None
        if self.training:
            w, o = self.gumbel_sample(alpha, scale_by_length=False)
        else:
            o = best_op(alpha.tolist(), self.op_names)
            w = F.one_hot(torch.tensor(o, device=alpha.device), len(self.op_names)).to(alpha)
        return mixed(x, w, o), o

    @torch.no_grad()
    def derive(self, top_k: int = 2) -> CellGenotype:
        """The discrete cell: per edge the argmax op of softmax(alpha), none-ops excluded; per
        node the parents the strategy keeps (``top1_tree``: the argmax of gamma, a tree;
        ``pcdarts``: the ``min(top_k, j)`` of largest edge-normalised strength), in parent order.
        """
        alpha = torch.softmax(self.arch_alpha, dim=-1).tolist()
        ops = [best_op(row, self.op_names) for row in alpha]
        nodes = []
        for j in range(1, self.n_nodes + 1):
            strength = [alpha[edge_index(i, j)][ops[edge_index(i, j)]] for i in range(j)]
            parents = self.strategy.derive_parents(self.arch_gamma[node_edges(j)], strength,
                                                   top_k)
            nodes.append(NodeGenotype(tuple(
                Edge(i, self.op_names[ops[edge_index(i, j)]]) for i in parents)))
        return CellGenotype(tuple(nodes), self.concat)

    @torch.no_grad()
    def arch_weights(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{"alpha": {"i->j": {op: p}}, "gamma": {"node<j>": {"<i>": p}}}`` (softmaxes).

        For ``top1_tree``, softmax(gamma) is exactly the probability that the Gumbel argmax
        samples each parent.
        """
        alpha = torch.softmax(self.arch_alpha, dim=-1).tolist()
        out: dict[str, dict[str, dict[str, float]]] = {"alpha": {}, "gamma": {}}
        for j in range(1, self.n_nodes + 1):
            gamma = torch.softmax(self.arch_gamma[node_edges(j)], dim=0).tolist()
            out["gamma"][f"node{j}"] = {str(i): gamma[i] for i in range(j)}
            for i in range(j):
                out["alpha"][f"{i}->{j}"] = dict(zip(self.op_names, alpha[edge_index(i, j)]))
        return out

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, n_nodes={self.n_nodes}, "
                f"strategy={self.strategy.name}, concat={self.concat}, k={self.k}, "
                f"op_sampling={self.op_sampling}")


class FixedCell(nn.Module):
    """The derived cell: only the chosen ops, at full width; a node sums its incoming edges.

    The output concatenates ``genotype.output_nodes`` and projects them back to ``channels`` with
    a 1x1 conv + BN.
    """

    def __init__(self, channels: int, genotype: CellGenotype):
        super().__init__()
        validate_genotype(Genotype(cells={"cell": genotype}), known_ops=list_ops(),
                          limits=NO_LIMITS)
        self.channels, self.genotype = channels, genotype
        self.ops = nn.ModuleList(build_op(edge.op, channels, 1)
                                 for node in genotype.nodes for edge in node.edges)
        self.project = SlotProjection(len(genotype.output_nodes), channels)

    def forward(self, x: Tensor) -> Tensor:
        states, ops = [x], iter(self.ops)
        for node in self.genotype.nodes:
            first, *rest = [next(ops)(states[edge.parent]) for edge in node.edges]
            states.append(sum(rest, start=first))
        outputs = self.genotype.output_nodes
        return self.project([states[j] for j in outputs], range(len(outputs)))

    @classmethod
    def from_search_cell(cls, cell: SearchCell, genotype: CellGenotype) -> FixedCell:
        """A FixedCell of ``genotype`` inheriting ``cell``'s weights: each chosen op from its
        edge's MixedOp, the projection from the columns of the output slots (and the BN).

        Needs ``cell.k == 1`` (ops at full width). With ``op_sampling`` and
        ``genotype = cell.last_path`` the result reproduces the search cell's last forward
        exactly (same input, same BN mode).
        """
        if cell.k != 1:
            raise ValueError(f"from_search_cell: the search cell has partial channels k={cell.k}; "
                             "its ops are 1/k wide, only k=1 weights fit a fixed cell")
        if genotype.n_nodes != cell.n_nodes:
            raise ValueError(f"from_search_cell: genotype has {genotype.n_nodes} nodes, "
                             f"the cell {cell.n_nodes}")
        fixed = cls(cell.channels, genotype).to(cell.arch_alpha.device)
        ops = iter(fixed.ops)
        for j, node in enumerate(genotype.nodes, start=1):
            for edge in node.edges:
                if edge.op not in cell.op_names:
                    raise ValueError(f"from_search_cell: node {j} op {edge.op!r} is not a "
                                     f"candidate of the cell {list(cell.op_names)}")
                source = cell.edges[edge_index(edge.parent, j)].ops[cell.op_names.index(edge.op)]
                next(ops).load_state_dict(source.state_dict())
        with torch.no_grad():
            slots = [j - 1 for j in genotype.output_nodes]
            fixed.project.conv.weight.copy_(cell.project.slot_weight(slots))
        fixed.project.bn.load_state_dict(cell.project.bn.state_dict())
        return fixed
