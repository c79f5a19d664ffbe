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


def test_conv_kinds_and_kernel_macs():
    assert yunet_speed.conv_kind([8, 3, 3, 3], 1) == "stem"
    assert yunet_speed.conv_kind([64, 1, 3, 3], 64) == "depthwise"
    assert yunet_speed.conv_kind([64, 64, 1, 1], 1) == "pointwise"
    assert yunet_speed.conv_kind([64, 64, 3, 3], 1) == "dense"
    assert yunet_speed.Kernel("dense", 64, 3, (64, 60, 80)).macs() == 64 * 64 * 9 * 4800
    assert yunet_speed.Kernel("depthwise", 64, 3, (64, 60, 80)).macs() == \
        64 * 9 * 4800
    assert yunet_speed.Kernel("stem", 8, 3, (3, 480, 640), stride=2).macs() == 8 * 27 * 76800


def test_conv_macs_by_kind_counts_every_conv_node_of_a_graph(tmp_path):
    torch = pytest.importorskip("torch")
    from detectors.engine.macs import count_macs

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.Conv2d(8, 8, 3, 1, 1, groups=8),
        torch.nn.Conv2d(8, 16, 1), torch.nn.Conv2d(16, 16, 3, 1, 1)).eval()
    x = torch.randn(2, 3, 32, 48)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["images"],
                      dynamic_axes={"images": {0: "batch"}})
    macs = yunet_speed.conv_macs_by_kind(path, {"images": x.numpy()})
    assert macs == {"stem": 8 * 27 * 384, "depthwise": 8 * 9 * 384, "pointwise": 16 * 8 * 384,
                    "dense": 16 * 16 * 9 * 384}
    assert sum(macs.values()) == count_macs(net, x)


def test_latency_floor_takes_the_best_rate_of_each_kind():
    rates = [{"kind": "pointwise", "fp32_gmacs": 50.0, "int8_gmacs": 100.0},
             {"kind": "pointwise", "fp32_gmacs": 80.0, "int8_gmacs": 90.0},
             {"kind": "depthwise", "fp32_gmacs": 20.0, "int8_gmacs": 10.0}]
    macs = {"pointwise": 800_000_000, "depthwise": 100_000_000}
    assert yunet_speed.latency_floor(macs, rates, ["fp32"]) == pytest.approx(10 + 5)
    assert yunet_speed.latency_floor(macs, rates, ["fp32", "int8"]) == pytest.approx(8 + 5)
