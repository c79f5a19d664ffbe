"""The consoles and progress bars every command prints with.

Bars show the elapsed and the remaining time, and are finished (:func:`finish`) when their step
ends, also when it ends early (a time budget). Epochs are numbered from 0 everywhere: bars, logs,
``history.jsonl`` and ``metrics.csv``.
"""
from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn,
    TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Column


def console() -> Console:
    """A console that keeps tables readable when the output is piped or captured."""
    c = Console()
    return c if c.is_terminal else Console(width=140)


def progress_bar(out: Console, count: bool = True) -> Progress:
    """Description, bar, ``done/total`` (``count``) or a percentage, elapsed and remaining time,
    then each task's ``status`` field (give every task one: ``add_task(..., status="")``),
    which wraps rather than squeezing the times."""
    columns: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"), BarColumn(bar_width=30),
        MofNCompleteColumn() if count else TaskProgressColumn(),
        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
        TextColumn("{task.fields[status]}", table_column=Column(overflow="fold")),
    ]
    return Progress(*columns, console=out)


def finish(bar: Progress) -> None:
    """Mark every task of ``bar`` whose total is known as complete (a step that ended early,
    e.g. on its time budget, would otherwise stay drawn part-way)."""
    for task in bar.tasks:
        if task.total is not None:
            bar.update(task.id, completed=task.total)
