"""Training configuration: nested dataclasses read from YAML, overridable with ``key=value``.

A config file mirrors :class:`TrainConfig` section by section (``model``, ``data``, ``optim``,
``schedule``, ``loss``, ``eval``, ``run``); every key is optional and unknown keys are errors
naming the file and the dotted key. ``_base_: other.yaml`` (relative to the file) starts from
another config: sections merge key by key, and a key's value (a list, a mapping such as
``data.val``, a scalar) replaces the base's whole.
``--set optim.lr=0.01`` (parsed as YAML, so lists and booleans work:
``--set schedule.milestones=[10,16]``) overrides any field after loading. Files and overrides
read YAML 1.2 floats (``8e-3`` is a float, not the string YAML 1.1 makes of it); values are
range-checked (:data:`RANGES`).

Defaults are the paper's recipe (Sec. 4.1): SGD momentum 0.9, weight decay 5e-4, lr linearly
from 1e-6 to 0.015 over the first 500 iterations, divided by 10 at epochs 25 and 40 of 50;
the rest (input size, batch, matching, loss constants) is our choice, documented per field.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from detectors.data.augment import AugmentConfig
from detectors.data.sources import DataSource
from nas_search.runtime import (
    ConfigError, apply_overrides, dataclass_from_dict, read_config_file,
)

OptimizerName = Literal["sgd", "adamw"]


@dataclass
class ModelConfig:
    """``name``: an ASFD variant ``D0``..``D6``, a reference detector (``retinaface_mnet025``,
    ``dsfd_like``) or a model file (``model.pt``: its architecture and weights are the starting
    point, e.g. a derived network); ``genotype``: a library name or a YAML file (ASFD variants);
    ``pretrained``: optional local ImageNet weights of the backbone (nothing downloads);
    ``options``: extra keyword arguments of the reference detector's builder."""

    name: str = "D0"
    genotype: str = "asfd_paper_like"
    pretrained: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """``size``: square training input (after crop + resize); ``workers``: DataLoader processes;
    ``augment``: the training augmentation (:class:`~detectors.data.augment.AugmentConfig`)."""

    train: list[DataSource] = field(default_factory=list)
    val: DataSource | None = None
    size: int = 640
    batch_size: int = 8
    workers: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    """``name``: ``sgd`` (Sec. 4.1; ``momentum``, L2 ``weight_decay``) or ``adamw`` (Adam with
    decoupled ``weight_decay``; ``momentum`` unused). AdamW is our choice for training from
    scratch: it scales each step by the gradient's running magnitude, which differs widely
    between ASFD-D0 and the RetinaFace-style baseline (README, "Learning probe"), so one learning
    rate serves both. ``lr`` is the rate after warm-up; ``grad_clip`` the max global L2
    norm (0 disables; our choice, it keeps from-scratch training of tiny models stable).
    ``ema_decay`` > 0 ships a moving average of the weights with that decay instead of the last
    weights (:mod:`detectors.engine.ema`); 0 disables it."""

    name: OptimizerName = "sgd"
    lr: float = 0.015
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 10.0
    ema_decay: float = 0.0


@dataclass
class ScheduleConfig:
    """Linear warm-up from ``warmup_start_lr`` over ``warmup_iters`` iterations, then ``policy``:
    ``step`` multiplies the lr by ``gamma`` at each milestone (the paper's); ``cosine`` follows
    ``lr * (r + (1 - r) (1 + cos(pi t)) / 2)`` with ``r = min_lr_ratio`` and ``t`` the share of
    training done. Training ends after ``epochs``.

    ``milestone_unit``: ``epoch`` (the paper's: ``milestones`` are epochs; cosine's ``t`` counts
    iterations) or ``budget`` (``milestones`` and ``t`` are fractions of ``run.max_minutes``
    elapsed, e.g. ``[0.6, 0.85]``, and ``epochs`` is only an upper bound): for time-boxed runs
    whose speed is not known in advance (a shared CPU). The lr then depends on the wall clock,
    so such runs are not bit-reproducible.
    """

    policy: Literal["step", "cosine"] = "step"
    min_lr_ratio: float = 0.01
    epochs: int = 50
    milestones: list[float] = field(default_factory=lambda: [25, 40])
    milestone_unit: Literal["epoch", "budget"] = "epoch"
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_start_lr: float = 1e-6


@dataclass
class LossConfig:
    """``name`` in ``detectors.models.losses.LOSSES``; ``params`` its keyword arguments (DRMC:
    ``margin`` m, ``lambda1``, ``lambda2``, ``iou_threshold`` of the anchor matching; the paper
    gives no values, :mod:`detectors.models.losses` documents ours)."""

    name: str = "drmc"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """AP on ``data.val`` every ``every`` epochs (0: only at the end) with
    :class:`detectors.engine.inference.Detector`; images are resized by ``scale`` (1.0: original
    size, the paper's single-scale protocol), and those whose longer side then exceeds
    ``max_size`` are shrunk to it."""

    every: int = 5
    score_threshold: float = 0.05
    max_size: int | None = None
    scale: float = 1.0


@dataclass
class RunConfig:
    """``max_minutes``: wall-clock budget; on expiry the run checkpoints, evaluates and stops.
    ``amp``: mixed precision, used on CUDA only. ``channels_last``: NHWC memory format for the
    model and its inputs (faster depthwise convolutions on CPUs; README).
    ``threads``: torch CPU threads (0: the cores shared out among the local processes).
    ``log_every``: iterations between metrics.csv rows;
    ``checkpoint_every``: epochs between checkpoints (one is also written on stopping)."""

    seed: int = 0
    max_minutes: float | None = None
    amp: bool = True
    channels_last: bool = True
    device: str = "auto"
    threads: int = 0
    log_every: int = 10
    checkpoint_every: int = 1


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        problems = [f"{key} must be {rule}, got {value!r}" for key, (ok, rule) in RANGES.items()
                    if (value := field_value(self, key)) is not None
                    and not (math.isfinite(value) and ok(value))]
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- value ranges
#: A value check and the rule it enforces, in words.
Rule = tuple[Callable[[float], bool], str]


def at_least(low: float) -> Rule:
    return (lambda v: v >= low), f">= {low}"


def above(low: float) -> Rule:
    return (lambda v: v > low), f"> {low}"


def within(low: float, high: float) -> Rule:
    return (lambda v: low <= v <= high), f"in [{low}, {high}]"


#: The ranges :class:`TrainConfig` checks (``None`` values pass; NaN and infinity never do).
RANGES: dict[str, Rule] = {
    "data.size": at_least(32), "data.batch_size": at_least(1), "data.workers": at_least(0),
    "data.augment.min_face": at_least(0), "data.augment.photometric_p": within(0, 1),
    "data.augment.anchor_sampling_p": within(0, 1), "data.augment.crop_min_scale": within(0.01, 1),
    "data.augment.crop_trials": at_least(1), "data.augment.flip_p": within(0, 1),
    "optim.lr": above(0), "optim.momentum": within(0, 1), "optim.weight_decay": at_least(0),
    "optim.grad_clip": at_least(0), "optim.ema_decay": within(0, 0.99999),
    "schedule.epochs": at_least(1), "schedule.gamma": above(0),
    "schedule.warmup_iters": at_least(0), "schedule.warmup_start_lr": at_least(0),
    "schedule.min_lr_ratio": within(0, 1),
    "eval.every": at_least(0), "eval.score_threshold": within(0, 1),
    "eval.max_size": at_least(1), "eval.scale": above(0),
    "run.max_minutes": at_least(0), "run.threads": at_least(0), "run.log_every": at_least(1),
    "run.checkpoint_every": at_least(1),
}


def field_value(obj: Any, key: str) -> Any:
    """The value of dotted ``key`` (``"optim.lr"``) in nested dataclasses."""
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """A validated :class:`TrainConfig`; errors name ``source`` and the dotted key."""
    return dataclass_from_dict(TrainConfig, data, source=source)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config (or start from the defaults) and apply ``key=value`` overrides.

    Relative data paths stay relative to the working directory (the project root for the
    shipped configs).
    """
    data = {} if path is None else read_config_file(Path(path))
    source = "defaults" if path is None else str(path)
    return config_from_dict(apply_overrides(data, list(overrides)), source)
