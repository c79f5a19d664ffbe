"""Detection losses: DRMC (Sec. 3.3, Eq. 6-8) and the DSFD baseline it is compared with (Table 4).

Both share Eq. 8's dual-shot structure::

    L = 1/N2 * sum_i (lambda1 * L_reg(t2_i, t2*_i) + L_cls(p2_i, p2*_i))
      + lambda2/N1 * sum_i (lambda1 * L_reg(t1_i, t1*_i) + L_cls(p1_i, p1*_i))

with ``N`` the positive anchors of each shot over the batch (clamped to >= 1, so a batch
without faces gives a finite loss), the regression summed over positives and the classification
over positives plus hard negatives (3 per positive). They differ in the terms:

* DRMC: ``L_reg`` = DIoU (Eq. 6) on boxes decoded from the anchors; ``L_cls`` = margin-based
  softmax cross-entropy (Eq. 7).
* DSFD: ``L_reg`` = smooth-L1 on SSD-encoded offsets; ``L_cls`` = softmax cross-entropy (m = 0);
  the first-shot term is DSFD's progressive anchor loss.

The paper gives no values for m, lambda1, lambda2. Ours: ``m = 0.2`` (a mild margin: Eq. 7 has
no normalisation or scale, so m is in raw logit units and the network can always widen its
logit gap past it); ``lambda1 = 10``: DIoU is computed on boxes decoded from SSD offsets, whose
variances (0.1, 0.2) shrink its gradient to ~1/13 of smooth-L1's (per unit weight, at the shared
layers of a from-scratch detector); with lambda1 = 2 the regression gives the shared layers
almost no signal and neither task learns, lambda1 = 10 restores smooth-L1's balance with the
classification, and larger values slow the classification (README, "Detectors that learn");
``lambda2 = 1.0`` (DSFD weights both shots equally).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.models.box_ops import VARIANCES, decode, encode
from detectors.models.heads import DetectorOutput, ShotOutput
from detectors.models.matching import match_batch
from nas_search.registry import Registry
from nas_search.runtime import ConfigError

RegressionLoss = Literal["diou", "smooth_l1"]


def diou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Eq. 6 per box: ``1 - IoU(b, g) + rho^2(b_c, g_c) / c^2`` for ``xyxy`` ``[N, 4]`` boxes.

    ``c`` is the diagonal of the smallest box enclosing both; ``eps`` guards empty unions and
    degenerate enclosing boxes.
    """
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(-1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(-1)
    iou = inter / (area_p + area_t - inter + eps)
    centre_p = (pred[:, :2] + pred[:, 2:]) / 2
    centre_t = (target[:, :2] + target[:, 2:]) / 2
    rho2 = (centre_p - centre_t).pow(2).sum(-1)
    enclosing = torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])
    c2 = enclosing.pow(2).sum(-1)
    return 1 - iou + rho2 / (c2 + eps)


def margin_cross_entropy(logits: Tensor, target: Tensor, margin: float = 0.0) -> Tensor:
    """Eq. 7 per sample: softmax cross-entropy after subtracting ``margin`` from the target logit.

    ``logits [N, C]``, ``target [N]``; ``margin = 0`` is the plain cross-entropy.
    """
    shifted = logits - margin * F.one_hot(target, logits.shape[-1]).to(logits)
    return F.cross_entropy(shifted, target, reduction="none")


def constant_predictor_loss(margin: float = 0.0, neg_pos_ratio: float = 3.0) -> float:
    """The classification loss per positive (``L_cls / N``, Eq. 7-8) of the best classifier that
    ignores its input: the same logit gap ``d = z_face - z_bg`` at every anchor, scored on one
    positive and ``neg_pos_ratio`` hard negatives. A detector whose ``cls`` part sits at this
    value has learnt nothing from the images: every from-scratch run starts on this plateau.

    Minimises ``log(1 + e^(m - d)) + r log(1 + e^(d + m))``; with ``u = e^-d`` the stationary
    point solves ``u^2 + (1 - r) e^m u - r = 0``. ``m = 0, r = 3``: ``4 H(1/4) = 2.249``.
    """
    r, em = neg_pos_ratio, math.exp(margin)
    u = (-(1 - r) * em + math.sqrt((1 - r) ** 2 * em ** 2 + 4 * r)) / 2
    d = -math.log(u)
    return math.log1p(math.exp(margin - d)) + r * math.log1p(math.exp(d + margin))


def hard_negative_mask(cls_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 3.0) -> Tensor:
    """Positives plus, per image, the ``neg_pos_ratio * max(n_pos, 1)`` negatives of highest loss.

    ``cls_loss`` and ``positive`` are ``[B, A]``. An image without faces still contributes
    ``neg_pos_ratio`` hard negatives (as if it had one face), so background-only images teach the
    classifier something; SSD would give them none.
    """
    loss = cls_loss.detach().masked_fill(positive, float("-inf"))
    n_pos = positive.sum(dim=1)
    n_neg = (neg_pos_ratio * n_pos.clamp(min=1)).long().clamp(max=(~positive).sum(dim=1))
    order = loss.argsort(dim=1, descending=True)
    ranks = torch.arange(loss.shape[1], device=loss.device).expand_as(loss)
    hardest = torch.zeros_like(positive).scatter_(1, order, ranks < n_neg[:, None])
    return positive | hardest


@dataclass
class LossResult:
    """The scalar to minimise and its detached parts for logging (normalised per shot)."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


class DualShotLoss(nn.Module):
    """Eq. 8's structure with a chosen regression loss and margin (see the module docstring)."""

    def __init__(
        self, regression: RegressionLoss, margin: float, lambda1: float, lambda2: float,
        neg_pos_ratio: float = 3.0, iou_threshold: float = 0.35,
        variances: tuple[float, float] = VARIANCES,
    ) -> None:
        super().__init__()
        if regression not in ("diou", "smooth_l1"):
            raise ValueError(f"unknown regression loss {regression!r}; use 'diou' or 'smooth_l1'")
        problems = [f"{name} must be >= 0, got {value}" for name, value in (
            ("margin", margin), ("lambda1", lambda1), ("lambda2", lambda2),
            ("neg_pos_ratio", neg_pos_ratio)) if not value >= 0]
        if not 0 < iou_threshold <= 1:
            problems.append(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
        if problems:
            raise ConfigError(f"{type(self).__name__}: " + "; ".join(problems))
        self.regression = regression
        self.margin = margin
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.neg_pos_ratio = neg_pos_ratio
        self.iou_threshold = iou_threshold
        self.variances = variances

    def regression_loss(self, offsets: Tensor, anchors: Tensor, boxes: Tensor) -> Tensor:
        """Summed regression loss of positive anchors (``[P, 4]`` each)."""
        if self.regression == "diou":
            return diou_loss(decode(offsets, anchors, self.variances), boxes).sum()
        return F.smooth_l1_loss(offsets, encode(boxes, anchors, self.variances), reduction="sum")

    def shot_loss(self, shot: ShotOutput, gt_boxes: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Summed regression and classification losses of one shot, and its positive count."""
        match = match_batch(shot.anchors, gt_boxes, self.iou_threshold)
        positive = match.labels == 1
        batch, n_anchors = positive.shape
        anchors = shot.anchors.expand(batch, n_anchors, 4)
        reg = self.regression_loss(shot.reg[positive], anchors[positive], match.boxes[positive])
        cls = margin_cross_entropy(shot.cls.reshape(-1, shot.cls.shape[-1]),
                                   match.labels.reshape(-1), self.margin).view(batch, n_anchors)
        cls = cls[hard_negative_mask(cls, positive, self.neg_pos_ratio)].sum()
        return reg, cls, positive.sum().clamp(min=1)

    def forward(self, output: DetectorOutput, gt_boxes: list[Tensor]) -> LossResult:
        """``gt_boxes``: one ``xyxy`` ``[G_i, 4]`` tensor per image (``G_i`` may be 0)."""
        shots = [("second", output.second, 1.0)]
        if output.first is not None and self.lambda2 > 0:
            shots.append(("first", output.first, self.lambda2))
        total = output.second.cls.new_zeros(())
        parts: dict[str, Tensor] = {}
        for name, shot, weight in shots:
            reg, cls, n_pos = self.shot_loss(shot, gt_boxes)
            total = total + weight * (self.lambda1 * reg + cls) / n_pos
            parts[f"{name}/reg"] = (reg / n_pos).detach()
            parts[f"{name}/cls"] = (cls / n_pos).detach()
            parts[f"{name}/num_pos"] = n_pos.detach().float()
        return LossResult(total, parts)


class DRMCLoss(DualShotLoss):
    """DRMC (Eq. 8): DIoU regression (Eq. 6) + margin-based classification (Eq. 7), two shots."""

    def __init__(self, margin: float = 0.2, lambda1: float = 10.0, lambda2: float = 1.0,
                 neg_pos_ratio: float = 3.0, iou_threshold: float = 0.35) -> None:
        super().__init__("diou", margin, lambda1, lambda2, neg_pos_ratio, iou_threshold)


class DSFDLoss(DualShotLoss):
    """DSFD's loss: smooth-L1 on encoded offsets + softmax CE, progressive anchor loss on the
    first shot weighted by ``lambda2``."""

    def __init__(self, lambda2: float = 1.0, neg_pos_ratio: float = 3.0,
                 iou_threshold: float = 0.35) -> None:
        super().__init__("smooth_l1", 0.0, 1.0, lambda2, neg_pos_ratio, iou_threshold)


LossFactory = Callable[..., DualShotLoss]
LOSSES: Registry[LossFactory] = Registry("loss")
register_loss = LOSSES.register


def build_loss(name: str, **kwargs) -> DualShotLoss:
    """The loss registered as ``name`` with keyword arguments ``kwargs`` (``loss.params``);
    unknown ones are a :class:`~detectors.engine.config.ConfigError` listing the known ones."""
    known = inspect.signature(LOSSES[name]).parameters
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(f"loss.params: unknown key(s) {unknown} of loss {name!r}; known: "
                          f"{sorted(known)}")
    return LOSSES.build(name, **kwargs)


register_loss("drmc")(DRMCLoss)
register_loss("dsfd")(DSFDLoss)


@register_loss("retinaface")
def retinaface_loss(neg_pos_ratio: float = 3.0, iou_threshold: float = 0.35) -> DualShotLoss:
    """Single-shot smooth-L1 + CE (RetinaFace-style baseline): the DSFD loss without a first shot."""
    return DSFDLoss(lambda2=0.0, neg_pos_ratio=neg_pos_ratio, iou_threshold=iou_threshold)
