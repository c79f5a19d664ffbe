"""What a training run reports: :class:`TrainEvent` to the caller's callback (the CLI draws a
progress bar from it) and rows of ``metrics.csv`` (one ``train`` row every ``run.log_every``
iterations and one ``eval`` row per evaluation); the main rank alone reports."""
from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from detectors.engine.checkpoint import Progress
from detectors.evaluation.wider_eval import SETTINGS
from nas_search.runtime import atomic_path

METRICS_FILE = "metrics.csv"


class MetricsLog:
    """``metrics.csv``: a header fixed at the first row. A fresh run replaces an older file (a
    run that died before its first checkpoint); a run resumed at iteration ``i`` keeps the rows
    up to ``i`` and appends (the later ones are replayed, so they would repeat)."""

    BASE = ("kind", "epoch", "iteration", "elapsed_s", "lr", "images_per_s", "loss")
    AP = tuple(f"ap_{s}" for s in SETTINGS)

    def __init__(self, path: Path, resume_iteration: int | None = None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if resume_iteration is None:
            path.unlink(missing_ok=True)
        elif path.is_file() and path.stat().st_size:
            with path.open(newline="") as f:
                reader = csv.reader(f)
                self.fields = next(reader)
                col = self.fields.index("iteration")
                rows = [r for r in reader if len(r) == len(self.fields)  # a torn last line goes
                        and r[col].isdigit() and int(r[col]) <= resume_iteration]
            with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
                csv.writer(f).writerows([self.fields, *rows])

    def write(self, row: dict[str, Any]) -> None:
        if self.fields is None:
            parts = [k for k in row if k not in self.BASE and k not in self.AP]
            self.fields = [*self.BASE, *parts, *self.AP]
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


EventKind = Literal["start", "iteration", "eval", "checkpoint", "end"]


@dataclass
class TrainEvent:
    """What :func:`train` reports to its ``callback`` (the CLI draws a progress bar from it)."""

    kind: EventKind
    epoch: int
    iteration: int
    total_iterations: int
    elapsed_s: float
    lr: float = 0.0
    loss: float = math.nan
    parts: dict[str, float] = field(default_factory=dict)
    images_per_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


class Reporter:
    """The main rank's reports of a run of ``total_iterations``: events to ``callback`` and, with
    a ``metrics`` log, its rows; off the main rank (``reports`` false) nothing."""

    def __init__(self, callback: Callable[[TrainEvent], None] | None, total_iterations: int,
                 metrics: MetricsLog | None, reports: bool) -> None:
        self.callback = callback or (lambda event: None)
        self.total_iterations, self.metrics, self.reports = total_iterations, metrics, reports

    def emit(self, kind: EventKind, progress: Progress, **fields: Any) -> None:
        """A :class:`TrainEvent` of ``kind`` at ``progress``."""
        if self.reports:
            p = progress
            self.callback(TrainEvent(kind, p.epoch, p.iteration, self.total_iterations,
                                     p.elapsed_s, **fields))

    def log(self, row: dict[str, Any]) -> None:
        """A row of ``metrics.csv`` (with a log)."""
        if self.metrics is not None:
            self.metrics.write(row)
