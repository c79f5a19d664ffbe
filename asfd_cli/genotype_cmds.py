"""Genotype commands: ``asfd render``, ``asfd plot-history``, ``asfd genotypes list|validate``."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from asfd_cli.main import CLIError
from asfd_cli.options import add_out, non_negative_int
from genotypes import DEFAULT_LIMITS, GenotypeLimits, list_library, load_genotype
from nas_search.strategies import validate_for_strategy
from search_spaces.schemas import fpn_of, paper_ops


def known_ops() -> list[str]:
    """The op names a genotype may use: the paper's sets, which ``search_spaces`` implements
    (read without importing torch, so that these commands start fast)."""
    return paper_ops()


def limits(args: argparse.Namespace) -> GenotypeLimits:
    """The cell size caps of ``--max-nodes`` / ``--max-edges`` (0: no cap)."""
    return GenotypeLimits(max_nodes=args.max_nodes or None, max_edges=args.max_edges or None)


def add_limit_args(p: argparse.ArgumentParser) -> None:
    for what, cap in (("nodes", DEFAULT_LIMITS.max_nodes), ("edges", DEFAULT_LIMITS.max_edges)):
        p.add_argument(f"--max-{what}", type=non_negative_int, default=cap, metavar="N",
                       help=f"refuse a cell of more than N {what} (default: {cap}; 0: no cap; "
                            "Graphviz' layout time grows steeply with the graph)")


def cmd_render(args: argparse.Namespace) -> int:
    from visualize.render import render_genotype

    genotype = load_genotype(args.genotype, known_ops=known_ops(), limits=limits(args))
    out = args.out or Path(Path(args.genotype).name).with_suffix(".svg")
    try:
        path = render_genotype(genotype, out, name=str(args.genotype), limits=limits(args))
    except RuntimeError as exc:  # Graphviz' dot is missing
        raise CLIError(str(exc)) from None
    Console().print(f"wrote {escape(str(path))}")
    return 0


def cmd_plot_history(args: argparse.Namespace) -> int:
    from visualize.history import load_history, plot_history

    run = Path(args.run_dir)
    out = args.out or (run if run.is_dir() else run.parent) / "history.png"
    path = plot_history(load_history(args.run_dir), out, params=args.params, ncols=args.ncols)
    Console().print(f"wrote {escape(str(path))}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    table = Table(title="Shipped genotypes", caption="load them by name")
    for column in ("name", "mode", "fpn", "cells"):
        table.add_column(column, no_wrap=True)
    table.add_column("note", overflow="fold", min_width=30)
    for name in list_library():
        g = load_genotype(name)
        table.add_row(name, g.meta.mode, "yes" if fpn_of(g) else "no", str(len(g.cells)),
                      escape(g.meta.note))
    Console().print(table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    ops = known_ops()
    g = load_genotype(args.genotype, known_ops=ops, limits=limits(args))
    validate_for_strategy(g, source=str(args.genotype))
    Console().print(f"[green]valid[/]: {escape(str(args.genotype))} "
                    f"({len(g.cells)} cells, {'an' if fpn_of(g) else 'no'} FPN; ops checked "
                    f"against "
                    f"the {len(ops)} of the paper's sets"
                    + (f", edges per node against strategy {g.meta.mode}" if g.meta.mode else "")
                    + ")")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="draw a genotype (FPN + cells) with Graphviz")
    p.add_argument("genotype", help="genotype file, or a shipped name (asfd genotypes list)")
    add_out(p, "output file; .svg, .png or .pdf (default: <genotype>.svg)", type=Path)
    add_limit_args(p)
    p.set_defaults(func=cmd_render)

    p = subparsers.add_parser("plot-history",
                              help="plot architecture weights over a search's epochs")
    p.add_argument("run_dir", help="search run directory (or its history.jsonl)")
    add_out(p, "PNG (default: RUN_DIR/history.png)", type=Path)
    p.add_argument("--params", nargs="+", metavar="SUBSTR",
                   help="only parameter groups whose name contains one of these, e.g. gamma "
                        "(cell parents), alpha (ops), beta (FPN fusion), P3 (default: all)")
    p.add_argument("--ncols", type=int, metavar="N",
                   help="panels per row at most (default: a level's rows, up to 6)")
    p.set_defaults(func=cmd_plot_history)

    p = subparsers.add_parser("genotypes", help="the genotype library and file checks")
    sub = p.add_subparsers(dest="genotypes_command", required=True, metavar="ACTION")
    q = sub.add_parser("list", help="list the shipped genotypes")
    q.set_defaults(func=cmd_list)
    q = sub.add_parser("validate", help="check a genotype file (exit 2 with the problems)")
    q.add_argument("genotype", help="genotype file, or a shipped name")
    add_limit_args(q)
    q.set_defaults(func=cmd_validate)
