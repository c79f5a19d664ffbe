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
  :class:`~detectors.engine.inference.Detector`.
* ``with_postprocess=True``: the paper's post-processing (Sec. 4.1; :class:`PostProcess`)
  inside the graph, output ``detections [K, 6]`` rows ``(batch index, x1, y1, x2, y2, score)``,
  each image's rows by decreasing score. Per image: face scores, the ``pre_nms_top_k`` best
  among the scores above ``score_threshold`` (ONNX ``TopK``; the floor comes first, so a batch
  with few candidates sorts and decodes only those), decoding of those boxes only, then
  ``NonMaxSuppression`` at ``nms_iou`` keeping ``post_nms_top_k``. The set is that of
  :func:`detectors.engine.inference.select`, which takes the top k before the floor; both
  suppress at IoU ``>`` the threshold and keep scores ``>`` it. The settings are stored in the file's
  metadata (``asfd_postprocess``), so :class:`OnnxDetector` runs such a file too.
* A padding-sensitive network (:func:`search_spaces.fpn.padding_sensitive`) is marked in the
  metadata (``asfd_batch_by_size``), so :class:`OnnxDetector` runs its images of different
  sizes one at a time, as :class:`~detectors.engine.inference.Detector` does.
* BatchNorm: the exporter folds every BatchNorm into the conv before it (eval mode), so the
  graph holds no ``BatchNormalization`` node; the heads' per-map norms become per-map conv
  weights.

:func:`verify_onnx` compares a graph with PyTorch on random inputs; detections are compared
as sets (:func:`detections_difference`), because scores that agree to float precision can still
be ordered differently. :func:`quantize_onnx` makes a static int8 copy (onnxruntime) calibrated
on the user's images.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from detectors.data.image import load_image, to_tensor
from detectors.engine.inference import (
    MAX_INPUT_PIXELS, DetectorBase, Detections, PostProcess, decode_shot, face_scores,
)
from detectors.models.box_ops import decode, nms
from detectors.models.heads import ShotOutput
from search_spaces.fpn import padding_sensitive

if TYPE_CHECKING:
    from onnxruntime.quantization import CalibrationDataReader

OPSET = 17
RAW_OUTPUTS: tuple[str, ...] = ("cls", "reg", "anchors")
POSTPROCESS_OUTPUTS: tuple[str, ...] = ("detections",)
#: ONNX metadata key of the post-processing settings inside a detections graph.
POSTPROCESS_KEY = "asfd_postprocess"
#: ONNX metadata key marking a padding-sensitive network (value ``"true"``).
BATCH_BY_SIZE_KEY = "asfd_batch_by_size"


def _const(g, values, dtype) -> object:
    return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))


def candidate_count(scores: Tensor, cfg: PostProcess) -> int:
    """How many anchors of each image enter NMS: the ``pre_nms_top_k`` best among those above
    the score floor (``score_threshold``), as many for every image of the batch (the most any
    image has). Taking the top k after the floor keeps :func:`~detectors.engine.inference.select`'s
    set; the floor only shrinks the top-k and the decoding on images with few candidates."""
    return min(cfg.pre_nms_top_k, int((scores > cfg.score_threshold).sum(1).max()))


class TopKOp(torch.autograd.Function):
    """The :func:`candidate_count` best anchors per image: their scores ``[B, k]``, offsets
    ``[B, k, 4]`` and anchors ``[B, k, 4]``. Exports as ``Greater`` -> ``ReduceSum`` ->
    ``ReduceMax`` -> ``Min`` (k) -> ``TopK`` -> ``GatherElements`` / ``Gather``."""

    @staticmethod
    def forward(ctx, scores: Tensor, reg: Tensor, anchors: Tensor, cfg: PostProcess
                ) -> tuple[Tensor, Tensor, Tensor]:
        top_scores, index = scores.topk(candidate_count(scores, cfg), dim=1)
        return top_scores, reg.gather(1, index[..., None].expand(-1, -1, 4)), anchors[index]

    @staticmethod
    def symbolic(g, scores, reg, anchors, cfg: PostProcess):
        i64 = torch.int64
        above = g.op("Cast", g.op("Greater", scores, _const(g, [cfg.score_threshold],
                                                            torch.float32)), to_i=7)
        count = g.op("ReduceMax", g.op("ReduceSum", above, _const(g, [1], i64), keepdims_i=0),
                     keepdims_i=1)                                                # [1]
        k = g.op("Min", count, _const(g, [cfg.pre_nms_top_k], i64))
        top_scores, index = g.op("TopK", scores, k, axis_i=1, largest_i=1, sorted_i=1,
                                 outputs=2)                                       # [B, k]
        shape = g.op("Concat", g.op("Shape", index), _const(g, [4], i64), axis_i=0)
        top_reg = g.op("GatherElements", reg,
                       g.op("Expand", g.op("Unsqueeze", index, _const(g, [2], i64)), shape),
                       axis_i=1)                                                  # [B, k, 4]
        return top_scores, top_reg, g.op("Gather", anchors, index, axis_i=0)      # [B, k, 4]


class NMSOp(torch.autograd.Function):
    """Per image: scores above ``score_threshold``, greedy NMS, the ``post_nms_top_k`` best, as
    rows ``(batch index, x1, y1, x2, y2, score)``; exports as ``NonMaxSuppression`` ->
    ``GatherND``."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, cfg: PostProcess) -> Tensor:
        rows = [boxes.new_zeros((0, 6))]
        for b, (bx, sc) in enumerate(zip(boxes, scores)):
            keep = sc > cfg.score_threshold
            bx, sc = bx[keep], sc[keep]
            kept = nms(bx, sc, cfg.nms_iou, None, cfg.post_nms_top_k)
            rows.append(torch.cat([bx.new_full((len(kept), 1), b), bx[kept], sc[kept, None]], 1))
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, cfg: PostProcess):
        i64 = torch.int64
        selected = g.op("NonMaxSuppression", boxes,
                        g.op("Unsqueeze", scores, _const(g, [1], i64)),
                        _const(g, [cfg.post_nms_top_k], i64),
                        _const(g, [cfg.nms_iou], torch.float32),
                        _const(g, [cfg.score_threshold], torch.float32), center_point_box_i=0)
        batch = g.op("Gather", selected, _const(g, [0], i64), axis_i=1)           # [K, 1]
        index = g.op("Concat", batch, g.op("Gather", selected, _const(g, [2], i64), axis_i=1),
                     axis_i=1)                                                    # [K, 2]
        kept_scores = g.op("Unsqueeze", g.op("GatherND", scores, index), _const(g, [1], i64))
        return g.op("Concat", g.op("Cast", batch, to_i=1), g.op("GatherND", boxes, index),
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
        scores, reg, anchors = TopKOp.apply(face_scores(shot.cls), shot.reg, shot.anchors,
                                            self.postprocess)
        return (NMSOp.apply(decode(reg, anchors), scores, self.postprocess),)

    @property
    def output_names(self) -> tuple[str, ...]:
        return RAW_OUTPUTS if self.postprocess is None else POSTPROCESS_OUTPUTS


def _dynamic_axes(graph: ExportGraph, fixed_size: bool) -> dict[str, dict[int, str]]:
    images = {0: "batch"} if fixed_size else {0: "batch", 2: "height", 3: "width"}
    if graph.postprocess is not None:
        return {"images": images, "detections": {0: "detections"}}
    anchors = {} if fixed_size else {"anchors": {0: "anchors"}}
    per_image = {0: "batch"} if fixed_size else {0: "batch", 1: "anchors"}
    return {"images": images, "cls": per_image, "reg": per_image, **anchors}


def export_onnx(
    model: nn.Module, path: str | Path, with_postprocess: bool = False,
    postprocess: PostProcess = PostProcess(), sample_size: tuple[int, int] = (480, 640),
    opset: int = OPSET, fixed_size: bool = False,
) -> Path:
    """Write ``model`` to ``path`` (see the module docstring); ``sample_size = (H, W)`` is only
    the tracing input, every size runs. ``fixed_size``: the graph takes ``sample_size`` only
    (the batch stays dynamic), so onnxruntime computes the anchors once, when it loads the
    file, instead of on every run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = ExportGraph(model, postprocess if with_postprocess else None)
    sample = torch.randn(1, 3, *sample_size, device=next(model.parameters()).device)
    # The tracer warns about Python-side shape checks and about the eager body of
    # TopKOp / NMSOp, which their symbolics replace; verify_onnx checks other sizes instead.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(graph, (sample,), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=list(graph.output_names),
                          dynamic_axes=_dynamic_axes(graph, fixed_size))
    props = {}
    if graph.postprocess is not None:
        props[POSTPROCESS_KEY] = json.dumps(asdict(graph.postprocess))
    if padding_sensitive(model):
        props[BATCH_BY_SIZE_KEY] = "true"
    if props:
        import onnx

        exported = onnx.load(str(path))
        onnx.helper.set_model_props(exported, props)
        onnx.save(exported, str(path))
    return path


def network_nodes(model: "onnx.ModelProto") -> list[str]:
    """Names of the graph's network nodes: those under ``/model/`` that the ``images`` input
    reaches through data, not only through a ``Shape`` (the anchor generator and the
    post-processing are excluded)."""
    reached = {"images"}
    names = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if node.op_type != "Shape" and reached.intersection(node.input):
            reached.update(node.output)
            if node.name.startswith("/model/"):
                names.append(node.name)
    return names


class ImageCalibration:
    """An onnxruntime ``CalibrationDataReader`` over image files, each resized to ``size =
    (W, H)`` and normalised as :func:`~detectors.data.image.to_tensor` does."""

    def __init__(self, paths: Sequence[Path], size: tuple[int, int]) -> None:
        self.paths, self.size = iter(paths), size

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self.paths, None)
        if path is None:
            return None
        image = np.asarray(Image.fromarray(load_image(path)).resize(
            self.size, Image.Resampling.BILINEAR))
        return {"images": to_tensor(image)[None].numpy()}


def static_int8(source: str | Path, target: str | Path, reader: CalibrationDataReader,
                exclude: Sequence[str] = ()) -> Path:
    """onnxruntime's static int8 quantisation as asfd uses it: QDQ format (onnxruntime fuses it
    into int8 kernels; on D0 as fast as the QOperator format and closer to float32's AP), int8
    per-channel weights, uint8 activations whose ranges (MinMax) come from the inputs of
    ``reader`` (a ``CalibrationDataReader``); the ``exclude`` nodes stay float32."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude))
    return Path(target)


def quantize_onnx(source: str | Path, target: str | Path, calibration: Sequence[Path],
                  size: tuple[int, int] = (640, 480)) -> Path:
    """:func:`static_int8` of an export, calibrated on the ``calibration`` images at ``size =
    (W, H)``. Only :func:`network_nodes` are quantised: anchors, decoding and the
    post-processing stay float32."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("int8 quantisation needs at least one calibration image")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        keep = set(network_nodes(model))
        return static_int8(prepared, target, ImageCalibration(calibration, size),
                           [n.name for n in model.graph.node if n.name not in keep])


def onnx_session(path: str | Path, threads: int | None = None, optimization: str = "all"):
    """An onnxruntime CPU session (``threads``: intra-op threads, None = onnxruntime's default;
    ``optimization``: graph optimisation level, ``basic``, ``extended`` or ``all``, the default,
    whose NCHWc layout runs D0 fastest on AVX-512: README, "Speed against YuNet")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               f"ORT_ENABLE_{optimization.upper()}")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Verification:
    """Largest absolute difference per output between onnxruntime and PyTorch at one input size;
    ``unmatched``: detections that differ after a near-tie the two resolved differently
    (:func:`detections_difference`)."""

    size: tuple[int, int]
    max_abs_diff: dict[str, float]
    unmatched: int = 0

    def ok(self, atol: float) -> bool:
        return all(d <= atol for d in self.max_abs_diff.values())


def detections_difference(expected: np.ndarray, got: np.ndarray, atol: float,
                          floor: float = 0.0, tie: float = 1e-5) -> tuple[float, int]:
    """Compare two ``detections [K, 6]`` outputs image by image.

    Scores that agree to float precision (~1e-7 between onnxruntime and PyTorch) can still be
    *ordered* differently. Rows of near-equal scores then come out permuted; where the near-tie
    is between overlapping boxes, or at the ``post_nms_top_k`` cut, the other box survives,
    and that can change every later NMS decision of the image. So each row is matched with the
    nearest row (max |difference| over box and score) of the same image in the other output,
    within ``atol``; the best-scoring unmatched row of each output must then be a near-tie of
    the other's (scores within ``tie``), and rows below it may differ. Rows scoring within
    ``tie`` of the score ``floor`` are left out (the floor can fall either way too). Returns
    the largest difference of matched rows, ``inf`` when the outputs part anywhere but at a
    near-tie, and how many rows were unmatched."""
    worst, unmatched = 0.0, 0
    for b in np.union1d(expected[:, 0], got[:, 0]):
        e = expected[(expected[:, 0] == b) & (expected[:, 5] > floor + tie), 1:]
        o = got[(got[:, 0] == b) & (got[:, 5] > floor + tie), 1:]
        dist = np.abs(e[:, None, :] - o[None, :, :]).max(-1, initial=0.0)
        nearest_e, nearest_o = dist.min(1, initial=np.inf), dist.min(0, initial=np.inf)
        lone_e, lone_o = e[nearest_e > atol, -1], o[nearest_o > atol, -1]
        if len(lone_e) or len(lone_o):
            if not (len(lone_e) and len(lone_o)) or abs(lone_e.max() - lone_o.max()) > tie:
                return float("inf"), unmatched + len(lone_e) + len(lone_o)
            unmatched += len(lone_e) + len(lone_o)
        matched = np.concatenate([nearest_e[nearest_e <= atol], nearest_o[nearest_o <= atol]])
        worst = max(worst, float(matched.max(initial=0.0)))
    return worst, unmatched


def candidate_distance(rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> float:
    """How far the ``detections [K, 6]`` rows are from being candidates: the largest, over rows,
    max |difference| to the nearest ``(box, score)`` of its image among ``boxes [B, A, 4]``,
    ``scores [B, A]`` (every decoded anchor). :func:`detections_difference` lets rows below a
    near-tie differ; this still demands that each one is a box the model did predict."""
    worst = 0.0
    for b, (bx, sc) in enumerate(zip(boxes, scores)):
        order = np.argsort(sc)
        cand = np.concatenate([bx, sc[:, None]], 1)[order]
        for row in rows[rows[:, 0] == b, 1:]:
            lo, hi = np.searchsorted(cand[:, 4], [row[4] - 1e-3, row[4] + 1e-3])
            near = np.abs(cand[lo:hi] - row).max(1, initial=0.0).min(initial=np.inf)
            worst = max(worst, float(near))
    return worst


def verify_onnx(
    model: nn.Module, path: str | Path,
    sizes: tuple[tuple[int, int], ...] = ((480, 640), (320, 256)),
    with_postprocess: bool = False, postprocess: PostProcess = PostProcess(), batch: int = 2,
    seed: int = 0, atol: float = 1e-3,
) -> list[Verification]:
    """Run the exported graph and the PyTorch model on random inputs of each ``(H, W)``. Raw
    outputs are compared element-wise; ``detections`` by :func:`detections_difference` (its
    ``atol`` decides which rows match) and :func:`candidate_distance`."""
    session = onnx_session(path)
    graph = ExportGraph(model, postprocess if with_postprocess else None)
    generator = torch.Generator().manual_seed(seed)
    results = []
    for height, width in sizes:
        x = torch.randn(batch, 3, height, width, generator=generator)
        x_model = x.to(next(model.parameters()).device)
        with torch.no_grad():
            expected = [t.cpu().numpy() for t in graph(x_model)]
        got = session.run(list(graph.output_names), {"images": x.numpy()})
        if with_postprocess:
            diff, lone = detections_difference(expected[0], got[0], atol,
                                               postprocess.score_threshold)
            with torch.no_grad():
                boxes, scores = decode_shot(model(x_model, first_shot=False).second)
            diff = max(diff, candidate_distance(got[0], boxes.cpu().numpy(),
                                                scores.cpu().numpy()))
            results.append(Verification((height, width), {"detections": diff}, lone))
            continue
        diffs = {name: float(np.abs(e - o).max(initial=0.0)) if e.shape == o.shape
                 else float("inf") for name, e, o in zip(graph.output_names, expected, got)}
        results.append(Verification((height, width), diffs))
    return results


def graph_postprocess(session, path: str | Path) -> PostProcess:
    """The post-processing an export with ``detections`` output carries in its metadata."""
    props = session.get_modelmeta().custom_metadata_map
    if POSTPROCESS_KEY not in props:
        raise ValueError(f"{path}: a detections graph without its post-processing settings "
                         f"({POSTPROCESS_KEY!r} metadata); export it again with asfd export")
    return PostProcess(**json.loads(props[POSTPROCESS_KEY]))


class OnnxDetector(DetectorBase):
    """An exported graph run by onnxruntime, with the same preprocessing and multi-scale test as
    :class:`~detectors.engine.inference.Detector`. A raw export is decoded and post-processed like
    PyTorch's outputs; an export with post-processing applies the settings it was exported
    with, and a ``postprocess.score_threshold`` above the graph's drops more detections (one
    below it is a ValueError: the graph has already dropped those)."""

    def __init__(self, path: str | Path, postprocess: PostProcess = PostProcess(),
                 max_size: int | None = None, threads: int | None = None,
                 scale: float = 1.0, max_pixels: int | None = MAX_INPUT_PIXELS) -> None:
        super().__init__(postprocess, max_size, scale, max_pixels)
        self.session, self.path = onnx_session(path, threads), path
        self.outputs = tuple(o.name for o in self.session.get_outputs())
        self.batch_by_size = (self.session.get_modelmeta().custom_metadata_map
                              .get(BATCH_BY_SIZE_KEY) == "true")
        height, width = self.session.get_inputs()[0].shape[2:]
        self.fixed_size = (height, width) if isinstance(height, int) else None
        if self.outputs == POSTPROCESS_OUTPUTS:
            baked = graph_postprocess(self.session, path)
            if postprocess.score_threshold < baked.score_threshold:
                raise ValueError(f"{path}: its graph keeps scores > {baked.score_threshold}; "
                                 f"asked for {postprocess.score_threshold}: export with "
                                 f"--score-threshold {postprocess.score_threshold}")
            self.postprocess = replace(baked, score_threshold=postprocess.score_threshold)
        elif self.outputs != RAW_OUTPUTS:
            raise ValueError(f"{path}: outputs {self.outputs}; an asfd export has "
                             f"{RAW_OUTPUTS} or {POSTPROCESS_OUTPUTS}")

    def raw(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        if self.outputs != RAW_OUTPUTS:
            raise ValueError("raw outputs need a raw export (without --with-postprocess)")
        cls, reg, anchors = (torch.from_numpy(o) for o in self._run(batch))
        return decode_shot(ShotOutput(cls, reg, anchors))

    def _run(self, batch: Tensor) -> list[np.ndarray]:
        if self.fixed_size and tuple(batch.shape[2:]) != self.fixed_size:
            raise ValueError(f"{self.path}: a graph for {self.fixed_size[1]}x"
                             f"{self.fixed_size[0]} inputs only (--fixed-size), got "
                             f"{batch.shape[3]}x{batch.shape[2]}")
        return self.session.run(list(self.outputs), {"images": batch.numpy()})

    def detect_batch(self, batch: Tensor) -> list[Detections]:
        if self.outputs == RAW_OUTPUTS:
            return super().detect_batch(batch)
        rows = torch.from_numpy(self._run(batch)[0])
        rows = rows[rows[:, 5] > self.postprocess.score_threshold]
        return [Detections(rows[rows[:, 0] == b, 1:5], rows[rows[:, 0] == b, 5])
                for b in range(len(batch))]
