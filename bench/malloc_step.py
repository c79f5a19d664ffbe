"""What keeping freed memory (:func:`nas_search.runtime.retain_freed_memory`) buys a CPU step.

glibc's malloc settings are per process, so each arm is a fresh process: for every model and
round, one process with glibc's defaults and one with the thresholds raised run the same
training step (``bench/train_step.py``'s: AdamW, NHWC, the fast conv backward, seed 0) on the
same augmented batch of ``--data``, one thread. Each reports seconds per step, minor page faults
per step and its peak resident set, after ``--warmup`` steps. The arms alternate, so a noisy
machine slows them alike; the medians are printed with their ratios. Run (~4 min on 2 cores)::

    PYTHONPATH=. python bench/malloc_step.py --models D0 retinaface_mnet025

Measured figures: README, "Training speed on the CPU".
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from nas_search.runtime import retain_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_probe import fixed_batches, write_json  # noqa: E402
from train_step import train_step  # noqa: E402

ARMS = ("default", "retain")


def worker(args: argparse.Namespace) -> None:
    """One arm in this process: print its step time, faults per step and peak RSS as JSON."""
    applied = retain_freed_memory() if args.arm == "retain" else False
    torch.set_num_threads(args.threads)
    batch = fixed_batches(args.data, 1, args.batch, args.size)[0]
    step = train_step(args.worker, batch, fast_backward=True)
    for _ in range(args.warmup):
        step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"applied": applied, "s_per_step": seconds,
                      "faults": (after.ru_minflt - before.ru_minflt) / args.steps,
                      "peak_rss_mib": after.ru_maxrss / 1024}))


def run_arm(model: str, arm: str, args: argparse.Namespace) -> dict:
    """One arm in a fresh process (the settings are per process)."""
    command = [sys.executable, __file__, "--worker", model, "--arm", arm, "--data", str(args.data),
               "--batch", str(args.batch), "--size", str(args.size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.splitlines()[-1])
    if arm == "retain" and not result["applied"]:
        raise SystemExit("retain_freed_memory() changed nothing here (not glibc, or MALLOC_* set)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["D0", "retinaface_mnet025"])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/wider-extra"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    rows = []
    for model in args.models:
        runs = {arm: [] for arm in ARMS}
        for _ in range(args.rounds):
            for arm in ARMS:
                runs[arm].append(run_arm(model, arm, args))
        median = {arm: {key: statistics.median(r[key] for r in runs[arm])
                        for key in ("s_per_step", "faults", "peak_rss_mib")} for arm in ARMS}
        rows.append({"model": model, **{f"{arm}_{key}": value for arm in ARMS
                                        for key, value in median[arm].items()}})

    table = Table(title=f"CPU training step, glibc defaults / freed memory kept (batch "
                        f"{args.batch}, {args.size} px, {args.threads} thread, medians of "
                        f"{args.rounds} alternated processes)")
    for column in ("model", "s/step", "ratio", "page faults/step", "peak RSS (MiB)"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["model"], f"{r['default_s_per_step']:.3f} / {r['retain_s_per_step']:.3f}",
                      f"{r['default_s_per_step'] / r['retain_s_per_step']:.2f}x",
                      f"{r['default_faults']:.0f} / {r['retain_faults']:.0f}",
                      f"{r['default_peak_rss_mib']:.0f} / {r['retain_peak_rss_mib']:.0f}")
    Console().print(table)
    if args.json:
        write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
