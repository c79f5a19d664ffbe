"""The search history (``run_dir/history.jsonl``) and a figure of how architecture weights
evolved.

One JSON object per line, written by ``nas_search.search.search`` once per epoch::

    {"epoch": 3, "step": 1200, "tau": 7.1,
     "arch_weights": {"feature_module.1.blocks.P3.alpha": {"0->1": {"conv_1x1": 0.1, ...}, ...},
                      "feature_module.1.blocks.P3.gamma": {"node2": {"0": 0.4, "1": 0.6}}, ...},
     "metrics": {"val_loss": 1.2}}

``arch_weights`` maps a parameter group to its rows and each row to probabilities over its
columns. A CPM cell's ``alpha`` has a row per edge ``i->j`` over ops, its ``gamma`` a row per node
``node<j>`` over parents; an FPN level's ``alpha`` has a row per path (``same``, ``td``, ``bu``)
over ops, its ``beta`` one row ``fusion`` over paths. Rows may have different columns.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure, FigureBase
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from genotypes.io import HISTORY_FILE
from genotypes.spaces import cell_names
from visualize.plots import new_figure, save_figure

#: The FPN's path rows as logged, and as a reader names them.
FPN_PATH_NAMES: dict[str, str] = {"same": "same-level", "td": "top-down", "bu": "bottom-up"}
#: Panels in a row of the curve grid at most (a wider group wraps), and heatmaps in a row.
MAX_COLUMNS = 6
HEATMAP_COLUMNS = 3
#: Heatmaps of at most this many cells get their weights written in.
MAX_ANNOTATED_CELLS = 40
#: The narrowest y-range (and colour range) drawn: a smaller spread is shown centred in it.
MIN_Y_SPAN = 1e-3


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

    @property
    def title(self) -> str:
        return panel_title(self.param, self.row)

    @property
    def single_candidate(self) -> bool:
        """One column only (node 1's parent is always the input): the curve is 1.0 throughout."""
        return len(self.series) < 2


class _Role(NamedTuple):
    """What a logged row chooses: its module, the group's and the row's description, and the
    row's short name."""

    module: str
    group: str
    row: str
    tick: str


def _kind(param: str) -> str:
    """``alpha``, ``beta`` or ``gamma``: the last part of a group's name."""
    return param.rsplit(".", 1)[-1].removeprefix("arch_")


def _role(param: str, row: str) -> _Role | None:
    kind = _kind(param)
    if kind == "gamma" and row.startswith("node"):
        return _Role("cell", "node parents", f"node {row[4:]} parent", f"node {row[4:]}")
    if kind == "alpha" and "->" in row:
        edge = row.replace("->", "→")
        return _Role("cell", "edge ops", f"edge {edge} op", edge)
    if kind == "alpha" and row in FPN_PATH_NAMES:
        return _Role("FPN", "path ops", f"{FPN_PATH_NAMES[row]} path op", FPN_PATH_NAMES[row])
    if kind == "beta":
        return _Role("FPN", "path fusion", "path fusion", row)
    return None


def _level(param: str) -> str | None:
    """The pyramid level in a group's name (``...blocks.P3.gamma``: ``P3``), if any: a cell
    name that a registered genotype schema fixes (:func:`genotypes.spaces.cell_names`; AutoFEM's
    levels once ``search_spaces`` is imported)."""
    names = cell_names()
    return next((part for part in reversed(param.split(".")) if part in names), None)


def _module_title(param: str, module: str) -> str:
    level = _level(param)
    return f"{level} {module}" if level else module


def panel_title(param: str, row: str) -> str:
    """A row's title, e.g. ``("feature_module.1.blocks.P3.gamma", "node2")`` -> "P3 cell, node 2
    parent", ``(".P4.alpha", "td")`` -> "P4 FPN, top-down path op"; a group of another kind
    keeps its logged names."""
    role = _role(param, row)
    return f"{param} {row}" if role is None else f"{_module_title(param, role.module)}, {role.row}"


def group_title(param: str, row: str) -> str:
    """A group's title from one of its rows, e.g. "P3 cell node parents"."""
    role = _role(param, row)
    return param if role is None else f"{_module_title(param, role.module)} {role.group}"


def row_tick(param: str, row: str) -> str:
    """A row's short name: "node 2", "0→2", "top-down"."""
    role = _role(param, row)
    return row if role is None else role.tick


def column_label(param: str, column: str) -> str:
    """A column's legend entry: an op, "node 0" (a parent), "top-down" (an FPN path)."""
    if _kind(param) == "gamma":
        return f"node {column}"
    return FPN_PATH_NAMES.get(column, column)


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


def value_limits(series: Iterable[np.ndarray], min_span: float = MIN_Y_SPAN
                 ) -> tuple[float, float]:
    """y-limits around the finite values of ``series`` with a 5% margin, at least ``min_span``
    wide, so that a curve moving by 0.01 is not drawn flat on a 0-1 axis."""
    values = np.concatenate([np.asarray(s, dtype=float).ravel() for s in series])
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    pad = max(0.05 * (hi - lo), (min_span - (hi - lo)) / 2)
    return lo - pad, hi + pad


def grid_positions(group_sizes: Sequence[int], ncols: int) -> list[tuple[int, int]]:
    """``(row, column)`` of each panel when the groups' panels are laid out in order, ``ncols``
    to a row; a group starts a new row unless it fits in what is left of the current one."""
    positions: list[tuple[int, int]] = []
    row = col = 0
    for size in group_sizes:
        if col and col + size > ncols:
            row, col = row + 1, 0
        for _ in range(size):
            if col == ncols:
                row, col = row + 1, 0
            positions.append((row, col))
            col += 1
    return positions


def final_table(history: Sequence[HistoryRecord], param: str
                ) -> tuple[int, list[str], list[str], np.ndarray]:
    """The last logged table of group ``param``: ``(epoch, rows, columns, values)``, NaN where
    a row lacks a column (a node's later parents); single-candidate rows are left out."""
    record = next(r for r in reversed(history) if param in r.arch_weights)
    table = record.arch_weights[param]
    rows = [row for row, probs in table.items() if len(probs) > 1]
    columns = list(dict.fromkeys(c for row in rows for c in table[row]))
    values = np.array([[table[row].get(c, math.nan) for c in columns] for row in rows],
                      dtype=float).reshape(len(rows), len(columns))
    return record.epoch, rows, columns, values


def history_figure(history: Sequence[HistoryRecord],
                   params: str | Sequence[str] | None = None, ncols: int | None = None
                   ) -> Figure:
    """Op / parent / path probabilities over epochs, one panel per row of each parameter group
    (see :func:`history_panels`) titled like "P3 cell, node 2 parent", each pyramid level
    starting a grid row, at most ``ncols`` panels wide; y-axes fit the data, a column (an op)
    has one colour and one entry in the shared legend. Rows with a single candidate (always
    1.0) are left out. Below: a heatmap per group of its final weights, each row's highest
    marked."""
    panels = history_panels(history, params)
    if not panels:
        raise ValueError(f"no architecture weights match {params!r} in the history")
    if ncols is not None and ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    shown = [p for p in panels if not p.single_candidate]
    if not shown:
        raise ValueError(f"every row of the weights matching {params!r} has a single candidate "
                         "(always 1.0): nothing to plot")
    groups = list(dict.fromkeys(p.param for p in shown))
    levels = list(dict.fromkeys(_level(g) or g for g in groups))  # no level: a group alone

    def level_of(param: str) -> int:
        return levels.index(_level(param) or param)

    shown.sort(key=lambda p: level_of(p.param))
    groups.sort(key=level_of)
    sizes = [sum(level_of(p.param) == i for p in shown) for i in range(len(levels))]
    heat_sizes = [sum(level_of(g) == i for g in groups) for i in range(len(levels))]
    positions = grid_positions(sizes, ncols or _auto_columns(sizes, MAX_COLUMNS))
    heat_positions = grid_positions(heat_sizes, _auto_columns(heat_sizes, HEATMAP_COLUMNS))
    tables = {g: final_table(history, g) for g in groups}
    cell_w = 1.8 + 0.3 * max(len(t[2]) for t in tables.values())
    cell_h = 1.3 + 0.22 * max(len(t[1]) for t in tables.values())
    curves_h = 2.3 * (positions[-1][0] + 1) + 1.0
    heat_h = cell_h * (heat_positions[-1][0] + 1) + 0.5
    fig = new_figure(max(3.4 * (max(c for _, c in positions) + 1),
                         cell_w * (max(c for _, c in heat_positions) + 1)), curves_h + heat_h)
    top, bottom = fig.subfigures(2, 1, height_ratios=[curves_h, heat_h])

    labels = {(p.param, c): column_label(p.param, c) for p in shown for c in p.series}
    colors = {label: _column_color(i) for i, label in enumerate(dict.fromkeys(labels.values()))}
    for ax, panel in zip(_grid_axes(top, positions), shown):
        for column, values in panel.series.items():
            ax.plot(panel.epochs, values, marker=".", ms=3, lw=1.2,
                    color=colors[labels[panel.param, column]])
        ax.set_title(panel.title, fontsize=8)
        ax.set_ylim(value_limits(panel.series.values()))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    top.legend(handles=[Line2D([], [], color=c, marker=".", label=label)
                        for label, c in colors.items()],
               loc="outside lower center", ncols=min(len(colors), 8), fontsize=7)
    skipped = len(panels) - len(shown)
    top.suptitle("architecture weights over the search (probability per epoch)"
                 + (f"; {skipped} single-candidate rows (always 1.0) not drawn" if skipped
                    else ""))

    last = max(r.epoch for r in history)
    for ax, group in zip(_grid_axes(bottom, heat_positions), groups):
        _draw_heatmap(ax, group, *tables[group], last)
    bottom.suptitle(f"final weights (epoch {last}), coloured against uniform; a frame marks "
                    "each row's highest")
    return fig


def _auto_columns(level_sizes: Sequence[int], most: int) -> int:
    """A level's panels to a grid row (at most ``most``), or a square grid of single panels."""
    widest = max(level_sizes)
    return min(most, widest if widest > 1 else math.ceil(len(level_sizes) ** 0.5))


def _grid_axes(fig: FigureBase, positions: Sequence[tuple[int, int]]) -> list[Axes]:
    """Axes at ``positions`` of a grid just large enough; the grid's other cells are hidden."""
    axes = fig.subplots(max(r for r, _ in positions) + 1, max(c for _, c in positions) + 1,
                        squeeze=False)
    used = [axes[pos] for pos in positions]
    for ax in set(axes.flat) - set(used):
        ax.set_axis_off()
    return used


def _draw_heatmap(ax: Axes, param: str, epoch: int, rows: list[str], columns: list[str],
                  values: np.ndarray, last_epoch: int) -> None:
    """Colour: each weight times its row's candidate count (1: uniform, red above, blue
    below), so rows of 2 and of 6 parents compare; the raw weights are written in small
    tables."""
    ratio = values * np.isfinite(values).sum(axis=1, keepdims=True)
    finite = ratio[np.isfinite(ratio)]
    norm = TwoSlopeNorm(1.0, min(float(finite.min()), 1 - MIN_Y_SPAN),
                        max(float(finite.max()), 1 + MIN_Y_SPAN))
    image = ax.imshow(ratio, cmap=colormaps["RdBu_r"].with_extremes(bad="#dddddd"), norm=norm,
                      aspect="auto", interpolation="nearest")
    for i, j in enumerate(np.nanargmax(values, axis=1)):
        ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, lw=1.5))
    if values.size <= MAX_ANNOTATED_CELLS:
        for (i, j), v in np.ndenumerate(values):
            if math.isfinite(v):
                shade = float(norm(ratio[i, j]))  # white text on the darkest cells
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(shade - 0.5) > 0.35 else "black")
    ax.set_xticks(range(len(columns)), [column_label(param, c) for c in columns],
                  rotation=90 if max(map(len, columns)) > 3 else 0, fontsize=7)
    ax.set_yticks(range(len(rows)), [row_tick(param, r) for r in rows], fontsize=7)
    title = group_title(param, rows[0])
    ax.set_title(title if epoch == last_epoch else f"{title} (epoch {epoch})", fontsize=8)
    bar = ax.figure.colorbar(image, ax=ax, shrink=0.9)
    bar.ax.tick_params(labelsize=6)
    bar.set_label("x uniform", fontsize=6)


def plot_history(history: Sequence[HistoryRecord], out_png: str | os.PathLike,
                 params: str | Sequence[str] | None = None, ncols: int | None = None) -> Path:
    """:func:`history_figure` saved as a PNG."""
    return save_figure(history_figure(history, params, ncols), out_png)


def _column_color(i: int) -> tuple[float, float, float, float]:
    """tab20's ten dark hues first, then its ten light ones (12 ops in S_CPM stay distinct)."""
    return colormaps["tab20"]((2 * i) % 20 + (i // 10) % 2)
