"""Training augmentation: the DSFD / PyramidBox recipe.

Every function is pure: it takes an ``HWC`` uint8 RGB image and ``(N, 4)`` float32 ``xyxy``
boxes and returns new ones, drawing randomness only from the ``numpy.random.Generator`` passed.
The pipeline (:func:`augment`):

1. a crop window: with p = 0.5 *data-anchor-sampling* (PyramidBox, Sec. 3.3), otherwise an SSD
   random crop (or, with ``crop_square``, a square one: scale jitter without the SSD crop's
   aspect distortion, as RetinaFace crops);
2. that window resized to the square training size with a random interpolation;
3. photometric distortion: brightness, contrast, saturation, hue, each with p = 0.5, contrast
   first or last at random (PyramidBox ``distort_image``). DSFD distorts the whole image before
   cropping; every step is per pixel (contrast's grey mean aside), so distorting the crop draws
   from nearly the same distribution at a fraction of the cost (a 320 px crop of a 1024 px image
   has a tenth of its pixels). Only the parameters are drawn here (:func:`draw_photometric`);
   :func:`detectors.data.batch_augment.photometric` applies them to the batch on the training
   device. The steps are per pixel and the grey mean ignores pixel order, so applying them after
   the flip gives the same image;
4. horizontal flip with p = 0.5;
5. faces whose shorter side is under ``min_face`` pixels (in network pixels) dropped.

Boxes follow the rule of the SSD crop everywhere: a box survives a window when its centre lies
inside it, and is then clipped to the window.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np
from PIL import Image

from detectors.data.image import MEAN_PIXEL

Window = tuple[float, float, float, float]
# PIL counterparts of the OpenCV set DSFD samples from (linear, cubic, area, nearest, lanczos).
INTERPOLATIONS: tuple[Image.Resampling, ...] = (
    Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.BOX,
    Image.Resampling.NEAREST, Image.Resampling.LANCZOS,
)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (``data.augment`` in a training config); defaults are DSFD's.

    ``brightness``/``contrast``/``saturation`` are the half-ranges of multiplicative factors
    around 1 (PIL ``ImageEnhance``, as PyramidBox/DSFD), ``hue_degrees`` the half-range of the
    hue shift. ``anchor_scales`` are the anchor sizes data-anchor-sampling draws targets from.
    ``crop_square`` swaps the SSD crop for :func:`square_crop_window` (same ``crop_min_scale``).
    """

    min_face: float = 6.0
    photometric_p: float = 0.5
    brightness: float = 0.125
    contrast: float = 0.5
    saturation: float = 0.5
    hue_degrees: float = 18.0
    anchor_sampling_p: float = 0.5
    anchor_scales: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    crop_min_scale: float = 0.3
    crop_trials: int = 50
    crop_square: bool = False
    flip_p: float = 0.5


@dataclass(frozen=True)
class Photometric:
    """One sample's photometric draw; the defaults are the identity (a step not drawn).

    Factors follow PIL ``ImageEnhance`` (``brightness``: scale; ``contrast``: blend with the
    grey mean; ``saturation``: blend with the grey image), ``hue_degrees`` rotates the hue.
    ``contrast_first``: contrast before saturation and hue, else after them.
    """

    contrast_first: bool = False
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue_degrees: float = 0.0

    def as_array(self) -> np.ndarray:
        """The fields in order, as float32 (one row of a batch's ``photometric`` tensor)."""
        return np.array(astuple(self), dtype=np.float32)


def draw_photometric(rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()
                     ) -> Photometric:
    """Brightness, then contrast-saturation-hue or saturation-hue-contrast; each step with
    probability ``photometric_p`` and a factor uniform in ``1 +- half-range``."""
    p = cfg.photometric_p
    contrast_first = bool(rng.random() < 0.5)
    brightness = contrast = saturation = 1.0
    hue = 0.0
    if rng.random() < p:
        brightness = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if contrast_first and rng.random() < p:
        contrast = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    if rng.random() < p:
        saturation = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    if rng.random() < p:
        hue = rng.uniform(-cfg.hue_degrees, cfg.hue_degrees)
    if not contrast_first and rng.random() < p:
        contrast = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    return Photometric(contrast_first, float(brightness), float(contrast), float(saturation),
                       float(hue))


def _window_start(
    face_lo: float, face_hi: float, length: float, extent: int, rng: np.random.Generator,
) -> float:
    """Start of a 1-D window of ``length`` that contains the face span (or lies inside it when
    the face is longer), preferring positions inside ``[0, extent]``."""
    lo, hi = sorted((face_hi - length, face_lo))
    if length <= extent and max(lo, 0.0) <= min(hi, extent - length):
        lo, hi = max(lo, 0.0), min(hi, extent - length)
    return float(rng.uniform(lo, hi))


def anchor_sampling_window(
    boxes: np.ndarray, image_size: tuple[int, int], rng: np.random.Generator, out_size: int,
    anchor_scales: tuple[int, ...],
) -> Window:
    """Data-anchor-sampling (PyramidBox, Sec. 3.3): a square window around a random face, sized
    so that, resized to ``out_size``, the face measures a target drawn near a random anchor.

    Face size ``s = sqrt(w h)``; ``i`` = index of the anchor closest to ``s``; the target anchor
    index is uniform in ``[0, min(i + 1, last)]`` (so faces mostly shrink, as in PyramidBox),
    the target size log-uniform in ``[a / 2, 2 a]`` capped at ``out_size`` (our choice for the
    range PyramidBox leaves implicit).
    """
    x1, y1, x2, y2 = boxes[rng.integers(len(boxes))]
    face = float(np.sqrt((x2 - x1) * (y2 - y1)))
    scales = np.asarray(anchor_scales, dtype=np.float64)
    nearest = int(np.argmin(np.abs(scales - face)))
    anchor = scales[rng.integers(0, min(nearest + 1, len(scales) - 1) + 1)]
    target = float(np.exp(rng.uniform(np.log(anchor / 2), np.log(anchor * 2))))
    target = min(target, float(out_size))
    length = out_size * face / target
    x0 = _window_start(float(x1), float(x2), length, image_size[0], rng)
    y0 = _window_start(float(y1), float(y2), length, image_size[1], rng)
    return x0, y0, x0 + length, y0 + length


def random_crop_window(
    boxes: np.ndarray, image_size: tuple[int, int], rng: np.random.Generator,
    min_scale: float = 0.3, trials: int = 50,
) -> Window:
    """SSD random crop: sides in ``[min_scale, 1]`` of the image's, aspect ratio within [1/2, 2],
    keeping at least one face centre when there are faces; the whole image after ``trials``
    misses."""
    width, height = image_size
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for _ in range(trials):
        w, h = rng.uniform(min_scale, 1.0) * width, rng.uniform(min_scale, 1.0) * height
        if not 0.5 <= h / w <= 2.0:
            continue
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        window = (x0, y0, x0 + w, y0 + h)
        if len(boxes) == 0 or centres_inside(centres, window).any():
            return window
    return 0.0, 0.0, float(width), float(height)


def square_crop_window(
    boxes: np.ndarray, image_size: tuple[int, int], rng: np.random.Generator,
    min_scale: float = 0.3, trials: int = 50,
) -> Window:
    """A square window with side uniform in ``[min_scale, 1]`` of the image's shorter side,
    keeping at least one face centre when there are faces. Resized to the square training size,
    faces keep their aspect ratio, which the SSD crop stretches up to 2x (RetinaFace crops
    squares from a fixed scale set; a continuous range is our choice). After ``trials`` misses:
    the shorter-side square around a random face centre (or the image's centre)."""
    width, height = image_size
    short = min(width, height)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for _ in range(trials):
        side = rng.uniform(min_scale, 1.0) * short
        x0, y0 = rng.uniform(0, width - side), rng.uniform(0, height - side)
        window = (x0, y0, x0 + side, y0 + side)
        if len(boxes) == 0 or centres_inside(centres, window).any():
            return window
    cx, cy = centres[rng.integers(len(centres))] if len(boxes) else (width / 2, height / 2)
    x0 = float(np.clip(cx - short / 2, 0, width - short))
    y0 = float(np.clip(cy - short / 2, 0, height - short))
    return x0, y0, x0 + short, y0 + short


def centres_inside(centres: np.ndarray, window: Window) -> np.ndarray:
    x0, y0, x1, y1 = window
    return (centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 1] > y0) & (centres[:, 1] < y1)


def crop_resize(
    image: np.ndarray, boxes: np.ndarray, window: Window, out_size: tuple[int, int],
    resample: Image.Resampling = Image.Resampling.BILINEAR, fill: tuple[int, int, int] = MEAN_PIXEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Map the float ``window`` (which may reach past the image; that part is ``fill``) onto an
    ``out_size = (W, H)`` image. Boxes with their centre in the window are kept, mapped, clipped.

    Output pixel ``u`` samples source ``x0 + u / s`` with ``s = W / (x1 - x0)``: only the part
    of the window inside the image is resampled, so memory is bounded by ``out_size``.
    """
    x0, y0, x1, y1 = window
    out_w, out_h = out_size
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    height, width = image.shape[:2]
    canvas = Image.new("RGB", out_size, fill)
    # Destination rectangle of the visible part, snapped to whole output pixels.
    dx0, dx1 = round((max(x0, 0) - x0) * sx), round((min(x1, width) - x0) * sx)
    dy0, dy1 = round((max(y0, 0) - y0) * sy), round((min(y1, height) - y0) * sy)
    dx0, dy0, dx1, dy1 = max(dx0, 0), max(dy0, 0), min(dx1, out_w), min(dy1, out_h)
    if dx1 > dx0 and dy1 > dy0:
        src = (max(x0 + dx0 / sx, 0.0), max(y0 + dy0 / sy, 0.0), min(x0 + dx1 / sx, float(width)),
               min(y0 + dy1 / sy, float(height)))
        piece = Image.fromarray(image).resize((dx1 - dx0, dy1 - dy0), resample, box=src)
        canvas.paste(piece, (dx0, dy0))
    keep = centres_inside((boxes[:, :2] + boxes[:, 2:]) / 2, window)
    mapped = (boxes[keep] - np.array([x0, y0, x0, y0])) * np.array([sx, sy, sx, sy])
    mapped = np.clip(mapped, 0, [out_w, out_h, out_w, out_h]).astype(np.float32)
    return np.asarray(canvas), mapped.reshape(-1, 4)


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; ``x1' = W - x2``, ``x2' = W - x1`` (an involution)."""
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), flipped


def drop_small_faces(boxes: np.ndarray, min_face: float) -> np.ndarray:
    """Boxes whose shorter side is at least ``min_face`` pixels."""
    return boxes[np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= min_face]


def letterbox(
    image: np.ndarray, boxes: np.ndarray, size: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Evaluation-time resize: longer side to ``size``, aspect kept, padded right/bottom with
    :data:`MEAN_PIXEL`; returns (image, boxes, scale) with ``boxes_out = scale * boxes``."""
    side = max(image.shape[:2])
    out, mapped = crop_resize(image, boxes, (0.0, 0.0, float(side), float(side)), (size, size))
    return out, mapped, size / side


def augment(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, size: int,
    cfg: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray, Photometric]:
    """The geometric part of the training pipeline (module docstring) and the photometric draw
    for the device to apply; the image is ``size`` square uint8."""
    image_size = (image.shape[1], image.shape[0])
    if len(boxes) and rng.random() < cfg.anchor_sampling_p:
        window = anchor_sampling_window(boxes, image_size, rng, size, cfg.anchor_scales)
    else:
        crop = square_crop_window if cfg.crop_square else random_crop_window
        window = crop(boxes, image_size, rng, cfg.crop_min_scale, cfg.crop_trials)
    resample = INTERPOLATIONS[rng.integers(len(INTERPOLATIONS))]
    image, boxes = crop_resize(image, boxes, window, (size, size), resample)
    photometric = draw_photometric(rng, cfg)
    if rng.random() < cfg.flip_p:
        image, boxes = hflip(image, boxes)
    return image, drop_small_faces(boxes, cfg.min_face), photometric
