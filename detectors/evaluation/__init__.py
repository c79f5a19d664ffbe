"""Evaluation: the official WIDER FACE protocol and the FDDB ROC."""
from detectors.evaluation.fddb_eval import FDDBResult, evaluate_fddb, read_fddb_detections
from detectors.evaluation.wider_eval import (
    SETTINGS,
    WiderGroundTruth,
    WiderResult,
    evaluate_wider,
    load_wider_ground_truth,
    read_wider_predictions,
    write_wider_predictions,
)

__all__ = [
    "FDDBResult", "evaluate_fddb", "read_fddb_detections",
    "SETTINGS", "WiderGroundTruth", "WiderResult", "evaluate_wider", "load_wider_ground_truth",
    "read_wider_predictions", "write_wider_predictions",
]
