"""Two-process DDP training over gloo, joined through torchrun's ``env://`` variables."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from detectors.data.synthetic import make_synthetic
from detectors.engine.checkpoint import STATE_FILE
from detectors.engine.config import load_config
from detectors.engine.trainer import train
from detectors.models.asfd import build_asfd

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, data: str, run_dir: str, out: str) -> None:
    """What ``torchrun`` would start: the env variables, then the library's ``train``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    config = load_config(None, [
        "model.name=D0", "model.options={width: 16}", "data.size=64", "data.batch_size=2",
        "data.workers=0", f"data.train=[{{dir: {data}}}]", "schedule.epochs=1",
        "schedule.warmup_iters=1", "optim.lr=0.05", "run.log_every=1", "eval.every=0"])
    events = []
    result = train(config, run_dir, callback=events.append)
    torch.save({"params": {k: v.detach() for k, v in result.model.named_parameters()},
                "iteration": result.progress.iteration, "events": len(events)},
               Path(out) / f"rank{rank}.pt")


def test_two_gloo_ranks_train_identical_weights(tmp_path):
    make_synthetic(tmp_path / "data", 8, seed=4, size=(80, 64))
    mp.spawn(rank_main, args=(2, free_port(), str(tmp_path / "data"), str(tmp_path / "run"),
                              str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["iteration"] == r1["iteration"] == 2  # 8 images / (2 ranks x batch 2)
    assert r0["events"] > 0 and r1["events"] == 0  # only rank 0 reports
    differ = [k for k, v in r0["params"].items() if not torch.equal(v, r1["params"][k])]
    assert not differ, differ[:5]
    torch.manual_seed(0)  # run.seed: the initial weights every rank starts from
    initial = dict(build_asfd("D0", width=16).named_parameters())
    assert any(not torch.equal(v, initial[k]) for k, v in r0["params"].items())
    saved = torch.load(tmp_path / "run" / STATE_FILE, weights_only=False)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in r0["params"].items())  # rank 0 wrote them
