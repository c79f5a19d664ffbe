"""The first-order bilevel search loop (DARTS / PC-DARTS / GDAS) with exact resume.

Per step, after ``warmup_epochs``: an architecture step (Adam on ``arch_`` parameters) on a
validation batch, then a weight step (SGD on the rest) on a training batch; before it, the weight
step alone. This is DARTS' first-order approximation, in DARTS' order (arch, then weights); grad
clipping applies to the weight step only (as in DARTS). An epoch is one pass over
``train_batches`` (zipped with ``val_batches`` once the architecture is searched). The Gumbel
temperature is annealed linearly per epoch over the whole search (GDAS), ``tau_start`` at the first
epoch, ``tau_end`` at the last.

Files in ``run_dir`` (written by rank 0 only): ``checkpoint.pt`` (atomic, every epoch: weights,
arch parameters, both optimizers, scheduler, every RNG state incl. the Gumbel generator),
``history.jsonl`` (one line per epoch: softmaxed architecture weights and metrics) and, at the end,
``genotype.yaml``. With ``torch.distributed`` initialised, rank 0's initial parameters are
broadcast, weight and arch gradients are averaged over ranks, and every rank draws the same Gumbel
samples (same seed), so all ranks hold, and export, the same architecture.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from genotypes.io import HISTORY_FILE, save_genotype
from genotypes.schema import Genotype
from nas_search.cell import SearchCell
from nas_search.gumbel import linear_temperature
from nas_search.mixed_op import MixedOp
from nas_search.runtime import (
    NonFiniteLossError, atomic_path, available_device, dataclass_from_dict, load_checkpoint,
    rank, refuse_changes, retain_freed_memory, rng_state, save_checkpoint, seed_everything,
    set_rng_state, use_fast_conv_backward, world_size,
)
from nas_search.strategies import validate_for_strategy
from nas_search.supernet import Supernet
from nas_search.task import SearchTask

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
GENOTYPE_FILE = "genotype.yaml"

#: Spawn key of the Gumbel generator's seed, an independent stream of ``SearchConfig.seed``.
_GUMBEL_STREAM = 1

#: ``progress(epoch, step, metrics)``: called every ``log_every`` steps and after each epoch.
ProgressFn = Callable[[int, int, Mapping[str, float]], None]


@dataclass
class SearchConfig:
    """Hyper-parameters of a search. Defaults: ASFD Sec. 4.1 for the schedule (50 epochs, arch
    updates after 20, Adam lr 0.01, wd 5e-4); PC-DARTS for the rest (SGD lr 0.1 cosine, momentum
    0.9, wd 3e-4, clip 5, Adam betas (0.5, 0.999)); GDAS for tau 10 -> 0.1."""

    epochs: int = 50
    warmup_epochs: int = 20
    w_lr: float = 0.1
    w_lr_min: float = 0.0
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    arch_lr: float = 0.01
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 5e-4
    grad_clip: float = 5.0
    tau_start: float = 10.0
    tau_end: float = 0.1
    top_k: int = 2
    seed: int = 0
    deterministic: bool = False
    device: str = "cpu"
    log_every: int = 50

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs < self.epochs:
            problems.append(f"warmup_epochs must lie in [0, epochs={self.epochs}), got "
                            f"{self.warmup_epochs}: set search.warmup_epochs with search.epochs "
                            "(`asfd search --epochs N` sets it to 40% of N)")
        if self.lr_schedule not in ("cosine", "constant"):
            problems.append(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if min(self.tau_start, self.tau_end) <= 0:
            problems.append(f"tau_start and tau_end must be > 0, "
                            f"got {self.tau_start}, {self.tau_end}")
        for name in ("top_k", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("w_lr", "arch_lr"):
            if not 0 < getattr(self, name) < math.inf:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("w_lr_min", "w_momentum", "w_weight_decay", "arch_weight_decay",
                     "grad_clip"):
            if not 0 <= getattr(self, name) < math.inf:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if problems:
            raise ValueError("SearchConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "search config") -> SearchConfig:
        """Build from a plain mapping (e.g. YAML); unknown fields and wrong types are a
        :class:`~nas_search.runtime.ConfigError` naming ``source`` and the field."""
        return dataclass_from_dict(cls, data, source=source)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (tuples as lists), the inverse of :meth:`from_dict`."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclass
class SearchResult:
    """The derived genotype (with filled metadata), the last epoch's metrics, the searched model."""

    genotype: Genotype
    metrics: dict[str, float]
    run_dir: Path
    model: Supernet = field(repr=False)


@dataclass
class _Run:
    """Everything a checkpoint restores: the model, optimisers, schedule, RNGs and position."""

    model: Supernet
    w_opt: torch.optim.SGD
    a_opt: torch.optim.Adam
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gumbel: torch.Generator
    epoch: int = 0  # the next epoch to run
    step: int = 0  # steps done so far
    metrics: dict[str, float] = field(default_factory=dict)  # of the last epoch done

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step": self.step, "metrics": self.metrics,
            "model": self.model.state_dict(),
            "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {**rng_state(), "gumbel": self.gumbel.get_state()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.step, self.metrics = state["epoch"], state["step"], state["metrics"]
        self.model.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.gumbel.set_state(state["rng"]["gumbel"])


def search(task: SearchTask, config: SearchConfig, run_dir: str | os.PathLike,
           resume: bool = False, progress: ProgressFn | None = None) -> SearchResult:
    """Search ``task``'s supernet; return and save (``run_dir/genotype.yaml``) its genotype.

    ``resume=True`` continues from ``run_dir/checkpoint.pt`` (an error when absent) along
    exactly the trajectory an uninterrupted run takes; without it an existing checkpoint is an
    error, never silently overwritten. Raises :class:`NonFiniteLossError` on a NaN/inf loss or
    epoch metric.
    """
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT_FILE
    if checkpoint.exists() and not resume:
        raise FileExistsError(f"{checkpoint} exists: pass resume=True to continue that search, "
                              "or choose another run_dir")
    if resume and not checkpoint.exists():
        raise FileNotFoundError(f"nothing to resume: {checkpoint} does not exist")
    saved_flags = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(config.deterministic)
    try:
        run = _start(task, config, checkpoint if resume else None)
        _loop(task, config, run, run_dir, progress)
    finally:
        torch.use_deterministic_algorithms(saved_flags[0])
        torch.backends.cudnn.benchmark = saved_flags[1]
    genotype = _with_meta(run.model.genotype(config.top_k), run.model, task, config, run.metrics)
    validate_for_strategy(genotype, f"genotype of task {task.name!r}")
    if rank() == 0:
        save_genotype(genotype, run_dir / GENOTYPE_FILE)
    return SearchResult(genotype, run.metrics, run_dir, run.model)


def _start(task: SearchTask, config: SearchConfig, checkpoint: Path | None) -> _Run:
    """Seed, build the supernet and optimisers; restore ``checkpoint`` when given."""
    seed_everything(config.seed)
    device = available_device(config.device)
    if device.type == "cpu":
        retain_freed_memory()       # before the build, as TrainProcess.join does
    model = task.build_supernet().to(device)
    use_fast_conv_backward(model)
    gumbel = torch.Generator().manual_seed(
        int(np.random.SeedSequence([config.seed, _GUMBEL_STREAM]).generate_state(1)[0]))
    model.set_gumbel_generator(gumbel)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=config.w_lr,
                            momentum=config.w_momentum, weight_decay=config.w_weight_decay)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=config.arch_lr,
                             betas=config.arch_betas, weight_decay=config.arch_weight_decay)
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            w_opt, T_max=config.epochs, eta_min=config.w_lr_min)
    else:
        scheduler = torch.optim.lr_scheduler.ConstantLR(w_opt, factor=1.0, total_iters=0)
    run = _Run(model, w_opt, a_opt, scheduler, gumbel)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, "search checkpoint")
        refuse_changes(state["config"], config.to_dict(), str(checkpoint),
                       free=("device", "log_every"))
        try:
            run.load_state_dict(state)
        except RuntimeError as exc:  # a supernet of another shape (channels, nodes, backbone)
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise ValueError(f"{checkpoint}: does not fit the supernet of task {task.name!r} "
                             f"(another width or model?): {lines[min(1, len(lines) - 1)]}") \
                from None
        logger.info("resumed %s at epoch %d, step %d", checkpoint, run.epoch, run.step)
    if world_size() > 1:
        for t in itertools.chain(model.parameters(), model.buffers()):
            dist.broadcast(t.data, src=0)
    return run


def _loop(task: SearchTask, config: SearchConfig, run: _Run, run_dir: Path,
          progress: ProgressFn | None) -> None:
    """Run the epochs left, checkpointing ``run`` after each."""
    model, history = run.model, run_dir / HISTORY_FILE
    if rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        _truncate_history(history, keep_before=run.epoch)
    for epoch in range(run.epoch, config.epochs):
        tau = linear_temperature(epoch, config.epochs, config.tau_start, config.tau_end)
        model.set_temperature(tau)
        model.train()
        searching = epoch >= config.warmup_epochs
        val = task.val_batches(epoch) if searching else itertools.repeat(None)
        losses: dict[str, list[float]] = {"train_loss": [], "arch_loss": []}
        for train_batch, val_batch in zip(task.train_batches(epoch), val):
            where = f"epoch {epoch}, step {run.step}"
            if val_batch is not None:
                losses["arch_loss"].append(_update(
                    task, model, val_batch, run.a_opt, model.arch_parameters(), None,
                    f"architecture step ({where})"))
            losses["train_loss"].append(_update(
                task, model, train_batch, run.w_opt, model.weight_parameters(), config.grad_clip,
                f"weight step ({where})"))
            run.step += 1
            if run.step % config.log_every == 0:
                recent = {"train_loss": losses["train_loss"][-1], "tau": tau}
                logger.info("epoch %d step %d: %s", epoch, run.step, recent)
                if progress is not None:
                    progress(epoch, run.step, recent)
        if not losses["train_loss"]:
            raise ValueError(f"task {task.name!r}: no training batch in epoch {epoch}")
        run.scheduler.step()
        metrics = {k: float(np.mean(v)) for k, v in losses.items() if v} | _evaluate(task, model)
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteLossError(f"non-finite {bad} at the end of epoch {epoch} (step "
                                     f"{run.step}) of task {task.name!r}; nothing of this epoch "
                                     "was written, the last checkpoint is intact")
        run.epoch, run.metrics = epoch + 1, metrics
        if rank() == 0:
            with history.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"epoch": epoch, "step": run.step, "tau": tau,
                                    "arch_weights": model.arch_weights(),
                                    "metrics": metrics}) + "\n")
            save_checkpoint({"config": config.to_dict(), **run.state_dict()},
                            run_dir / CHECKPOINT_FILE)
        logger.info("epoch %d done: %s", epoch, metrics)
        if progress is not None:
            progress(epoch, run.step, metrics)


def _update(task: SearchTask, model: Supernet, batch: Any, optimizer: torch.optim.Optimizer,
            params: list[nn.Parameter], grad_clip: float | None, where: str) -> float:
    """One optimizer step on ``params`` only (others get no gradient); return the loss.

    Parameters the forward did not use (unsampled paths) get no gradient, hence no update, no
    momentum and no weight decay.
    """
    loss = task.loss(model, batch)
    value = float(_mean_over_ranks(loss.detach()))
    if not math.isfinite(value):
        raise NonFiniteLossError(f"non-finite loss {value} in the {where} of task {task.name!r};"
                                 " the last checkpoint is intact")
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    used = [p for p, g in zip(params, grads) if g is not None]
    for p in params:
        p.grad = None
    # Identical Gumbel samples on every rank make the set of used parameters identical too.
    for p, g in zip(used, _mean_over_ranks_flat([g for g in grads if g is not None])):
        p.grad = g
    if grad_clip:
        nn.utils.clip_grad_norm_(used, grad_clip)
    optimizer.step()
    return value


@torch.no_grad()
def _evaluate(task: SearchTask, model: Supernet) -> dict[str, float]:
    model.eval()
    try:
        metrics = task.evaluate(model)
    finally:
        model.train()
    if "val_loss" not in metrics:
        raise KeyError(f"task {task.name!r}: evaluate() must report 'val_loss', "
                       f"got {sorted(metrics)}")
    device = next(model.parameters()).device  # NCCL reduces device tensors only
    return {k: float(_mean_over_ranks(torch.tensor(float(v), device=device)))
            for k, v in metrics.items()}


def _with_meta(genotype: Genotype, model: Supernet, task: SearchTask, config: SearchConfig,
               metrics: dict[str, float]) -> Genotype:
    """Fill the provenance the supernet's own ``genotype()`` left empty.

    Mode (the strategy's name), nodes and k are read off the supernet's search cells and mixed
    ops when they all agree.
    """
    def common(values: set[Any]) -> Any:
        return values.pop() if len(values) == 1 else None

    cells = [m for m in model.modules() if isinstance(m, SearchCell)]
    meta = genotype.meta
    try:
        version = importlib.metadata.version("asfd")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    meta = dataclasses.replace(
        meta,
        mode=meta.mode or common({c.strategy.name for c in cells}) or "",
        nodes=meta.nodes if meta.nodes is not None else common({c.n_nodes for c in cells}),
        partial_channels_k=(meta.partial_channels_k if meta.partial_channels_k is not None
                            else common({m.k for m in model.modules() if isinstance(m, MixedOp)})),
        seed=config.seed, dataset=str(task.describe().get("dataset", task.name)),
        epochs=config.epochs, metrics=dict(metrics), toolkit_version=version,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return dataclasses.replace(genotype, meta=meta)


def _truncate_history(path: Path, keep_before: int) -> None:
    """Drop the lines of epochs ``>= keep_before`` (written after the checkpoint we resume)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)["epoch"] < keep_before]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept), encoding="utf-8")


def _mean_over_ranks_flat(tensors: list[Tensor]) -> list[Tensor]:
    """Each tensor averaged over all ranks, with one all-reduce of their concatenation."""
    if world_size() == 1 or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    return [chunk.view_as(t) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def _mean_over_ranks(t: Tensor) -> Tensor:
    """``t`` averaged over all ranks (``t`` itself in a single process)."""
    if world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / world_size()
