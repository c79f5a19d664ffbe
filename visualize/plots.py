"""Evaluation plots: precision-recall curves (WIDER FACE Easy/Medium/Hard) and ROC (FDDB).

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, Agg canvas), so
nothing depends on a display or on pyplot's global state. Inputs are plain arrays.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike


def new_figure(width: float, height: float) -> Figure:
    """A figure on an Agg canvas (headless)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_path: str | os.PathLike, dpi: int = 120) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    return out_path


def _paired(name: str, x: ArrayLike, y: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"curve {name!r}: {what} must be non-empty and of equal length, "
                         f"got {x.size} and {y.size}")
    return x, y


def plot_pr_curves(curves: Mapping[str, tuple[ArrayLike, ArrayLike, float]],
                   out_png: str | os.PathLike, title: str = "Precision-recall") -> Path:
    """One precision-recall plot; ``curves[name] = (precision, recall, ap)``, e.g. the WIDER
    FACE Easy / Medium / Hard settings. The legend gives each curve's AP."""
    fig = new_figure(5.5, 5)
    ax = fig.add_subplot()
    for name, (precision, recall, ap) in curves.items():
        precision, recall = _paired(name, precision, recall, "precision and recall")
        ax.plot(recall, precision, lw=1.8, label=f"{name} (AP {ap:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return save_figure(fig, out_png)


def plot_roc(curves: Mapping[str, tuple[ArrayLike, ArrayLike, float]],
             out_png: str | os.PathLike, title: str = "ROC", *, report_fp: float) -> Path:
    """One ROC plot; ``curves[name] = (false_positives, tpr, tpr_at_report_fp)`` (FDDB discrete /
    continuous; :func:`detectors.evaluation.fddb_eval.tpr_at`). The legend gives each curve's
    TPR at ``report_fp`` false positives, marked by a dotted line; the x axis runs to the curves'
    end, but at least to 1.1x and at most to 2x ``report_fp``."""
    fig = new_figure(6, 4.5)
    ax = fig.add_subplot()
    max_fp = 0.0
    for name, (false_positives, tpr, reported) in curves.items():
        false_positives, tpr = _paired(name, false_positives, tpr, "false positives and TPR")
        max_fp = max(max_fp, float(false_positives.max()))
        ax.plot(false_positives, tpr, lw=1.8,
                label=f"{name} (TPR {reported:.3f} @ {report_fp:g} FP)")
    ax.axvline(report_fp, color="0.5", lw=0.8, ls=":")
    ax.set(ylim=(0, 1.02), xlabel="false positives", ylabel="true positive rate", title=title)
    ax.set_xlim(0, max(1.1 * report_fp, min(max_fp, 2 * report_fp)))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, out_png)
