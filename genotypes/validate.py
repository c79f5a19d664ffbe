"""Validation of a :class:`~genotypes.schema.Genotype`: every rule the schema states in prose.

Problems are collected, not raised one at a time, so a hand-edited file is fixed in one pass.
Every message starts with the field path it is about, in the dataclass' own terms, e.g.
``cells.P3.nodes[2].edges[0].parent: parent 5 out of range 0..2``; ``nodes[i]`` is the list
index, i.e. node ``i + 1`` (node 0 is the cell input).

Operation names are checked only against ``known_ops`` supplied by the caller: this package sits
below ``nas_search`` in the dependency order and never imports its registry. A caller that has
registered its ops passes ``nas_search.registry.list_ops()``. The checks are structural:
``meta.mode`` and the edges per node it implies are the search strategy's rules
(``nas_search.strategies.validate_for_strategy``); a search space's own rules and sections are
its registered schema's (:mod:`genotypes.spaces`).
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import networkx as nx

from genotypes.schema import CONCAT_MODES, GENOTYPE_VERSION, CellGenotype, Genotype
from genotypes.spaces import (
    BASE_KEYS, claiming_schemas, section_schemas, unknown_space_problem,
)


@dataclass(frozen=True)
class GenotypeLimits:
    """Caps on the size of one cell; ``None`` lifts a cap. Graphviz' layout time grows
    steeply with the graph (a 100-node, 2-parent cell takes ~25 s, a 5000-node one never ends),
    and searched cells have 4-8 nodes (the paper: 6)."""

    max_nodes: int | None = 64
    max_edges: int | None = 256


#: The caps :func:`validate_genotype` applies unless told otherwise.
DEFAULT_LIMITS = GenotypeLimits()
#: No caps: what building a network from a genotype uses (the caps guard rendering and display;
#: a large cell builds and trains, it only draws slowly).
NO_LIMITS = GenotypeLimits(max_nodes=None, max_edges=None)


class GenotypeError(ValueError):
    """An invalid genotype. ``problems`` holds one ``"<field path>: <what is wrong>"`` per issue;
    ``source`` the file it came from, when there is one."""

    def __init__(self, problems: str | list[str], source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = f"{head}{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems)
        super().__init__(msg)


def cell_graph(cell: CellGenotype) -> nx.DiGraph:
    """The cell as a graph on nodes ``0..n`` with an edge ``parent -> node`` (attribute ``op``)
    per chosen edge; edges from a parent that is not a node of the cell are left out."""
    graph = nx.DiGraph()
    graph.add_nodes_from(range(cell.n_nodes + 1))
    for j, node in enumerate(cell.nodes, start=1):
        for edge in node.edges:
            if edge.parent in graph:
                graph.add_edge(edge.parent, j, op=edge.op)
    return graph


def validate_genotype(genotype: Genotype, *, known_ops: Collection[str] | None = None,
                      limits: GenotypeLimits = DEFAULT_LIMITS) -> None:
    """Raise :class:`GenotypeError` listing every problem of ``genotype``; return if it is valid.

    ``known_ops``: the operation names allowed on cell edges and in sections; ``None`` skips the
    op-name check. ``limits``: the size caps of a cell (:class:`GenotypeLimits`). A
    ``meta.search_space`` or a section that no registered schema knows is a one-line error.
    """
    unknown = unknown_space_problem(genotype.meta.search_space) or unknown_sections_problem(
        genotype.sections)
    if unknown:
        raise GenotypeError(unknown)
    problems: list[str] = []
    if genotype.version != GENOTYPE_VERSION:
        problems.append(f"version: unsupported genotype version {genotype.version!r} "
                        f"(this toolkit reads version {GENOTYPE_VERSION})")
    if not genotype.sections and not genotype.cells:
        problems.append("genotype: neither cells nor a section")
    known_sections = section_schemas()
    for key, section in genotype.sections.items():
        problems += known_sections[key].problems(section, known_ops)
    for schema in claiming_schemas(genotype):
        problems += schema.problems(genotype)
    for name, cell in genotype.cells.items():
        too_big = _size_problems(f"cells.{name}", cell, limits)
        problems += too_big or _cell_problems(f"cells.{name}", cell, genotype.meta.nodes,
                                              known_ops)
    if problems:
        raise GenotypeError(problems)


def unknown_sections_problem(keys: Collection[str]) -> str | None:
    """The one-line problem of top-level keys beyond :data:`~genotypes.spaces.BASE_KEYS` that
    no registered schema defines as a section."""
    known = section_schemas()
    unknown = [str(key) for key in keys if key not in known and key not in BASE_KEYS]
    if not unknown:
        return None
    return (f"genotype: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(BASE_KEYS)} "
            f"and the registered sections ({', '.join(known) or 'none'}; a search space "
            f"registers its schema when it is imported)")


def _size_problems(path: str, cell: CellGenotype, limits: GenotypeLimits) -> list[str]:
    """The caps of ``limits`` the cell exceeds (then its other checks are skipped)."""
    edges = sum(len(node.edges) for node in cell.nodes)
    problems = []
    for what, count, cap, flag in (("nodes", cell.n_nodes, limits.max_nodes, "--max-nodes"),
                                   ("edges", edges, limits.max_edges, "--max-edges")):
        if cap is not None and count > cap:
            problems.append(f"{path}.nodes: {count} {what}, above the cap of {cap} per cell "
                            f"(GenotypeLimits.max_{what}; lift it with `asfd render` or "
                            f"`asfd genotypes validate` {flag} 0)")
    return problems


def op_problem(path: str, op: object, known_ops: Collection[str] | None) -> list[str]:
    """The problem of an edge's or a path's op name: empty, or not in ``known_ops``."""
    if not isinstance(op, str) or not op:
        return [f"{path}: operation must be a non-empty name, got {op!r}"]
    if known_ops is not None and op not in known_ops:
        return [f"{path}: unknown operation {op!r}; known: {', '.join(sorted(known_ops))}"]
    return []


def _cell_problems(path: str, cell: CellGenotype, meta_nodes: int | None,
                   known_ops: Collection[str] | None) -> list[str]:
    problems: list[str] = []
    if cell.concat not in CONCAT_MODES:
        problems.append(f"{path}.concat: unknown concat mode {cell.concat!r}; "
                        f"expected one of {', '.join(CONCAT_MODES)}")
    n = cell.n_nodes
    if n == 0:
        return problems + [f"{path}.nodes: a cell needs at least one intermediate node"]
    if meta_nodes is not None and n != meta_nodes:
        problems.append(f"{path}.nodes: {n} nodes but meta.nodes is {meta_nodes}")
    dangling = False  # a parent that is no node of the cell
    for i, node in enumerate(cell.nodes):
        j, npath = i + 1, f"{path}.nodes[{i}]"
        if not node.edges:
            problems.append(f"{npath}.edges: node {j} has no incoming edge")
        seen: set[int] = set()
        for k, edge in enumerate(node.edges):
            epath = f"{npath}.edges[{k}]"
            if edge.parent not in range(j):
                problems.append(f"{epath}.parent: parent {edge.parent!r} out of range 0..{j - 1}"
                                f" (node {j} takes earlier nodes only)")
                dangling = dangling or edge.parent not in range(n + 1)
            elif edge.parent in seen:
                problems.append(f"{epath}.parent: parent {edge.parent} repeated on node {j}")
            seen.add(edge.parent)
            problems += op_problem(f"{epath}.op", edge.op, known_ops)
    if dangling:  # reported above; the graph is not defined
        return problems
    graph = cell_graph(cell)
    try:
        cycle = nx.find_cycle(graph, source=range(n + 1))
        problems.append(f"{path}.nodes: cycle "
                        + " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}")
    except nx.NetworkXNoCycle:
        pass
    unreachable = sorted(set(graph) - nx.descendants(graph, 0) - {0})
    if unreachable:
        problems.append(f"{path}.nodes: node(s) {', '.join(map(str, unreachable))} "
                        f"unreachable from the input node 0")
    return problems
