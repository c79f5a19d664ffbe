"""Training: config loading, data selection, lr schedule, a short run, resume, NaN detection."""
from __future__ import annotations

import math

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.data.sources import DataSource, is_val_position, load_samples, split_images
from detectors.data.synthetic import make_synthetic
from detectors.data.wider import FaceSample
from detectors.engine.checkpoint import CONFIG_FILE, MODEL_FILE, STATE_FILE, STATE_FORMAT
from detectors.engine.config import ModelConfig, OptimConfig, ScheduleConfig, load_config
from detectors.engine.evaluate import ground_truth_from_samples
from detectors.engine.reporting import METRICS_FILE, TrainEvent
from detectors.engine.schedule import build_optimizer, lr_at
from detectors.engine.trainer import build_model, train
from detectors.evaluation.wider_eval import (
    evaluate_wider, load_wider_ground_truth, restrict_ground_truth,
)
from detectors.models.asfd import load_model
from detectors.models.losses import DSFDLoss, LossResult, build_loss, register_loss
from nas_search.runtime import (
    CheckpointError, ConfigError, DistContext, NonFiniteLossError, resolve_device,
)
from search_spaces.schemas import fpn_of

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VAL_SAMPLE = SHARED / "wider-val-sample"
needs_val_sample = pytest.mark.skipif(not VAL_SAMPLE.is_dir(),
                                      reason=f"shared data not found at {VAL_SAMPLE}")

#: A tiny D0 (16 channels) on 64 px crops of a synthetic set: 8 images, 2 batches per epoch.
TINY = ["model.name=D0", "model.options={width: 16}", "data.size=64", "data.batch_size=4",
        "data.workers=0", "schedule.warmup_iters=2", "optim.lr=0.01", "run.log_every=1",
        "run.threads=1", "run.device=cpu", "eval.every=0"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, 8, seed=3, size=(96, 80))
    return root


def tiny_config(data: Path, *extra: str):
    return load_config(None, [*TINY, f"data.train=[{{dir: {data}}}]", *extra])


def fake_sample(rel: str) -> FaceSample:
    return FaceSample(Path(rel), rel, np.zeros((0, 4), np.float32), np.zeros((0, 6), np.int8))


# ----------------------------------------------------------------------------- config
def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: retinaface_mnet025}\noptim: {lr: 0.02}\n"
                    "data: {train: [{dir: a, subset: train}]}\n")
    cfg = load_config(path, ["optim.lr=0.5", "schedule.milestones=[3, 4]", "run.max_minutes=40"])
    assert cfg.model.name == "retinaface_mnet025" and cfg.optim.lr == 0.5
    assert cfg.schedule.milestones == [3, 4] and cfg.run.max_minutes == 40.0
    assert cfg.data.train == [DataSource("a", subset="train")]
    assert cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4  # Sec. 4.1
    assert cfg.optim.name == "sgd"


def test_build_optimizer_follows_optim_name():
    params = list(torch.nn.Linear(2, 2).parameters())
    sgd = build_optimizer(params, OptimConfig(lr=0.02, momentum=0.8, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["lr"], sgd.defaults["momentum"], sgd.defaults["weight_decay"]) == \
        (0.02, 0.8, 1e-4)
    adamw = build_optimizer(params, OptimConfig(name="adamw", lr=1e-3, weight_decay=5e-4))
    assert isinstance(adamw, torch.optim.AdamW)
    assert (adamw.defaults["lr"], adamw.defaults["weight_decay"]) == (1e-3, 5e-4)
    with pytest.raises(ValueError, match="optim.name 'adam'"):
        build_optimizer(params, OptimConfig(name="adam"))


def test_config_base_chain_merges_sections_and_replaces_lists(tmp_path):
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.02, momentum: 0.8}\n"
                                        "schedule: {milestones: [1, 2, 3]}\n"
                                        "data: {val: {dir: a, ground_truth: g}, size: 96}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim: {lr: 0.5}\n"
                                         "schedule: {milestones: [7]}\ndata: {val: {dir: b}}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.schedule.milestones) == (0.5, 0.8, [7])
    assert cfg.data.val == DataSource("b") and cfg.data.size == 96  # sources are not mixed
    (tmp_path / "base.yaml").write_text("_base_: child.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "child.yaml")


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "optim: unknown key(s) ['lrr']"),
    ("optim.lr=fast", "optim.lr: expected float"),
    ("optim.name=adam", "optim.name: 'adam' is not one of ['sgd', 'adamw']"),
    ("data.train=[{subset: val}]", "data.train[0]: missing required key(s) ['dir']"),
    ("data.train=[{dir: a, subset: test}]", "data.train[0].subset: 'test' is not one of"),
    ("optim.lr=[1", "override 'optim.lr=[1', line 1: not valid YAML: expected ',' or ']'"),
    ("data.size=0", "data.size must be >= 32, got 0"),
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("schedule.epochs=0", "schedule.epochs must be >= 1, got 0"),
    ("optim.lr=0", "optim.lr must be > 0, got 0.0"),
    ("optim.lr=.nan", "optim.lr must be > 0, got nan"),
    ("optim.grad_clip=-1", "optim.grad_clip must be >= 0, got -1.0"),
    ("schedule.gamma=-0.1", "schedule.gamma must be > 0, got -0.1"),
    ("run.threads=-1", "run.threads must be >= 0, got -1"),
    ("run.max_minutes=-5", "run.max_minutes must be >= 0, got -5.0"),
    ("data.augment.crop_min_scale=0", "data.augment.crop_min_scale must be in [0.01, 1], got 0"),
    ("data.augment.flip=0.5", "data.augment: unknown key(s) ['flip']"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_config_reads_yaml_1_2_floats_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 8e-3, weight_decay: 1E-4}\n")
    cfg = load_config(path, ["schedule.warmup_start_lr=1e-6", "run.max_minutes=1e2"])
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (8e-3, 1e-4)
    assert (cfg.schedule.warmup_start_lr, cfg.run.max_minutes) == (1e-6, 100.0)
    assert load_config(None, ["schedule.epochs=12"]).schedule.epochs == 12  # ints stay ints


def test_unknown_loss_params_and_model_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"loss\.params: unknown key\(s\) \['foo'\] of loss "
                                          r"'drmc'; known: \['iou_threshold'"):
        build_loss("drmc", foo=1)
    with pytest.raises(ConfigError, match="DRMCLoss: margin must be >= 0, got -0.1"):
        build_loss("drmc", margin=-0.1)
    for name in ("D0", "retinaface_mnet025", "dsfd_like"):
        with pytest.raises(ConfigError, match=r"model\.options of .*: unknown key\(s\) \['foo'\]"):
            build_model(ModelConfig(name, options={"foo": 1}))


def test_a_device_this_machine_lacks_is_an_error():
    with pytest.raises(ValueError, match=r"device 'cuda:\d+': this machine has \d+ CUDA"):
        resolve_device(f"cuda:{torch.cuda.device_count()}", DistContext())
    with pytest.raises(ValueError, match="device 'gpu': not a device name"):
        resolve_device("gpu", DistContext())


# ----------------------------------------------------------------------------- schedule
def test_lr_warmup_then_step_decay():
    s = ScheduleConfig(epochs=50, milestones=[25, 40], warmup_iters=500, warmup_start_lr=1e-6)
    assert lr_at(0, 100, 0.015, s) == pytest.approx(1e-6)
    assert lr_at(250, 100, 0.015, s) == pytest.approx(1e-6 + 0.5 * (0.015 - 1e-6))
    assert lr_at(500, 100, 0.015, s) == pytest.approx(0.015)
    assert lr_at(2499, 100, 0.015, s) == pytest.approx(0.015)
    assert lr_at(2500, 100, 0.015, s) == pytest.approx(0.0015)  # epoch 25
    assert lr_at(4000, 100, 0.015, s) == pytest.approx(0.00015)  # epoch 40
    timed = ScheduleConfig(milestones=[0.6, 0.85], milestone_unit="budget", warmup_iters=10)
    assert lr_at(5000, 10, 0.01, timed, budget_used=0.59) == pytest.approx(0.01)
    assert lr_at(5, 10, 0.01, timed, budget_used=0.9) == pytest.approx(0.005, rel=1e-3)  # warm-up
    assert lr_at(11, 10, 0.01, timed, budget_used=0.6) == pytest.approx(0.001)
    assert lr_at(11, 10, 0.01, timed, budget_used=0.9) == pytest.approx(0.0001)


def test_cosine_schedule_by_epoch_and_by_budget():
    s = ScheduleConfig(policy="cosine", epochs=10, warmup_iters=5, min_lr_ratio=0.1)
    assert lr_at(5, 10, 1.0, s) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.05)) / 2)
    assert lr_at(50, 10, 1.0, s) == pytest.approx(0.55)          # half-way
    assert lr_at(100, 10, 1.0, s) == pytest.approx(0.1) == lr_at(500, 10, 1.0, s)
    timed = ScheduleConfig(policy="cosine", milestone_unit="budget", warmup_iters=0,
                           min_lr_ratio=0.0)
    assert lr_at(7, 10, 0.02, timed, budget_used=0.5) == pytest.approx(0.01)
    assert lr_at(7, 10, 0.02, timed, budget_used=1.2) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- data selection
def test_split_is_even_per_event_deterministic_and_disjoint():
    samples = [fake_sample(f"{e}--Ev/{e}_{i:02d}.jpg") for e in (0, 1) for i in range(7)][::-1]
    train, val = split_images(samples, 0.3)
    assert [is_val_position(i, 0.3) for i in range(7)] == [0, 0, 0, 1, 0, 0, 1]
    assert sorted(s.rel_path for s in val) == ["0--Ev/0_03.jpg", "0--Ev/0_06.jpg",
                                               "1--Ev/1_03.jpg", "1--Ev/1_06.jpg"]
    assert len(train) == 10 and not {s.rel_path for s in train} & {s.rel_path for s in val}
    assert [s.rel_path for s in split_images(samples, 0.3)[1]] == [s.rel_path for s in val]


@needs_val_sample
def test_held_out_part_is_scored_on_its_own_faces(tmp_path):
    held_out = load_samples(DataSource(str(VAL_SAMPLE), subset="val", val_fraction=0.5))
    rest = load_samples(DataSource(str(VAL_SAMPLE), subset="train", val_fraction=0.5))
    assert (len(held_out), len(rest)) == (65, 71)
    gt = load_wider_ground_truth(VAL_SAMPLE)
    # The ground-truth boxes of the held-out images as predictions (scores decreasing).
    preds = {}
    for k, s in enumerate(held_out):
        boxes = gt.boxes[gt.keys.index(s.key)]
        preds[s.key] = (boxes, 1.0 - 1e-4 * (k * 1000 + np.arange(len(boxes))))
    restricted = restrict_ground_truth(gt, [s.key for s in held_out])
    assert {s: round(r.ap, 6) for s, r in evaluate_wider(preds, restricted).items()} == \
        {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    with pytest.warns(UserWarning, match="no predictions for 71"):
        whole = evaluate_wider(preds, gt)
    assert whole["hard"].ap < 0.7  # the other half's faces would count as missed
    listed = tmp_path / "list.txt"
    listed.write_text("# two images\n" + "\n".join(s.rel_path for s in held_out[:2]) + "\n")
    picked = load_samples(DataSource(str(VAL_SAMPLE), images=str(listed)))
    assert [s.rel_path for s in picked] == [s.rel_path for s in held_out[:2]]
    listed.write_text("0--Parade/not_there.jpg\n")
    with pytest.raises(ValueError, match="not_there.jpg"):
        load_samples(DataSource(str(VAL_SAMPLE), images=str(listed)))


def test_ground_truth_without_mat_files_counts_valid_faces(synthetic):
    samples = load_samples(DataSource(str(synthetic)))
    gt = ground_truth_from_samples(samples)
    assert gt.keys == tuple(s.key for s in samples)
    assert all(m.sum() == len(s.boxes) for m, s in zip(gt.countable["easy"], samples))


# ----------------------------------------------------------------------------- training runs
def run_and_record(config, out_dir, resume=False, allow_changes=()):
    events: list[TrainEvent] = []
    result = train(config, out_dir, resume=resume, callback=events.append,
                   allow_changes=allow_changes)
    losses = {e.iteration: e.loss for e in events if e.kind == "iteration"}
    return result, losses


def test_short_run_lowers_loss_and_writes_files(synthetic, tmp_path):
    # A run that died before its first checkpoint left a metrics.csv: a fresh run replaces it.
    (tmp_path / METRICS_FILE).write_text("kind,epoch,iteration\ntrain,0,1\ntrain,0,2\n")
    result, losses = run_and_record(tiny_config(synthetic, "schedule.epochs=3"), tmp_path)
    assert result.stopped == "completed" and result.progress.iteration == 6
    assert losses[6] < losses[1]
    for name in (STATE_FILE, MODEL_FILE, METRICS_FILE, "config.yaml"):
        assert (tmp_path / name).is_file(), name
    rows = list(csv.DictReader((tmp_path / METRICS_FILE).open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[0]["lr"]) == pytest.approx(1e-6) and float(rows[2]["lr"]) == 0.01
    assert {"second/reg", "second/cls", "first/cls", "images_per_s"} <= set(rows[0])
    model = load_model(tmp_path / MODEL_FILE)
    ref = result.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(synthetic), tmp_path)


def test_resume_continues_where_the_time_budget_stopped(synthetic, tmp_path):
    _, straight = run_and_record(tiny_config(synthetic, "schedule.epochs=2"), tmp_path / "a")
    # max_minutes=0: stop after the first iteration, mid-epoch; then resume without a budget.
    stopped, first = run_and_record(tiny_config(synthetic, "schedule.epochs=2",
                                                "run.max_minutes=0"), tmp_path / "b")
    assert stopped.stopped == "time_budget" and stopped.progress.iteration == 1
    assert (stopped.progress.epoch, stopped.progress.batch) == (0, 1)
    with (tmp_path / "b" / METRICS_FILE).open("a") as f:  # rows logged after the checkpoint
        f.write("train,0,2,9,0.01,1,1\ntrain,0,3,9,0.01,1,1\ntrain,0,4,9")  # ...and a torn one
    resumed, rest = run_and_record(tiny_config(synthetic, "schedule.epochs=2"), tmp_path / "b",
                                   resume=True, allow_changes=["run.max_minutes"])
    assert resumed.progress.iteration == 4 and sorted(rest) == [2, 3, 4]
    rows = list(csv.DictReader((tmp_path / "b" / METRICS_FILE).open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]  # replayed rows written once
    assert all(float(r["elapsed_s"]) != 9 for r in rows)
    for it in (1, 2, 3, 4):
        assert {**first, **rest}[it] == pytest.approx(straight[it], rel=1e-5), it


def test_weight_average_is_shipped_and_resumed(synthetic, tmp_path):
    """With ``optim.ema_decay`` the run ships the average (``model.pt``, the returned model),
    keeps the raw weights and the average in ``last.pt``, and a resumed run ends with the same
    average as an uninterrupted one."""
    ema = ("schedule.epochs=2", "optim.ema_decay=0.9")
    straight, _ = run_and_record(tiny_config(synthetic, *ema), tmp_path / "a")
    state = torch.load(tmp_path / "a" / STATE_FILE, weights_only=False)
    shipped = load_model(tmp_path / "a" / MODEL_FILE).state_dict()
    average = {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}
    assert int(state["ema"]["n_averaged"]) == 4
    assert all(torch.equal(shipped[k], average[k]) for k in shipped)
    assert all(torch.equal(v, shipped[k]) for k, v in straight.model.state_dict().items())
    weights = [k for k, v in shipped.items() if k.endswith(".weight")]
    assert any(not torch.equal(state["model"][k], shipped[k]) for k in weights)  # raw kept
    run_and_record(tiny_config(synthetic, *ema, "run.max_minutes=0"), tmp_path / "b")
    run_and_record(tiny_config(synthetic, *ema), tmp_path / "b", resume=True,
                   allow_changes=["run.max_minutes"])
    resumed = load_model(tmp_path / "b" / MODEL_FILE).state_dict()
    for key, value in shipped.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_resume_refuses_changed_settings_unless_allowed(synthetic, tmp_path):
    train(tiny_config(synthetic, "schedule.epochs=1"), tmp_path)
    changed = tiny_config(synthetic, "schedule.epochs=1", "model.options={width: 8}",
                          "data.size=96", "optim.lr=0.5", "run.log_every=2")  # log_every: free
    with pytest.raises(ConfigError, match=r"last\.pt: cannot resume with changed settings \("
                       r"model\.options\.width: 16 -> 8; data\.size: 64 -> 96; optim\.lr: 0\.01 "
                       r"-> 0\.5\); a resumed run keeps"):
        train(changed, tmp_path, resume=True)
    with pytest.raises(ConfigError, match="--allow-change optim.lr: a resumed run may change only"):
        train(changed, tmp_path, resume=True, allow_changes=["optim.lr"])
    longer = tiny_config(synthetic, "schedule.epochs=2", "run.log_every=2")
    with pytest.raises(ConfigError, match=r"schedule\.epochs: 1 -> 2"):
        train(longer, tmp_path, resume=True)
    assert load_config(tmp_path / CONFIG_FILE).schedule.epochs == 1
    result = train(longer, tmp_path, resume=True, allow_changes=["schedule.epochs"])
    assert result.progress.iteration == 4
    assert load_config(tmp_path / CONFIG_FILE).schedule.epochs == 2  # what the run went on with


def test_resume_continues_the_network_the_run_started_with(synthetic, tmp_path):
    """A genotype file edited (or a default changed) after the run started does not swap the
    network under a resumed run: it rebuilds the one ``model.pt`` records."""
    genotype = tmp_path / "g.yaml"
    shipped = (Path(__file__).parents[1] / "genotypes/library/asfd_paper_like.yaml").read_text()
    genotype.write_text(shipped)
    assert "pathway: one_hop" in shipped
    run = tmp_path / "run"
    train(tiny_config(synthetic, "schedule.epochs=1", f"model.genotype={genotype}"), run)
    genotype.write_text(shipped.replace("pathway: one_hop", "pathway: recursive"))
    result = train(tiny_config(synthetic, "schedule.epochs=2", f"model.genotype={genotype}"),
                   run, resume=True, allow_changes=["schedule.epochs"])
    assert result.progress.iteration == 4
    assert result.model.feature_module[0].pathway == "one_hop"
    assert fpn_of(load_model(run / MODEL_FILE).genotype).pathway == "one_hop"


class RunsCode:
    """A pickle payload that creates ``marker`` when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_resume_never_runs_code_from_last_pt(synthetic, tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save({"format": STATE_FORMAT, "payload": RunsCode(marker)}, tmp_path / STATE_FILE)
    with pytest.raises(CheckpointError, match=r"last\.pt: not a readable training state: it "
                                              r"holds .*open"):
        train(tiny_config(synthetic), tmp_path, resume=True)
    assert not marker.exists()


class NaNAtThirdStep(DSFDLoss):
    """The DSFD loss, NaN from its third call on."""

    calls = 0

    def forward(self, output, gt_boxes) -> LossResult:
        result = super().forward(output, gt_boxes)
        NaNAtThirdStep.calls += 1
        if NaNAtThirdStep.calls >= 3:
            return LossResult(result.total * float("nan"), result.parts)
        return result


register_loss("test_nan_at_third_step")(NaNAtThirdStep)


def test_non_finite_loss_names_iteration_and_images_and_keeps_checkpoint(synthetic, tmp_path):
    NaNAtThirdStep.calls = 0
    config = tiny_config(synthetic, "schedule.epochs=3", "loss.name=test_nan_at_third_step")
    with pytest.raises(NonFiniteLossError, match=r"iteration 2 \(epoch 1, batch 0\)") as info:
        train(config, tmp_path)
    assert ".jpg" in str(info.value) and "synthetic" in str(info.value)
    state = torch.load(tmp_path / STATE_FILE, weights_only=False)
    assert state["progress"]["iteration"] == 2  # the checkpoint of epoch 1 is kept


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_uses_mixed_precision_and_evaluates(synthetic, tmp_path):
    config = tiny_config(synthetic, "schedule.epochs=2", "run.device=cuda",
                         f"data.val={{dir: {synthetic}, subset: val}}")
    with pytest.warns(UserWarning, match="no official WIDER .mat"):
        result, losses = run_and_record(config, tmp_path)
    assert all(np.isfinite(v) for v in losses.values()) and len(losses) == 4
    state = torch.load(tmp_path / STATE_FILE, weights_only=False)
    assert state["scaler"]["scale"] > 0  # the GradScaler was active
    assert set(result.progress.metrics) == {"ap_easy", "ap_medium", "ap_hard"}
    assert next(result.model.parameters()).is_cuda


def test_config_records_the_genotype_of_a_model_file(synthetic, tmp_path):
    from detectors.engine.trainer import Trainer, recorded_model_config
    from detectors.models.asfd import build_asfd, save_model
    from detectors.models.reference_detectors import build_reference_detector

    model = build_asfd("D0", "asfd_paper_like", width=16)
    derived = save_model(model, tmp_path / "d0.pt", extra={"derived_from": "runs/search_cpm"})
    plain = save_model(model, tmp_path / "plain.pt")
    reference = save_model(build_reference_detector("retinaface_mnet025"), tmp_path / "r.pt")
    assert recorded_model_config(ModelConfig(str(derived))).genotype == "runs/search_cpm"
    assert recorded_model_config(ModelConfig(str(plain))).genotype == f"{plain} (embedded)"
    assert recorded_model_config(ModelConfig(str(reference))).genotype == ""
    assert recorded_model_config(ModelConfig("D1")).genotype == "asfd_paper_like"
    Trainer(tiny_config(synthetic, f"model.name={derived}", "model.options={}"), tmp_path / "run",
            resume=False, callback=None)
    recorded = load_config(tmp_path / "run" / "config.yaml")
    assert (recorded.model.name, recorded.model.genotype) == (str(derived), "runs/search_cpm")


def test_augmentation_settings_reach_the_training_data_and_the_recorded_config(synthetic,
                                                                             tmp_path):
    from detectors.data.augment import AugmentConfig
    from detectors.engine.trainer import Trainer

    overrides = ("data.augment.crop_min_scale=0.15", "data.augment.anchor_scales=[16, 64]",
                 "data.augment.crop_square=true")
    trainer = Trainer(tiny_config(synthetic, *overrides), tmp_path / "run", resume=False,
                      callback=None)
    expected = AugmentConfig(crop_min_scale=0.15, anchor_scales=(16, 64), crop_square=True)
    assert trainer.loader.dataset.augment_config == expected
    assert load_config(tmp_path / "run" / "config.yaml").data.augment == expected


def test_training_step_distorts_each_batch_on_the_device(synthetic, tmp_path, monkeypatch):
    import detectors.data.loader as loader_module

    real, seen = loader_module.photometric, []

    def spy(images, params):
        seen.append((images.dtype, images.device.type, tuple(images.shape[1:]),
                     len(images), tuple(params.shape)))
        return real(images, params)

    monkeypatch.setattr(loader_module, "photometric", spy)
    result, _ = run_and_record(tiny_config(synthetic, "schedule.epochs=1"), tmp_path)
    assert result.progress.iteration == 2
    # On the CPU one image at a time: 2 batches of 4.
    assert seen == [(torch.float32, "cpu", (3, 64, 64), 1, (1, 5))] * 8


# ------------------------------------------------------------------ the trainer's parts
def test_run_folder_checkpoints_and_restores_a_state(tmp_path):
    """RunFolder alone: refuses to start over a run or resume none, writes ``config.yaml``,
    ``last.pt`` and ``model.pt``, and restores the weights, optimizer, counters and RNG."""
    from detectors.engine.checkpoint import Progress, RunFolder, TrainState
    from detectors.models.asfd import build_asfd

    config = load_config(None, ["model.options={width: 16}"])
    folder = RunFolder(tmp_path / "run", config, writes=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        folder.prepare(resume=True)
    folder.prepare(resume=False)
    assert load_config(tmp_path / "run" / CONFIG_FILE) == config
    model = build_asfd("D0", width=16)
    state = TrainState(model, build_optimizer(model.parameters(), config.optim),
                       torch.amp.GradScaler("cpu", enabled=False))
    torch.manual_seed(7)
    assert folder.save(state, Progress(epoch=1, batch=2, iteration=9)) == folder.state_path
    expected = torch.rand(3)
    with pytest.raises(FileExistsError, match="already holds a run"):
        folder.prepare(resume=False)
    fresh = build_asfd("D0", width=16)
    restored = TrainState(fresh, build_optimizer(fresh.parameters(), config.optim),
                          torch.amp.GradScaler("cpu", enabled=False))
    progress = folder.restore(folder.read_state((), torch.device("cpu")), restored)
    assert (progress.epoch, progress.batch, progress.iteration) == (1, 2, 9)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  fresh.state_dict().values()))
    assert torch.equal(torch.rand(3), expected)  # the RNG continues where it was saved
    assert load_model(tmp_path / "run" / MODEL_FILE).config == model.config
    assert RunFolder(tmp_path / "other", config, writes=False).save(state, progress) is None


def test_a_single_process_shares_nothing_and_reports_on_the_main_rank_only(tmp_path):
    from detectors.engine.checkpoint import Progress
    from detectors.engine.distributed import TrainProcess
    from detectors.engine.reporting import MetricsLog, Reporter

    process = TrainProcess.join("cpu", 1)
    assert not process.ctx.enabled and process.device.type == "cpu"
    model = torch.nn.Linear(2, 2)
    assert process.wrap(model) is model and process.sync_batchnorm(model) is model
    assert process.from_rank0(0.25) == 0.25 and process.agree(True, False) == (True, False)
    events = []
    Reporter(events.append, 10, None, reports=False).emit("start", Progress())
    assert events == []
    report = Reporter(events.append, 10, MetricsLog(tmp_path / METRICS_FILE), reports=True)
    report.emit("iteration", Progress(epoch=1, iteration=3), loss=0.5)
    report.log({"kind": "train", "epoch": 1, "iteration": 3, "loss": 0.5})
    assert [(e.kind, e.epoch, e.iteration, e.total_iterations, e.loss) for e in events] == [
        ("iteration", 1, 3, 10, 0.5)]
    assert (tmp_path / METRICS_FILE).read_text().splitlines()[1].startswith("train,1,3,")
