"""Training of a face detector (Sec. 4.1): data selection, the SGD recipe, checkpoints, DDP.

Recipe (paper Sec. 4.1, :mod:`detectors.config` defaults): SGD momentum 0.9, weight decay 5e-4
(on every parameter, as DSFD's code does), lr rising linearly from 1e-6 to the base lr over the
first 500 iterations, divided by 10 at epochs 25 and 40, 50 epochs. The lr is a pure function
of the iteration (:func:`lr_at`), set on the optimizer before each step, so a checkpoint needs
no scheduler state beyond the iteration counter. Mixed precision (fp16 autocast + GradScaler)
on CUDA only; the loss is computed in fp32. Gradients are clipped to ``optim.grad_clip``.

Files in ``out_dir`` (rank 0 only, ``.pt`` files written atomically): ``config.yaml``;
``last.pt`` (training state: model, optimizer, grad scaler, epoch / batch / iteration counters,
elapsed time, RNG states);
``model.pt`` (the detector alone, for ``asfd detect / eval / export``); ``metrics.csv`` (one
``train`` row every ``run.log_every`` iterations and one ``eval`` row per evaluation).

Resume: the batches are a pure function of ``(seed, epoch)`` (:mod:`detectors.data.loader`),
so a run resumed from iteration ``i`` skips the batches of the interrupted epoch already seen
and sees exactly the batches an uninterrupted run would have seen next. It keeps the settings
stored in ``last.pt`` (a changed one is an error naming it, but for :data:`RESUME_FREE` and the
:data:`RESUME_ALLOWABLE` ones the caller allows), and ``last.pt`` is read with
``torch.load(weights_only=True)``: a crafted file cannot run code.

Time budget: ``run.max_minutes`` bounds the wall time of the whole run (summed over resumed
sessions, periodic evaluations included, the final one excluded); when it runs out the run
checkpoints, evaluates and returns.

Distributed data parallel: launch with ``torchrun --nproc_per_node N -m asfd_cli.main train
...``; the process group is joined from the ``env://`` variables (gloo on CPU, NCCL on GPU, one
GPU per local rank, SyncBatchNorm on GPU). ``data.batch_size`` is per process. Each rank reads
its own shard (DistributedSampler); only rank 0 writes files and evaluates.
"""
from __future__ import annotations

import csv
import math
import time
import warnings
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from detectors.asfd import ASFD_FAMILY, build_asfd, genotype_source, load_model, save_model
from detectors.backbones import load_pretrained
from detectors.config import (
    DataSource, EvalConfig, ModelConfig, OptimConfig, ScheduleConfig, TrainConfig,
)
from detectors.data.loader import (
    DetectionBatch, FaceDetectionDataset, build_dataloader, prepare_batch, set_epoch,
)
from detectors.data.wider import FaceSample, WiderDataset, read_image_list
from detectors.evaluation.wider_eval import (
    SETTINGS, WiderGroundTruth, WiderResult, evaluate_wider, load_wider_ground_truth,
    restrict_ground_truth,
)
from detectors.heads import DetectorOutput, ShotOutput
from detectors.inference import Detector, DetectorBase, MultiScaleTest, PostProcess, as_numpy
from detectors.losses import build_loss
from detectors.reference_detectors import REFERENCE_DETECTORS, build_reference_detector
from nas_search.runtime import (
    NUMPY_ARRAY_GLOBALS, ConfigError, DistContext, NonFiniteLossError, atomic_path, cpu_threads,
    is_under, load_checkpoint, refuse_changes, resolve_device, rng_state, save_checkpoint,
    seed_everything, set_rng_state,
)

STATE_FILE = "last.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"
STATE_FORMAT = "asfd-train-state"
#: Settings a resumed run may change freely: they do not change what is computed.
RESUME_FREE: tuple[str, ...] = ("run.threads", "run.log_every", "run.checkpoint_every",
                                "data.workers")
#: Settings a resumed run may change when the user allows each (``--allow-change KEY``): the time
#: budget, the number of epochs, and what and how it evaluates.
RESUME_ALLOWABLE: tuple[str, ...] = ("run.max_minutes", "schedule.epochs", "eval", "data.val")


# ----------------------------------------------------------------------------- data selection
def is_val_position(index: int, fraction: float) -> bool:
    """Whether the ``index``-th image (0-based) of an event is held out: evenly spaced, so that
    ``floor(n * fraction)`` of the first ``n`` images are, for every ``n``."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


def split_images(samples: Sequence[FaceSample], val_fraction: float
                 ) -> tuple[list[FaceSample], list[FaceSample]]:
    """Deterministic ``(train, val)`` split: within each event (the folder of ``rel_path``),
    images sorted by name, the positions :func:`is_val_position` picks go to ``val``.
    Order of ``samples`` is kept in both lists."""
    if not 0 <= val_fraction <= 1:
        raise ValueError(f"val_fraction must lie in [0, 1], got {val_fraction}")
    by_event: dict[str, list[str]] = {}
    for s in samples:
        by_event.setdefault(str(Path(s.rel_path).parent), []).append(s.rel_path)
    held_out = {rel for names in by_event.values()
                for i, rel in enumerate(sorted(names)) if is_val_position(i, val_fraction)}
    return ([s for s in samples if s.rel_path not in held_out],
            [s for s in samples if s.rel_path in held_out])


def load_samples(source: DataSource) -> list[FaceSample]:
    """The images of ``source``: its folder, restricted to the ``images`` list, then its
    ``subset`` of the :func:`split_images` partition."""
    samples = list(WiderDataset.from_dir(source.dir, source.wider_split).samples)
    if source.images is not None:
        wanted = read_image_list(source.images)
        known = {s.rel_path for s in samples}
        unknown = [rel for rel in wanted if rel not in known]
        if unknown:
            raise ValueError(f"{source.images}: {len(unknown)} image(s) are not annotated in "
                             f"{source.dir}, e.g. {unknown[:3]}")
        keep = set(wanted)
        samples = [s for s in samples if s.rel_path in keep]
    if source.subset != "all":
        train, val = split_images(samples, source.val_fraction)
        samples = train if source.subset == "train" else val
    if not samples:
        raise ValueError(f"{source.dir}: no images selected (images={source.images}, "
                         f"subset={source.subset}, val_fraction={source.val_fraction})")
    return samples


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


# ----------------------------------------------------------------------------- model
def build_model(cfg: ModelConfig) -> nn.Module:
    """An ASFD variant (with its genotype), a registered reference detector or a saved model
    file, with optional local ImageNet weights for the backbone."""
    if cfg.name in ASFD_FAMILY:
        model = build_asfd(cfg.name, cfg.genotype, **cfg.options)
    elif cfg.name in REFERENCE_DETECTORS:
        model = build_reference_detector(cfg.name, **cfg.options)
    elif Path(cfg.name).is_file():
        model = load_model(cfg.name)
    else:
        raise KeyError(f"model.name {cfg.name!r} is no ASFD variant {sorted(ASFD_FAMILY)}, "
                       f"no reference detector {sorted(REFERENCE_DETECTORS)} and no model file")
    if cfg.pretrained:
        load_pretrained(model.backbone, cfg.pretrained)
    return model


def recorded_model_config(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` as ``config.yaml`` records it: for a model file, ``genotype`` names the file's own
    genotype (:func:`~detectors.asfd.genotype_source`, ``""`` without one), not an unused
    default."""
    if cfg.name in ASFD_FAMILY or cfg.name in REFERENCE_DETECTORS or not Path(cfg.name).is_file():
        return cfg
    return replace(cfg, genotype=genotype_source(cfg.name) or "")


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` names, at ``cfg.lr`` (see :class:`OptimConfig`)."""
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name {cfg.name!r}: use 'sgd' or 'adamw'")


# ----------------------------------------------------------------------------- schedule
def lr_at(iteration: int, iters_per_epoch: int, base_lr: float, schedule: ScheduleConfig,
          budget_used: float = 0.0) -> float:
    """Sec. 4.1: linear warm-up ``warmup_start_lr -> base_lr`` over ``warmup_iters``, then the
    ``step`` policy, ``base_lr * gamma ** (milestones passed)``, or the ``cosine`` one
    (:class:`~detectors.config.ScheduleConfig`). An epoch milestone is passed at the first
    iteration of its epoch, a budget milestone once ``budget_used`` (the share of
    ``run.max_minutes`` elapsed) reaches it."""
    if iteration < schedule.warmup_iters:
        t = iteration / schedule.warmup_iters
        return schedule.warmup_start_lr + t * (base_lr - schedule.warmup_start_lr)
    by_epoch = schedule.milestone_unit == "epoch"
    if schedule.policy == "cosine":
        done = iteration / (schedule.epochs * iters_per_epoch) if by_epoch else budget_used
        r = schedule.min_lr_ratio
        return base_lr * (r + (1 - r) * (1 + math.cos(math.pi * min(done, 1.0))) / 2)
    where = iteration // iters_per_epoch if by_epoch else budget_used
    return base_lr * schedule.gamma ** sum(where >= m for m in schedule.milestones)


# ----------------------------------------------------------------------------- distributed
def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the ``env://`` group (gloo on CPU, NCCL on GPU). Rank 0 evaluates while the others
    wait at their next collective, hence the generous timeout."""
    if ctx.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method="env://", timeout=timedelta(hours=2))


# ----------------------------------------------------------------------------- loader
class ResumableSampler(Sampler[int]):
    """Wraps an epoch-seeded sampler; the next epoch's first ``skip`` indices are left out
    (the batches already trained on before an interruption)."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


def resumable(loader: DataLoader) -> DataLoader:
    """The same loader (dataset, collate, worker seeding, generator, worker settings) with a
    :class:`ResumableSampler` around its sampler."""
    return DataLoader(loader.dataset, batch_size=loader.batch_size,
                      sampler=ResumableSampler(loader.sampler), num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, worker_init_fn=loader.worker_init_fn,
                      generator=loader.generator, drop_last=loader.drop_last,
                      pin_memory=loader.pin_memory, persistent_workers=loader.persistent_workers,
                      prefetch_factor=loader.prefetch_factor)


# ----------------------------------------------------------------------------- state
@dataclass
class Progress:
    """Where a run stands; saved in ``last.pt``. ``batch`` counts the batches of ``epoch``
    already trained on."""

    epoch: int = 0
    batch: int = 0
    iteration: int = 0
    elapsed_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


class MetricsLog:
    """``metrics.csv``: a header fixed at the first row. A fresh run replaces an older file (a
    run that died before its first checkpoint); a run resumed at iteration ``i`` keeps the rows
    up to ``i`` and appends (the later ones are replayed, so they would repeat)."""

    BASE = ("kind", "epoch", "iteration", "elapsed_s", "lr", "images_per_s", "loss")
    AP = tuple(f"ap_{s}" for s in SETTINGS)

    def __init__(self, path: Path, resume_iteration: int | None = None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if resume_iteration is None:
            path.unlink(missing_ok=True)
        elif path.is_file() and path.stat().st_size:
            with path.open(newline="") as f:
                reader = csv.reader(f)
                self.fields = next(reader)
                col = self.fields.index("iteration")
                rows = [r for r in reader if len(r) == len(self.fields)  # a torn last line goes
                        and r[col].isdigit() and int(r[col]) <= resume_iteration]
            with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
                csv.writer(f).writerows([self.fields, *rows])

    def write(self, row: dict[str, Any]) -> None:
        if self.fields is None:
            parts = [k for k in row if k not in self.BASE and k not in self.AP]
            self.fields = [*self.BASE, *parts, *self.AP]
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


EventKind = Literal["start", "iteration", "eval", "checkpoint", "end"]


@dataclass
class TrainEvent:
    """What :func:`train` reports to its ``callback`` (the CLI draws a progress bar from it)."""

    kind: EventKind
    epoch: int
    iteration: int
    total_iterations: int
    elapsed_s: float
    lr: float = 0.0
    loss: float = math.nan
    parts: dict[str, float] = field(default_factory=dict)
    images_per_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass
class TrainResult:
    """The trained model (unwrapped), where it stopped and why, and the last evaluation."""

    model: nn.Module
    out_dir: Path
    progress: Progress
    stopped: Literal["completed", "time_budget"]


def _float_output(output: DetectorOutput) -> DetectorOutput:
    """Cast autocast outputs to fp32 so that matching and the loss run in full precision."""

    def cast(shot: ShotOutput | None) -> ShotOutput | None:
        if shot is None:
            return None
        return ShotOutput(shot.cls.float(), shot.reg.float(), shot.anchors.float())

    return DetectorOutput(cast(output.second), cast(output.first))


class Trainer:
    """One training run (see the module docstring); :func:`train` is the entry point."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, resume: bool,
                 callback: Callable[[TrainEvent], None] | None,
                 allow_changes: Collection[str] = ()) -> None:
        config = replace(config, model=recorded_model_config(config.model))
        self.config = config
        self.out_dir = Path(out_dir)
        self.callback = callback or (lambda event: None)
        self.ctx = DistContext.current()
        self.device = resolve_device(config.run.device, self.ctx)
        init_process_group(self.ctx, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads(config.run.threads, self.ctx))
        self.amp = config.run.amp and self.device.type == "cuda"
        if config.schedule.milestone_unit == "budget" and not config.run.max_minutes:
            raise ConfigError("schedule.milestone_unit 'budget' needs run.max_minutes")
        self._check_out_dir(resume)
        state = self._read_state(allow_changes) if resume else None

        seed_everything(config.run.seed)
        model = build_model(config.model).to(self.device)
        self.memory_format = (torch.channels_last if config.run.channels_last
                              else torch.contiguous_format)
        model = model.to(memory_format=self.memory_format)
        if self.ctx.enabled and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.loss = build_loss(config.loss.name, **config.loss.params)
        self.optimizer = build_optimizer(model.parameters(), config.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)

        if not config.data.train:
            raise ValueError("config: data.train lists no folder to train on")
        self.samples = [s for source in config.data.train for s in load_samples(source)]
        dataset = FaceDetectionDataset(self.samples, train=True, size=config.data.size,
                                       seed=config.run.seed)
        self.loader = resumable(build_dataloader(
            dataset, config.data.batch_size, config.data.workers, config.run.seed,
            shuffle=True, distributed=self.ctx.enabled, drop_last=True, device=self.device))
        self.iters_per_epoch = len(self.loader)
        if self.iters_per_epoch == 0:
            raise ValueError(f"{len(self.samples)} training image(s) make no full batch of "
                             f"{config.data.batch_size} per process; lower data.batch_size")
        self.total_iterations = config.schedule.epochs * self.iters_per_epoch
        self.progress = Progress()
        if state is not None:
            self._load_state(state)
        self.net: nn.Module = (DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.ctx.enabled else model)
        self.metrics = (MetricsLog(self.out_dir / METRICS_FILE,
                                   self.progress.iteration if resume else None)
                        if self.ctx.is_main else None)
        # Read (and check) the validation set now, not after hours of training.
        self.eval_set = (evaluation_set(config.data.val)
                         if config.data.val is not None and self.ctx.is_main else None)

    # -- files
    def _check_out_dir(self, resume: bool) -> None:
        state = self.out_dir / STATE_FILE
        if resume and not state.is_file():
            raise FileNotFoundError(f"nothing to resume: {state} does not exist")
        if not resume and state.is_file():
            raise FileExistsError(f"{self.out_dir} already holds a run ({STATE_FILE}); pass "
                                  "--resume to continue it or choose another output folder")
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                (self.out_dir / CONFIG_FILE).write_text(self.config.to_yaml())

    def _read_state(self, allow_changes: Collection[str]) -> dict[str, Any]:
        """``last.pt``, read without running code (tensors, plain data and NumPy's RNG state
        only), once the run's settings are checked: only :data:`RESUME_FREE` and the
        ``allow_changes`` (among :data:`RESUME_ALLOWABLE`) may differ from the stored ones.
        ``config.yaml`` then records the settings the run continues with."""
        path = self.out_dir / STATE_FILE
        state = load_checkpoint(path, "training state", self.device, NUMPY_ARRAY_GLOBALS)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not an asfd training state")
        refused = [key for key in allow_changes if not is_under(key, RESUME_ALLOWABLE)]
        if refused:
            raise ConfigError(f"--allow-change {', '.join(refused)}: a resumed run may change "
                              f"only {', '.join(RESUME_ALLOWABLE)}")
        refuse_changes(state["config"], self.config.to_dict(), str(path), RESUME_FREE,
                       allow_changes, hint="; start a new run in another folder, or pass "
                       f"--allow-change KEY for {', '.join(RESUME_ALLOWABLE)}")
        if self.ctx.is_main:
            (self.out_dir / CONFIG_FILE).write_text(self.config.to_yaml())
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])
        set_rng_state(state["rng"])

    def save(self) -> None:
        """Write ``last.pt`` and ``model.pt`` (rank 0)."""
        if not self.ctx.is_main:
            return
        save_checkpoint({"format": STATE_FORMAT, "config": self.config.to_dict(),
                         "model": self.model.state_dict(),
                         "optimizer": self.optimizer.state_dict(),
                         "scaler": self.scaler.state_dict(), "progress": vars(self.progress),
                         "rng": rng_state()}, self.out_dir / STATE_FILE)
        save_model(self.model, self.out_dir / MODEL_FILE,
                   extra={"epoch": self.progress.epoch, "iteration": self.progress.iteration,
                          "metrics": self.progress.metrics})
        self._emit("checkpoint", message=str(self.out_dir / STATE_FILE))

    # -- reporting
    def _emit(self, kind: EventKind, **fields: Any) -> None:
        if self.ctx.is_main:
            p = self.progress
            self.callback(TrainEvent(kind, p.epoch, p.iteration, self.total_iterations,
                                     p.elapsed_s, **fields))

    def evaluate(self) -> dict[str, float]:
        """AP on ``data.val`` (rank 0; empty without a val set)."""
        if self.eval_set is None:
            return {}
        cfg: EvalConfig = self.config.eval
        detector = Detector(self.model, PostProcess(score_threshold=cfg.score_threshold),
                            max_size=cfg.max_size, device=self.device, scale=cfg.scale)
        try:
            metrics = evaluate_detector(detector, self.eval_set).ap()
        finally:
            self.model.train()
        self.progress.metrics = metrics
        self.metrics.write({"kind": "eval", "epoch": self.progress.epoch,
                            "iteration": self.progress.iteration,
                            "elapsed_s": self.progress.elapsed_s, **metrics})
        self._emit("eval", metrics=metrics)
        return metrics

    # -- the loop
    def _batch_files(self, order: list[int], batch: int) -> list[str]:
        size = self.config.data.batch_size
        return [self.samples[i].rel_path for i in order[batch * size:(batch + 1) * size]]

    def _agree(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (budget milestones must switch the lr together)."""
        if not self.ctx.enabled or self.config.schedule.milestone_unit == "epoch":
            return value
        shared = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(shared, src=0)
        return float(shared)

    def _sync_flags(self, nonfinite: bool, stop: bool) -> tuple[bool, bool]:
        """Any rank's non-finite loss and rank 0's stop decision, agreed by every rank."""
        if not self.ctx.enabled:
            return nonfinite, stop
        flags = torch.tensor([float(nonfinite), float(stop and self.ctx.is_main)],
                             device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

    def step(self, batch: DetectionBatch) -> tuple[Tensor, dict[str, float]]:
        """One optimisation step; returns the loss (not yet checked) and its parts. The batch's
        photometric augmentation and normalisation run here, on the device
        (:func:`~detectors.data.loader.prepare_batch`)."""
        images, boxes = prepare_batch(batch, self.device, self.memory_format)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            output = self.net(images)
        result = self.loss(_float_output(output), boxes)
        return result.total, {k: float(v) for k, v in result.parts.items()}

    def run(self) -> TrainResult:
        cfg, p = self.config, self.progress
        budget_s = None if cfg.run.max_minutes is None else cfg.run.max_minutes * 60
        start = time.perf_counter() - p.elapsed_s  # the budget spans resumed sessions
        window_start, window_images = time.perf_counter(), 0
        self.model.train()
        self._emit("start", message=f"{len(self.samples)} training images, "
                                    f"{self.iters_per_epoch} iterations per epoch")
        stopped: Literal["completed", "time_budget"] = "completed"
        while p.epoch < cfg.schedule.epochs and stopped == "completed":
            sampler: ResumableSampler = self.loader.sampler
            sampler.skip = p.batch * cfg.data.batch_size
            set_epoch(self.loader, p.epoch)
            order = list(sampler.sampler)
            for batch in self.loader:
                used = (time.perf_counter() - start) / budget_s if budget_s else 0.0
                lr = lr_at(p.iteration, self.iters_per_epoch, cfg.optim.lr, cfg.schedule,
                           self._agree(used))
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, parts = self.step(batch)
                p.elapsed_s = time.perf_counter() - start
                local_nonfinite = not torch.isfinite(loss).item()
                nonfinite, stop = self._sync_flags(local_nonfinite,
                                                   budget_s is not None and p.elapsed_s >= budget_s)
                if nonfinite:
                    where = (f"batch images {self._batch_files(order, p.batch)}"
                             if local_nonfinite else "on another rank")
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss.item()}) at iteration {p.iteration} (epoch "
                        f"{p.epoch}, batch {p.batch}); {where}; parts {parts}; the last good "
                        f"checkpoint {self.out_dir / STATE_FILE} is kept")
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.optim.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                p.iteration += 1
                p.batch += 1
                window_images += len(batch.images) * self.ctx.world_size
                if p.iteration % cfg.run.log_every == 0 or p.batch == self.iters_per_epoch:
                    now = time.perf_counter()
                    speed = window_images / max(now - window_start, 1e-9)
                    window_start, window_images = now, 0
                    row = {"kind": "train", "epoch": p.epoch, "iteration": p.iteration,
                           "elapsed_s": p.elapsed_s, "lr": lr, "images_per_s": speed,
                           "loss": loss.item(), **parts}
                    if self.metrics is not None:
                        self.metrics.write(row)
                    self._emit("iteration", lr=lr, loss=loss.item(), parts=parts,
                               images_per_s=speed)
                if stop:
                    stopped = "time_budget"
                    break
            if stopped == "completed":
                p.epoch, p.batch = p.epoch + 1, 0
                if p.epoch == cfg.schedule.epochs:
                    break
                if p.epoch % cfg.run.checkpoint_every == 0:
                    self.save()
                if cfg.eval.every and p.epoch % cfg.eval.every == 0:
                    self.evaluate()
        p.elapsed_s = time.perf_counter() - start
        self.save()
        if self.evaluate():
            self.save()
        self._emit("end", metrics=p.metrics, message=stopped)
        return TrainResult(self.model, self.out_dir, p, stopped)


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False,
          callback: Callable[[TrainEvent], None] | None = None,
          allow_changes: Collection[str] = ()) -> TrainResult:
    """Train ``config``'s detector into ``out_dir`` (or continue the run there with
    ``resume=True``, with the settings it started with but for :data:`RESUME_FREE` and the
    ``allow_changes``); ``callback`` receives a :class:`TrainEvent` at start, every
    ``run.log_every`` iterations, after each evaluation and checkpoint, and at the end."""
    owns_group = not dist.is_initialized()
    try:
        return Trainer(config, out_dir, resume, callback, allow_changes).run()
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
