"""bench/data_throughput.py: every row on a few tiny batches of real images."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import data_throughput  # noqa: E402

EXTRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wider-extra"


@pytest.mark.skipif(not EXTRA.is_dir(), reason=f"shared data not found at {EXTRA}")
def test_bench_reports_loader_device_and_training_rates():
    args = argparse.Namespace(data=EXTRA, size=64, batch=2, workers=0, device="cpu", batches=2,
                              warmup=1, model="D0")
    rows = data_throughput.measure(args)
    assert list(rows) == ["loader", "loader + device step", "device step alone",
                          "train, batches in memory", "train, loader", "data share"]
    assert all(rows[k] > 0 for k in list(rows)[:-1]) and rows["data share"] < 1
