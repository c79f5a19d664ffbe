"""A training run's folder: ``config.yaml``, the training state ``last.pt`` and the detector
``model.pt`` (rank 0 writes; ``.pt`` files atomically), and the rules of resuming.

``last.pt`` holds the model, optimizer and grad scaler states (and the weights' moving average
where ``optim.ema_decay`` keeps one), the :class:`Progress` counters and the RNG states;
``model.pt`` is the detector the run ships: the moving average where there is one. A resumed
run rebuilds the network that ``model.pt`` records and keeps the
settings stored in ``last.pt`` (a changed one is an error naming it, but for
:data:`RESUME_FREE` and the :data:`RESUME_ALLOWABLE` ones the caller allows); both are read
with ``torch.load(weights_only=True)``: a crafted file cannot run code.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from detectors.engine.config import TrainConfig
from detectors.models.asfd import load_model, save_model
from nas_search.runtime import (
    NUMPY_ARRAY_GLOBALS, ConfigError, is_under, load_checkpoint, refuse_changes, rng_state,
    save_checkpoint, set_rng_state,
)

STATE_FILE = "last.pt"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.yaml"
STATE_FORMAT = "asfd-train-state"
#: Settings a resumed run may change freely: they do not change what is computed.
RESUME_FREE: tuple[str, ...] = ("run.threads", "run.log_every", "run.checkpoint_every",
                                "data.workers")
#: Settings a resumed run may change when the user allows each (``--allow-change KEY``): the time
#: budget, the number of epochs, and what and how it evaluates.
RESUME_ALLOWABLE: tuple[str, ...] = ("run.max_minutes", "schedule.epochs", "eval", "data.val")


@dataclass
class Progress:
    """Where a run stands; saved in ``last.pt``. ``batch`` counts the batches of ``epoch``
    already trained on."""

    epoch: int = 0
    batch: int = 0
    iteration: int = 0
    elapsed_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainState:
    """What ``last.pt`` restores besides the counters: the objects whose state it holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None = None

    @property
    def shipped(self) -> nn.Module:
        """The detector ``model.pt`` holds and evaluation scores: the average, if kept."""
        return self.model if self.ema is None else self.ema.module


class RunFolder:
    """The files of the run in ``out_dir`` for ``config``; only the main rank (``writes``)
    writes them."""

    def __init__(self, out_dir: str | Path, config: TrainConfig, writes: bool) -> None:
        self.out_dir, self.config, self.writes = Path(out_dir), config, writes

    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_FILE

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL_FILE

    def recorded_model(self) -> nn.Module | None:
        """The network the run trains, as its ``model.pt`` records it (architecture, config,
        genotype), for a resumed run: it continues that network even where ``model.name`` now
        builds another one (a changed default, an edited genotype file). ``None`` without a
        ``model.pt``."""
        return load_model(self.model_path) if self.model_path.is_file() else None

    def prepare(self, resume: bool) -> None:
        """Refuse to start over an existing run or to resume none; create the folder and, for a
        new run, write ``config.yaml``."""
        if resume and not self.state_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {self.state_path} does not exist")
        if not resume and self.state_path.is_file():
            raise FileExistsError(f"{self.out_dir} already holds a run ({STATE_FILE}); pass "
                                  "--resume to continue it or choose another output folder")
        if self.writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                (self.out_dir / CONFIG_FILE).write_text(self.config.to_yaml())

    def read_state(self, allow_changes: Collection[str],
                   device: torch.device) -> dict[str, Any]:
        """``last.pt``, read without running code (tensors, plain data and NumPy's RNG state
        only), once the run's settings are checked: only :data:`RESUME_FREE` and the
        ``allow_changes`` (among :data:`RESUME_ALLOWABLE`) may differ from the stored ones.
        ``config.yaml`` then records the settings the run continues with."""
        path = self.state_path
        state = load_checkpoint(path, "training state", device, NUMPY_ARRAY_GLOBALS)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not an asfd training state")
        refused = [key for key in allow_changes if not is_under(key, RESUME_ALLOWABLE)]
        if refused:
            raise ConfigError(f"--allow-change {', '.join(refused)}: a resumed run may change "
                              f"only {', '.join(RESUME_ALLOWABLE)}")
        refuse_changes(state["config"], self.config.to_dict(), str(path), RESUME_FREE,
                       allow_changes, hint="; start a new run in another folder, or pass "
                       f"--allow-change KEY for {', '.join(RESUME_ALLOWABLE)}")
        if self.writes:
            (self.out_dir / CONFIG_FILE).write_text(self.config.to_yaml())
        return state

    @staticmethod
    def restore(state: dict[str, Any], into: TrainState) -> Progress:
        """Load ``state`` (:meth:`read_state`) into ``into`` and the RNGs; its counters."""
        into.model.load_state_dict(state["model"])
        into.optimizer.load_state_dict(state["optimizer"])
        into.scaler.load_state_dict(state["scaler"])
        if into.ema is not None:
            into.ema.load_state_dict(state["ema"])
        progress = Progress(**state["progress"])
        set_rng_state(state["rng"])
        return progress

    def save(self, of: TrainState, progress: Progress) -> Path | None:
        """Write ``model.pt``, then ``last.pt`` (so that a ``last.pt`` always has its
        network's ``model.pt`` beside it); the state file's path (``None`` off the main rank,
        which writes nothing)."""
        if not self.writes:
            return None
        save_model(of.shipped, self.model_path,
                   extra={"epoch": progress.epoch, "iteration": progress.iteration,
                          "metrics": progress.metrics})
        save_checkpoint({"format": STATE_FORMAT, "config": self.config.to_dict(),
                         "model": of.model.state_dict(),
                         "optimizer": of.optimizer.state_dict(),
                         "scaler": of.scaler.state_dict(), "progress": vars(progress),
                         "rng": rng_state(),
                         **({} if of.ema is None else {"ema": of.ema.state_dict()})},
                        self.state_path)
        return self.state_path
