"""``asfd demo``: the whole method on a small budget, from data to a held-out AP, composed of the
steps of :mod:`detectors.workflows.pipeline`."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from detectors.engine.macs import Profile, profile_model
from detectors.engine.reporting import TrainEvent
from detectors.models.asfd import Variant, save_model
from detectors.workflows.pipeline import (
    PipelineConfig, SearchArtifacts, derive_detector, held_out_split, retrain, retrain_config,
    run_search, search_steps, synthetic_dataset,
)
from nas_search.search import CHECKPOINT_FILE, ProgressFn


@dataclass
class DemoSettings:
    """``demo`` section: held-out share, ASFD variant, and the synthetic set made when no data
    folder is given (``synthetic_size`` is width, height)."""

    holdout_fraction: float = 0.25
    variant: Variant = "D0"
    synthetic_images: int = 48
    synthetic_size: list[int] = dataclasses.field(default_factory=lambda: [320, 240])


@dataclass
class DemoResult:
    """Where everything of a demo run is; ``synthetic``: AP is a smoke test, not a figure."""

    data_dir: Path
    synthetic: bool
    search: SearchArtifacts
    untrained_model: Path
    profile: Profile
    train_dir: Path
    metrics: dict[str, float]


def run_demo(config: PipelineConfig[DemoSettings], out_dir: str | Path,
             data_dir: str | Path | None = None,
             search_progress: Callable[[int], ProgressFn] | None = None,
             train_callback: Callable[[TrainEvent], None] | None = None) -> DemoResult:
    """The whole method on a small budget: (synthetic data,) an AutoFEM-CPM search, the derived
    ASFD network, a short retraining and its held-out AP. Rerunning resumes what is unfinished.

    ``search_progress(total_steps)`` returns the search's progress callback."""
    out_dir = Path(out_dir)
    settings = config.settings
    synthetic = data_dir is None
    if synthetic:
        width, height = settings.synthetic_size
        data_dir = synthetic_dataset(out_dir / "data", settings.synthetic_images, (width, height),
                                     config.search.search.seed)
    fit, _ = held_out_split(data_dir, settings.holdout_fraction)
    search_dir = out_dir / "search"
    progress = None if search_progress is None else search_progress(
        search_steps(config.search, fit))
    artifacts = run_search(config.search, fit, search_dir,
                           resume=(search_dir / CHECKPOINT_FILE).is_file(), progress=progress)
    model = derive_detector(artifacts.genotype, settings.variant)
    untrained = save_model(model, out_dir / "model_untrained.pt",
                           extra={"derived_from": str(artifacts.genotype_path)})
    train_config = retrain_config(config.train, artifacts.genotype_path, settings.variant,
                                  data_dir, settings.holdout_fraction)
    result = retrain(train_config, out_dir / "train", train_callback)
    return DemoResult(Path(data_dir), synthetic, artifacts, untrained, profile_model(model),
                      out_dir / "train", result.progress.metrics)
