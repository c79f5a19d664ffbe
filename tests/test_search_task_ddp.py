"""A 2-process gloo search of the face task: both ranks end with the same architecture."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from detectors.data.sources import DataSource
from detectors.data.synthetic import make_synthetic
from detectors.engine.distributed import spawn_gloo
from detectors.workflows.search_task import FaceSearchConfig, FaceSearchTask
from nas_search.search import SearchConfig, search

TASK = FaceSearchConfig(channels=8, n_nodes=2, image_size=64, batch_size=2)
SEARCH = SearchConfig(epochs=2, warmup_epochs=1, log_every=1, seed=5)


def search_rank(data_dir: str, run_dir: str, out_dir: str) -> None:
    """One rank: search, then save what it holds (arch params, genotype, first batch seen)."""
    task = FaceSearchTask(TASK, DataSource(data_dir), seed=SEARCH.seed)
    first_images = next(iter(task.train_batches(0)))[0]
    result = search(task, SEARCH, run_dir)
    torch.save({
        "arch": {n: p.detach().clone() for n, p in result.model.named_arch_parameters()},
        "cells": result.genotype.cells,
        "metrics": result.genotype.meta.metrics,
        "first_images": first_images,
        "steps": task.steps_per_epoch,
    }, Path(out_dir) / f"rank{dist.get_rank()}.pt")


def test_two_gloo_ranks_export_bitwise_identical_architectures(tmp_path):
    make_synthetic(tmp_path / "data", 12, seed=2, size=(96, 72))
    spawn_gloo(search_rank, 2, str(tmp_path / "data"), str(tmp_path / "run"), str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert not torch.equal(r0["first_images"], r1["first_images"])  # each rank reads its shard
    assert r0["steps"] == r1["steps"] >= 1
    assert r0["arch"].keys() == r1["arch"].keys() and r0["arch"]
    for name, value in r0["arch"].items():
        assert torch.equal(value, r1["arch"][name]), name
    torch.manual_seed(SEARCH.seed)  # what the engine does before building the supernet
    initial = FaceSearchTask(TASK, DataSource(str(tmp_path / "data"))).build_supernet()
    moved = [n for n, p in initial.named_arch_parameters() if not torch.equal(p, r0["arch"][n])]
    assert moved  # the architecture steps did update the (shared) parameters
    assert r0["cells"] == r1["cells"] and r0["metrics"] == r1["metrics"]
    written = (tmp_path / "run" / "genotype.yaml").read_text()
    assert all(f"{lv}:" in written for lv in r0["cells"])
