"""FDDB evaluation: discrete and continuous ROC (Jain & Learned-Miller, UM-CS-2010-009).

What the official ``evaluate`` tool computes, and how we compute it:

* Overlap of a detection rectangle and an annotated ellipse: area(intersection) /
  area(union) of the two regions, measured on the pixel grid (the official tool draws both into
  image-sized masks with OpenCV). We rasterise at pixel centres over the pair's bounding
  region, clipped to the image when its size is known: exact up to the pixel discretisation.
* Per image and per score threshold, a one-to-one matching of annotations and the detections
  scoring at least the threshold that maximises the summed overlap (Hungarian algorithm,
  :func:`scipy.optimize.linear_sum_assignment`); pairs with zero overlap are not matches.
* Discrete score: a matched pair with overlap > 0.5 is a true positive. Continuous score: each
  matched pair contributes its overlap. In both curves, false positives are the detections that
  are not discrete true positives, and the true-positive rate is divided by the number of
  annotated faces.
* Thresholds are the distinct detection scores, highest first; the ROC is (false positives,
  TPR) at each. Reported: TPR at 1000 false positives (the highest TPR reached with at most
  1000 FPs).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from detectors.data.fddb import FDDBAnnotation, ellipse_extents, parse_fddb_blocks
from detectors.data.wider import xywh_to_xyxy
from detectors.evaluation.wider_eval import box_lines

ScoreKind = Literal["discrete", "continuous"]
MATCH_IOU = 0.5
#: FDDB reports the true-positive rate at 1000 false positives.
FDDB_REPORT_FP = 1000


def tpr_at(false_positives: ArrayLike, tpr: ArrayLike, fp: float) -> float:
    """The best true-positive rate reached with at most ``fp`` false positives (0 if none)."""
    within = np.asarray(tpr, dtype=float)[np.asarray(false_positives, dtype=float) <= fp]
    return float(within.max()) if within.size else 0.0


@dataclass(frozen=True)
class FDDBResult:
    """ROC points, one per distinct score threshold (descending)."""

    thresholds: np.ndarray
    false_positives: np.ndarray
    tpr_discrete: np.ndarray
    tpr_continuous: np.ndarray
    num_faces: int

    def tpr_at(self, false_positives: int = FDDB_REPORT_FP, kind: ScoreKind = "discrete"
               ) -> float:
        """Highest TPR reached with at most ``false_positives`` false positives (0 if none)."""
        tpr = self.tpr_discrete if kind == "discrete" else self.tpr_continuous
        return tpr_at(self.false_positives, tpr, false_positives)


def _ellipse_mask(ellipse: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    a, b, angle, cx, cy = ellipse
    dx, dy = xs[None, :] - cx, ys[:, None] - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)  # along the major axis
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def ellipse_box_iou(
    ellipses: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Region IoU ``(E, D)`` of ellipses ``(major_r, minor_r, angle, cx, cy)`` and ``xyxy``
    boxes, rasterised at pixel centres (pixel ``i`` covers ``[i, i + 1)``)."""
    out = np.zeros((len(ellipses), len(boxes)))
    for e, (ellipse, ext) in enumerate(zip(ellipses, ellipse_extents(ellipses))):
        for d, box in enumerate(boxes):
            if box[0] >= ext[2] or box[2] <= ext[0] or box[1] >= ext[3] or box[3] <= ext[1]:
                continue
            lo, hi = np.minimum(ext[:2], box[:2]), np.maximum(ext[2:], box[2:])
            if image_size is not None:
                lo, hi = np.maximum(lo, 0), np.minimum(hi, image_size)
            xs = np.arange(np.floor(lo[0]), np.ceil(hi[0])) + 0.5
            ys = np.arange(np.floor(lo[1]), np.ceil(hi[1])) + 0.5
            in_e = _ellipse_mask(ellipse, xs, ys)
            in_b = (((xs >= box[0]) & (xs < box[2]))[None, :]
                    & ((ys >= box[1]) & (ys < box[3]))[:, None])
            union = np.count_nonzero(in_e | in_b)
            out[e, d] = np.count_nonzero(in_e & in_b) / union if union else 0.0
    return out


def match(iou: np.ndarray) -> np.ndarray:
    """Overlaps of the one-to-one matching (annotations x detections) maximising their sum;
    zero-overlap pairs are dropped."""
    if iou.size == 0:
        return np.zeros(0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    matched = iou[rows, cols]
    return matched[matched > 0]


def _image_events(iou: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct score of one image (descending): that score and the cumulative
    (discrete TP, continuous TP, detections) at it, re-matching only when a new detection
    touches a face."""
    order = np.argsort(-scores, kind="stable")
    scores, iou = scores[order], iou[:, order]
    levels = np.unique(-scores)
    ends = np.searchsorted(-scores, levels, side="right")  # detections with score >= level
    stats = np.zeros((len(ends), 3))
    tp_disc = tp_cont = 0.0
    prev = 0
    for k, n in enumerate(ends):
        if iou[:, prev:n].any():
            matched = match(iou[:, :n])
            tp_disc, tp_cont = float(np.count_nonzero(matched > MATCH_IOU)), float(matched.sum())
        stats[k] = tp_disc, tp_cont, n
        prev = n
    return -levels, stats


def evaluate_fddb(
    detections: Mapping[str, tuple[np.ndarray, np.ndarray]], annotations: Sequence[FDDBAnnotation],
) -> FDDBResult:
    """Discrete and continuous ROC of ``detections`` (``{name: (boxes xyxy, scores)}``, names as
    in the fold files) over ``annotations``; images without detections contribute misses."""
    unknown = sorted(set(detections) - {a.name for a in annotations})
    if unknown:
        raise KeyError(f"{len(unknown)} detected images are not in the annotations "
                       f"(e.g. {unknown[:3]})")
    event_scores, event_deltas = [], []
    for ann in annotations:
        boxes, scores = detections.get(ann.name, (np.zeros((0, 4)), np.zeros(0)))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(scores) == 0:
            continue
        levels, stats = _image_events(ellipse_box_iou(ann.ellipses, boxes, ann.image_size), scores)
        event_scores.append(levels)
        event_deltas.append(np.diff(stats, axis=0, prepend=0))
    num_faces = sum(len(a.ellipses) for a in annotations)
    if not event_scores:
        empty = np.zeros(0)
        return FDDBResult(empty, empty, empty, empty, num_faces)
    scores = np.concatenate(event_scores)
    deltas = np.concatenate(event_deltas)
    order = np.argsort(-scores, kind="stable")
    cum = np.cumsum(deltas[order], axis=0)
    thresholds, first = np.unique(-scores[order], return_index=True)
    last = np.append(first[1:], len(order)) - 1  # the cumulative state after the whole tie group
    tp_disc, tp_cont, n_det = cum[last].T
    false_positives = (n_det - tp_disc).astype(np.int64)
    return FDDBResult(-thresholds, false_positives, tp_disc / num_faces, tp_cont / num_faces,
                      num_faces)


def write_fddb_detections(
    path: str | Path, detections: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> Path:
    """Write the official detection file :func:`read_fddb_detections` reads: per image (names as
    in the fold files, no extension) its name, the count, then ``x y w h score`` lines sorted by
    score, highest first."""
    lines = []
    for name, (boxes, scores) in detections.items():
        rows = box_lines(boxes, scores)
        lines += [name, str(len(rows)), *rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def read_fddb_detections(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official detection file: per image its name, the count, then ``x y w h score``
    lines; errors name file:line."""
    return {name: (xywh_to_xyxy(table), table[:, 4])
            for name, table in parse_fddb_blocks(path, "x y w h score")}
