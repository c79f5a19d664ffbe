"""Candidate operations of AutoFEM (Sec. 3.2) and the shared conv building block.

The paper lists the candidates of S_FPN and S_CPM and says that "all operations are implemented
by the depthwise-separable convolution"; it says nothing about normalisation, activation or
repetition. Our choices, one rule for every op:

* Order ``ReLU -> depthwise conv(s) -> pointwise 1x1 -> BN`` (the DARTS ReLU-Conv-BN order, so
  that a weighted sum of ops is a sum of BN outputs and the node after it sees pre-activation
  features).
* A single depthwise-separable unit per op (DARTS stacks two for ``sep_conv``; one keeps the
  cost of the 3x3 and the dilated ops comparable, which the paper's efficiency aim favours).
* ``conv_1x3_3x1`` ("1x3 conv followed by 3x1 conv") chains two depthwise convs before the one
  pointwise: a depthwise 1x3 then a depthwise 3x1 is a rank-1 depthwise 3x3 (Inception-v3
  factorisation) and the pointwise mixes channels once, as in every other op.
* ``conv_1x1`` is a plain pointwise conv + BN: a 1x1 depthwise stage would be a per-channel
  scale, which the pointwise already covers.
* BatchNorm is affine everywhere, in the supernet as in the derived network. DARTS uses
  ``affine=False`` during search; we keep the affine parameters so that a derived network can
  inherit supernet weights exactly (``load_from_search`` in fpn.py / cpm.py).
* Padding ``dilation * (k - 1) // 2`` per axis keeps the spatial size at stride 1 for any input
  size; at stride 2 (on the first conv) the output is ``ceil(size / 2)``.

Op names and set orders are the paper's (Sec. 3.2), declared as data in
:mod:`genotypes.op_sets`: ``S_FPN`` = the first six, ``S_CPM`` the twelve in the order the paper
lists them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from nas_search.registry import register_op, register_op_set
from search_spaces.schemas import PAPER_OP_SETS

Kernel = tuple[int, int]


def same_padding(kernel: Kernel, dilation: int = 1) -> tuple[int, int]:
    """Padding that keeps the spatial size of an odd ``kernel`` at stride 1."""
    kh, kw = kernel
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel {kernel} must be odd on both axes to keep the spatial size")
    return dilation * (kh - 1) // 2, dilation * (kw - 1) // 2


class ConvBNAct(nn.Sequential):
    """``conv(kernel, stride, dilation, groups) -> BN -> act``: the block every fixed module uses.

    ``act`` is a module factory (``nn.ReLU``, ``nn.SiLU``...) or None for no activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Kernel = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: Callable[[], nn.Module] | None = nn.ReLU,
    ) -> None:
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, k, stride, same_padding(k, dilation), dilation,
                      groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SepConv(nn.Sequential):
    """act -> depthwise convs ``kernels`` (dilation, stride on the first) -> pointwise -> BN.

    ``kernels=()`` gives the plain pointwise ``conv_1x1`` (stride on the pointwise). Every
    candidate op uses ``act=nn.ReLU``; BiFPN's separable conv uses ``nn.SiLU`` (swish).
    """

    def __init__(
        self, channels: int, stride: int = 1, kernels: tuple[Kernel, ...] = ((3, 3),),
        dilation: int = 1, act: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [act()]
        for i, k in enumerate(kernels):
            layers.append(nn.Conv2d(channels, channels, k, stride if i == 0 else 1,
                                    same_padding(k, dilation), dilation, groups=channels,
                                    bias=False))
        layers += [
            nn.Conv2d(channels, channels, 1, 1 if kernels else stride, bias=False),
            nn.BatchNorm2d(channels),
        ]
        super().__init__(*layers)


def upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    """F_up of Eq. 1-2: bilinear resize of ``x`` to the spatial size of ``ref``."""
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def fit_to(x: Tensor, ref: Tensor) -> Tensor:
    """Nearest resize of ``x`` to ``ref``'s size when a stride-2 step did not land on it.

    Our backbones build pyramids with ``size_{i+1} = ceil(size_i / 2)``, which every stride-2
    step here reproduces exactly, so this is the identity for them; it keeps a pyramid with
    another rounding rule (e.g. floor pooling) usable.
    """
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


def downsample_to(x: Tensor, ref: Tensor) -> Tensor:
    """F_down of Eq. 2: 3x3 max pooling, stride 2, padding 1 (``ceil(size / 2)`` for odd sizes,
    ONNX-friendly unlike adaptive pooling), then :func:`fit_to` ``ref``."""
    return fit_to(F.max_pool2d(x, kernel_size=3, stride=2, padding=1), ref)


@dataclass(frozen=True)
class SepConvSpec:
    """The shape of one candidate op: its chain of depthwise kernels and their dilation."""

    kernels: tuple[Kernel, ...]
    dilation: int = 1


OP_SPECS: dict[str, SepConvSpec] = {
    "conv_1x1": SepConvSpec(()),
    "sep_conv_3x3": SepConvSpec(((3, 3),)),
    "sep_conv_5x5": SepConvSpec(((5, 5),)),
    "dil_conv_3x3_r2": SepConvSpec(((3, 3),), dilation=2),
    "dil_conv_3x3_r3": SepConvSpec(((3, 3),), dilation=3),
    "dil_conv_5x5_r2": SepConvSpec(((5, 5),), dilation=2),
    "conv_1x3": SepConvSpec(((1, 3),)),
    "conv_3x1": SepConvSpec(((3, 1),)),
    "conv_1x3_3x1": SepConvSpec(((1, 3), (3, 1))),
    "conv_1x5": SepConvSpec(((1, 5),)),
    "conv_5x1": SepConvSpec(((5, 1),)),
    "conv_1x5_5x1": SepConvSpec(((1, 5), (5, 1))),
}


def _register_candidate_ops() -> None:
    for name, spec in OP_SPECS.items():
        register_op(name)(partial(SepConv, kernels=spec.kernels, dilation=spec.dilation))


_register_candidate_ops()

S_FPN = register_op_set("S_FPN", PAPER_OP_SETS["S_FPN"])
S_CPM = register_op_set("S_CPM", PAPER_OP_SETS["S_CPM"])
