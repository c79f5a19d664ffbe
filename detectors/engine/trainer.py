"""Training of a face detector (Sec. 4.1): the loop, over the engine's parts.

:class:`Trainer` puts together one run: its distributed set-up
(:class:`~detectors.engine.distributed.TrainProcess`), its folder and checkpoints
(:class:`~detectors.engine.checkpoint.RunFolder`), its reports
(:class:`~detectors.engine.reporting.Reporter`) and the loop. The recipe (paper Sec. 4.1,
:mod:`detectors.engine.config` defaults, :mod:`detectors.engine.schedule`): SGD momentum 0.9,
weight decay 5e-4 (on every parameter, as DSFD's code does), lr rising linearly from 1e-6 to
the base lr over the first 500 iterations, divided by 10 at epochs 25 and 40, 50 epochs. Mixed
precision (fp16 autocast + GradScaler) on CUDA only; the loss is computed in fp32. Gradients
are clipped to ``optim.grad_clip``.

Resume: the batches are a pure function of ``(seed, epoch)`` (:mod:`detectors.data.loader`),
so a run resumed from iteration ``i`` skips the batches of the interrupted epoch already seen
and sees exactly the batches an uninterrupted run would have seen next.

Time budget: ``run.max_minutes`` bounds the wall time of the whole run (summed over resumed
sessions, periodic evaluations included, the final one excluded); when it runs out the run
checkpoints, evaluates and returns.

Distributed data parallel (launch with ``torchrun --nproc_per_node N -m asfd_cli.main train
...``, :mod:`detectors.engine.distributed`): ``data.batch_size`` is per process; each rank reads
its own shard (DistributedSampler); only rank 0 writes files and evaluates.
"""
from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from detectors.data.loader import (
    DetectionBatch, FaceDetectionDataset, build_dataloader, prepare_batch, set_epoch,
)
from detectors.data.sources import load_samples
from detectors.engine.checkpoint import Progress, RunFolder, TrainState
from detectors.engine.config import EvalConfig, ModelConfig, TrainConfig
from detectors.engine.distributed import TrainProcess
from detectors.engine.ema import weight_ema
from detectors.engine.evaluate import evaluation_set, evaluate_detector
from detectors.engine.inference import Detector, PostProcess
from detectors.engine.reporting import METRICS_FILE, EventKind, MetricsLog, Reporter, TrainEvent
from detectors.engine.schedule import build_optimizer, lr_at
from detectors.models.asfd import ASFD_FAMILY, build_asfd, genotype_source, load_model
from detectors.models.backbones import load_pretrained
from detectors.models.heads import DetectorOutput, ShotOutput
from detectors.models.losses import build_loss
from detectors.models.reference_detectors import REFERENCE_DETECTORS, build_reference_detector
from nas_search.runtime import (ConfigError, NonFiniteLossError, seed_everything,
                                use_fast_conv_backward)


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
    genotype (:func:`~detectors.models.asfd.genotype_source`, ``""`` without one), not an unused
    default."""
    if cfg.name in ASFD_FAMILY or cfg.name in REFERENCE_DETECTORS or not Path(cfg.name).is_file():
        return cfg
    return replace(cfg, genotype=genotype_source(cfg.name) or "")


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
        self.process = TrainProcess.join(config.run.device, config.run.threads)
        self.device = self.process.device
        self.amp = config.run.amp and self.device.type == "cuda"
        if config.schedule.milestone_unit == "budget" and not config.run.max_minutes:
            raise ConfigError("schedule.milestone_unit 'budget' needs run.max_minutes")
        is_main = self.process.ctx.is_main
        self.folder = RunFolder(out_dir, config, writes=is_main)
        self.folder.prepare(resume)
        state = self.folder.read_state(allow_changes, self.device) if resume else None

        seed_everything(config.run.seed)
        recorded = self.folder.recorded_model() if resume else None
        model = (build_model(config.model) if recorded is None else recorded).to(self.device)
        use_fast_conv_backward(model)
        self.memory_format = (torch.channels_last if config.run.channels_last
                              else torch.contiguous_format)
        self.model = self.process.sync_batchnorm(model.to(memory_format=self.memory_format))
        self.loss = build_loss(config.loss.name, **config.loss.params)
        self.optimizer = build_optimizer(self.model.parameters(), config.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.ema = (weight_ema(self.model, config.optim.ema_decay)
                    if config.optim.ema_decay else None)

        if not config.data.train:
            raise ValueError("config: data.train lists no folder to train on")
        self.samples = [s for source in config.data.train for s in load_samples(source)]
        dataset = FaceDetectionDataset(self.samples, train=True, size=config.data.size,
                                       seed=config.run.seed, augment_config=config.data.augment)
        self.loader = resumable(build_dataloader(
            dataset, config.data.batch_size, config.data.workers, config.run.seed,
            shuffle=True, distributed=self.process.ctx.enabled, drop_last=True,
            device=self.device))
        self.iters_per_epoch = len(self.loader)
        if self.iters_per_epoch == 0:
            raise ValueError(f"{len(self.samples)} training image(s) make no full batch of "
                             f"{config.data.batch_size} per process; lower data.batch_size")
        self.progress = (Progress() if state is None
                         else self.folder.restore(state, self.train_state))
        self.net = self.process.wrap(self.model)
        metrics = (MetricsLog(self.folder.out_dir / METRICS_FILE,
                              self.progress.iteration if resume else None) if is_main else None)
        self.report = Reporter(callback, config.schedule.epochs * self.iters_per_epoch,
                               metrics, reports=is_main)
        # Read (and check) the validation set now, not after hours of training.
        self.eval_set = (evaluation_set(config.data.val)
                         if config.data.val is not None and is_main else None)

    @property
    def train_state(self) -> TrainState:
        return TrainState(self.model, self.optimizer, self.scaler, self.ema)

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        self.report.emit(kind, self.progress, **fields)

    def save(self) -> None:
        """Write ``last.pt`` and ``model.pt`` (rank 0)."""
        path = self.folder.save(self.train_state, self.progress)
        if path is not None:
            self._emit("checkpoint", message=str(path))

    def evaluate(self) -> dict[str, float]:
        """AP on ``data.val`` (rank 0; empty without a val set)."""
        if self.eval_set is None:
            return {}
        cfg: EvalConfig = self.config.eval
        detector = Detector(self.train_state.shipped,
                            PostProcess(score_threshold=cfg.score_threshold),
                            max_size=cfg.max_size, device=self.device, scale=cfg.scale)
        try:
            metrics = evaluate_detector(detector, self.eval_set).ap()
        finally:
            self.model.train()
        self.progress.metrics = metrics
        self.report.log({"kind": "eval", "epoch": self.progress.epoch,
                         "iteration": self.progress.iteration,
                         "elapsed_s": self.progress.elapsed_s, **metrics})
        self._emit("eval", metrics=metrics)
        return metrics

    # -- the loop
    def _batch_files(self, order: list[int], batch: int) -> list[str]:
        size = self.config.data.batch_size
        return [self.samples[i].rel_path for i in order[batch * size:(batch + 1) * size]]

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
        by_budget = cfg.schedule.milestone_unit != "epoch"  # ranks must switch the lr together
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
                           self.process.from_rank0(used) if by_budget else used)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, parts = self.step(batch)
                p.elapsed_s = time.perf_counter() - start
                local_nonfinite = not torch.isfinite(loss).item()
                nonfinite, stop = self.process.agree(
                    local_nonfinite, budget_s is not None and p.elapsed_s >= budget_s)
                if nonfinite:
                    where = (f"batch images {self._batch_files(order, p.batch)}"
                             if local_nonfinite else "on another rank")
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss.item()}) at iteration {p.iteration} (epoch "
                        f"{p.epoch}, batch {p.batch}); {where}; parts {parts}; the last good "
                        f"checkpoint {self.folder.state_path} is kept")
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.optim.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                p.iteration += 1
                p.batch += 1
                window_images += len(batch.images) * self.process.ctx.world_size
                if p.iteration % cfg.run.log_every == 0 or p.batch == self.iters_per_epoch:
                    now = time.perf_counter()
                    speed = window_images / max(now - window_start, 1e-9)
                    window_start, window_images = now, 0
                    self.report.log({"kind": "train", "epoch": p.epoch, "iteration": p.iteration,
                                     "elapsed_s": p.elapsed_s, "lr": lr, "images_per_s": speed,
                                     "loss": loss.item(), **parts})
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
        return TrainResult(self.train_state.shipped, self.folder.out_dir, p, stopped)


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
