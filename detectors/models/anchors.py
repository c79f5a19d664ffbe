"""Anchors of the dual-shot detector (DSFD's progressive anchors, Sec. 3.1).

One square-ish anchor per location and level. Level ``l`` (stride ``s_l``) carries anchors of
size ``sizes[l]`` for the second shot and ``first_shot_scale * sizes[l]`` for the first shot
(DSFD: 16..512 and 8..256). Centres sit at ``((x + 0.5) * s_l, (y + 0.5) * s_l)``.

Aspect ratio ``r = h / w`` (``w = size / sqrt(r)``, ``h = size * sqrt(r)``). The generator's default
is square (1.0, as the popular DSFD re-implementations); the ASFD family uses the official DSFD
config's 1.5 (faces are taller than wide; :class:`detectors.models.asfd.ASFDConfig`).

Anchors are generated from the feature-map shapes the network actually produced, so any input
size works; :meth:`AnchorGenerator.feature_shapes` predicts those shapes for an image size
(every stride-2 stage of the backbones and extra levels rounds up: ``ceil(n / stride)``).
Order: level-major, then row-major over ``(y, x)``: the order of ``heads`` outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Shot = Literal["first", "second"]


@dataclass(frozen=True)
class AnchorGenerator:
    strides: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    sizes: tuple[float, ...] = (16, 32, 64, 128, 256, 512)
    aspect_ratio: float = 1.0
    first_shot_scale: float = 0.5

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.sizes):
            raise ValueError(f"anchor strides {self.strides} and sizes {self.sizes} differ in "
                             "length")
        if self.aspect_ratio <= 0 or self.first_shot_scale <= 0:
            raise ValueError("aspect_ratio and first_shot_scale must be positive")

    def feature_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The ``(h, w)`` of each level's map for an input image of ``height x width``."""
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.strides]

    def level_anchors(
        self, shape: tuple[int, int], stride: int, size: float,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``xyxy`` anchors ``[h * w, 4]`` of one level, row-major."""
        h, w = shape
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * stride
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        half_w = size / math.sqrt(self.aspect_ratio) / 2
        half_h = size * math.sqrt(self.aspect_ratio) / 2
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), -1).reshape(-1, 4)

    def __call__(
        self, shapes: list[tuple[int, int]], shot: Shot = "second",
        device: torch.device | str | None = None, first_level: int = 0,
    ) -> Tensor:
        """All anchors ``[A, 4]`` (``xyxy``, pixels) for feature maps of the given shapes, which
        are those of the levels from ``first_level`` on."""
        strides, sizes = self.strides[first_level:], self.sizes[first_level:]
        if len(shapes) != len(strides):
            raise ValueError(f"got {len(shapes)} feature maps, the anchors have "
                             f"{len(strides)} levels from level {first_level}")
        scale = self.first_shot_scale if shot == "first" else 1.0
        return torch.cat([self.level_anchors(tuple(shape), stride, size * scale, device)
                          for shape, stride, size in zip(shapes, strides, sizes)])
