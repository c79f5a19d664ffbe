"""Entry point of the `asfd` command.

Each command group lives in its own module under ``asfd_cli`` and exposes
``register(subparsers) -> None``; registering adds a sub-parser whose ``func`` default is called
with the parsed ``argparse.Namespace`` and returns an exit code. User errors (bad files, invalid
genotypes, malformed annotations) print one line and exit 2; set ``ASFD_DEBUG=1`` for tracebacks.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator

import search_spaces  # noqa: F401  (registers the genotype schemas: every command reads them)

# Command modules, in the order `asfd --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "asfd_cli.search_cmds",
    "asfd_cli.genotype_cmds",
    "asfd_cli.model_cmds",
    "asfd_cli.train_cmds",
    "asfd_cli.data_cmds",
)


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def error_line(exc: BaseException) -> str:
    """The line printed for a user error. One raised in a worker process (a DataLoader worker,
    a spawned search process) carries that worker's traceback: its last line is kept, without
    the exception's type."""
    msg = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    if "Traceback (most recent call last)" in msg:
        kind, sep, text = msg.strip().splitlines()[-1].partition(": ")
        msg = text if sep and " " not in kind else f"{kind}{sep}{text}"
    return msg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asfd", description="ASFD: automatic and scalable face detector toolkit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def command_parser(parser: argparse.ArgumentParser,
                   args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub-)command parser that ``args`` went through."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
                   None)
        if sub is None or getattr(args, sub.dest, None) is None:
            return parser
        parser = sub.choices[getattr(args, sub.dest)]


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that an unknown option is reported with the usage of the
    command it was given to (argparse reports it with the top-level usage)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   line: str | None = None) -> str:
    """A Python warning as one line, without the source line Python adds."""
    return f"warning: {' '.join(str(message).split())} ({category.__name__})\n"


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show warnings with :func:`format_warning` inside the block."""
    saved, warnings.formatwarning = warnings.formatwarning, format_warning
    try:
        yield
    finally:
        warnings.formatwarning = saved


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        with one_line_warnings():
            return int(args.func(args) or 0)
    except (CLIError, FileNotFoundError, ValueError, KeyError, FloatingPointError) as exc:
        # FloatingPointError: NonFiniteLossError (a NaN loss) from any command
        if os.environ.get("ASFD_DEBUG"):
            raise
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[bold red]error:[/] {escape(error_line(exc))}",
                                   soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
