"""A detector's WIDER FACE Easy / Medium / Hard AP on the images of a :class:`DataSource`, with
the official ground truth when the folder has it (what training evaluates, and ``asfd eval``)."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from detectors.data.sources import DataSource, load_samples
from detectors.data.wider import FaceSample
from detectors.engine.inference import DetectorBase, MultiScaleTest, as_numpy
from detectors.evaluation.wider_eval import (
    SETTINGS, WiderGroundTruth, WiderResult, evaluate_wider, load_wider_ground_truth,
    restrict_ground_truth,
)


def ground_truth_from_samples(samples: Sequence[FaceSample]) -> WiderGroundTruth:
    """Ground truth for a folder without the official ``.mat`` files: every valid box counts
    in all three settings (``invalid`` boxes are ignore regions). Easy/Medium/Hard are then
    the same number, not the official split."""
    return WiderGroundTruth(
        tuple(s.key for s in samples), tuple(s.boxes.astype(np.float64) for s in samples),
        {setting: tuple(~s.invalid for s in samples) for setting in SETTINGS})


@dataclass(frozen=True)
class EvalSet:
    """Images to evaluate on, their ground truth, and whether it is the official
    Easy/Medium/Hard split (else every face counts in all three)."""

    samples: tuple[FaceSample, ...]
    ground_truth: WiderGroundTruth
    official: bool


def evaluation_set(source: DataSource) -> EvalSet:
    """The images of ``source`` with the official ``.mat`` ground truth (``source.ground_truth``,
    else ``<dir>/ground_truth`` or ``<dir>``) restricted to them, or, without ``.mat`` files,
    :func:`ground_truth_from_samples`."""
    samples = tuple(load_samples(source))
    try:
        gt = load_wider_ground_truth(source.ground_truth or source.dir)
    except FileNotFoundError:
        if source.ground_truth:
            raise
        warnings.warn(f"{source.dir} has no official WIDER .mat ground truth: every face counts "
                      "in Easy, Medium and Hard alike", stacklevel=2)
        return EvalSet(samples, ground_truth_from_samples(samples), False)
    return EvalSet(samples, restrict_ground_truth(gt, [s.key for s in samples]), True)


@dataclass
class Evaluation:
    """AP per setting, the detections (``{key: (boxes, scores)}``) and whether the official
    Easy/Medium/Hard split was used."""

    results: dict[str, WiderResult]
    detections: dict[str, tuple[np.ndarray, np.ndarray]]
    official: bool

    def ap(self) -> dict[str, float]:
        return {f"ap_{s}": r.ap for s, r in self.results.items()}


def evaluate_detector(
    detector: DetectorBase, eval_set: EvalSet, multiscale: MultiScaleTest | None = None,
    batch_size: int = 1, progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """WIDER Easy/Medium/Hard AP of ``detector`` on ``eval_set``."""
    found = detector.detect_paths({s.key: s.image_path for s in eval_set.samples}, batch_size,
                                  multiscale, progress)
    detections = as_numpy(found)
    return Evaluation(evaluate_wider(detections, eval_set.ground_truth), detections,
                      eval_set.official)
