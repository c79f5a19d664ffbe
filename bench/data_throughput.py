"""Training data pipeline throughput: the loader alone, with the device step, and in training.

Rows, in images/s, all from one run on the same images, size, batch and workers:

* ``loader``: the training DataLoader alone. Workers decode, crop, resize and flip (uint8) and
  collate, with memory pinned on CUDA (:func:`detectors.data.loader.loader_options`).
* ``loader + device step``: each batch also goes through
  :func:`~detectors.data.loader.prepare_batch`: the copy to the device, the photometric
  distortion and the normalisation.
* ``device step alone``: ``prepare_batch`` on the same batches, loaded beforehand. This is the
  ceiling of the device part.
* with ``--model`` (timed first; ``--train-only`` skips the rows above): ``train, batches in
  memory`` runs SGD steps on the same batches, prepared
  beforehand, which is the model's own speed. ``train, loader`` takes each batch from the
  loader through ``prepare_batch``, as ``asfd train`` does. Both start from the same weights
  (seed 0) and see the same batches, so they compute the same steps. The step is
  ``Trainer``'s: NHWC, AMP on CUDA, the model's loss, gradient clipping. ``data share`` =
  1 - (loader rate / in-memory rate), the share of the step time that data loading adds.

The images are repeated to fill ``--batches`` batches within one epoch, so that epoch ends do
not drain the workers' queue. Each image then gets new crops. The queue holds up to ``workers x
PREFETCH_FACTOR`` batches when timing starts, which inflates the loader rows by up to that many
batches: time at least 4 times as many (the bench warns otherwise). The in-memory rows cycle
over at most :data:`IN_MEMORY` distinct batches.

Run: ``PYTHONPATH=. python bench/data_throughput.py --device cuda --workers 12 --batch 32
--model D0`` on a GPU machine; the figures in README.md say where they were measured.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from detectors.data.loader import (
    PREFETCH_FACTOR, DetectionBatch, FaceDetectionDataset, build_dataloader, prepare_batch,
    set_epoch,
)
from detectors.data.sources import DataSource, load_samples
from detectors.engine.config import ModelConfig, OptimConfig
from detectors.engine.schedule import build_optimizer
from detectors.engine.trainer import _float_output, build_model
from detectors.models.losses import build_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_speed import MODELS  # noqa: E402  (the loss each model trains with)

T = TypeVar("T")
#: Distinct batches the in-memory rows hold (and cycle over).
IN_MEMORY = 20


def training_batches(data: Path, size: int, batch: int, workers: int, device: torch.device,
                     count: int, seed: int = 0) -> Iterator[DetectionBatch]:
    """``count`` training batches of ``data`` from the training loader, in one epoch."""
    samples = load_samples(DataSource(dir=str(data)))
    repeat = math.ceil(count * batch / len(samples))
    dataset = FaceDetectionDataset(samples * repeat, train=True, size=size, seed=seed)
    loader = build_dataloader(dataset, batch, workers, seed, drop_last=True, device=device)
    set_epoch(loader, 0)
    return iter(loader)


def images_per_s(items: Iterator[T], work: Callable[[T], int], count: int, warmup: int,
                 device: torch.device) -> float:
    """Rate of ``work`` (which returns the images it handled) over ``count`` items after
    ``warmup`` untimed ones."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for item in itertools.islice(items, warmup):
        work(item)
    sync()
    start = time.perf_counter()
    images = sum(work(item) for item in itertools.islice(items, count))
    sync()
    return images / (time.perf_counter() - start)


def train_step(name: str, device: torch.device) -> Callable[[Tensor, list[Tensor]], int]:
    """An SGD step of model ``name`` (built from seed 0) on prepared inputs, as ``Trainer``
    runs it; returns the batch size."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name)).to(device, memory_format=torch.channels_last)
    model.train()
    loss_fn = build_loss(MODELS[name])
    optim = OptimConfig()
    optimizer = build_optimizer(model.parameters(), optim)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def step(images: Tensor, boxes: list[Tensor]) -> int:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            output = model(images)
        loss = loss_fn(_float_output(output), boxes).total
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        return len(images)

    return step


def measure(args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    count, warmup = args.batches, args.warmup
    total = warmup + count

    def fresh() -> Iterator[DetectionBatch]:
        return training_batches(args.data, args.size, args.batch, args.workers, device, total)

    def prepared(batch: DetectionBatch) -> tuple[Tensor, list[Tensor]]:
        return prepare_batch(batch, device, torch.channels_last)

    def device_step(batch: DetectionBatch) -> int:
        prepared(batch)
        return len(batch.images)

    rows: dict[str, float] = {}

    def record(name: str, value: float) -> None:
        rows[name] = value
        print(f"{name}: {value:.3f}", flush=True)   # each row as it comes, in case of a timeout

    in_memory = list(itertools.islice(fresh(), IN_MEMORY))
    if args.model:   # first, as the figure a GPU call is for
        inputs = [prepared(b) for b in in_memory]
        step = train_step(args.model, device)
        record("train, batches in memory", images_per_s(
            itertools.cycle(inputs), lambda pair: step(*pair), count, warmup, device))
        step = train_step(args.model, device)
        record("train, loader", images_per_s(fresh(), lambda b: step(*prepared(b)), count,
                                             warmup, device))
        record("data share", 1 - rows["train, loader"] / rows["train, batches in memory"])
        if args.train_only:
            return rows
    record("loader", images_per_s(fresh(), lambda b: len(b.images), count, warmup, device))
    record("loader + device step", images_per_s(fresh(), device_step, count, warmup, device))
    record("device step alone", images_per_s(itertools.cycle(in_memory), device_step, count,
                                             warmup, device))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/wider-extra"),
                        help="a WIDER-format folder (default: 51 full-size WIDER images)")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before each row")
    parser.add_argument("--model", choices=sorted(MODELS),
                        help="also time training steps of this model, with and without loading")
    parser.add_argument("--train-only", action="store_true",
                        help="with --model: only the two training rows and the data share")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (CPU)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"--data {args.data}: no such folder")
    torch.set_num_threads(args.threads)
    queue = args.workers * PREFETCH_FACTOR
    if args.batches < 4 * queue:
        print(f"warning: --batches {args.batches} < 4 x the {queue} batches the workers' queue "
              "holds: the loader rows can read high", file=sys.stderr)
    rows = measure(args)
    table = Table(title=f"{args.device}: {args.size} px, batch {args.batch}, "
                        f"{args.workers} workers, {args.batches} batches per row")
    table.add_column("pipeline")
    table.add_column("images/s", justify="right")
    for name, value in rows.items():
        table.add_row(name, f"{value:.0%}" if name == "data share" else f"{value:.1f}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
