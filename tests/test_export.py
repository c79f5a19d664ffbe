"""ONNX export: dynamic sizes, onnxruntime equality with PyTorch, the in-graph NMS."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from detectors.asfd import build_asfd
from detectors.export import OnnxDetector, export_onnx, onnx_session, verify_onnx
from detectors.inference import Detector, PostProcess
from detectors.reference_detectors import build_reference_detector

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
    with pytest.raises(ValueError, match="raw export"):
        OnnxDetector(export_onnx(retinaface, tmp_path / "pp.onnx", with_postprocess=True,
                                 sample_size=(80, 80)))
