"""The search history (``run_dir/history.jsonl``) and a plot of how architecture weights evolved.

One JSON object per line, written by ``nas_search.search.search`` once per epoch::

    {"epoch": 3, "step": 1200, "tau": 7.1,
     "arch_weights": {"cpm.P3.arch_alpha": {"0->1": {"conv_1x1": 0.1, ...}, ...},
                      "cpm.P3.arch_gamma": {"node2": {"0": 0.4, "1": 0.6}}, ...},
     "metrics": {"val_loss": 1.2}}

``arch_weights`` maps a parameter group to its rows (an edge, a node, an FPN level) and each row
to probabilities over its columns (ops, parents, paths). Rows may have different columns.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator

from nas_search.search import HISTORY_FILE
from visualize.plots import new_figure, save_figure


@dataclass(frozen=True)
class HistoryRecord:
    epoch: int
    step: int | None = None
    tau: float | None = None
    arch_weights: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Panel:
    """The probabilities of one row of one parameter group over epochs (NaN where absent)."""

    param: str
    row: str
    epochs: np.ndarray
    series: dict[str, np.ndarray]


def load_history(run_dir_or_file: str | os.PathLike) -> list[HistoryRecord]:
    """Records sorted by (epoch, step). A resumed run may log an epoch again: the later line
    wins. Errors name the file and line."""
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / HISTORY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no search history at {str(path)!r}")
    records: dict[tuple[int, int], HistoryRecord] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("epoch"), int):
            raise ValueError(f"{path}:{lineno}: expected an object with an integer 'epoch'")
        record = HistoryRecord(epoch=obj["epoch"], step=obj.get("step"), tau=obj.get("tau"),
                               arch_weights=obj.get("arch_weights") or {},
                               metrics=obj.get("metrics") or {})
        records[(record.epoch, record.step if record.step is not None else -1)] = record
    return [records[k] for k in sorted(records)]


def _matches(name: str, params: str | Sequence[str] | None) -> bool:
    if params is None:
        return True
    return any(p in name for p in ([params] if isinstance(params, str) else params))


def history_panels(history: Sequence[HistoryRecord],
                   params: str | Sequence[str] | None = None) -> list[Panel]:
    """One panel per (parameter group, row) whose group name contains one of ``params``
    (substrings; ``None``: all), in order of first appearance."""
    keys: dict[tuple[str, str], dict[str, None]] = {}  # ordered sets of columns
    for record in history:
        for param, rows in record.arch_weights.items():
            if _matches(param, params):
                for row, probs in rows.items():
                    keys.setdefault((param, row), {}).update(dict.fromkeys(probs))
    epochs = np.array([r.epoch for r in history], dtype=float)
    panels = []
    for (param, row), columns in keys.items():
        series = {c: np.array([r.arch_weights.get(param, {}).get(row, {}).get(c, math.nan)
                               for r in history], dtype=float) for c in columns}
        panels.append(Panel(param, row, epochs, series))
    return panels


def plot_history(history: Sequence[HistoryRecord], out_png: str | os.PathLike,
                 params: str | Sequence[str] | None = None, max_panels: int = 24,
                 ncols: int = 4) -> Path:
    """Plot op / parent / path probabilities over epochs, one panel per row of each parameter
    group (see :func:`history_panels`), the first ``max_panels`` of them, into one PNG.
    A column (e.g. an op) has the same colour in every panel."""
    panels = history_panels(history, params)
    if not panels:
        raise ValueError(f"no architecture weights match {params!r} in the history")
    shown = panels[:max_panels]
    columns = list(dict.fromkeys(c for p in shown for c in p.series))
    colors = {c: _column_color(i) for i, c in enumerate(columns)}
    ncols = min(ncols, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = new_figure(4.2 * ncols, 2.9 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, panel in zip(axes.flat, shown):
        for column, values in panel.series.items():
            ax.plot(panel.epochs, values, marker=".", ms=3, lw=1.2, color=colors[column],
                    label=column)
        ax.set_title(f"{panel.param}  {panel.row}", fontsize=8)
        ax.set(ylim=(-0.02, 1.02), xlabel="epoch", ylabel="probability")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2 if len(panel.series) > 6 else 1, loc="upper left")
    for ax in axes.flat[len(shown):]:
        ax.set_axis_off()
    more = f" (first {len(shown)} of {len(panels)} panels)" if len(panels) > len(shown) else ""
    fig.suptitle("architecture weights over the search" + more)
    return save_figure(fig, out_png)


def _column_color(i: int) -> tuple[float, float, float, float]:
    """tab20's ten dark hues first, then its ten light ones (12 ops in S_CPM stay distinct)."""
    return colormaps["tab20"]((2 * i) % 20 + (i // 10) % 2)
