"""A faster CPU backward for the convolutions that NAS cells and light detectors are made of.

PyTorch's CPU ``convolution_backward`` (oneDNN, channels-last) is slow exactly where these
models spend their convolutions: measured at one thread, batch 16, it takes 5-20x the forward
of a dilated or 5x5 depthwise conv, 6x that of a 1x1 conv with few output channels, and its
bias gradient over an NHWC tensor costs more than the whole forward (README, "Training
speed on the CPU"). :class:`FastBackwardConv2d` computes the same three gradients another way:

- input, depthwise with stride 1: the forward conv with the kernel flipped (a transposed conv
  with stride 1 is a conv), ~10x faster than the native path;
- weight, 1x1 with stride 1, one group, few outputs and NHWC input: one GEMM over its rows;
- weight, dilated with stride 1: the undilated kernel's gradient over the ``d x d`` phases of
  the map stacked along the batch (space-to-batch, as atrous convs were first computed), ~4x
  faster than oneDNN's dilated depthwise weight gradient;
- bias: a sum over the NHWC rows;
- everything else: the native kernel, asked for that one gradient; a conv that none of
  these paths serves keeps the native autograd node (:func:`pays`).

:func:`use_fast_conv_backward` swaps it into a built model in place: it is an ``nn.Conv2d``
with the same parameters and state-dict keys, so checkpoints, export and inference see no
difference. It only acts on CPU tensors that need gradients.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ConvFastBackward(torch.autograd.Function):
    """``F.conv2d`` whose backward takes the fast paths of the module docstring."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None,  # type: ignore[override]
                stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.conv = (stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = input_grad(grad, x, weight, stride, padding, dilation, groups)
        if need_w:
            grad_w = weight_grad(grad, x, weight, stride, padding, dilation, groups)
        if need_b and ctx.has_bias:
            grad_b = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


#: Pointwise convs with fewer output channels than this take the GEMM for their weight gradient
#: (a prediction conv's 2 or 4 outputs: 1.9 ms against 14.7 native); wider ones are as fast or
#: faster natively (64 -> 64: 18.9 ms native, 20.8 as a GEMM).
NARROW_OUTPUT = 16


def _native(grad: Tensor, x: Tensor, weight: Tensor, stride, padding, dilation, groups: int,
            which: int) -> Tensor:
    """One gradient (0: input, 1: weight) from the native kernel."""
    mask = [which == 0, which == 1, False]
    out = torch.ops.aten.convolution_backward(grad, x, weight, None, list(stride), list(padding),
                                              list(dilation), False, [0, 0], groups, mask)
    return out[which]


def flips(x: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
          dilation: tuple[int, int], groups: int) -> tuple[int, int] | None:
    """The padding of the flipped-kernel conv that gives a depthwise conv's input gradient, or
    None where that path does not apply (not depthwise, strided, or over-padded)."""
    flipped = tuple(d * (k - 1) - p for d, k, p in zip(dilation, weight.shape[-2:], padding))
    depthwise = groups == x.shape[1] == weight.shape[0] and weight.shape[1] == 1
    if depthwise and stride == (1, 1) and min(flipped) >= 0:
        return flipped  # type: ignore[return-value]
    return None


def gemm_weight_grad(x: Tensor, weight: Tensor, stride: tuple[int, int],
                     padding: tuple[int, int], groups: int) -> bool:
    """Whether the weight gradient is one GEMM over NHWC rows: a narrow pointwise conv on a
    channels-last input of at least ``NARROW_OUTPUT`` channels (on fewer, or on NCHW rows,
    the native kernel is as fast or faster: 8 -> 4 at 80x80, 0.21 ms native, 0.35 as a GEMM)."""
    pointwise = weight.shape[-2:] == (1, 1) and stride == (1, 1) and padding == (0, 0)
    return (pointwise and groups == 1 and weight.shape[0] < NARROW_OUTPUT <= weight.shape[1]
            and x.is_contiguous(memory_format=torch.channels_last))


def splits_phases(stride: tuple[int, int], padding: tuple[int, int],
                  dilation: tuple[int, int]) -> bool:
    """Whether the weight gradient is taken over the dilation's phases (:func:`phases`): a
    dilated conv with stride 1 whose padding is a whole number of dilation steps."""
    return (dilation != (1, 1) and stride == (1, 1)
            and all(p % d == 0 for p, d in zip(padding, dilation)))


def phases(t: Tensor, dilation: tuple[int, int]) -> Tensor:
    """Space-to-batch: ``t`` (N, C, H, W), zero-padded at the bottom and right to multiples of
    the dilation (dh, dw), as its dh * dw phases ``t[..., a::dh, b::dw]`` stacked along the
    batch, phase-major; channels-last, one copy. A conv with dilation d over ``t`` is the
    undilated conv over each phase."""
    (n, c, h, w), (dh, dw) = t.shape, dilation
    hp, wp = -(-h // dh), -(-w // dw)
    rows = F.pad(t.permute(0, 2, 3, 1), (0, 0, 0, wp * dw - w, 0, hp * dh - h))
    rows = rows.reshape(n, hp, dh, wp, dw, c).permute(2, 4, 0, 1, 3, 5)
    return rows.reshape(dh * dw * n, hp, wp, c).permute(0, 3, 1, 2)


def input_grad(grad: Tensor, x: Tensor, weight: Tensor, stride: tuple[int, int],
               padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> Tensor:
    """d loss / d input of ``conv2d(x, weight)`` given d loss / d output ``grad``."""
    flipped = flips(x, weight, stride, padding, dilation, groups)
    if flipped is not None:
        return F.conv2d(grad, weight.flip(-1, -2), None, 1, flipped, dilation, groups)
    return _native(grad, x, weight, stride, padding, dilation, groups, 0)


def weight_grad(grad: Tensor, x: Tensor, weight: Tensor, stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> Tensor:
    """d loss / d weight of ``conv2d(x, weight)`` given d loss / d output ``grad``."""
    if gemm_weight_grad(x, weight, stride, padding, groups):
        rows_g = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])
        rows_x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        return (rows_g.t() @ rows_x).view_as(weight)
    if splits_phases(stride, padding, dilation):
        undilated = tuple(p // d for p, d in zip(padding, dilation))
        return _native(phases(grad, dilation), phases(x, dilation), weight, stride, undilated,
                       (1, 1), groups, 1)
    return _native(grad, x, weight, stride, padding, dilation, groups, 1)


def pays(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
         padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> bool:
    """Whether a fast path applies to this conv; elsewhere the native autograd node is used,
    since a Python backward costs tens of microseconds a call (a PC-DARTS cell of ~500 small
    convs took 194 ms a step through it, 167 ms natively)."""
    return (flips(x, weight, stride, padding, dilation, groups) is not None
            or gemm_weight_grad(x, weight, stride, padding, groups)
            or splits_phases(stride, padding, dilation)
            or (bias is not None and x.is_contiguous(memory_format=torch.channels_last)))


class FastBackwardConv2d(nn.Conv2d):
    """``nn.Conv2d`` with :class:`_ConvFastBackward` on CPU tensors that need gradients."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if input.device.type != "cpu" or not torch.is_grad_enabled() \
                or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        conv = (self.stride, self.padding, self.dilation, self.groups)   # tuples after init
        if not pays(input, weight, bias, *conv):
            return super()._conv_forward(input, weight, bias)
        return _ConvFastBackward.apply(input, weight, bias, *conv)


def use_fast_conv_backward(model: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` of ``model`` a :class:`FastBackwardConv2d` (in place);
    returns how many. Parameters, buffers and state-dict keys are unchanged."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = FastBackwardConv2d
            swapped += 1
    return swapped
