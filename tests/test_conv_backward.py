"""The fast CPU conv backward gives the native gradients, for every path it takes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_search.runtime import FastBackwardConv2d, use_fast_conv_backward
from nas_search.runtime.conv_backward import phases, splits_phases

CL, NCHW = torch.channels_last, torch.contiguous_format


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, dilation, groups, bias, fmt", [
    (8, 8, 3, 1, 1, 1, 8, False, CL),             # depthwise: flipped-kernel input gradient
    (8, 8, 5, 1, 4, 2, 8, True, CL),              # dilated 5x5 depthwise, with bias
    (8, 8, 3, 1, 3, 3, 8, False, NCHW),           # dilated 3x3 depthwise, NCHW
    (8, 8, (3, 5), 1, (1, 2), 1, 8, True, NCHW),  # non-square kernel
    (6, 4, 3, 1, 0, 2, 1, False, CL),             # dense dilated, unpadded: phase weight grad
    (8, 8, (3, 5), 1, (2, 6), (2, 3), 8, False, CL),  # per-axis dilation: phases 2 x 3
    (8, 8, 3, 1, 3, 2, 8, False, CL),             # padding not a whole dilation step: native
    (8, 8, 3, 1, 0, 1, 8, False, CL),             # no padding
    (16, 4, 1, 1, 0, 1, 1, True, CL),             # narrow pointwise: GEMM weight gradient
    (16, 4, 1, 1, 0, 1, 1, True, NCHW),           # the same on NCHW rows: native
    (8, 32, 1, 1, 0, 1, 1, False, CL),            # wide pointwise: native
    (8, 6, 3, 2, 1, 1, 2, True, CL),              # grouped, strided: native
    (8, 8, 3, 2, 1, 1, 8, False, CL),             # strided depthwise: native
])
def test_fast_backward_equals_native(cin, cout, kernel, stride, padding, dilation, groups, bias,
                                     fmt):
    torch.manual_seed(0)
    native = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=bias).double()
    fast = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=bias).double()
    fast.load_state_dict(native.state_dict())
    assert use_fast_conv_backward(fast) == 1 and isinstance(fast, FastBackwardConv2d)
    x = torch.randn(3, cin, 11, 13, dtype=torch.double).contiguous(memory_format=fmt)
    x_native, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_native, y_fast = native(x_native), fast(x_fast)
    assert torch.equal(y_native, y_fast)
    grad = torch.randn_like(y_native)
    y_native.backward(grad)
    y_fast.backward(grad)
    torch.testing.assert_close(x_fast.grad, x_native.grad)
    torch.testing.assert_close(fast.weight.grad, native.weight.grad)
    if bias:
        torch.testing.assert_close(fast.bias.grad, native.bias.grad)


def test_swap_keeps_parameters_and_skips_other_convs():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 4, 2))
    keys = list(model.state_dict())
    assert use_fast_conv_backward(model) == 1
    assert list(model.state_dict()) == keys and type(model[2]) is nn.ConvTranspose2d
    with torch.no_grad():                           # no gradient needed: the plain forward
        assert model(torch.randn(1, 3, 8, 8)).shape == (1, 4, 7, 7)


def test_frozen_input_gets_no_gradient():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    use_fast_conv_backward(conv)
    x = torch.randn(2, 3, 6, 6)                     # an image: no gradient wanted
    conv(x).sum().backward()
    assert x.grad is None and conv.weight.grad is not None


def test_a_conv_no_fast_path_serves_keeps_the_native_node():
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)      # dense 3x3, no bias: nothing to gain
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    use_fast_conv_backward(conv)
    use_fast_conv_backward(dw)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    assert "ConvolutionBackward" in type(conv(x).grad_fn).__name__
    assert "ConvFastBackward" in type(dw(x).grad_fn).__name__


@pytest.mark.parametrize("dilation, size",
                         [((2, 2), (11, 13)), ((3, 2), (9, 8)), ((2, 3), (4, 4))])
def test_a_dilated_conv_is_the_undilated_conv_over_its_phases(dilation, size):
    torch.manual_seed(0)
    x, weight = torch.randn(2, 3, *size, dtype=torch.double), torch.randn(3, 1, 3, 3).double()
    padding = dilation                                  # one dilation step: "same" at 3x3
    dilated = F.conv2d(x, weight, None, 1, padding, dilation, 3)
    per_phase = F.conv2d(phases(x, dilation), weight, None, 1, 1, 1, 3)
    dh, dw = dilation
    assert per_phase.shape[-2:] == (-(-size[0] // dh), -(-size[1] // dw))
    for a in range(dh):
        for b in range(dw):
            block = per_phase[(a * dw + b) * 2:(a * dw + b + 1) * 2]   # phase (a, b), both images
            rows, cols = len(range(a, size[0], dh)), len(range(b, size[1], dw))
            torch.testing.assert_close(block[..., :rows, :cols], dilated[..., a::dh, b::dw])
    assert phases(x, dilation).is_contiguous(memory_format=torch.channels_last)


def test_phase_path_only_for_stride_one_and_whole_dilation_steps():
    assert splits_phases((1, 1), (2, 4), (2, 2))
    assert not splits_phases((1, 1), (1, 1), (1, 1))      # undilated
    assert not splits_phases((2, 2), (2, 2), (2, 2))      # strided
    assert not splits_phases((1, 1), (3, 2), (2, 2))      # 3 is not a whole step of 2
