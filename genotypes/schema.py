"""The genotype data model: what a search emits and a derivation consumes.

Node numbering inside a cell: node 0 is the cell input, intermediate nodes are 1..n. Node ``j``
may take parents from ``0..j-1``. How many edges a node has is the rule of the search strategy
``meta.mode`` names (``nas_search.strategies``: one for ``top1_tree``, a tree rooted at node 0;
up to ``top_k`` for ``pcdarts``, a DAG).

Output of a cell (the paper's Sec. 3.2): ``cat_all`` concatenates every intermediate node,
``cat_leaf`` only the leaves (intermediate nodes that no other node takes as a parent).

Pyramid levels are named ``P2``..``P7`` (strides 4..128) throughout the codebase.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

GENOTYPE_VERSION = 1

ConcatMode = Literal["cat_all", "cat_leaf"]
FPNPath = Literal["same", "td", "bu"]
FPNPathway = Literal["recursive", "one_hop"]

CONCAT_MODES: tuple[str, ...] = ("cat_all", "cat_leaf")
FPN_PATHS: tuple[str, ...] = ("same", "td", "bu")
#: What the ``td`` / ``bu`` paths of AutoFEM-FPN read (Eq. 2, ``search_spaces.fpn``):
#: ``recursive`` the previous level's path feature (Fig. 3(d), PANet/BiFPN), ``one_hop`` the
#: neighbouring backbone map. Files written before the field existed hold ``one_hop`` networks.
FPN_PATHWAYS: tuple[str, ...] = ("recursive", "one_hop")
LEVELS: tuple[str, ...] = ("P2", "P3", "P4", "P5", "P6", "P7")


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


@dataclass(frozen=True)
class FPNLevelGenotype:
    """One AutoFEM-FPN level (Eq. 2): the op on each path present and the learned fusion weights.

    ``td`` is absent (None) at the top level P7 and ``bu`` at the bottom level P2. ``fusion`` holds
    softmax(beta) over the paths present, keyed by path name.
    """

    same: str
    td: str | None
    bu: str | None
    fusion: dict[str, float] = field(default_factory=dict)

    def paths(self) -> dict[str, str]:
        """The paths present at this level, ``{path: op}``, in the order same, td, bu."""
        ops = {"same": self.same, "td": self.td, "bu": self.bu}
        return {p: o for p, o in ops.items() if o is not None}


@dataclass(frozen=True)
class FPNGenotype:
    """The levels of an AutoFEM-FPN and the ``pathway`` its paths were searched with
    (:data:`FPN_PATHWAYS`; absent from older files, which read as ``one_hop``)."""

    levels: dict[str, FPNLevelGenotype]
    pathway: FPNPathway = "one_hop"


@dataclass
class GenotypeMeta:
    """Provenance of a genotype. Every field is optional except what the validator needs;
    ``mode`` is the registered name of the search strategy that derived the cells."""

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
    """A whole searched architecture: optional FPN part, named cells, metadata.

    For ASFD, ``cells`` is keyed by pyramid level (``P2``..``P7``: one AutoFEM-CPM per level);
    a generic task may use any names.
    """

    cells: dict[str, CellGenotype] = field(default_factory=dict)
    fpn: FPNGenotype | None = None
    meta: GenotypeMeta = field(default_factory=GenotypeMeta)
    version: int = GENOTYPE_VERSION
