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
from torch.nn.utils.rnn import pad_sequence

from detectors.models.box_ops import box_iou


@dataclass
class MatchResult:
    """``labels [..., A]`` (1 face, 0 background) and the matched face box of every anchor
    (``[..., A, 4]``, ``xyxy``; meaningful only where ``labels == 1``)."""

    labels: Tensor
    boxes: Tensor


#: Most IoU entries (images x faces x anchors) one matching pass holds; larger batches are
#: matched in chunks of images, so that one crowded image does not pad every other one.
MAX_IOU_ELEMENTS = 1 << 25


def valid_mask(boxes: Tensor) -> Tensor:
    """Which ``xyxy`` ``boxes [..., 4]`` have positive width and height."""
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def match_anchors(anchors: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.35) -> MatchResult:
    """Match ``anchors [A, 4]`` to the faces ``gt_boxes [G, 4]`` of one image (both ``xyxy``)."""
    batch = match_batch(anchors, [gt_boxes], iou_threshold)
    return MatchResult(batch.labels[0], batch.boxes[0])


def match_batch(anchors: Tensor, gt_boxes: list[Tensor], iou_threshold: float = 0.35,
                max_elements: int = MAX_IOU_ELEMENTS) -> MatchResult:
    """Match every image's faces at once; ``labels [B, A]``, ``boxes [B, A, 4]``.

    The faces are padded to the batch's largest count (a few dozen ops per batch instead of per
    image: on a GPU the per-op launch cost, not the arithmetic, set the loss's time)."""
    chunks, start = [], 0
    while start < len(gt_boxes):
        stop, widest = start, 0
        while stop < len(gt_boxes):
            widest_next = max(widest, len(gt_boxes[stop]))
            if stop > start and (stop + 1 - start) * widest_next * len(anchors) > max_elements:
                break
            stop, widest = stop + 1, widest_next
        chunks.append(_match_padded(anchors, gt_boxes[start:stop], iou_threshold))
        start = stop
    if len(chunks) == 1:
        return chunks[0]
    return MatchResult(torch.cat([c.labels for c in chunks]), torch.cat([c.boxes for c in chunks]))


def _match_padded(anchors: Tensor, gt_boxes: list[Tensor], iou_threshold: float) -> MatchResult:
    """:func:`match_batch` on one chunk, the faces padded to ``[B, G, 4]``."""
    batch, n = len(gt_boxes), anchors.shape[0]
    gt = pad_sequence([g.to(anchors).reshape(-1, 4) for g in gt_boxes], batch_first=True)
    if gt.shape[1] == 0:
        return MatchResult(torch.zeros(batch, n, dtype=torch.long, device=anchors.device),
                           anchors.new_zeros(batch, n, 4))
    valid = valid_mask(gt)                                          # [B, G]
    iou = box_iou(gt, anchors).masked_fill(~valid[..., None], -1)   # [B, G, A]
    best_iou, best_gt = iou.max(dim=1)                              # per anchor
    # Each face's best anchor is forced to it; a later face wins a shared best anchor (SSD's
    # loop), hence the max of the face indices. Padding and degenerate faces force nothing.
    face = torch.arange(gt.shape[1], device=anchors.device).expand(batch, -1)
    forced = torch.full_like(best_gt, -1).scatter_reduce(
        1, iou.argmax(dim=2), face.masked_fill(~valid, -1), reduce="amax")
    is_forced = forced >= 0
    best_gt = torch.where(is_forced, forced, best_gt)
    labels = ((best_iou >= iou_threshold) | is_forced).long()
    boxes = gt.gather(1, best_gt[..., None].expand(-1, -1, 4))
    return MatchResult(labels, boxes)
