"""Classification and regression heads shared by both shots (Sec. 3.1) and the detector outputs.

"The two shots share the same head network": one :class:`DetectionHeads` runs on the first-shot
(original) and on the second-shot (AutoFEM-enhanced) pyramid. Where the paper is silent, our
choices (measured in the README, "Detectors that learn"):

* Conv weights are shared across pyramid levels as well (EfficientDet / RetinaNet), which keeps
  Table 5's parameter count; per-level heads would multiply it by six.
* ``norm="batch"``: every tower conv is followed by a BatchNorm of its own per *map* (one map is
  one level of one shot), EfficientDet's per-level BN. The maps a shared head sees differ in
  scale and statistics (lateral maps, AutoFEM outputs, six strides), and without normalisation
  the from-scratch head barely learns. Per-map BN keeps the sharing (only the 2C affine
  values are per map); ``asfd export`` folds each into the conv before it (one conv weight
  per map in the graph, no BatchNorm node left; tested in ``tests/test_export.py``).
* Initialisation (:func:`init_head_`): He-normal convs, variance-preserving (gain 1) where no
  ReLU follows, the prediction conv included, and a *prior-probability* bias on the
  classification (RetinaNet, Lin et al. 2017): every anchor starts at face probability
  ``cls_prior`` on average, so the first steps are not spent pushing the 175:1 background
  majority down: with 1:3 hard-negative mining, ``cls_prior = 0.001`` lets the positives lead
  the first steps (0.01 leaves the constant-predictor plateau later, 0.1 not at all). RetinaNet's
  ``N(0, 0.01)`` prediction weights would block the gradient to a backbone trained from scratch
  (16x less at initialisation).
* ``depth`` tower layers ``conv -> norm -> ReLU`` (``separable``: depthwise 3x3 + pointwise, the
  EfficientDet head; ``full``: a dense 3x3, the RetinaNet/DSFD head), then a 3x3 prediction conv
  of the same kind. ``depth = 0`` leaves the prediction conv alone (a RetinaFace-style head).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

HeadConv = Literal["separable", "full"]
HeadNorm = Literal["none", "batch"]


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


def prior_logits(prior: float) -> Tensor:
    """Softmax biases ``[0, logit(prior)]`` of (background, face): face probability ``prior``."""
    if not 0 < prior < 1:
        raise ValueError(f"cls_prior must lie in (0, 1), got {prior}")
    return torch.tensor([0.0, math.log(prior / (1 - prior))])


class PredictionHead(nn.Module):
    """``depth`` x (3x3 conv -> norm of the map -> ReLU), then a 3x3 conv to ``outputs`` values
    per anchor. Conv weights are shared by all ``n_maps`` maps; with ``norm="batch"`` each map has
    its own BatchNorm after every tower conv."""

    def __init__(self, channels: int, depth: int, outputs: int, conv: HeadConv = "separable",
                 norm: HeadNorm = "none", n_maps: int = 1) -> None:
        super().__init__()
        if norm not in ("none", "batch"):
            raise ValueError(f"unknown head norm {norm!r}; use 'none' or 'batch'")
        self.convs = nn.ModuleList(head_conv(channels, channels, conv) for _ in range(depth))
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(n_maps)) if norm == "batch"
            else nn.ModuleList() for _ in range(depth))
        self.act = nn.ReLU(inplace=True)
        self.predict = head_conv(channels, outputs, conv)
        self.outputs, self.n_maps = outputs, n_maps

    @property
    def per_map(self) -> bool:
        """Whether the tower has per-map norms (else every map runs the same function)."""
        return any(len(norms) for norms in self.norms)

    def tower(self, x: Tensor, map_index: int) -> Tensor:
        for conv, norms in zip(self.convs, self.norms):
            x = conv(x)
            if len(norms):
                x = norms[map_index](x)
            x = self.act(x)
        return x

    def forward(self, feats: Sequence[Tensor], first_map: int = 0) -> Tensor:
        """``[B, A, outputs]`` with anchors level-major, row-major (the anchor order); map ``i``
        of ``feats`` is map ``first_map + i`` of the head."""
        if self.per_map and first_map + len(feats) > self.n_maps:
            raise ValueError(f"head has {self.n_maps} maps, asked for maps {first_map}.."
                             f"{first_map + len(feats) - 1}")
        flat = [self.predict(self.tower(f, first_map + i)).permute(0, 2, 3, 1).flatten(1, 2)
                for i, f in enumerate(feats)]
        return torch.cat(flat, dim=1)


def last_conv(module: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` of ``module`` (the pointwise conv of a separable one)."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]


@torch.no_grad()
def init_head_(head: PredictionHead, bias: Tensor | None = None) -> None:
    """He-normal convs: gain sqrt(2) before a ReLU (the tower's pointwise or dense convs), gain 1
    elsewhere (depthwise convs, the prediction conv); biases zero, the prediction's ``bias``
    when given (module docstring)."""
    out = last_conv(head.predict)
    for module in head.modules():
        if isinstance(module, nn.Conv2d):
            linear = module is out or module.groups == module.in_channels > 1
            nn.init.kaiming_normal_(module.weight, nonlinearity="linear" if linear else "relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    if bias is not None:
        out.bias.copy_(bias)


class DetectionHeads(nn.Module):
    """The classification (2 logits) and regression (4 offsets) heads over ``n_maps`` maps.

    With ``cls_prior`` both heads get :func:`init_head_` (the classification bias from
    :func:`prior_logits`); ``None`` keeps PyTorch's layer defaults, the heads of checkpoints
    made before that choice.
    """

    def __init__(self, channels: int, depth: int, conv: HeadConv = "separable",
                 norm: HeadNorm = "none", n_maps: int = 1, cls_prior: float | None = None
                 ) -> None:
        super().__init__()
        self.cls = PredictionHead(channels, depth, 2, conv, norm, n_maps)
        self.reg = PredictionHead(channels, depth, 4, conv, norm, n_maps)
        if cls_prior is not None:
            init_head_(self.cls, prior_logits(cls_prior))
            init_head_(self.reg)

    @property
    def n_maps(self) -> int:
        return self.cls.n_maps

    @property
    def per_map(self) -> bool:
        return self.cls.per_map

    def forward(self, feats: Sequence[Tensor], first_map: int = 0) -> tuple[Tensor, Tensor]:
        return self.cls(feats, first_map), self.reg(feats, first_map)
