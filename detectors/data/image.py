"""Image decoding and the input normalisation shared by training, evaluation and inference.

Normalisation (the paper is silent): RGB, scaled to [0, 1], then ImageNet mean/std, the
convention of ImageNet-pretrained backbones (timm/torchvision) rather than DSFD's BGR mean
subtraction. Padding added by augmentation or letterboxing uses :data:`MEAN_PIXEL`, which
normalises to 0.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:  # torch is imported where it is used: the header readers need none
    import torch

IMAGE_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
MEAN_PIXEL: tuple[int, int, int] = tuple(round(255 * m) for m in IMAGE_MEAN)
#: PIL modes of 16-bit grayscale PNGs (``I`` in older Pillow versions).
SIXTEEN_BIT_MODES: tuple[str, ...] = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageReadError(ValueError):
    """An image file that exists but cannot be decoded; the message names the file."""


def to_rgb8(im: Image.Image, source: str | Path = "image") -> np.ndarray:
    """A PIL image -> ``HWC`` uint8 RGB array. 16-bit grayscale (PNG) is scaled to 8 bits
    (``round(v * 255 / 65535)``; PIL's own conversion clips it at 255); other integer or
    floating-point modes raise :class:`ImageReadError` naming ``source``."""
    if im.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(im, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(f"cannot read image {source}: {im.mode} values outside 0-65535")
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        raise ImageReadError(f"cannot read image {source}: floating-point pixels (mode F) are "
                             "not supported; save it as 8- or 16-bit")
    return np.asarray(im.convert("RGB"))


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image to an ``HWC`` uint8 RGB array (:func:`to_rgb8`); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return to_rgb8(im, path)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the image header (no decoding); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[..., 3, H, W]`` -> float32 in [0, 1], on the tensor's device."""
    return images.float().div_(255)


@lru_cache(maxsize=None)
def channel_vector(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """``values`` as a float32 ``[C, 1, 1]`` tensor on ``device``, made once per device: a
    fresh copy to a GPU at every step would wait for all the work queued before it."""
    import torch

    return torch.tensor(values, device=device).view(-1, 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Float RGB ``[..., 3, H, W]`` in [0, 1] -> ``(x - IMAGE_MEAN) / IMAGE_STD``, in place."""
    return (images.sub_(channel_vector(IMAGE_MEAN, images.device))
            .div_(channel_vector(IMAGE_STD, images.device)))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``HWC`` uint8 RGB array -> normalised ``CHW`` float32 tensor (:func:`to_unit`, then
    :func:`normalize`: training batches get the same two steps on their device)."""
    import torch

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    return normalize(to_unit(torch.tensor(image).permute(2, 0, 1)))
