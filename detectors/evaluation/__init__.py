"""Evaluation: the official WIDER FACE protocol and the FDDB ROC (names imported on first use)."""
from nas_search.runtime.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "fddb_eval": ("FDDBResult", "evaluate_fddb", "read_fddb_detections", "write_fddb_detections"),
    "wider_eval": ("SETTINGS", "WiderGroundTruth", "WiderResult", "evaluate_wider",
                   "load_wider_ground_truth", "read_wider_predictions", "write_wider_predictions"),
})
