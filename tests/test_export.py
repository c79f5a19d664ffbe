"""ONNX export: dynamic and fixed sizes, onnxruntime equality with PyTorch (trained models
included), the in-graph post-processing, BatchNorm folding, int8."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from PIL import Image

from detectors.engine.export import (
    ExportGraph, OnnxDetector, candidate_distance, detections_difference, export_onnx,
    network_nodes, onnx_session, quantize_onnx, verify_onnx,
)
from detectors.engine.inference import Detector, PostProcess, decode_shot, select
from detectors.models.asfd import build_asfd
from detectors.models.losses import build_loss
from detectors.models.reference_detectors import build_reference_detector

SIZES = ((64, 96), (96, 64))  # (H, W): two sizes, neither the tracing size


def spread_out(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics, so that an untrained model's scores are not near-tied (ties make
    NMS order-dependent, which no exporter can reproduce bit for bit)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=generator) * 0.3 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def retinaface():
    torch.manual_seed(0)
    return spread_out(build_reference_detector("retinaface_mnet025"))


def test_raw_export_has_dynamic_axes_and_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = spread_out(build_asfd("D0", width=16))
    path = export_onnx(model, tmp_path / "d0.onnx", sample_size=(80, 80))
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in graph.output] == ["cls", "reg", "anchors"]
    results = verify_onnx(model, path, SIZES, batch=2)
    assert [r.size for r in results] == list(SIZES)
    for r in results:
        assert r.ok(1e-4), r
    cls, _, anchors = onnx_session(path).run(None, {"images": np.zeros((1, 3, 64, 96), np.float32)})
    assert len(anchors) == cls.shape[1] == len(model.anchors_for(64, 96))


def test_postprocess_export_runs_nms_in_the_graph(retinaface, tmp_path):
    path = export_onnx(retinaface, tmp_path / "rf.onnx", with_postprocess=True,
                       sample_size=(80, 80))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"TopK", "NonMaxSuppression"} <= ops
    for r in verify_onnx(retinaface, path, SIZES, with_postprocess=True, batch=2):
        assert r.ok(1e-3), r
    (detections,) = onnx_session(path).run(None, {"images": np.zeros((2, 3, 64, 64), np.float32)})
    assert detections.shape[1] == 6 and set(np.unique(detections[:, 0])) <= {0.0, 1.0}


def test_onnx_detector_detects_like_the_pytorch_detector(retinaface, tmp_path):
    path = export_onnx(retinaface, tmp_path / "raw.onnx", sample_size=(80, 80))
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    post = PostProcess(score_threshold=0.3)
    (expected,) = Detector(retinaface, post).detect([image])
    (got,) = OnnxDetector(path, post).detect([image])
    assert len(got.scores) == len(expected.scores) > 0
    torch.testing.assert_close(got.boxes, expected.boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.scores, expected.scores, atol=1e-5, rtol=0)


def test_onnx_detector_runs_a_postprocess_export_with_its_own_settings(retinaface, tmp_path):
    post = PostProcess(score_threshold=0.3, pre_nms_top_k=200)
    path = export_onnx(retinaface, tmp_path / "pp.onnx", with_postprocess=True,
                       postprocess=post, sample_size=(80, 80))
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    (expected,) = Detector(retinaface, post).detect([image])
    detector = OnnxDetector(path, PostProcess(score_threshold=0.3))
    assert detector.postprocess == post  # the graph's top-k, not the caller's default 5000
    (got,) = detector.detect([image])
    assert len(got.scores) == len(expected.scores) > 0
    torch.testing.assert_close(got.boxes, expected.boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.scores, expected.scores, atol=1e-5, rtol=0)
    (fewer,) = OnnxDetector(path, PostProcess(score_threshold=0.6)).detect([image])
    torch.testing.assert_close(fewer.scores, got.scores[got.scores > 0.6])
    with pytest.raises(ValueError, match="keeps scores > 0.3.*--score-threshold 0.05"):
        OnnxDetector(path, PostProcess(score_threshold=0.05))
    with pytest.raises(ValueError, match="raw export"):
        detector.raw(torch.zeros(1, 3, 64, 64))
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="bare.onnx: a detections graph without"):
        OnnxDetector(tmp_path / "bare.onnx")


@pytest.fixture(scope="module")
def trained_d0():
    """A narrow D0 after a few AdamW steps on one synthetic batch: trained weights break the
    symmetry of an initialised model, and its scores sit close together (near-ties). Its heads
    have a one-layer tower, whose per-map BatchNorms the export must fold too."""
    torch.manual_seed(0)
    model = build_asfd("D0", width=16, head_depth=1)
    loss_fn = build_loss("drmc")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    faces = [torch.tensor([[8.0, 10, 30, 36]]), torch.tensor([[20.0, 16, 52, 56], [2, 2, 18, 20]])]
    model.train()
    for _ in range(5):
        loss = loss_fn(model(images), faces).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def rows(*items) -> np.ndarray:
    return np.array(items, dtype=np.float32).reshape(-1, 6)


def test_detections_difference_compares_rows_as_sets_up_to_near_ties():
    a = rows([0, 0, 0, 10, 10, 0.9], [0, 50, 50, 60, 60, 0.5], [0, 20, 0, 30, 10, 0.5],
             [1, 5, 5, 9, 9, 0.7])
    assert detections_difference(a, a, 1e-3) == (0.0, 0)
    swapped = a[[0, 2, 1, 3]]  # equal scores ordered the other way
    assert np.abs(swapped - a).max() == 50  # what a row-by-row comparison reports
    assert detections_difference(a, swapped, 1e-3) == (0.0, 0)
    shifted = a.copy()
    shifted[0, 1] += 5e-4
    assert detections_difference(a, shifted, 1e-3) == (pytest.approx(5e-4), 0)
    # a near-tie kept the other box (scores 1e-6 apart): it and all rows below it may differ
    other = a.copy()
    other[1, 1:5], other[1, 5] = [70, 70, 80, 80], 0.500001
    assert detections_difference(a, other, 1e-3) == (0.0, 2)
    # a box at a score nothing in the other output is near: a real difference
    wrong = a.copy()
    wrong[0, 1:5], wrong[0, 5] = [100, 100, 110, 110], 0.8
    assert detections_difference(a, wrong, 1e-3)[0] == float("inf")
    # at an equal score it passes as a near-tie, but it is no box the model predicted
    wrong[0, 5] = 0.9
    assert detections_difference(a, wrong, 1e-3) == (0.0, 2)
    boxes = np.array([a[:3, 1:5], np.repeat(a[3:, 1:5], 3, 0)])  # every anchor's box, 2 images
    scores = np.array([a[:3, 5], np.repeat(a[3:, 5], 3)])
    assert candidate_distance(a, boxes, scores) == 0.0
    assert candidate_distance(wrong, boxes, scores) == 100
    assert detections_difference(a, a[:3], 1e-3)[0] == float("inf")  # an image lost its rows
    # a score at the floor may fall on either side of it
    assert detections_difference(rows([0, 1, 1, 2, 2, 0.05]), rows(), 1e-3, floor=0.05) == (0, 0)


def test_postprocess_export_matches_pytorch_on_a_trained_d0(trained_d0, tmp_path):
    post = PostProcess(score_threshold=0.0, post_nms_top_k=50)  # every anchor a candidate
    path = export_onnx(trained_d0, tmp_path / "d0.onnx", with_postprocess=True,
                       postprocess=post, sample_size=(80, 80))
    sizes = ((64, 96), (96, 64), (128, 160))
    results = verify_onnx(trained_d0, path, sizes, with_postprocess=True, postprocess=post)
    for r in results:
        assert r.ok(1e-3), r
    # Whether near-ties occur depends on the thread count's rounding; how they are told apart
    # is tested on fixed rows in test_detections_difference_compares_rows_as_sets_up_to_near_ties.


def test_in_graph_postprocess_is_select_with_the_floor_before_the_top_k(trained_d0, tmp_path):
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        boxes, scores = decode_shot(trained_d0(x, first_shot=False).second)
    floor = float(scores[0].quantile(0.99))  # image 0 has ~1% of anchors above, image 1 other
    for post in (PostProcess(score_threshold=floor, pre_nms_top_k=40),
                 PostProcess(score_threshold=floor, pre_nms_top_k=10_000),
                 PostProcess(score_threshold=0.999)):
        with torch.no_grad():
            (found,) = ExportGraph(trained_d0, post)(x)
        for b in range(2):
            expected = select(boxes[b], scores[b], post)
            torch.testing.assert_close(found[found[:, 0] == b, 5], expected.scores)
            torch.testing.assert_close(found[found[:, 0] == b, 1:5], expected.boxes)
    assert len(found) == 0  # nothing above 0.999: a top-k of 0 runs too, also in onnxruntime
    path = export_onnx(trained_d0, tmp_path / "d0.onnx", with_postprocess=True,
                       postprocess=post, sample_size=(64, 64))
    assert onnx_session(path).run(None, {"images": x.numpy()})[0].shape == (0, 6)


def test_export_folds_every_batchnorm_into_a_conv(trained_d0, tmp_path):
    path = export_onnx(trained_d0, tmp_path / "d0.onnx", sample_size=(64, 64))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "BatchNormalization" not in ops and "Conv" in ops
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained_d0.heads.modules())


def test_fixed_size_export_takes_that_size_only(retinaface, tmp_path):
    path = export_onnx(retinaface, tmp_path / "fixed.onnx", sample_size=(64, 96),
                       fixed_size=True)
    dims = [d.dim_param or d.dim_value
            for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 96]
    for r in verify_onnx(retinaface, path, ((64, 96),), batch=2):
        assert r.ok(1e-4), r
    detector = OnnxDetector(path)
    assert len(detector.detect([np.zeros((64, 96, 3), np.uint8)])) == 1
    with pytest.raises(ValueError, match="fixed.onnx: a graph for 96x64 inputs only"):
        detector.detect([np.zeros((70, 90, 3), np.uint8)])


def test_a_padding_sensitive_export_is_marked_so_onnx_runs_sizes_apart(
        normalized_gate_d0, retinaface, tmp_path):
    model = spread_out(normalized_gate_d0)
    path = export_onnx(model, tmp_path / "d0.onnx", sample_size=(64, 64))
    plain = export_onnx(retinaface, tmp_path / "retina.onnx", sample_size=(64, 64))
    assert OnnxDetector(path).batch_by_size and not OnnxDetector(plain).batch_by_size
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((48, 64, 3), (96, 80, 3))]
    detector = OnnxDetector(path, PostProcess(score_threshold=0.0))
    for got, alone in zip(detector.detect(images), [detector.detect([im])[0] for im in images]):
        assert len(got.scores) == len(alone.scores) > 0
        torch.testing.assert_close(got.boxes, alone.boxes)
        torch.testing.assert_close(got.scores, alone.scores)


def test_int8_export_quantises_the_network_and_keeps_anchors_float(retinaface, tmp_path):
    images = tmp_path / "calibration"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(
            images / f"{i}.png")
    fp32 = export_onnx(retinaface, tmp_path / "fp32.onnx", sample_size=(64, 64))
    nodes = network_nodes(onnx.load(str(fp32)))
    assert nodes and not any("Range" in n or not n.startswith("/model/") for n in nodes)
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", sorted(images.iterdir()), (80, 60))
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    feed = {"images": np.random.default_rng(1).standard_normal((1, 3, 64, 80), np.float32)}
    (cls8, _, anchors8), (cls, _, anchors) = (onnx_session(p).run(None, feed)
                                              for p in (int8, fp32))
    np.testing.assert_array_equal(anchors8, anchors)  # the anchor generator stays float32
    assert 0 < np.abs(cls8 - cls).max() < 0.5 * np.abs(cls).max()
    with pytest.raises(ValueError, match="at least one calibration image"):
        quantize_onnx(fp32, tmp_path / "none.onnx", [])
