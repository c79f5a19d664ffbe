"""Box geometry in pure torch: IoU, SSD encoding, greedy NMS.

Boxes are ``xyxy`` float tensors in pixels everywhere in the detector (anchors included);
``cxcywh`` appears only inside the SSD encoding, whose offsets are (DSFD, SSD)::

    t_xy = (g_c - a_c) / (v0 * a_wh),    t_wh = log(g_wh / a_wh) / v1,    (v0, v1) = (0.1, 0.2)
"""
from __future__ import annotations

import numpy as np
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
    """Pairwise IoU ``[..., N, M]`` of ``xyxy`` boxes ``a [..., N, 4]`` and ``b [..., M, 4]``
    (leading dimensions broadcast; 0 for empty pairs)."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
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
    # Greedy rounds: keep the best survivor, drop the survivors that overlap it. Comparing the
    # kept box with the survivors only costs O(kept x N) instead of the O(N^2) IoU matrix, and
    # numpy's per-call overhead is a fraction of torch's for these small vectors (0.17 s vs 1.6 s
    # for 5000 scattered boxes on one CPU core); same arithmetic as box_iou, in float32.
    x1, y1, x2, y2 = boxes[order].detach().float().cpu().numpy().T
    area = (x2 - x1).clip(min=0) * (y2 - y1).clip(min=0)
    remaining = np.arange(len(order))
    kept: list[int] = []
    while remaining.size and (post_top_k is None or len(kept) < post_top_k):
        best, rest = remaining[0], remaining[1:]
        kept.append(best)
        inter = ((np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest])).clip(min=0)
                 * (np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])).clip(min=0))
        overlap = inter / (area[best] + area[rest] - inter + np.float32(1e-7))
        remaining = rest[overlap <= iou_threshold]
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]


def batched_nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3,
    pre_top_k: int | None = 5000, post_top_k: int | None = 750,
) -> list[Tensor]:
    """:func:`nms` on each image of a batch (``boxes [B, N, 4]``, ``scores [B, N]``).

    The top-k limits apply per image, as in the paper; returns one index tensor per image.
    """
    return [nms(b, s, iou_threshold, pre_top_k, post_top_k) for b, s in zip(boxes, scores)]
