"""Anchor-to-face assignment (SSD / DSFD matching).

An anchor is positive when its IoU with some face is at least ``iou_threshold`` (0.35 as in
DSFD's re-implementations; the official config uses 0.4), and every face's best anchor is forced
positive for that face so that no face goes unmatched. Faces with zero width or height cannot be
regressed (their IoU with anything is 0) and are dropped before matching.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detectors.box_ops import box_iou


@dataclass
class MatchResult:
    """``labels [..., A]`` (1 face, 0 background) and the matched face box of every anchor
    (``[..., A, 4]``, ``xyxy``; meaningful only where ``labels == 1``)."""

    labels: Tensor
    boxes: Tensor


def valid_boxes(boxes: Tensor) -> Tensor:
    """The rows of ``xyxy`` ``boxes`` with positive width and height."""
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def match_anchors(anchors: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.35) -> MatchResult:
    """Match ``anchors [A, 4]`` to the faces ``gt_boxes [G, 4]`` of one image (both ``xyxy``)."""
    gt = valid_boxes(gt_boxes.to(anchors))
    n = anchors.shape[0]
    if gt.shape[0] == 0:
        return MatchResult(torch.zeros(n, dtype=torch.long, device=anchors.device),
                           torch.zeros_like(anchors))
    iou = box_iou(gt, anchors)                      # [G, A]
    best_iou, best_gt = iou.max(dim=0)              # per anchor
    forced = iou.argmax(dim=1)                      # each face's best anchor
    # Later faces win ties on a shared best anchor, as in SSD's loop.
    best_gt[forced] = torch.arange(gt.shape[0], device=anchors.device)
    best_iou[forced] = 1.0
    labels = (best_iou >= iou_threshold).long()
    return MatchResult(labels, gt[best_gt])


def match_batch(anchors: Tensor, gt_boxes: list[Tensor], iou_threshold: float = 0.35) -> MatchResult:
    """:func:`match_anchors` for each image; ``labels [B, A]``, ``boxes [B, A, 4]``."""
    results = [match_anchors(anchors, g, iou_threshold) for g in gt_boxes]
    return MatchResult(torch.stack([r.labels for r in results]),
                       torch.stack([r.boxes for r in results]))
