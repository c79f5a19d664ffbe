"""Inference: a :class:`Detector` (model + anchors + decoding + NMS), multi-scale test with box
voting, batched folder detection, and the output files (JSON, WIDER txt, picture).

Single-scale post-processing (paper Sec. 4.1), per image, on the second shot only: softmax face
scores, SSD-decoded boxes (:func:`detectors.models.box_ops.decode`), the 5000 best, those scoring
above ``score_threshold`` (0.05 for evaluation as in the WIDER protocol's practice, 0.5 for pictures),
greedy NMS at IoU 0.3, at most 750 kept. Taking the top 5000 before or after the threshold gives
the same set; we take it first, which is also what the ONNX graph does
(:mod:`detectors.engine.export`).

Multi-scale test (DSFD/SFD's "multi-scale" results, our reading): the image is run at every
scale of :attr:`MultiScaleTest.scales`, and mirrored when ``flip``; each pass is post-processed
as above and its boxes mapped back to the original image; all of them are merged by
:func:`box_voting`. DSFD also drops large boxes at up-scaled and small ones at down-scaled
passes; we do not (no such thresholds are given in the ASFD paper).

Batches: images of different sizes are padded right/bottom to the largest height and width of
the batch with zeros in normalised space (the mean pixel); anchors start at the top-left corner,
so coordinates are unaffected, and boxes are clipped to each image's own size. Features near the
padded border see the padding instead of the network's zero padding, so a padded batch matches
single-image inference up to border effects; same-sized images batch exactly. A model whose
features depend on the whole map (:func:`search_spaces.fpn.padding_sensitive`: an AutoFEM-FPN
with the ``normalized`` gate) would see the padding everywhere, so its images of different
sizes run one at a time (:attr:`DetectorBase.batch_by_size`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

import detectors.models.reference_detectors  # noqa: F401  (registers their model architecture)
from detectors.data.image import load_image, read_image_size, to_rgb8, to_tensor
from detectors.data.wider import IMAGE_EXTENSIONS, image_key, read_image_list
from detectors.evaluation.wider_eval import write_wider_predictions
from detectors.models.asfd import load_model
from detectors.models.box_ops import box_iou, decode, nms
from detectors.models.heads import ShotOutput
from search_spaces.fpn import padding_sensitive

ImageInput = np.ndarray | Image.Image | str | Path


class Detections(NamedTuple):
    """Faces found in one image: ``boxes [N, 4]`` ``xyxy`` in original pixels, ``scores [N]``,
    highest score first."""

    boxes: Tensor
    scores: Tensor


@dataclass(frozen=True)
class PostProcess:
    """Sec. 4.1: NMS at ``nms_iou`` keeping ``post_nms_top_k`` of the ``pre_nms_top_k`` best."""

    score_threshold: float = 0.05
    pre_nms_top_k: int = 5000
    nms_iou: float = 0.3
    post_nms_top_k: int = 750

    def __post_init__(self) -> None:
        for name in ("score_threshold", "nms_iou"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"post-processing {name} must lie in [0, 1), got "
                                 f"{getattr(self, name)}")
        for name in ("pre_nms_top_k", "post_nms_top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"post-processing {name} must be at least 1, got "
                                 f"{getattr(self, name)}")


@dataclass(frozen=True)
class MultiScaleTest:
    """Scales (relative to the original size), horizontal flip, and the box-voting settings."""

    scales: tuple[float, ...] = (0.5, 1.0, 1.5)
    flip: bool = True
    vote_iou: float = 0.3
    min_votes: int = 2


PICTURE_THRESHOLD = 0.5
#: A picture shows at most this many boxes, the best ones, so that a weak model's hundreds of
#: near-equal boxes do not bury the image (``detect --max-boxes``).
PICTURE_MAX_BOXES = 50
#: An image's scores are "nearly constant" when at least ``NEAR_CONSTANT_MIN_BOXES`` of them
#: spread less than ``NEAR_CONSTANT_SPREAD``: the model does not separate faces from background.
NEAR_CONSTANT_SPREAD = 0.05
NEAR_CONSTANT_MIN_BOXES = 20
#: Score labels are at least this many pixels high, larger on large images.
LABEL_MIN_PX = 11


def face_scores(cls: Tensor) -> Tensor:
    """Face probabilities ``[..., A]`` from (background, face) logits ``[..., A, 2]``."""
    return cls.softmax(-1)[..., 1]


def decode_shot(shot: ShotOutput) -> tuple[Tensor, Tensor]:
    """``(boxes [B, A, 4] xyxy, face scores [B, A])`` from one shot's raw outputs."""
    return decode(shot.reg, shot.anchors.unsqueeze(0)), face_scores(shot.cls)


def select(boxes: Tensor, scores: Tensor, cfg: PostProcess) -> Detections:
    """One image's post-processing: top ``pre_nms_top_k``, threshold (``>``), NMS, top
    ``post_nms_top_k``."""
    top = scores.topk(min(cfg.pre_nms_top_k, scores.numel())).indices
    boxes, scores = boxes[top], scores[top]
    keep = scores > cfg.score_threshold
    boxes, scores = boxes[keep], scores[keep]
    kept = nms(boxes, scores, cfg.nms_iou, None, cfg.post_nms_top_k)
    return Detections(boxes[kept], scores[kept])


def box_voting(
    boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3, min_votes: int = 2,
    top_k: int | None = 750,
) -> Detections:
    """SFD/DSFD box voting: repeatedly take the best remaining box and the remaining boxes that
    overlap it with IoU >= ``iou_threshold`` (itself included); they leave the pool and, when at
    least ``min_votes`` of them (SFD: 2, so a box no other pass confirms is dropped), become one
    box: coordinates averaged with the scores as weights, score = their maximum."""
    order = scores.argsort(descending=True)
    boxes, scores = boxes[order], scores[order]
    overlap = box_iou(boxes, boxes) >= iou_threshold
    alive = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    merged_boxes, merged_scores = [], []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        group = alive & overlap[i]
        alive &= ~group
        if int(group.sum()) < min_votes:
            continue
        weights = scores[group]
        merged_boxes.append((boxes[group] * weights[:, None]).sum(0) / weights.sum())
        merged_scores.append(weights.max())
        if top_k is not None and len(merged_boxes) == top_k:
            break
    if not merged_boxes:
        return Detections(boxes.new_zeros((0, 4)), scores.new_zeros(0))
    return Detections(torch.stack(merged_boxes), torch.stack(merged_scores))


def flip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Mirror ``xyxy`` boxes of an image ``width`` pixels wide (an involution)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], -1)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    limits = boxes.new_tensor([width, height, width, height])
    return torch.minimum(boxes.clamp(min=0), limits)


def as_array(image: ImageInput) -> np.ndarray:
    """An ``HWC`` uint8 RGB array from an array, a PIL image or a file path."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb8(image)
    return image


def pad_batch(tensors: Sequence[Tensor]) -> Tensor:
    """Stack ``[3, H_i, W_i]`` tensors, zero-padding right/bottom to the largest size."""
    height = max(t.shape[1] for t in tensors)
    width = max(t.shape[2] for t in tensors)
    return torch.stack([F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1])) for t in tensors])


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize by ``scale`` (bilinear; sides rounded, at least 1 pixel)."""
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def find_images(folder: str | Path) -> dict[str, Path]:
    """Images under ``folder`` (recursively), keyed by their path relative to it, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()}


#: Default cap on the pixels of one network input (after ``scale`` and ``max_size``, at the
#: largest multi-scale pass): 4096 x 4096. Memory grows with the pixels (see README).
MAX_INPUT_PIXELS = 4096 * 4096


def image_size(image: ImageInput) -> tuple[int, int]:
    """``(width, height)`` of an array, a PIL image or a file (read from its header)."""
    if isinstance(image, (str, Path)):
        return read_image_size(image)
    if isinstance(image, Image.Image):
        return image.size
    return image.shape[1], image.shape[0]


class DetectorBase:
    """Test-time recipe around a network's raw outputs: resizing, batching, post-processing,
    multi-scale test. Subclasses provide :meth:`raw` (PyTorch: :class:`Detector`; onnxruntime:
    :class:`detectors.engine.export.OnnxDetector`). Before the network every image is resized by
    ``scale`` (1.0: the original size, the paper's single-scale protocol; e.g. 1024 / 416 puts
    images that were downscaled from WIDER's 1024 px back at WIDER's face sizes), then shrunk
    further if its longer side would exceed ``max_size`` (optional); boxes are mapped back to
    the original frame. An image that would still enter the network with more than
    ``max_pixels`` pixels (``None``: no cap) is refused before it is decoded.

    ``batch_by_size``: images of different sizes run one at a time instead of as one padded
    batch (set by subclasses for a padding-sensitive network, see the module docstring)."""

    batch_by_size: bool = False

    def __init__(self, postprocess: PostProcess = PostProcess(),
                 max_size: int | None = None, scale: float = 1.0,
                 max_pixels: int | None = MAX_INPUT_PIXELS) -> None:
        if scale <= 0:
            raise ValueError(f"test scale must be positive, got {scale}")
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1 (None: no cap), got {max_pixels}")
        self.postprocess = postprocess
        self.max_size = max_size
        self.scale = scale
        self.max_pixels = max_pixels

    def check_size(self, size: tuple[int, int], source: object,
                   multiscale: MultiScaleTest | None = None) -> None:
        """Raise ``ValueError`` naming ``source`` when an image of ``size`` (width, height)
        would enter the network with more than ``max_pixels`` pixels at its largest pass."""
        if self.max_pixels is None:
            return
        s = self._scale_for(max(size)) * (max(multiscale.scales) if multiscale else 1.0)
        width, height = (max(1, round(v * s)) for v in size)
        if width * height > self.max_pixels:
            raise ValueError(
                f"{source}: this {size[0]}x{size[1]} image would enter the network at "
                f"{width}x{height} ({width * height / 1e6:.1f} megapixels), above the cap of "
                f"{self.max_pixels / 1e6:.1f} (max_pixels); shrink it (--max-size PX) or lift "
                "the cap (--max-pixels 0)")

    def raw(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """Decoded boxes ``[B, A, 4]`` and face scores ``[B, A]`` of a normalised batch."""
        raise NotImplementedError

    def detect_batch(self, batch: Tensor) -> list[Detections]:
        """Each image's post-processed detections (:func:`select`) in the frame of ``batch``."""
        boxes, scores = self.raw(batch)
        return [select(b, sc, self.postprocess) for b, sc in zip(boxes, scores)]

    def _base_scale(self, image: np.ndarray) -> float:
        return self._scale_for(max(image.shape[:2]))

    def _scale_for(self, longer: int) -> float:
        """``scale``, times the shrink that brings a longer side of ``longer * scale`` down to
        ``max_size``."""
        scaled = longer * self.scale
        return self.scale * (min(1.0, self.max_size / scaled) if self.max_size else 1.0)

    def _single_pass(self, arrays: Sequence[np.ndarray], scales: Sequence[float],
                     flip: bool = False) -> list[Detections]:
        """One batched pass: each image resized by its scale (and mirrored), then boxes mapped
        back to that image's original frame."""
        inputs = [resize_image(a, s) for a, s in zip(arrays, scales)]
        if flip:
            inputs = [np.ascontiguousarray(a[:, ::-1]) for a in inputs]
        results = []
        for s, inp, det in zip(scales, inputs, self._network_pass([to_tensor(a) for a in inputs])):
            found = clip_boxes(det.boxes, *inp.shape[:2])
            if flip:
                found = flip_boxes(found, inp.shape[1])
            results.append(Detections(found / s, det.scores))
        return results

    def _network_pass(self, tensors: list[Tensor]) -> list[Detections]:
        """:meth:`detect_batch` on the padded batch, or image by image where padding would
        change a ``batch_by_size`` network's output."""
        if self.batch_by_size and len({t.shape for t in tensors}) > 1:
            return [det for t in tensors for det in self.detect_batch(t[None])]
        return self.detect_batch(pad_batch(tensors))

    def detect(self, images: Sequence[ImageInput],
               multiscale: MultiScaleTest | None = None) -> list[Detections]:
        """Faces in each image (arrays ``HWC`` RGB uint8, PIL images or paths), as one batch."""
        for i, im in enumerate(images):
            self.check_size(image_size(im), im if isinstance(im, (str, Path)) else f"image {i}",
                            multiscale)
        arrays = [as_array(im) for im in images]
        base = [self._base_scale(a) for a in arrays]
        if multiscale is None:
            return self._single_pass(arrays, base)
        flips = (False, True) if multiscale.flip else (False,)
        passes = [self._single_pass(arrays, [b * s for b in base], flip)
                  for s in multiscale.scales for flip in flips]
        return [box_voting(torch.cat([p[i].boxes for p in passes]),
                           torch.cat([p[i].scores for p in passes]), multiscale.vote_iou,
                           multiscale.min_votes, self.postprocess.post_nms_top_k)
                for i in range(len(arrays))]

    def detect_paths(
        self, paths: Mapping[str, Path], batch_size: int = 1,
        multiscale: MultiScaleTest | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Detections]:
        """Detections keyed like ``paths``. Images are batched in order of size (see the module
        docstring on padding); ``progress(done, total)`` is called after each batch."""
        sizes = {key: read_image_size(p) for key, p in paths.items()}
        for key, size in sizes.items():  # refuse a huge image before the first batch
            self.check_size(size, paths[key], multiscale)
        order = sorted(paths, key=lambda k: (sizes[k][1], sizes[k][0]))
        results: dict[str, Detections] = {}
        for start in range(0, len(order), batch_size):
            keys = order[start:start + batch_size]
            for key, det in zip(keys, self.detect([paths[k] for k in keys], multiscale)):
                results[key] = det
            if progress is not None:
                progress(len(results), len(order))
        return {key: results[key] for key in paths}

    def detect_folder(self, folder: str | Path, **kwargs) -> dict[str, Detections]:
        """:meth:`detect_paths` on every image under ``folder`` (keys: relative paths)."""
        return self.detect_paths(find_images(folder), **kwargs)


class Detector(DetectorBase):
    """A PyTorch detector (any model returning a
    :class:`~detectors.models.heads.DetectorOutput`)."""

    def __init__(self, model: nn.Module, postprocess: PostProcess = PostProcess(),
                 max_size: int | None = None, device: str | torch.device = "cpu",
                 scale: float = 1.0, max_pixels: int | None = MAX_INPUT_PIXELS) -> None:
        super().__init__(postprocess, max_size, scale, max_pixels)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_by_size = padding_sensitive(model)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> Detector:
        """A detector from any model file :func:`~detectors.models.asfd.load_model` reads."""
        return cls(load_model(path), **kwargs)

    @torch.inference_mode()
    def raw(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        boxes, scores = decode_shot(self.model(batch.to(self.device), first_shot=False).second)
        return boxes.float().cpu(), scores.float().cpu()


# ----------------------------------------------------------------------------- output files
def detections_to_json(image: str | Path, size: tuple[int, int], det: Detections) -> dict:
    """A JSON-ready record: image path, ``width``/``height``, boxes ``xyxy`` and scores."""
    width, height = size
    return {"image": str(image), "width": width, "height": height,
            "detections": [{"box_xyxy": [round(v, 2) for v in box], "score": round(s, 5)}
                           for box, s in zip(det.boxes.tolist(), det.scores.tolist())]}


def draw_detections(image: np.ndarray, det: Detections, threshold: float = PICTURE_THRESHOLD,
                    color: str = "#00ff66", max_boxes: int = PICTURE_MAX_BOXES) -> Image.Image:
    """The image with the boxes of :func:`picture_boxes` drawn, each score in black on a label
    filled with ``color`` above the box (inside it at the top edge); the best box is drawn
    last, on top."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    longer = max(image.shape[:2])
    line = max(1, round(longer / 400))
    font = ImageFont.load_default(size=max(LABEL_MIN_PX, round(longer / 50)))
    shown = picture_boxes(det, threshold, max_boxes)
    for box, score in reversed(list(zip(shown.boxes.tolist(), shown.scores.tolist()))):
        draw.rectangle(box, outline=color, width=line)
        text = f"{score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        width, height = right - left + 4, bottom - top + 4
        x, y = box[0], (box[1] - height if box[1] >= height else box[1])
        draw.rectangle((x, y, x + width, y + height), fill=color)
        draw.text((x + 2 - left, y + 2 - top), text, fill="black", font=font)
    return canvas


def picture_boxes(det: Detections, threshold: float = PICTURE_THRESHOLD,
                  max_boxes: int = PICTURE_MAX_BOXES) -> Detections:
    """What a picture shows: the detections scoring at least ``threshold``, the best
    ``max_boxes`` of them (0: all), highest score first."""
    if max_boxes < 0:
        raise ValueError(f"max_boxes must be >= 0 (0: no cap), got {max_boxes}")
    shown = above(det, threshold)
    order = shown.scores.argsort(descending=True)[:max_boxes or None]
    return Detections(shown.boxes[order], shown.scores[order])


def picture_warning(detections: Iterable[Detections], threshold: float = PICTURE_THRESHOLD,
                    max_boxes: int = PICTURE_MAX_BOXES) -> str | None:
    """One line on what the pictures of ``detections`` (one per image) hide or suggest, or
    ``None``: images with more than ``max_boxes`` faces above ``threshold`` (only the best are
    drawn), and images whose scores are nearly constant (see ``NEAR_CONSTANT_SPREAD``)."""
    capped, constant, total, most = 0, [], 0, 0
    for det in detections:
        total += 1
        count = int((det.scores >= threshold).sum())
        most = max(most, count)
        if max_boxes and count > max_boxes:
            capped += 1
        if len(det.scores) >= NEAR_CONSTANT_MIN_BOXES:
            lo, hi = float(det.scores.min()), float(det.scores.max())
            if hi - lo < NEAR_CONSTANT_SPREAD:
                constant.append((lo, hi))
    parts = []
    if capped:
        parts.append(f"{capped} of {total} image(s) have more than {max_boxes} faces scoring >= "
                     f"{threshold:g} (up to {most}); their pictures show the best {max_boxes} "
                     "(--max-boxes)")
    if constant:
        lo, hi = min(c[0] for c in constant), max(c[1] for c in constant)
        parts.append(f"the scores of {len(constant)} of {total} image(s) are nearly constant "
                     f"({lo:.3f}-{hi:.3f}): is the model trained?")
    return "; ".join(parts) or None


def above(det: Detections, threshold: float) -> Detections:
    """The detections scoring at least ``threshold``."""
    keep = det.scores >= threshold
    return Detections(det.boxes[keep], det.scores[keep])


def write_detections(out_dir: str | Path, name: str, image: ImageInput, det: Detections,
                     threshold: float = PICTURE_THRESHOLD,
                     max_boxes: int = PICTURE_MAX_BOXES) -> list[Path]:
    """``out_dir/<name>.json`` (faces scoring >= ``threshold``), ``<name>.txt`` (WIDER format,
    every detection, so that ``eval-preds`` sees the whole PR curve) and ``<name>.jpg`` (the
    JSON's faces drawn, at most ``max_boxes``). ``name`` may hold folders
    (``<event>/<name>``)."""
    json_path, txt_path, jpg_path = (Path(out_dir) / f"{name}{ext}"
                                     for ext in (".json", ".txt", ".jpg"))
    if isinstance(image, (str, Path)) and jpg_path.resolve() == Path(image).resolve():
        raise ValueError(f"the picture of {image} would overwrite it: choose another output "
                         "folder")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    array = as_array(image)
    source = image if isinstance(image, (str, Path)) else name
    shown = above(det, threshold)
    record = detections_to_json(source, (array.shape[1], array.shape[0]), shown)
    json_path.write_text(json.dumps(record, indent=1))
    write_wider_predictions(out_dir, {name: (det.boxes.numpy(), det.scores.numpy())})
    draw_detections(array, shown, threshold, max_boxes=max_boxes).save(jpg_path, quality=92)
    return [json_path, txt_path, jpg_path]


def as_numpy(detections: Mapping[str, Detections]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{key: (boxes, scores)}`` NumPy pairs, the evaluation modules' input."""
    return {k: (d.boxes.numpy(), d.scores.numpy()) for k, d in detections.items()}


def iter_inputs(inputs: Iterable[str | Path]) -> dict[str, Path]:
    """Image files and folders (searched recursively) -> ``{output name: path}``; a file's name
    is its stem, a folder's images are named by their path inside it without the extension
    (``<event>/<name>``), so outputs mirror the folder as ``eval-preds`` expects."""
    found: dict[str, Path] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            named = [(image_key(rel), path) for rel, path in find_images(item).items()]
        elif item.is_file():
            named = [(item.stem, item)]
        else:
            raise FileNotFoundError(f"no such image or folder: {item}")
        for name, path in named:
            if name in found and found[name] != path:
                raise ValueError(f"two inputs would write the same outputs {name}.*: "
                                 f"{found[name]} and {path}; pass them in separate runs")
            found[name] = path
    return found


def listed_images(folder: str | Path, image_list: str | Path) -> dict[str, Path]:
    """The images of ``folder`` named in ``image_list`` (paths relative to the folder, with or
    without extension, e.g. ``images.txt`` of ``asfd eval`` or an FDDB fold file), in list
    order, named as :func:`iter_inputs` names them; a listed image that is missing is an error."""
    found = {image_key(rel): path for rel, path in find_images(folder).items()}
    wanted = list(dict.fromkeys(image_key(rel) for rel in read_image_list(image_list)))
    missing = [name for name in wanted if name not in found]
    if missing:
        raise FileNotFoundError(f"{image_list}: {len(missing)} listed image(s) are not under "
                                f"{folder}, e.g. {missing[:3]}")
    return {name: found[name] for name in wanted}
