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
#: matched in chunks of images.
MAX_IOU_ELEMENTS = 1 << 25


def pass_cost(device: torch.device) -> int:
    """What one more matching pass costs, in IoU entries of padding.

    A pass is ~20 ops. On a GPU their launches, not the arithmetic, set its time, so a pass is
    worth millions of padded entries. On a CPU any padding costs more than a pass: D0's
    matching of a batch of 16 WIDER crops (both shots) took 158 / 173 / 204 / 380 ms with
    chunks padded by at most 0 / 2^12 / 2^15 / 2^18 entries, and 1532 ms padded to the most
    crowded image (``bench/train_step.py``; WIDER's face counts are skewed)."""
    return 1 << 24 if device.type == "cuda" else 0


def valid_mask(boxes: Tensor) -> Tensor:
    """Which ``xyxy`` ``boxes [..., 4]`` have positive width and height."""
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def match_anchors(anchors: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.35) -> MatchResult:
    """Match ``anchors [A, 4]`` to the faces ``gt_boxes [G, 4]`` of one image (both ``xyxy``)."""
    batch = match_batch(anchors, [gt_boxes], iou_threshold)
    return MatchResult(batch.labels[0], batch.boxes[0])


def match_batch(anchors: Tensor, gt_boxes: list[Tensor], iou_threshold: float = 0.35,
                max_elements: int = MAX_IOU_ELEMENTS,
                merge_cost: int | None = None) -> MatchResult:
    """Match every image's faces; ``labels [B, A]``, ``boxes [B, A, 4]``.

    Images are taken most crowded first and matched in chunks, their faces padded to the
    chunk's largest count. The next image joins the chunk while the padding it adds costs no
    more than a pass of its own (``merge_cost`` IoU entries, :func:`pass_cost` of the anchors'
    device by default) and the chunk stays under ``max_elements`` entries."""
    if merge_cost is None:
        merge_cost = pass_cost(anchors.device)
    counts = [len(g) for g in gt_boxes]
    order = sorted(range(len(gt_boxes)), key=lambda i: -counts[i])
    labels = torch.zeros(len(gt_boxes), len(anchors), dtype=torch.long, device=anchors.device)
    boxes = anchors.new_zeros(len(gt_boxes), len(anchors), 4)
    start = 0
    while start < len(order):
        widest, stop = counts[order[start]], start + 1
        while stop < len(order) \
                and (widest - counts[order[stop]]) * len(anchors) <= merge_cost \
                and (stop + 1 - start) * widest * len(anchors) <= max_elements:
            stop += 1
        chunk = order[start:stop]
        match = _match_padded(anchors, [gt_boxes[i] for i in chunk], iou_threshold)
        index = torch.tensor(chunk, device=anchors.device)
        labels[index], boxes[index] = match.labels, match.boxes
        start = stop
    return MatchResult(labels, boxes)


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
