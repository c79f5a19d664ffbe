"""The mixed operation of one supernet edge, with PC-DARTS partial channel connections.

PC-DARTS (Xu et al. 2019, the paper's [43]) sends only ``1/k`` of an edge's channels through the
candidate operations and lets the rest bypass them; a channel shuffle with ``k`` groups then
interleaves the two parts so that the next edge samples a different subset. ``k = 1`` is plain
DARTS.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_search.registry import build_op


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle: view ``(B, g, C/g, H, W)``, swap axes 1 and 2, flatten.

    Output channel ``c' = (c mod C/g) * g + c div C/g``: with ``C = 6, g = 2`` the order
    ``0 1 2 | 3 4 5`` becomes ``0 3 1 4 2 5``.
    """
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible into {groups} groups")
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def channel_unshuffle(x: Tensor, groups: int) -> Tensor:
    """The inverse of :func:`channel_shuffle` with the same ``groups``."""
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_unshuffle: {c} channels are not divisible into {groups} groups")
    return x.view(b, c // groups, groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class MixedOp(nn.Module):
    """``sum_o w_o * o(x[:, :C/k])`` over the candidate ops, the other channels bypassing.

    The bypass is the identity at stride 1 and a 3x3/2 max pooling (padding 1, output
    ``ceil(size / 2)`` like the ops' strided convs) at stride 2 (PC-DARTS pools 2x2, which floors
    odd sizes). The two parts are concatenated and channel-shuffled with ``k`` groups; ``k = 1``
    skips both steps.

    ``forward(x, weights)`` is the DARTS weighted sum over every op. ``forward(x, weights, index)``
    is the sampled (GDAS) mode: only ``ops[index]`` runs, scaled by ``weights[index]`` so that the
    gradient reaches the architecture parameters through a straight-through ``weights`` (whose
    forward value at ``index`` is exactly 1, see :func:`nas_search.gumbel.hard_gumbel_softmax`).
    """

    def __init__(self, channels: int, op_names: Sequence[str], stride: int = 1, k: int = 1):
        super().__init__()
        if k < 1 or channels % k:
            raise ValueError(f"MixedOp: channels={channels} must be divisible by k={k} (k >= 1)")
        if not op_names:
            raise ValueError("MixedOp: op_names is empty")
        if len(set(op_names)) != len(op_names):
            raise ValueError(f"MixedOp: duplicate op names in {list(op_names)}")
        self.op_names: tuple[str, ...] = tuple(op_names)
        self.channels, self.stride, self.k = channels, stride, k
        self.ops = nn.ModuleList(build_op(name, channels // k, stride) for name in self.op_names)

    def forward(self, x: Tensor, weights: Tensor, index: int | None = None) -> Tensor:
        if weights.shape != (len(self.ops),):
            raise ValueError(f"MixedOp: expected {len(self.ops)} op weights, "
                             f"got shape {tuple(weights.shape)}")
        part = x[:, : self.channels // self.k]
        if index is None:
            out = sum(w * op(part) for w, op in zip(weights, self.ops))
        else:
            out = weights[index] * self.ops[index](part)
        if self.k == 1:
            return out
        bypass = x[:, self.channels // self.k:]
        if self.stride == 2:
            bypass = F.max_pool2d(bypass, kernel_size=3, stride=2, padding=1)
        return channel_shuffle(torch.cat([out, bypass], dim=1), self.k)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}, k={self.k}"
