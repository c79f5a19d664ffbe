"""ONNX export with dynamic batch, height and width, verified against PyTorch with onnxruntime.

Two graphs (``torch.onnx.export`` through the TorchScript tracer, ``dynamo=False``: the most
robust path for dynamic axes on these models; torch >= 2.9 marks it deprecated but still ships
it. The ``torch.export`` path (``dynamo=True``) also exports the raw graph, ~15x slower, and
specialises the batch axis when traced with a batch of 1; the in-graph NMS below would need an
onnxscript translation there):

* raw (default): input ``images [B, 3, H, W]`` (normalised as in
  :func:`detectors.data.image.to_tensor`), outputs ``cls [B, A, 2]`` logits, ``reg [B, A, 4]``
  SSD offsets of the second shot, and ``anchors [A, 4]`` (``xyxy``). The anchors depend on the
  input size; they are computed *inside the graph* from the feature-map shapes (the anchor
  generators use ``arange`` over the traced map sizes), so one file serves every size.
  Decoding and NMS then run in the caller; :class:`OnnxDetector` does it exactly like
  :class:`~detectors.inference.Detector`.
* ``with_postprocess=True``: softmax + decoding + the paper's post-processing (top 5000,
  score threshold, NMS IoU 0.3, top 750 per image) inside the graph, with ONNX ``TopK`` and
  ``NonMaxSuppression``; output ``detections [K, 6]`` rows ``(batch index, x1, y1, x2, y2,
  score)``, each image's rows by decreasing score. ONNX NMS suppresses at IoU ``>`` the
  threshold and keeps scores ``>`` the threshold, as :func:`detectors.inference.select` does;
  scores tied to ~1e-7 (untrained models) may still be ordered differently by the two.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from detectors.heads import ShotOutput
from detectors.inference import DetectorBase, PostProcess, decode_shot, select

OPSET = 17
RAW_OUTPUTS: tuple[str, ...] = ("cls", "reg", "anchors")
POSTPROCESS_OUTPUTS: tuple[str, ...] = ("detections",)


def _const(g, values, dtype) -> object:
    return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))


class PostProcessOp(torch.autograd.Function):
    """Per-image :func:`~detectors.inference.select` over a batch; exports as ONNX
    ``TopK`` -> ``GatherElements`` -> ``NonMaxSuppression`` -> ``GatherND``."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, cfg: PostProcess) -> Tensor:
        rows = []
        for b, (bx, sc) in enumerate(zip(boxes, scores)):
            det = select(bx, sc, cfg)
            rows.append(torch.cat([det.boxes.new_full((len(det.scores), 1), b), det.boxes,
                                   det.scores[:, None]], 1))
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, cfg: PostProcess):
        i64 = torch.int64
        shape = g.op("Shape", scores)                                             # [B, A]
        k = g.op("Min", g.op("Gather", shape, _const(g, [1], i64), axis_i=0),
                 _const(g, [cfg.pre_nms_top_k], i64))
        top_scores, top_idx = g.op("TopK", scores, k, axis_i=1, largest_i=1, sorted_i=1,
                                   outputs=2)                                     # [B, k]
        box_idx_shape = g.op("Concat", g.op("Gather", shape, _const(g, [0], i64), axis_i=0), k,
                             _const(g, [4], i64), axis_i=0)
        box_idx = g.op("Expand", g.op("Unsqueeze", top_idx, _const(g, [2], i64)), box_idx_shape)
        top_boxes = g.op("GatherElements", boxes, box_idx, axis_i=1)              # [B, k, 4]
        selected = g.op("NonMaxSuppression", top_boxes,
                        g.op("Unsqueeze", top_scores, _const(g, [1], i64)),
                        _const(g, [cfg.post_nms_top_k], i64),
                        _const(g, [cfg.nms_iou], torch.float32),
                        _const(g, [cfg.score_threshold], torch.float32), center_point_box_i=0)
        batch = g.op("Gather", selected, _const(g, [0], i64), axis_i=1)           # [K, 1]
        index = g.op("Concat", batch, g.op("Gather", selected, _const(g, [2], i64), axis_i=1),
                     axis_i=1)                                                    # [K, 2]
        kept_scores = g.op("Unsqueeze", g.op("GatherND", top_scores, index), _const(g, [1], i64))
        return g.op("Concat", g.op("Cast", batch, to_i=1), g.op("GatherND", top_boxes, index),
                    kept_scores, axis_i=1)


class ExportGraph(nn.Module):
    """The detector as exported: raw second-shot outputs + anchors, or detections
    (``postprocess`` given)."""

    def __init__(self, model: nn.Module, postprocess: PostProcess | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.postprocess = postprocess

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        shot = self.model(images, first_shot=False).second
        if self.postprocess is None:
            return shot.cls, shot.reg, shot.anchors
        return (PostProcessOp.apply(*decode_shot(shot), self.postprocess),)

    @property
    def output_names(self) -> tuple[str, ...]:
        return RAW_OUTPUTS if self.postprocess is None else POSTPROCESS_OUTPUTS


def _dynamic_axes(graph: ExportGraph) -> dict[str, dict[int, str]]:
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    if graph.postprocess is None:
        axes.update(cls={0: "batch", 1: "anchors"}, reg={0: "batch", 1: "anchors"},
                    anchors={0: "anchors"})
    else:
        axes.update(detections={0: "detections"})
    return axes


def export_onnx(
    model: nn.Module, path: str | Path, with_postprocess: bool = False,
    postprocess: PostProcess = PostProcess(), sample_size: tuple[int, int] = (480, 640),
    opset: int = OPSET,
) -> Path:
    """Write ``model`` to ``path`` (see the module docstring); ``sample_size = (H, W)`` is only
    the tracing input, every size runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = ExportGraph(model, postprocess if with_postprocess else None)
    sample = torch.randn(1, 3, *sample_size, device=next(model.parameters()).device)
    # The tracer warns about Python-side shape checks and about the eager body of
    # PostProcessOp, which its symbolic replaces; verify_onnx checks other sizes instead.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(graph, (sample,), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=list(graph.output_names),
                          dynamic_axes=_dynamic_axes(graph))
    return path


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session (``threads``: intra-op threads, None = onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Verification:
    """Largest absolute difference per output between onnxruntime and PyTorch at one input size."""

    size: tuple[int, int]
    max_abs_diff: dict[str, float]

    def ok(self, atol: float) -> bool:
        return all(d <= atol for d in self.max_abs_diff.values())


def verify_onnx(
    model: nn.Module, path: str | Path,
    sizes: tuple[tuple[int, int], ...] = ((480, 640), (320, 256)),
    with_postprocess: bool = False, postprocess: PostProcess = PostProcess(), batch: int = 2,
    seed: int = 0,
) -> list[Verification]:
    """Run the exported graph and the PyTorch model on random inputs of each ``(H, W)``; a
    detections output of another length than PyTorch's counts as an infinite difference."""
    session = onnx_session(path)
    graph = ExportGraph(model, postprocess if with_postprocess else None)
    generator = torch.Generator().manual_seed(seed)
    results = []
    for height, width in sizes:
        x = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = [t.cpu().numpy() for t in graph(x.to(next(model.parameters()).device))]
        got = session.run(list(graph.output_names), {"images": x.numpy()})
        diffs = {name: float(np.abs(e - o).max()) if e.shape == o.shape and e.size else
                 (0.0 if e.shape == o.shape else float("inf"))
                 for name, e, o in zip(graph.output_names, expected, got)}
        results.append(Verification((height, width), diffs))
    return results


class OnnxDetector(DetectorBase):
    """A *raw* exported graph run by onnxruntime, with the same preprocessing, decoding,
    post-processing and multi-scale test as :class:`~detectors.inference.Detector`."""

    def __init__(self, path: str | Path, postprocess: PostProcess = PostProcess(),
                 max_size: int | None = None, threads: int | None = None,
                 scale: float = 1.0) -> None:
        super().__init__(postprocess, max_size, scale)
        self.session = onnx_session(path, threads)
        names = tuple(o.name for o in self.session.get_outputs())
        if names != RAW_OUTPUTS:
            raise ValueError(f"{path}: outputs {names}; OnnxDetector needs a raw export "
                             f"{RAW_OUTPUTS} (exported without --with-postprocess)")

    def raw(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        cls, reg, anchors = (torch.from_numpy(o) for o in
                             self.session.run(list(RAW_OUTPUTS), {"images": batch.numpy()}))
        return decode_shot(ShotOutput(cls, reg, anchors))
