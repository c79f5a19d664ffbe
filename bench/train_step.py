"""Where a CPU training step goes, and what the toolkit's two step speed-ups buy, in one run.

Per model, on the same augmented batches of ``--data`` (the cpu40 recipe's 320 px and batch
16 by default), one thread:

* **matching**: ms per step of anchor matching for all of the model's shots, with every image
  padded to the batch's most crowded one (``merge_cost`` unbounded: what a GPU wants) and in
  chunks of like face counts (:func:`detectors.models.matching.pass_cost` on a CPU);
* **step**: seconds per full training step (forward, loss, backward, AdamW update), with
  PyTorch's native convolution backward and with
  :func:`nas_search.runtime.use_fast_conv_backward`, from the same weights.

The arms alternate step by step, so a noisy machine slows them alike; the medians are printed
with their ratios. Run (~3 min on 2 cores)::

    PYTHONPATH=. python bench/train_step.py --models D0 retinaface_mnet025

Measured figures: README, "Training speed on the CPU".
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.table import Table

from detectors.engine.config import ModelConfig
from detectors.engine.trainer import build_model
from detectors.models.losses import build_loss
from detectors.models.matching import match_batch, pass_cost
from nas_search.runtime import use_fast_conv_backward

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_speed import MODELS  # noqa: E402
from learning_probe import fixed_batches, write_json  # noqa: E402

UNBOUNDED = 1 << 62


def train_step(name: str, batch: tuple, fast_backward: bool) -> Callable[[], None]:
    """One AdamW step of ``name`` (seed 0, NHWC) on ``batch``, as the trainer runs it."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name)).to(memory_format=torch.channels_last).train()
    if fast_backward:
        use_fast_conv_backward(model)
    loss_fn = build_loss(MODELS[name])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, boxes = batch
    images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        loss = loss_fn(model(images), boxes).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def shot_anchors(name: str, size: int) -> list[torch.Tensor]:
    """The anchors of every shot ``name`` trains on at ``size`` px."""
    model = build_model(ModelConfig(name=name)).train()
    with torch.no_grad():
        output = model(torch.zeros(2, 3, size, size))   # two: BatchNorm in train mode
    return [shot.anchors for shot in (output.second, output.first) if shot is not None]


def alternate(arms: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds of each arm, run in turn ``rounds`` times after one warm-up each."""
    for run in arms.values():
        run()
    times: dict[str, list[float]] = {key: [] for key in arms}
    for _ in range(rounds):
        for key, run in arms.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def measure(name: str, batches: list, size: int, rounds: int) -> dict[str, float]:
    """The row of ``name``: matching ms (padded, chunked) and step s (native, fast)."""
    anchors = shot_anchors(name, size)

    def matching(merge_cost: int) -> Callable[[], None]:
        return lambda: [match_batch(a, boxes, merge_cost=merge_cost)
                        for a in anchors for _, boxes in batches]

    match = alternate({"padded": matching(UNBOUNDED),
                       "chunked": matching(pass_cost(torch.device("cpu")))}, rounds)
    step = alternate({"native": train_step(name, batches[0], False),
                      "fast": train_step(name, batches[0], True)}, rounds)
    return {"model": name, "faces": sum(len(b) for _, boxes in batches for b in boxes),
            "match_padded_ms": 1000 * match["padded"] / len(batches),
            "match_chunked_ms": 1000 * match["chunked"] / len(batches),
            "step_native_s": step["native"], "step_fast_s": step["fast"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["D0", "retinaface_mnet025"],
                        choices=sorted(MODELS))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/wider-extra"))
    parser.add_argument("--batches", type=int, default=3, help="batches matched per round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = fixed_batches(args.data, args.batches, args.batch, args.size)
    rows = [measure(name, batches, args.size, args.rounds) for name in args.models]

    table = Table(title=f"Training step on the CPU: batch {args.batch} at {args.size} px, "
                        f"{args.threads} thread(s), medians of {args.rounds} alternated rounds")
    for header in ("model", "matching padded / chunked (ms)", "ratio",
                   "step native / fast backward (s)", "ratio"):
        table.add_column(header, justify="left" if header == "model" else "right")
    for row in rows:
        table.add_row(row["model"],
                      f"{row['match_padded_ms']:.1f} / {row['match_chunked_ms']:.1f}",
                      f"{row['match_padded_ms'] / row['match_chunked_ms']:.2f}x",
                      f"{row['step_native_s']:.3f} / {row['step_fast_s']:.3f}",
                      f"{row['step_native_s'] / row['step_fast_s']:.2f}x")
    Console(width=140).print(table)
    if args.json:
        write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
