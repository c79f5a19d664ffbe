"""The official WIDER FACE evaluation (Yang et al., CVPR 2016; ``eval_tools`` MATLAB code),
reproduced exactly and vectorised with NumPy.

Protocol:

* Ground truth: ``wider_face_val.mat`` holds every box (x, y, w, h) per image;
  ``wider_{easy,medium,hard}_val.mat`` ``gt_list`` the 1-based indices of the boxes that count
  in that setting. Every other box is an ignore region for that setting.
* Predictions: ``<event>/<name>.txt`` per image (name, count, ``x y w h score`` lines), sorted
  by score, highest first (the MATLAB ``read_pred`` sorts them; so do we, stably). A missing
  file counts as no predictions (the official tool prints a notice; we warn); a folder where no
  file matches is an error naming the expected layout.
* Scores are min-max normalised once over all predictions of all images (MATLAB ``norm_score``).
  When all scores are equal the official code divides by zero and every score becomes NaN,
  which passes no threshold (AP 0); we instead set every score to 1, so all predictions pass
  every threshold. (The RetinaFace Python port initialises max/min with 0/1 rather than with
  the data; that differs only for scores outside [0, 1]. We follow the MATLAB tool.)
* Per image, predictions in order: IoU with the +1 pixel convention (``x2 = x + w``, areas
  ``(x2 - x1 + 1)(y2 - y1 + 1)``) against every ground-truth box; the single best one (first on
  ties) decides. IoU >= 0.5 with an ignored box: the prediction is dropped (no proposal, no TP);
  with a countable box not matched yet: TP; anything else: a proposal without recall (FP).
  Images without ground truth or without predictions are skipped, but their countable faces
  stay in the recall denominator.
* 1000 thresholds ``t_k = 1 - (k + 1) / 1000``: in each image keep the predictions with
  normalised score >= t_k; sum the non-dropped ones (proposals) and the TPs over images.
  Precision = TP / proposals (0 where there are no proposals; the official code yields NaN
  there, which changes no AP), recall = TP / countable faces; AP is the VOC all-point area.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.io import loadmat

from detectors.data.wider import AnnotationError, image_key, xywh_to_xyxy

Setting = Literal["easy", "medium", "hard"]
SETTINGS: tuple[Setting, ...] = ("easy", "medium", "hard")
NUM_THRESHOLDS = 1000
THRESHOLDS = 1 - np.arange(1, NUM_THRESHOLDS + 1) / NUM_THRESHOLDS  # t_k = 1 - (k + 1) / 1000
GT_FILES = {"all": "wider_face_val.mat", **{s: f"wider_{s}_val.mat" for s in SETTINGS}}

# image key ("<event>/<name>", no extension) -> (boxes (N, 4) xyxy, scores (N,))
Detections = Mapping[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class WiderResult:
    """One setting: AP and the curve at :data:`THRESHOLDS` (precision, recall arrays of 1000)."""

    ap: float
    precision: np.ndarray
    recall: np.ndarray
    num_faces: int


@dataclass(frozen=True)
class WiderGroundTruth:
    """Per image: its key, all boxes ``xyxy`` float64 (``x2 = x + w``), and per setting a boolean
    mask of the countable boxes (the others are ignore regions)."""

    keys: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]
    countable: Mapping[Setting, tuple[np.ndarray, ...]]


def _find_gt_dir(gt_dir: Path) -> Path:
    for d in (gt_dir, gt_dir / "ground_truth"):
        if all((d / f).is_file() for f in GT_FILES.values()):
            return d
    raise FileNotFoundError(
        f"{gt_dir} (or {gt_dir / 'ground_truth'}) must hold {sorted(GT_FILES.values())}")


def load_wider_ground_truth(gt_dir: str | Path) -> WiderGroundTruth:
    """Read the four official ``.mat`` files (in ``gt_dir`` or in ``gt_dir/ground_truth``)."""
    d = _find_gt_dir(Path(gt_dir))
    full = loadmat(d / GT_FILES["all"])
    subsets = {s: loadmat(d / GT_FILES[s])["gt_list"] for s in SETTINGS}
    keys, boxes = [], []
    countable: dict[Setting, list[np.ndarray]] = {s: [] for s in SETTINGS}
    for i, event in enumerate(full["event_list"][:, 0]):
        files, face_boxes = full["file_list"][i, 0][:, 0], full["face_bbx_list"][i, 0][:, 0]
        for j, name in enumerate(files):
            b = np.asarray(face_boxes[j], dtype=np.float64).reshape(-1, 4)
            keys.append(f"{event[0]}/{name[0]}")
            boxes.append(xywh_to_xyxy(b))
            for s in SETTINGS:
                mask = np.zeros(len(b), dtype=bool)
                mask[np.asarray(subsets[s][i, 0][j, 0], dtype=np.int64).ravel() - 1] = True
                countable[s].append(mask)
    return WiderGroundTruth(tuple(keys), tuple(boxes), {s: tuple(v) for s, v in countable.items()})


def restrict_ground_truth(gt: WiderGroundTruth, keys: Sequence[str]) -> WiderGroundTruth:
    """The official ground truth limited to the images ``keys`` (``<event>/<name>``), so that a
    held-out part of a folder is scored on its own faces only."""
    index = {k: i for i, k in enumerate(gt.keys)}
    missing = [k for k in keys if k not in index]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no official ground truth, e.g. "
                         f"{missing[:3]}")
    rows = [index[k] for k in keys]
    return WiderGroundTruth(tuple(gt.keys[i] for i in rows), tuple(gt.boxes[i] for i in rows),
                            {s: tuple(gt.countable[s][i] for i in rows) for s in SETTINGS})


def read_prediction_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One ``<name>.txt`` prediction file -> (boxes xyxy (N, 4), scores (N,)); errors (also a
    ``nan``/``inf`` score or coordinate) name file:line."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise AnnotationError(path, len(lines) + 1, "expected the image name and the box count")
    count_text = lines[1].strip()
    if not count_text.isdigit():
        raise AnnotationError(
            path, 2, f"box count must be a non-negative integer, got {count_text!r}")
    count = int(count_text)
    body = [line.split() for line in lines[2:]]
    while body and not body[-1]:
        body.pop()
    if len(body) != count:
        raise AnnotationError(path, 2, f"declares {count} boxes but {len(body)} lines follow")
    for k, tokens in enumerate(body):
        if len(tokens) != 5:
            raise AnnotationError(
                path, k + 3, f"expected 5 fields 'x y w h score', got {len(tokens)}")
    try:
        table = np.array(body, dtype=np.float64).reshape(-1, 5)
    except ValueError:
        bad = next(k for k, tokens in enumerate(body) if not _all_float(tokens))
        raise AnnotationError(
            path, bad + 3, f"non-numeric field in {' '.join(body[bad])!r}") from None
    nonfinite = np.flatnonzero(~np.isfinite(table).all(axis=1))
    if nonfinite.size:
        k = int(nonfinite[0])
        raise AnnotationError(path, k + 3, f"non-finite value in {' '.join(body[k])!r} "
                              f"({nonfinite.size} such line(s) in the file)")
    return xywh_to_xyxy(table[:, :4]), table[:, 4]


def _all_float(tokens: list[str]) -> bool:
    try:
        [float(t) for t in tokens]
    except ValueError:
        return False
    return True


def read_wider_predictions(
    pred_dir: str | Path, keys: tuple[str, ...],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read ``<pred_dir>/<key>.txt`` for each image key; missing files are left out (and
    warned about by :func:`evaluate_wider`). A folder where no file matches is an error naming
    the expected layout (e.g. flat ``<name>.txt`` files)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    found = {k: read_prediction_file(p) for k in keys if (p := pred_dir / f"{k}.txt").is_file()}
    if keys and not found:
        other = next(pred_dir.rglob("*.txt"), None)
        raise FileNotFoundError(
            f"no prediction file in {pred_dir} matches the {len(keys)} ground-truth images: "
            f"expected one <event>/<name>.txt per image, e.g. {pred_dir / keys[0]}.txt"
            + (f"; found {other} instead" if other else ""))
    return found


def clear_wider_predictions(out_dir: str | Path) -> int:
    """Delete the ``.txt`` files under ``out_dir`` and the folders left empty, so that a new
    run's predictions are not mixed with an earlier run's; returns the number deleted."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return 0
    stale = [p for p in out_dir.rglob("*.txt") if p.is_file()]
    for p in stale:
        p.unlink()
    for d in sorted((d for d in out_dir.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
        if not any(d.iterdir()):
            d.rmdir()
    return len(stale)


def box_lines(boxes: np.ndarray, scores: np.ndarray) -> list[str]:
    """``x y w h score`` lines of ``xyxy`` boxes, sorted by score (highest first, stable): the
    body of WIDER prediction and FDDB detection files."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    rows = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores]).tolist()
    return ["%.3f %.3f %.3f %.3f %.6f" % tuple(r) for r in rows]


def write_wider_predictions(out_dir: str | Path, detections: Detections) -> None:
    """Write the official submission format: ``<out_dir>/<event>/<name>.txt`` holding the name,
    the count, then ``x y w h score`` lines sorted by score, highest first."""
    out_dir = Path(out_dir)
    for rel, (boxes, scores) in detections.items():
        key = image_key(rel)
        rows = box_lines(boxes, scores)
        lines = [Path(key).name, str(len(rows)), *rows]
        path = out_dir / f"{key}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


def normalize_scores(scores: list[np.ndarray]) -> list[np.ndarray]:
    """Min-max normalise over all images at once (all equal -> all 1; see module docstring)."""
    nonempty = [s for s in scores if len(s)]
    if not nonempty:
        return scores
    lo = min(float(s.min()) for s in nonempty)
    hi = max(float(s.max()) for s in nonempty)
    if hi == lo:
        return [np.ones_like(s) for s in scores]
    return [(s - lo) / (hi - lo) for s in scores]


def wider_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(P, G)`` of ``xyxy`` boxes with the official +1 pixel convention."""
    p, g = pred[:, None, :], gt[None, :, :]
    iw = np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]) + 1
    ih = np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_p = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)
    area_g = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    return inter / (area_p[:, None] + area_g[None, :] - inter)


def image_pr_counts(
    scores: np.ndarray, best_iou: np.ndarray, best_gt: np.ndarray, countable: np.ndarray,
    iou_thresh: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(proposals, true positives) of one image at each of :data:`THRESHOLDS`.

    ``scores`` are normalised and sorted descending; ``best_iou``/``best_gt`` are each
    prediction's best ground-truth overlap and index. Equivalent to the official sequential
    ``image_evaluation`` + ``image_pr_info``: a countable box is recalled by the first
    prediction that hits it; hits on ignored boxes are not proposals.
    """
    hit = best_iou >= iou_thresh
    counted = np.flatnonzero(hit & countable[best_gt])
    first_hit = np.zeros(len(scores), dtype=np.int64)
    first_hit[counted[np.unique(best_gt[counted], return_index=True)[1]]] = 1
    tp_cum = np.cumsum(first_hit)
    proposal_cum = np.cumsum(~(hit & ~countable[best_gt]))
    kept = np.searchsorted(-scores, -THRESHOLDS, side="right")  # predictions with score >= t
    last = np.maximum(kept - 1, 0)
    return np.where(kept > 0, proposal_cum[last], 0), np.where(kept > 0, tp_cum[last], 0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP: area under the precision envelope, with sentinels (0, 0) and (1, 0)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def evaluate_wider(
    predictions: str | Path | Detections, gt: str | Path | WiderGroundTruth,
    iou_thresh: float = 0.5,
) -> dict[Setting, WiderResult]:
    """Easy/Medium/Hard AP of ``predictions`` (a folder in the official format, or an in-memory
    ``{image: (boxes xyxy, scores)}`` dict keyed by ``"<event>/<name>[.jpg]"``) against ``gt``
    (a folder with the four official ``.mat`` files, or a loaded :class:`WiderGroundTruth`)."""
    if not isinstance(gt, WiderGroundTruth):
        gt = load_wider_ground_truth(gt)
    if isinstance(predictions, (str, Path)):
        preds = read_wider_predictions(predictions, gt.keys)
    else:
        preds = {image_key(k): v for k, v in predictions.items()}
    missing = [k for k in gt.keys if k not in preds]
    if missing:
        warnings.warn(f"no predictions for {len(missing)} of {len(gt.keys)} images "
                      f"(e.g. {missing[:3]}); their faces count as missed", stacklevel=2)
    unknown = sorted(set(preds) - set(gt.keys))
    if unknown:
        warnings.warn(f"{len(unknown)} predicted images are not in the ground truth and are "
                      f"ignored (e.g. {unknown[:3]})", stacklevel=2)
    # Per image: predictions sorted by raw score (stable), then scores normalised globally.
    sorted_boxes, raw_scores = [], []
    for k in gt.keys:
        boxes, scores = preds.get(k, (np.zeros((0, 4)), np.zeros(0)))
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"predictions for {k}: {len(boxes)} boxes but {len(scores)} scores")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError(f"predictions for {k}: non-finite box coordinates or scores")
        order = np.argsort(-scores, kind="stable")
        sorted_boxes.append(boxes[order])
        raw_scores.append(scores[order])
    norm_scores = normalize_scores(raw_scores)

    totals = {s: np.zeros((2, NUM_THRESHOLDS), dtype=np.int64) for s in SETTINGS}
    for idx, (gt_boxes, boxes, scores) in enumerate(zip(gt.boxes, sorted_boxes, norm_scores)):
        if len(gt_boxes) == 0 or len(boxes) == 0:
            continue
        overlaps = wider_iou(boxes, gt_boxes)
        best_gt = overlaps.argmax(axis=1)
        best_iou = overlaps[np.arange(len(boxes)), best_gt]
        for s in SETTINGS:
            counts = image_pr_counts(scores, best_iou, best_gt, gt.countable[s][idx], iou_thresh)
            totals[s] += np.stack(counts)

    results: dict[Setting, WiderResult] = {}
    for s in SETTINGS:
        num_faces = int(sum(m.sum() for m in gt.countable[s]))
        proposals, tp = totals[s]
        precision = np.divide(tp, proposals, out=np.zeros(NUM_THRESHOLDS), where=proposals > 0)
        recall = tp / num_faces if num_faces else np.zeros(NUM_THRESHOLDS)
        results[s] = WiderResult(voc_ap(recall, precision), precision, recall, num_faces)
    return results
