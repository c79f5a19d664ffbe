"""The generic genotype data model: what a search emits and a derivation consumes.

Node numbering inside a cell: node 0 is the cell input, intermediate nodes are 1..n. Node ``j``
may take parents from ``0..j-1``. How many edges a node has is the rule of the search strategy
``meta.mode`` names (``nas_search.strategies``: one for ``top1_tree``, a tree rooted at node 0;
up to ``top_k`` for ``pcdarts``, a DAG).

Output of a cell (the paper's Sec. 3.2): ``cat_all`` concatenates every intermediate node,
``cat_leaf`` only the leaves (intermediate nodes that no other node takes as a parent).

What a search space adds (fixed cell names, further parts such as AutoFEM's FPN, stored in
``sections``) is its registered schema's (:mod:`genotypes.spaces`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

GENOTYPE_VERSION = 1

ConcatMode = Literal["cat_all", "cat_leaf"]

CONCAT_MODES: tuple[str, ...] = ("cat_all", "cat_leaf")


@dataclass(frozen=True)
class Edge:
    """One chosen edge of a cell: ``op`` applied to node ``parent``."""

    parent: int
    op: str


@dataclass(frozen=True)
class NodeGenotype:
    """The incoming edges of one intermediate node (one for a tree, top-k for a DAG)."""

    edges: tuple[Edge, ...]

    @property
    def parents(self) -> tuple[int, ...]:
        return tuple(e.parent for e in self.edges)


@dataclass(frozen=True)
class CellGenotype:
    """A derived cell: its intermediate nodes (1..n, in order) and its output rule."""

    nodes: tuple[NodeGenotype, ...]
    concat: ConcatMode = "cat_leaf"

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def leaves(self) -> tuple[int, ...]:
        """Intermediate nodes (1-based) that no other node uses as a parent."""
        used = {p for node in self.nodes for p in node.parents}
        return tuple(j for j in range(1, self.n_nodes + 1) if j not in used)

    @property
    def output_nodes(self) -> tuple[int, ...]:
        """The nodes concatenated into the cell output, per ``concat``."""
        return self.leaves if self.concat == "cat_leaf" else tuple(range(1, self.n_nodes + 1))


@dataclass
class GenotypeMeta:
    """Provenance of a genotype. Every field is optional except what the validator needs;
    ``search_space`` names a search space with a registered schema (:mod:`genotypes.spaces`),
    ``mode`` the registered search strategy that derived the cells."""

    search_space: str = ""
    op_set: str = ""
    mode: str = ""
    nodes: int | None = None
    partial_channels_k: int | None = None
    seed: int | None = None
    dataset: str = ""
    epochs: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    toolkit_version: str = ""
    created: str = ""
    note: str = ""


@dataclass
class Genotype:
    """A whole searched architecture: named cells, the sections of its search space's schema
    (by file key, e.g. AutoFEM's ``fpn``; :mod:`genotypes.spaces`), metadata.

    A generic task names its cells freely; a search space's schema may fix the names (AutoFEM:
    one cell per pyramid level).
    """

    cells: dict[str, CellGenotype] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    meta: GenotypeMeta = field(default_factory=GenotypeMeta)
    version: int = GENOTYPE_VERSION
