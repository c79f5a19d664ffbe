"""Entry point of the `asfd` command.

Each command group lives in its own module under ``asfd_cli`` and exposes
``register(subparsers) -> None``; registering adds a sub-parser whose ``func`` default is called
with the parsed ``argparse.Namespace`` and returns an exit code. User errors (bad files, invalid
genotypes, malformed annotations) print one line and exit 2; set ``ASFD_DEBUG=1`` for tracebacks.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Command modules, in the order `asfd --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "asfd_cli.search_cmds",
    "asfd_cli.genotype_cmds",
    "asfd_cli.model_cmds",
    "asfd_cli.train_cmds",
    "asfd_cli.data_cmds",
    "asfd_cli.eval_cmds",
)


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asfd", description="ASFD: automatic and scalable face detector toolkit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command group not present in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, FileNotFoundError, ValueError, KeyError) as exc:
        if os.environ.get("ASFD_DEBUG"):
            raise
        from rich.console import Console
        from rich.markup import escape

        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(msg))}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
