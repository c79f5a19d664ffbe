"""bench/malloc_step.py: one tiny round of both arms, each in its own process, on real images."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas_search.runtime import allocator

ROOT = Path(__file__).resolve().parents[1]
EXTRA = ROOT.parent / "shared" / "data" / "wider-extra"


@pytest.mark.skipif(not EXTRA.is_dir(), reason=f"shared data not found at {EXTRA}")
@pytest.mark.skipif(allocator.glibc() is None, reason="the C library is not glibc")
def test_bench_runs_both_arms_in_their_own_processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    subprocess.run([sys.executable, str(ROOT / "bench" / "malloc_step.py"), "--models", "D0",
                    "--data", str(EXTRA), "--batch", "2", "--size", "64", "--steps", "1",
                    "--warmup", "1", "--rounds", "1", "--json", str(tmp_path / "rows.json")],
                   check=True, capture_output=True, env={**env, "PYTHONPATH": str(ROOT)})
    [row] = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert row["model"] == "D0"
    assert all(row[f"{arm}_{key}"] > 0 for arm in ("default", "retain")
               for key in ("s_per_step", "peak_rss_mib"))
