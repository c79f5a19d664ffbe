"""Genotype commands: ``asfd render``, ``asfd plot-history``, ``asfd genotypes list|validate``."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from asfd_cli.main import CLIError
from genotypes import list_library, load_genotype


def known_ops() -> list[str] | None:
    """The registered op names, for the op-name check; ``None`` (no check) when the search
    spaces that register them cannot be imported."""
    try:
        import search_spaces  # noqa: F401  (importing registers the ops)
        from nas_search.registry import list_ops
    except ImportError:
        return None
    return list_ops() or None


def cmd_render(args: argparse.Namespace) -> int:
    from visualize.render import render_genotype

    genotype = load_genotype(args.genotype, known_ops=known_ops())
    out = args.output or Path(Path(args.genotype).name).with_suffix(".svg")
    try:
        path = render_genotype(genotype, out)
    except RuntimeError as exc:  # Graphviz' dot is missing
        raise CLIError(str(exc)) from None
    Console().print(f"wrote {escape(str(path))}")
    return 0


def cmd_plot_history(args: argparse.Namespace) -> int:
    from visualize.history import load_history, plot_history

    run = Path(args.run_dir)
    out = args.output or (run if run.is_dir() else run.parent) / "history.png"
    path = plot_history(load_history(args.run_dir), out, params=args.params,
                        max_panels=args.max_panels)
    Console().print(f"wrote {escape(str(path))}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    table = Table(title="shipped genotypes (load by name)")
    for column in ("name", "mode", "fpn", "cells"):
        table.add_column(column, no_wrap=True)
    table.add_column("note", overflow="fold", min_width=30)
    for name in list_library():
        g = load_genotype(name)
        table.add_row(name, g.meta.mode, "yes" if g.fpn else "no", str(len(g.cells)),
                      escape(g.meta.note))
    Console().print(table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    ops = known_ops()
    g = load_genotype(args.genotype, known_ops=ops)
    checked = f"ops checked against {len(ops)} registered" if ops else "op names not checked"
    Console().print(f"[green]valid[/]: {escape(str(args.genotype))} "
                    f"({len(g.cells)} cells, {'an' if g.fpn else 'no'} FPN; {checked})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="draw a genotype (FPN + cells) with Graphviz")
    p.add_argument("genotype", help="genotype file, or a shipped name (asfd genotypes list)")
    p.add_argument("-o", "--output", type=Path,
                   help="output file; .svg, .png or .pdf (default: <genotype>.svg)")
    p.set_defaults(func=cmd_render)

    p = subparsers.add_parser("plot-history",
                              help="plot architecture weights over a search's epochs")
    p.add_argument("run_dir", help="search run directory (or its history.jsonl)")
    p.add_argument("-o", "--output", type=Path, help="PNG (default: RUN_DIR/history.png)")
    p.add_argument("--params", nargs="+", metavar="SUBSTR",
                   help="only parameter groups whose name contains one of these")
    p.add_argument("--max-panels", type=int, default=24)
    p.set_defaults(func=cmd_plot_history)

    p = subparsers.add_parser("genotypes", help="the genotype library and file checks")
    sub = p.add_subparsers(dest="genotypes_command", required=True, metavar="ACTION")
    q = sub.add_parser("list", help="list the shipped genotypes")
    q.set_defaults(func=cmd_list)
    q = sub.add_parser("validate", help="check a genotype file (exit 2 with the problems)")
    q.add_argument("genotype", help="genotype file, or a shipped name")
    q.set_defaults(func=cmd_validate)
