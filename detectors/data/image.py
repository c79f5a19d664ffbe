"""Image decoding and the input normalisation shared by training, evaluation and inference.

Normalisation (the paper is silent): RGB, scaled to [0, 1], then ImageNet mean/std, the
convention of ImageNet-pretrained backbones (timm/torchvision) rather than DSFD's BGR mean
subtraction. Padding added by augmentation or letterboxing uses :data:`MEAN_PIXEL`, which
normalises to 0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
MEAN_PIXEL: tuple[int, int, int] = tuple(round(255 * m) for m in IMAGE_MEAN)


class ImageReadError(ValueError):
    """An image file that exists but cannot be decoded; the message names the file."""


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image to an ``HWC`` uint8 RGB array; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the image header (no decoding); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``HWC`` uint8 RGB array -> normalised ``CHW`` float32 tensor."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    x = torch.tensor(image).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return x.sub_(mean).div_(std)
