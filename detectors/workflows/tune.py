"""Tuning the DRMC loss (Eq. 8: margin m, lambda1, lambda2) and the learning rate with Optuna.

The paper gives no values for m, lambda1 and lambda2 (Sec. 3.3); this tunes them, with the
base learning rate, for one ASFD variant and genotype. Each trial trains with the ``train``
recipe of the config on the training part of a folder and scores the chosen WIDER setting's AP
on its held-out part (:func:`detectors.workflows.pipeline.retrain_config`).

* Search space (our choice, around :class:`detectors.models.losses.DRMCLoss`' defaults 0.2 / 2 /
  1 and the paper's lr 0.015): m uniform, lambda1 log-uniform, lambda2 uniform, lr log-uniform, each
  over the ``[low, high]`` range of :class:`TuneSettings`.
* Pruning: every evaluation during training (``train.eval.every`` epochs) reports the AP at its
  epoch; Optuna's :class:`~optuna.pruners.MedianPruner` stops trials below the median of earlier
  trials at the same epoch.
* Storage: an Optuna RDB URL, ``sqlite:///RUN_DIR/tune.db`` by default. Every process started
  on the same storage and study name adds its trials to the one study (SQLite serialises the
  writes; connections wait up to ``SQLITE_TIMEOUT_S`` for the lock). Process ``worker`` seeds
  its TPE sampler with ``seed + worker``, so parallel workers do not repeat each other's
  start-up trials and a rerun of a worker repeats its proposals.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import optuna

from detectors.engine.reporting import TrainEvent
from detectors.engine.trainer import train
from detectors.models.asfd import Variant
from detectors.workflows.pipeline import PipelineConfig, retrain_config
from nas_search.runtime import NonFiniteLossError

Objective = Literal["easy", "medium", "hard"]
SQLITE_TIMEOUT_S = 60


@dataclass
class TuneSettings:
    """``tune`` section: what is trained (variant, genotype), on which held-out share, the
    objective, the ranges ``[low, high]`` searched, the sampler seed and the pruner's patience
    (trials run unpruned, evaluations ignored at the start of each trial)."""

    holdout_fraction: float = 0.25
    variant: Variant = "D0"
    genotype: str = "asfd_paper_like"
    objective: Objective = "hard"
    margin: list[float] = field(default_factory=lambda: [0.0, 0.5])
    lambda1: list[float] = field(default_factory=lambda: [2.0, 50.0])
    lambda2: list[float] = field(default_factory=lambda: [0.25, 2.0])
    lr: list[float] = field(default_factory=lambda: [0.003, 0.05])
    seed: int = 0
    pruner_startup_trials: int = 3
    pruner_warmup_evals: int = 0


def suggest(trial: optuna.Trial, settings: TuneSettings) -> dict[str, float]:
    """One point of the search space (see the module docstring)."""
    for name in ("margin", "lambda1", "lambda2", "lr"):
        low, high = getattr(settings, name)
        if not low < high:
            raise ValueError(f"tune.{name}: expected [low, high] with low < high, got {low, high}")
    return {
        "margin": trial.suggest_float("margin", *settings.margin),
        "lambda1": trial.suggest_float("lambda1", *settings.lambda1, log=True),
        "lambda2": trial.suggest_float("lambda2", *settings.lambda2),
        "lr": trial.suggest_float("lr", *settings.lr, log=True),
    }


def default_storage(out_dir: str | Path) -> str:
    """``sqlite:///<absolute out_dir>/tune.db``."""
    return f"sqlite:///{(Path(out_dir) / 'tune.db').resolve()}"


def open_study(storage: str, study_name: str, settings: TuneSettings, worker: int = 0
               ) -> optuna.Study:
    """Create or load the shared study (maximising AP) with this worker's sampler."""
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if storage.startswith("sqlite") else {}
    return optuna.create_study(
        storage=optuna.storages.RDBStorage(storage, engine_kwargs=kwargs),
        study_name=study_name, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=settings.seed + worker),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials,
                                           n_warmup_steps=settings.pruner_warmup_evals))


def objective(trial: optuna.Trial, config: PipelineConfig[TuneSettings], data_dir: str | Path,
              out_dir: str | Path) -> float:
    """Train with the trial's loss weights and lr; return the held-out AP of the objective."""
    settings = config.settings
    params = suggest(trial, settings)
    base = retrain_config(config.train, settings.genotype, settings.variant, data_dir,
                          settings.holdout_fraction)
    loss = dataclasses.replace(base.loss, name="drmc", params={
        **base.loss.params, **{k: params[k] for k in ("margin", "lambda1", "lambda2")}})
    train_config = dataclasses.replace(base, loss=loss,
                                       optim=dataclasses.replace(base.optim, lr=params["lr"]))
    key = f"ap_{settings.objective}"
    evals = 0

    def on_event(event: TrainEvent) -> None:
        nonlocal evals
        if event.kind == "eval" and key in event.metrics:
            trial.report(event.metrics[key], evals)
            evals += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"{key} {event.metrics[key]:.4f} at epoch {event.epoch}")

    run_dir = Path(out_dir) / f"{trial.study.study_name}-trial{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    result = train(train_config, run_dir, callback=on_event)
    return result.progress.metrics[key]


def run_tune(config: PipelineConfig[TuneSettings], data_dir: str | Path, out_dir: str | Path,
             n_trials: int, storage: str | None = None, study_name: str = "drmc",
             worker: int = 0) -> optuna.Study:
    """Add ``n_trials`` trials to the study (a trial whose loss diverges counts as failed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(storage or default_storage(out_dir), study_name, config.settings, worker)
    study.optimize(lambda trial: objective(trial, config, data_dir, out_dir), n_trials=n_trials,
                   catch=(NonFiniteLossError,))
    return study
