"""``asfd tune``: the search space, pruning on intermediate AP, and a study shared by processes."""
from __future__ import annotations

import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch

from detectors.data.synthetic import make_synthetic
from detectors.engine.reporting import TrainEvent
from detectors.workflows import tune
from detectors.workflows.pipeline import load_pipeline_config
from detectors.workflows.tune import TuneSettings, default_storage, open_study, run_tune, suggest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "search_tune.yaml"
TrialState = optuna.trial.TrialState


@pytest.fixture(autouse=True, scope="module")
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    make_synthetic(root, 16, seed=6, size=(96, 72))
    return root


def test_suggest_samples_each_parameter_in_its_range():
    settings = TuneSettings()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = suggest(study.ask(), settings)
        for name, value in params.items():
            low, high = getattr(settings, name)
            assert low <= value <= high, name
    fixed = optuna.trial.FixedTrial({"margin": 0.1, "lambda1": 10.0, "lambda2": 0.5, "lr": 0.01})
    assert suggest(fixed, settings) == {"margin": 0.1, "lambda1": 10.0, "lambda2": 0.5, "lr": 0.01}
    with pytest.raises(ValueError, match=r"tune.lr: expected \[low, high\]"):
        suggest(fixed, TuneSettings(lr=[0.1, 0.01]))


def test_default_storage_is_an_absolute_sqlite_url(tmp_path):
    assert default_storage(tmp_path) == f"sqlite:///{tmp_path.resolve()}/tune.db"


def test_trials_train_with_their_parameters_and_weak_ones_are_pruned(monkeypatch, faces,
                                                                     tmp_path):
    curves = iter([[0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.05, 0.1, 0.2]])
    seen = []

    def fake_train(config, run_dir, resume=False, callback=None):
        seen.append(config)
        curve = next(curves)
        for epoch, ap in enumerate(curve):
            callback(TrainEvent(kind="eval", epoch=epoch, iteration=epoch, total_iterations=3,
                                elapsed_s=float(epoch), metrics={"ap_hard": ap}))
        return SimpleNamespace(progress=SimpleNamespace(metrics={"ap_hard": curve[-1]}))

    monkeypatch.setattr(tune, "train", fake_train)
    config = load_pipeline_config(CONFIG, TuneSettings, "tune", "smoke",
                                  ["tune.pruner_startup_trials=2"])
    study = run_tune(config, faces, tmp_path, n_trials=3)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[2].last_step == 0  # stopped at its first evaluation
    assert study.best_value == pytest.approx(0.7)
    for trial, trained in zip(study.trials, seen):
        assert trained.loss.name == "drmc" and trained.optim.lr == trial.params["lr"]
        assert {k: trained.loss.params[k] for k in ("margin", "lambda1", "lambda2")} == \
            {k: trial.params[k] for k in ("margin", "lambda1", "lambda2")}
        assert trained.data.val.subset == "val" and trained.model.name == "D0"
    assert (tmp_path / "tune.db").is_file()


def tune_worker(data: str, out: str, storage: str, trials: int, worker: int) -> None:
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_pipeline_config(CONFIG, TuneSettings, "tune", "smoke")
    run_tune(config, data, out, trials, storage, "shared", worker)


def test_two_processes_add_their_trials_to_one_sqlite_study(faces, tmp_path):
    storage = default_storage(tmp_path)
    settings = load_pipeline_config(CONFIG, TuneSettings, "tune", "smoke").settings
    open_study(storage, "shared", settings)  # created once, as `asfd tune --jobs` does
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=tune_worker, args=(str(faces), str(tmp_path), storage,
                                                         trials, worker))
               for worker, trials in enumerate((1, 2))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 1 + 2
    assert all(t.state == TrialState.COMPLETE and 0 <= t.value <= 1 for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3  # no repeats
    run_dirs = {t.user_attrs["run_dir"] for t in study.trials}
    assert len(run_dirs) == 3 and all((Path(d) / "model.pt").is_file() for d in run_dirs)
