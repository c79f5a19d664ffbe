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


def bench_args(**changes) -> argparse.Namespace:
    return argparse.Namespace(**{**dict(data=EXTRA, size=64, batch=2, workers=0, device="cpu",
                                        batches=2, warmup=1, model="D0", train_only=False),
                                 **changes})


@pytest.mark.skipif(not EXTRA.is_dir(), reason=f"shared data not found at {EXTRA}")
def test_bench_reports_training_loader_and_device_rates():
    rows = data_throughput.measure(bench_args())
    assert list(rows) == ["train, batches in memory", "train, loader", "data share",
                          "loader", "loader + device step", "device step alone"]
    assert all(v > 0 for k, v in rows.items() if k != "data share") and rows["data share"] < 1


@pytest.mark.skipif(not EXTRA.is_dir(), reason=f"shared data not found at {EXTRA}")
def test_bench_train_only_times_the_training_rows():
    rows = data_throughput.measure(bench_args(train_only=True, model="retinaface_mnet025"))
    assert list(rows) == ["train, batches in memory", "train, loader", "data share"]
