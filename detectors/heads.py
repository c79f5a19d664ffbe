"""Classification and regression heads shared by both shots (Sec. 3.1) and the detector outputs.

"The two shots share the same head network": one :class:`DetectionHeads` is applied to the
first-shot (original) and to the second-shot (AutoFEM-enhanced) pyramid. Where the paper is
silent, our choices:

* Weights are also shared across pyramid levels (EfficientDet / RetinaNet): one anchor per
  location at every level makes the per-level prediction tasks alike, and the shared head keeps
  the parameter count of Table 5 (per-level heads would multiply it by six).
* No normalisation in the heads (RetinaNet style): a BatchNorm shared by six levels and two shots
  would mix statistics of very different maps; EfficientDet's per-level BN would break the
  sharing the paper asks for.
* ``depth`` tower layers of ``3x3 conv -> ReLU`` (``separable``: depthwise 3x3 + pointwise, the
  EfficientDet head; ``full``: a dense 3x3, the RetinaNet/DSFD head), then a 3x3 prediction conv
  of the same kind. ``depth = 0`` leaves the prediction conv alone (a RetinaFace-style head).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

HeadConv = Literal["separable", "full"]


@dataclass
class ShotOutput:
    """One shot's predictions over all anchors: ``cls [B, A, 2]`` logits (background, face),
    ``reg [B, A, 4]`` SSD offsets, and the ``anchors [A, 4]`` (``xyxy``) they refer to."""

    cls: Tensor
    reg: Tensor
    anchors: Tensor


@dataclass
class DetectorOutput:
    """Both shots; ``first`` is None when not computed (inference, single-shot detectors)."""

    second: ShotOutput
    first: ShotOutput | None = None


def head_conv(in_channels: int, out_channels: int, kind: HeadConv) -> nn.Module:
    """A 3x3 conv with bias, dense or depthwise-separable."""
    if kind == "full":
        return nn.Conv2d(in_channels, out_channels, 3, padding=1)
    if kind == "separable":
        return nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1),
        )
    raise ValueError(f"unknown head conv {kind!r}; use 'separable' or 'full'")


class PredictionHead(nn.Module):
    """``depth`` x (3x3 conv -> ReLU), then a 3x3 conv to ``outputs`` values per anchor."""

    def __init__(self, channels: int, depth: int, outputs: int, conv: HeadConv = "separable"):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [head_conv(channels, channels, conv), nn.ReLU(inplace=True)]
        self.tower = nn.Sequential(*layers)
        self.predict = head_conv(channels, outputs, conv)
        self.outputs = outputs

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """``[B, A, outputs]`` with anchors level-major, row-major (the anchor order)."""
        flat = [self.predict(self.tower(f)).permute(0, 2, 3, 1).flatten(1, 2) for f in feats]
        return torch.cat(flat, dim=1)


class DetectionHeads(nn.Module):
    """The classification (2 logits) and regression (4 offsets) heads."""

    def __init__(self, channels: int, depth: int, conv: HeadConv = "separable",
                 num_classes: int = 2) -> None:
        super().__init__()
        self.cls = PredictionHead(channels, depth, num_classes, conv)
        self.reg = PredictionHead(channels, depth, 4, conv)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return self.cls(feats), self.reg(feats)
