"""Graphviz rendering of a genotype: its sections (e.g. the AutoFEM-FPN) and every cell, in one
figure.

A section is drawn as its schema describes it (:meth:`genotypes.spaces.SectionSchema.drawing`):
input nodes feeding output nodes by labelled edges, an output named like a cell feeding that
cell. Edge kinds take the paper's Fig. 3 styles in order (dotted black, solid blue, dashed
green: AutoFEM's same-level, top-down and bottom-up paths).

Each cell is a cluster in the style of Fig. 4: the input node 0 in green, intermediate nodes,
the nodes the cell concatenates (``output_nodes``) filled in blue, leaves with a double border,
and an output node collecting them. A legend cluster explains the edge kinds and node kinds,
and the title names the genotype. Rendering runs the ``dot`` executable headless (``pipe``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import graphviz

from genotypes.schema import CellGenotype, Genotype
from genotypes.spaces import SectionDrawing, section_schemas
from genotypes.validate import DEFAULT_LIMITS, GenotypeLimits, validate_genotype

RenderFormat = Literal["svg", "png", "pdf"]
FORMATS: tuple[str, ...] = ("svg", "png", "pdf")
PNG_DPI = 150

# Fig. 3 of the paper: skip / same level dotted black, top-down solid blue, bottom-up dashed green;
# a section's edge kinds take them in order (and again from the first, past the third).
EDGE_STYLES: tuple[dict[str, str], ...] = (
    {"color": "black", "fontcolor": "black", "style": "dotted"},
    {"color": "#1f5fbf", "fontcolor": "#1f5fbf", "style": "solid"},
    {"color": "#2a8a2a", "fontcolor": "#2a8a2a", "style": "dashed"},
)
INPUT_STYLE = {"style": "filled", "fillcolor": "#b8e0b8"}
OUTPUT_NODE_STYLE = {"style": "filled", "fillcolor": "#c6dbf7"}
CONCAT_STYLE = {"shape": "box", "style": "filled", "fillcolor": "#7fa8e0"}
CASCADE_STYLE = {"color": "gray70", "style": "dashed"}  # section output X -> cell X


def _kind_styles(drawing: SectionDrawing) -> dict[str, dict[str, str]]:
    return {kind: EDGE_STYLES[i % len(EDGE_STYLES)] for i, (kind, _) in enumerate(drawing.kinds)}


def _section_cluster(key: str, drawing: SectionDrawing) -> graphviz.Digraph:
    g = graphviz.Digraph(name=f"cluster_{key}")
    g.attr(label=drawing.title, fontname="Helvetica-Bold", color="gray60")
    with g.subgraph() as inputs:
        inputs.attr(rank="same")
        for name in drawing.inputs:
            inputs.node(f"{key}_{name}", name, shape="box")
    with g.subgraph() as outputs:
        outputs.attr(rank="same")
        for name in drawing.outputs:
            outputs.node(f"{key}_{name}", name, shape="box", **OUTPUT_NODE_STYLE)
    styles = _kind_styles(drawing)
    for e in drawing.edges:
        g.edge(f"{key}_{e.source}", f"{key}_{e.target}", label=e.label, **styles[e.kind])
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


def _legend_cluster(genotype: Genotype,
                   drawings: dict[str, SectionDrawing]) -> graphviz.Digraph:
    """What the styles mean: each section's edge kinds, and the cell nodes (with cells)."""
    g = graphviz.Digraph(name="cluster_legend")
    g.attr(label="legend", fontname="Helvetica-Bold", color="gray60", style="dashed")

    def edge(key: str, text: str, style: dict[str, str]) -> None:
        for end in ("from", "to"):
            g.node(f"legend_{key}_{end}", "", shape="point", width="0.05")
        g.edge(f"legend_{key}_from", f"legend_{key}_to", label=text, **style)

    for drawing in drawings.values():
        styles = _kind_styles(drawing)
        for kind, text in drawing.kinds:
            edge(kind, text, styles[kind])
        if set(genotype.cells) & set(drawing.outputs):
            edge("cascade", drawing.feeds_cells, CASCADE_STYLE)
    if genotype.cells:
        g.node("legend_input", "input (node 0)", **INPUT_STYLE)
        g.node("legend_concat", "node the output concatenates", **OUTPUT_NODE_STYLE)
        g.node("legend_leaf", "leaf (no successor)", peripheries="2")
        g.node("legend_out", "cell output", **CONCAT_STYLE)
    return g


def build_graph(genotype: Genotype, name: str | None = None,
                limits: GenotypeLimits = DEFAULT_LIMITS) -> graphviz.Digraph:
    """The whole genotype as one ``graphviz.Digraph`` (a cluster per section, then one per cell,
    then a legend), titled with ``name`` (e.g. the file or library name) and the search space
    and mode; a cell named like a section's output is linked from it (as AutoFEM cascades FPN
    level P_i into cell P_i). The genotype is validated first (the drawing relies on its
    invariants), with the cell size caps of ``limits``: Graphviz would take minutes or hours
    over a huge cell."""
    validate_genotype(genotype, limits=limits)
    dot = graphviz.Digraph(name="genotype")
    dot.attr(rankdir="LR", fontname="Helvetica", newrank="true")
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    title = [name or "", f"{genotype.meta.search_space} {genotype.meta.mode}".strip()]
    if any(title):
        dot.attr(label=r"\n".join(t for t in title if t), labelloc="t", fontsize="16")
    schemas = section_schemas()
    drawings = {key: schemas[key].drawing(section) for key, section in genotype.sections.items()}
    for key, drawing in drawings.items():
        dot.subgraph(_section_cluster(key, drawing))
    for cell_name, cell in genotype.cells.items():
        dot.subgraph(_cell_cluster(cell_name, cell))
        for key, drawing in drawings.items():
            if cell_name in drawing.outputs:
                dot.edge(f"{key}_{cell_name}", f"cell_{cell_name}_0", **CASCADE_STYLE)
    dot.subgraph(_legend_cluster(genotype, drawings))
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
