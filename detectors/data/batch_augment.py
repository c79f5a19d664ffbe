"""Photometric augmentation of a batch in torch, on whatever device the batch is on.

The workers crop, resize and flip in uint8 and draw each sample's
:class:`~detectors.data.augment.Photometric`; the batch carries the draws as a ``[B, 5]`` tensor
(:meth:`~detectors.data.augment.Photometric.as_array` rows) and :func:`photometric` applies them
to the float images in [0, 1]. Nothing here draws random numbers, so a batch's result depends
only on (seed, epoch, index), whatever the device or the number of workers.

Semantics are PIL ``ImageEnhance``'s, as PyramidBox/DSFD use it, on floats: ``blend(d, x, f) =
d + f (x - d)`` clipped to [0, 1], with ``d`` black (brightness), the rounded grey mean
(contrast) or the grey image (saturation); grey is ITU-R 601 luma, PIL's ``L``. Hue is rotated
through HSV in floats. PIL rounds to 8 bits after each step, these do not: results agree within
about one grey level (four for hue, whose PIL HSV is 8-bit), ``tests/test_batch_augment.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import torch
from torch import Tensor

from detectors.data.augment import Photometric
from detectors.data.image import channel_vector

#: Column of each :class:`Photometric` field in a batch's ``photometric`` tensor.
COLUMN: dict[str, int] = {f.name: i for i, f in enumerate(fields(Photometric))}
IDENTITY: dict[str, float] = {f.name: float(f.default) for f in fields(Photometric)}
LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)
#: ``n`` of the HSV -> RGB formula ``x_c = V - C clip(min(k, 4 - k), 0, 1)``,
#: ``k = (n + 6 h) mod 6``, for R, G, B.
HSV_N: tuple[float, float, float] = (5.0, 3.0, 1.0)


def grey(images: Tensor) -> Tensor:
    """``[B, 3, H, W]`` -> ``[B, 1, H, W]`` luma (PIL's ``L`` conversion, unrounded)."""
    return (images * channel_vector(LUMA, images.device)).sum(1, keepdim=True)


def _blend(degenerate: Tensor, images: Tensor, factor: Tensor) -> Tensor:
    return torch.lerp(degenerate, images, factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``Brightness``: blend with black, i.e. ``x f``; ``factor`` is ``[B]``."""
    return (images * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``Contrast``: blend with the image's grey mean, rounded to a grey level as PIL does."""
    mean = grey(images).mean((1, 2, 3), keepdim=True).mul(255).round_().div_(255)
    return _blend(mean, images, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``Color``: blend with the grey image."""
    return _blend(grey(images), images, factor)


def rotate_hue(images: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image's hue by ``degrees`` ``[B]``; value and chroma are kept."""
    r, g, b = images.unbind(1)
    maxc, minc = images.amax(1), images.amin(1)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(maxc == r, (g - b) / safe,
                      torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = (hue / 6 + degrees.view(-1, 1, 1) / 360).remainder_(1)  # [B, H, W] in [0, 1)
    k = (channel_vector(HSV_N, images.device) + 6 * hue.unsqueeze(1)).remainder_(6)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4 - k).clamp_(0, 1)


def _where_drawn(images: Tensor, values: Tensor, identity: float,
                 step: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``step`` on the images whose ``values`` (a CPU ``[B]``) are not the identity, written
    into ``images`` when only some are (the caller owns it); the others are left untouched
    (bit for bit)."""
    drawn = values != identity
    if drawn.all():
        return step(images, values.to(images.device, images.dtype, non_blocking=True))
    if drawn.any():
        index = drawn.nonzero().squeeze(1).to(images.device, non_blocking=True)
        factors = values[drawn].to(images.device, images.dtype, non_blocking=True)
        images[index] = step(images[index], factors)
    return images


def photometric(images: Tensor, params: Tensor) -> Tensor:
    """Apply each sample's draw: brightness, then contrast-saturation-hue or
    saturation-hue-contrast (:func:`~detectors.data.augment.draw_photometric`).

    ``images``: float ``[B, 3, H, W]`` in [0, 1] on any device; ``params``: the ``[B, 5]``
    draws, on the CPU (which images to touch is decided there, without a device sync).
    """
    if params.shape != (len(images), len(COLUMN)):
        raise ValueError(f"photometric params: expected shape ({len(images)}, {len(COLUMN)}), "
                         f"got {tuple(params.shape)}")
    params = params.cpu()
    images = images.clone()  # the steps write into their own copy, not the caller's
    first = params[:, COLUMN["contrast_first"]] > 0.5
    contrast = params[:, COLUMN["contrast"]]
    identity = IDENTITY["contrast"]

    def column(name: str) -> tuple[Tensor, float]:
        return params[:, COLUMN[name]], IDENTITY[name]

    images = _where_drawn(images, *column("brightness"), adjust_brightness)
    images = _where_drawn(images, torch.where(first, contrast, identity), identity,
                          adjust_contrast)
    images = _where_drawn(images, *column("saturation"), adjust_saturation)
    images = _where_drawn(images, *column("hue_degrees"), rotate_hue)
    return _where_drawn(images, torch.where(first, identity, contrast), identity, adjust_contrast)
