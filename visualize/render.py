"""Graphviz rendering of a genotype: the AutoFEM-FPN pyramid and every cell, in one figure.

The FPN is drawn as inputs ``C_i`` feeding outputs ``P_i`` (Eq. 2): the same-level path from
``C_i``, the top-down path from level ``i+1`` and the bottom-up path from level ``i-1``, each
edge labelled with its op and its fusion weight softmax(beta). Colours follow the paper's
Fig. 3 (dotted black: same level, solid blue: top-down, dashed green: bottom-up). The neighbour
paths start at the neighbour's input node; the cluster title names the genotype's pathway: with
``one_hop`` a path reads that map (``P^td_{i+1} := C_{i+1}``), with ``recursive`` the
neighbour's path feature (``search_spaces.fpn``), which the drawing does not separate.

Each cell is a cluster in the style of Fig. 4: the input node 0 in green, intermediate nodes,
the nodes the cell concatenates (``output_nodes``) filled in blue, leaves with a double border,
and an output node collecting them. A legend cluster explains the path styles and node kinds,
and the title names the genotype. Rendering runs the ``dot`` executable headless (``pipe``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import graphviz

from genotypes.schema import LEVELS, CellGenotype, FPNGenotype, Genotype
from genotypes.validate import DEFAULT_LIMITS, GenotypeLimits, validate_genotype

RenderFormat = Literal["svg", "png", "pdf"]
FORMATS: tuple[str, ...] = ("svg", "png", "pdf")
PNG_DPI = 150

# Fig. 3 of the paper: skip / same level dotted black, top-down solid blue, bottom-up dashed green.
PATH_STYLE: dict[str, dict[str, str]] = {
    "same": {"color": "black", "fontcolor": "black", "style": "dotted"},
    "td": {"color": "#1f5fbf", "fontcolor": "#1f5fbf", "style": "solid"},
    "bu": {"color": "#2a8a2a", "fontcolor": "#2a8a2a", "style": "dashed"},
}
# Which level feeds a path of level i: itself, the level above (top-down), below (bottom-up).
PATH_SOURCE_OFFSET: dict[str, int] = {"same": 0, "td": 1, "bu": -1}
LEGEND_PATHS: dict[str, str] = {"same": "same level", "td": "top-down (from level i+1)",
                                "bu": "bottom-up (from level i-1)"}
INPUT_STYLE = {"style": "filled", "fillcolor": "#b8e0b8"}
OUTPUT_NODE_STYLE = {"style": "filled", "fillcolor": "#c6dbf7"}
CONCAT_STYLE = {"shape": "box", "style": "filled", "fillcolor": "#7fa8e0"}
CASCADE_STYLE = {"color": "gray70", "style": "dashed"}  # FPN output P_i -> cell P_i


def _fpn_cluster(fpn: FPNGenotype) -> graphviz.Digraph:
    g = graphviz.Digraph(name="cluster_fpn")
    g.attr(label=f"AutoFEM-FPN ({fpn.pathway} paths)", fontname="Helvetica-Bold", color="gray60")
    levels = [lv for lv in reversed(LEVELS) if lv in fpn.levels]  # P7 on top
    with g.subgraph() as inputs:
        inputs.attr(rank="same")
        for lv in levels:
            inputs.node(f"fpn_C{lv[1:]}", f"C{lv[1:]}", shape="box")
    with g.subgraph() as outputs:
        outputs.attr(rank="same")
        for lv in levels:
            outputs.node(f"fpn_{lv}", lv, shape="box", **OUTPUT_NODE_STYLE)
    for lv in levels:
        for path, op in fpn.levels[lv].paths().items():
            source = LEVELS[LEVELS.index(lv) + PATH_SOURCE_OFFSET[path]]
            label = rf"{path}: {op}\nβ={fpn.levels[lv].fusion[path]:.2f}"
            g.edge(f"fpn_C{source[1:]}", f"fpn_{lv}", label=label, **PATH_STYLE[path])
    return g


def _cell_cluster(name: str, cell: CellGenotype) -> graphviz.Digraph:
    prefix = f"cell_{name}"
    g = graphviz.Digraph(name=f"cluster_{prefix}")
    g.attr(label=f"cell {name} ({cell.concat})", fontname="Helvetica-Bold", color="gray60")
    g.node(f"{prefix}_0", f"0: {name} in", **INPUT_STYLE)
    outputs, leaves = set(cell.output_nodes), set(cell.leaves)
    for j, node in enumerate(cell.nodes, start=1):
        style = OUTPUT_NODE_STYLE if j in outputs else {}
        g.node(f"{prefix}_{j}", str(j), peripheries="2" if j in leaves else "1", **style)
        for edge in node.edges:
            g.edge(f"{prefix}_{edge.parent}", f"{prefix}_{j}", label=edge.op)
    g.node(f"{prefix}_out", f"{name} out\nconcat", **CONCAT_STYLE)
    for j in cell.output_nodes:
        g.edge(f"{prefix}_{j}", f"{prefix}_out", color="gray50", arrowsize="0.6")
    return g


def _legend_cluster(genotype: Genotype) -> graphviz.Digraph:
    """What the styles mean: the FPN path styles (with an FPN) and the cell nodes (with cells)."""
    g = graphviz.Digraph(name="cluster_legend")
    g.attr(label="legend", fontname="Helvetica-Bold", color="gray60", style="dashed")

    def edge(key: str, text: str, style: dict[str, str]) -> None:
        for end in ("from", "to"):
            g.node(f"legend_{key}_{end}", "", shape="point", width="0.05")
        g.edge(f"legend_{key}_from", f"legend_{key}_to", label=text, **style)

    if genotype.fpn is not None:
        for path, text in LEGEND_PATHS.items():
            edge(path, text, PATH_STYLE[path])
        if set(genotype.cells) & set(genotype.fpn.levels):
            edge("cascade", "FPN output P_i feeds cell P_i", CASCADE_STYLE)
    if genotype.cells:
        g.node("legend_input", "input (node 0)", **INPUT_STYLE)
        g.node("legend_concat", "node the output concatenates", **OUTPUT_NODE_STYLE)
        g.node("legend_leaf", "leaf (no successor)", peripheries="2")
        g.node("legend_out", "cell output", **CONCAT_STYLE)
    return g


def build_graph(genotype: Genotype, name: str | None = None,
                limits: GenotypeLimits = DEFAULT_LIMITS) -> graphviz.Digraph:
    """The whole genotype as one ``graphviz.Digraph`` (FPN cluster, then one per cell, then a
    legend), titled with ``name`` (e.g. the file or library name) and the search space and
    mode; a cell named after a pyramid level is linked from that FPN output, as AutoFEM cascades
    them. The genotype is validated first (the drawing relies on its invariants), with the
    cell size caps of ``limits``: Graphviz would take minutes or hours over a huge cell."""
    validate_genotype(genotype, limits=limits)
    dot = graphviz.Digraph(name="genotype")
    dot.attr(rankdir="LR", fontname="Helvetica", newrank="true")
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    title = [name or "", f"{genotype.meta.search_space} {genotype.meta.mode}".strip()]
    if any(title):
        dot.attr(label=r"\n".join(t for t in title if t), labelloc="t", fontsize="16")
    if genotype.fpn is not None:
        dot.subgraph(_fpn_cluster(genotype.fpn))
    for cell_name, cell in genotype.cells.items():
        dot.subgraph(_cell_cluster(cell_name, cell))
        if genotype.fpn is not None and cell_name in genotype.fpn.levels:
            dot.edge(f"fpn_{cell_name}", f"cell_{cell_name}_0", **CASCADE_STYLE)
    dot.subgraph(_legend_cluster(genotype))
    return dot


def genotype_to_dot(genotype: Genotype, name: str | None = None) -> str:
    """The DOT source of :func:`build_graph`."""
    return build_graph(genotype, name).source


def render_genotype(genotype: Genotype, out_path: str | os.PathLike,
                    name: str | None = None, limits: GenotypeLimits = DEFAULT_LIMITS) -> Path:
    """Render ``genotype`` to ``out_path``, titled with ``name``; the format (svg, png, pdf) is
    the file suffix.

    Raises ``ValueError`` for another suffix and ``RuntimeError`` when Graphviz' ``dot``
    executable is not installed.
    """
    out_path = Path(out_path)
    fmt = out_path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot render to {str(out_path)!r}: the suffix must be one of "
                         + ", ".join(f".{f}" for f in FORMATS))
    dot = build_graph(genotype, name, limits)
    if fmt == "png":
        dot.attr(dpi=str(PNG_DPI))
    try:
        data = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RuntimeError("Graphviz' `dot` executable was not found on PATH; install Graphviz "
                           "(e.g. `apt-get install graphviz`)") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    return out_path
