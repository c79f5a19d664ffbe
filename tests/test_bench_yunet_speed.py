"""bench/yunet_speed.py: variant specs, alternating pairs, paired ratios, the skip without
opencv, and YuNet itself where opencv and the model are at hand."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import yunet_speed  # noqa: E402
from yunet_speed import Variant, parse_variant  # noqa: E402


def test_variant_specs():
    assert parse_variant("raw") == Variant(postprocess=False)
    assert parse_variant("pp:k=750:floor=0.2:opt=basic:int8:fixed") == Variant(
        postprocess=True, pre_nms_top_k=750, score_threshold=0.2, optimization="basic",
        int8=True, fixed=True)
    for bad, message in (("nms", "starts with raw or pp"), ("raw:k=750", "unknown option 'k=750'"),
                         ("pp:opt=fast", "unknown option 'opt=fast'"), ("pp:k=ten", "k=ten")):
        with pytest.raises(ValueError, match=message):
            parse_variant(bad)


def test_pairs_rotate_the_order_and_ratios_are_per_pair():
    calls: list[str] = []
    times = yunet_speed.alternate({n: (lambda n=n: calls.append(n)) for n in "abc"}, pairs=3,
                                  warmup=0)
    assert calls == list("abcbcacab") and all(len(t) == 3 for t in times.values())
    ratios = yunet_speed.paired_ratios({"ref": [10.0, 20.0, 40.0], "x": [5.0, 30.0, 20.0]},
                                       "ref")
    assert ratios == {"ref": 1.0, "x": 0.5}  # median of 0.5, 1.5, 0.5: drift between pairs cancels


def test_bench_skips_with_a_reason_without_opencv(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    assert yunet_speed.main(["--models", "D0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("skipped:") and "opencv-python-headless" in out


def test_yunet_detects_on_an_image():
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is not installed")
    try:
        model = yunet_speed.yunet_model()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    run = yunet_speed.yunet_runner(cv2, model, np.zeros((48, 64, 3), np.uint8), 0.9)
    _, faces = run()
    assert faces is None or len(faces) == 0
