"""bench/train_step.py: one tiny round of each arm on real images."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import train_step  # noqa: E402
from learning_probe import fixed_batches  # noqa: E402

EXTRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wider-extra"


@pytest.mark.skipif(not EXTRA.is_dir(), reason=f"shared data not found at {EXTRA}")
def test_bench_times_both_matchings_and_both_backwards():
    batches = fixed_batches(EXTRA, batches=1, batch=2, size=64)
    row = train_step.measure("D0", batches, size=64, rounds=1)
    assert row["faces"] == sum(len(b) for b in batches[0][1])
    assert all(row[key] > 0 for key in ("match_padded_ms", "match_chunked_ms", "step_native_s",
                                        "step_fast_s"))
