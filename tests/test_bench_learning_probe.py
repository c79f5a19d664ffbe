"""bench/learning_probe.py: its model specs and a few probe steps on real images."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from detectors.engine.config import ModelConfig

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import learning_probe  # noqa: E402

EXTRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wider-extra"


def test_model_specs_name_model_loss_and_options():
    assert learning_probe.parse_spec("D0") == (ModelConfig("D0"), "drmc")
    assert learning_probe.parse_spec("D0:dsfd@head_conv=full@enhanced_levels=[P6, P7]") == \
        (ModelConfig("D0", options={"head_conv": "full", "enhanced_levels": ["P6", "P7"]}),
         "dsfd")
    assert learning_probe.parse_spec("D0@genotype=g.yaml@width=16") == \
        (ModelConfig("D0", genotype="g.yaml", options={"width": 16}), "drmc")
    with pytest.raises(SystemExit, match="unknown model 'D9'"):
        learning_probe.parse_spec("D9")
    with pytest.raises(SystemExit, match="is not KEY=VALUE"):
        learning_probe.parse_spec("D0@width")


@pytest.mark.skipif(not EXTRA.is_dir(), reason=f"shared data not found at {EXTRA}")
def test_probe_reports_the_plateau_of_the_models_loss():
    batches = learning_probe.fixed_batches(EXTRA, batches=1, batch=2, size=64)
    row = learning_probe.probe("D0@width=16", batches, iters=3, lr=0.01, warmup=1)
    assert row["loss"] == "drmc" and row["plateau"] == pytest.approx(2.5602, abs=1e-4)
    assert row["escape"] is None or 1 <= row["escape"] <= 3
    assert row["grad_norm"] > 0 and row["s_per_step"] > 0
