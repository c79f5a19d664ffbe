"""Box geometry in pure torch: IoU, SSD encoding, greedy NMS.

Boxes are ``xyxy`` float tensors in pixels everywhere in the detector (anchors included);
``cxcywh`` appears only inside the SSD encoding, whose offsets are (DSFD, SSD)::

    t_xy = (g_c - a_c) / (v0 * a_wh),    t_wh = log(g_wh / a_wh) / v1,    (v0, v1) = (0.1, 0.2)
"""
from __future__ import annotations

import torch
from torch import Tensor

VARIANCES: tuple[float, float] = (0.1, 0.2)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``xyxy`` boxes; inverted boxes count as 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise IoU ``[N, M]`` of ``xyxy`` boxes ``a [N, 4]`` and ``b [M, 4]`` (0 for empty pairs)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / (union + eps)


def encode(boxes: Tensor, anchors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """SSD offsets of ``xyxy`` ``boxes`` w.r.t. ``xyxy`` ``anchors`` (same leading shape)."""
    g, a = xyxy_to_cxcywh(boxes), xyxy_to_cxcywh(anchors)
    t_xy = (g[..., :2] - a[..., :2]) / (variances[0] * a[..., 2:])
    t_wh = torch.log(g[..., 2:] / a[..., 2:]) / variances[1]
    return torch.cat((t_xy, t_wh), dim=-1)


def decode(offsets: Tensor, anchors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """Inverse of :func:`encode`: ``xyxy`` boxes from SSD offsets and ``xyxy`` anchors."""
    a = xyxy_to_cxcywh(anchors)
    c = a[..., :2] + offsets[..., :2] * variances[0] * a[..., 2:]
    wh = a[..., 2:] * torch.exp(offsets[..., 2:] * variances[1])
    return cxcywh_to_xyxy(torch.cat((c, wh), dim=-1))


def nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3,
    pre_top_k: int | None = 5000, post_top_k: int | None = 750,
) -> Tensor:
    """Greedy NMS; indices into ``boxes`` of the kept boxes, highest score first.

    Only the ``pre_top_k`` best boxes enter, at most ``post_top_k`` are kept (the paper's
    Sec. 4.1: IoU 0.3, top 750 of the 5000 best). A box is suppressed by a kept box of higher
    score when their IoU exceeds ``iou_threshold``.
    """
    order = scores.argsort(descending=True)
    if pre_top_k is not None:
        order = order[:pre_top_k]
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_threshold).triu_(1)
    alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    kept: list[int] = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        kept.append(i)
        if post_top_k is not None and len(kept) == post_top_k:
            break
        alive &= ~overlaps[i]
    return order[torch.as_tensor(kept, dtype=torch.long, device=boxes.device)]


def batched_nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3,
    pre_top_k: int | None = 5000, post_top_k: int | None = 750,
) -> list[Tensor]:
    """:func:`nms` on each image of a batch (``boxes [B, N, 4]``, ``scores [B, N]``).

    The top-k limits apply per image, as in the paper; returns one index tensor per image.
    """
    return [nms(b, s, iou_threshold, pre_top_k, post_top_k) for b, s in zip(boxes, scores)]
