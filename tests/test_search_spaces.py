"""Candidate ops, op sets, resizing helpers and the hand-designed feature modules (Table 2)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import search_spaces.cpm  # noqa: F401  (registers autofem_cpm)
import search_spaces.fpn  # noqa: F401  (registers autofem_fpn)
from nas_search.registry import build_op, get_op_set
from search_spaces.baselines import (
    FastNormalizedFusion, build_feature_module, list_feature_modules, register_feature_module,
)
from search_spaces.ops import downsample_to, fit_to, upsample_to
from search_spaces.schemas import LEVELS

C = 8
#: The pyramid of a 641x479 image: ceil(641/s) x ceil(479/s) for strides 4..128.
PYRAMID_SIZES = [(math.ceil(641 / s), math.ceil(479 / s)) for s in (4, 8, 16, 32, 64, 128)]
BASELINES = ("none", "fpn", "fem_fpn", "bifpn", "pan", "fem_cpm", "rfe", "rfb")

#: (depthwise kernels, dilation) of every op: the footprint and parameter count follow from it.
OP_SHAPES = {
    "conv_1x1": ((), 1),
    "sep_conv_3x3": (((3, 3),), 1),
    "sep_conv_5x5": (((5, 5),), 1),
    "dil_conv_3x3_r2": (((3, 3),), 2),
    "dil_conv_3x3_r3": (((3, 3),), 3),
    "dil_conv_5x5_r2": (((5, 5),), 2),
    "conv_1x3": (((1, 3),), 1),
    "conv_3x1": (((3, 1),), 1),
    "conv_1x3_3x1": (((1, 3), (3, 1)), 1),
    "conv_1x5": (((1, 5),), 1),
    "conv_5x1": (((5, 1),), 1),
    "conv_1x5_5x1": (((1, 5), (5, 1)), 1),
}



def pyramid(sizes=PYRAMID_SIZES, channels=C, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, h, w, generator=g) for h, w in sizes]


# ----------------------------------------------------------------------------- ops


def test_op_sets_follow_the_paper_order():
    assert get_op_set("S_FPN") == (
        "conv_1x1", "sep_conv_3x3", "sep_conv_5x5",
        "dil_conv_3x3_r2", "dil_conv_3x3_r3", "dil_conv_5x5_r2")
    assert get_op_set("S_CPM") == (
        "conv_1x1", "sep_conv_3x3", "sep_conv_5x5",
        "conv_1x3", "conv_3x1", "conv_1x3_3x1",
        "conv_1x5", "conv_5x1", "conv_1x5_5x1",
        "dil_conv_3x3_r2", "dil_conv_3x3_r3", "dil_conv_5x5_r2")
    assert set(get_op_set("S_CPM")) == set(OP_SHAPES)


@pytest.mark.parametrize("name", list(OP_SHAPES))
def test_op_keeps_size_at_stride_1_and_halves_at_stride_2(name):
    x = torch.randn(2, C, 13, 10)
    assert build_op(name, C, 1)(x).shape == (2, C, 13, 10)
    assert build_op(name, C, 2)(x).shape == (2, C, 7, 5)


@pytest.mark.parametrize("name", list(OP_SHAPES))
def test_op_is_depthwise_separable(name):
    """Depthwise convs of the listed kernels, one pointwise conv, one affine BN: exact count."""
    kernels, dilation = OP_SHAPES[name]
    op = build_op(name, C, 1)
    convs = [m for m in op.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [*kernels, (1, 1)]
    assert all(c.groups == C and c.dilation == (dilation, dilation) for c in convs[:-1])
    assert convs[-1].groups == 1
    n_params = sum(p.numel() for p in op.parameters())
    assert n_params == C * sum(kh * kw for kh, kw in kernels) + C * C + 2 * C


@pytest.mark.parametrize("name", list(OP_SHAPES))
def test_op_receptive_field(name):
    """The input pixels that reach one output pixel span the kernel chain's dilated extent."""
    kernels, d = OP_SHAPES[name]
    op = build_op(name, C, 1).eval()
    x = (torch.rand(1, C, 21, 21) + 0.1).requires_grad_()  # positive: ReLU passes everything
    op(x)[0, :, 10, 10].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1))).unbind(1)
    height = 1 + sum(d * (kh - 1) for kh, _ in kernels)
    width = 1 + sum(d * (kw - 1) for _, kw in kernels)
    assert (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1) == (height, width)


def test_resize_helpers_match_the_reference_size():
    x, ref = torch.randn(1, 2, 11, 8), torch.empty(1, 2, 21, 15)
    assert upsample_to(x, ref).shape[-2:] == (21, 15)
    assert downsample_to(ref, x).shape[-2:] == (11, 8)  # ceil(21/2), ceil(15/2)
    assert fit_to(x, x) is x
    assert fit_to(torch.randn(1, 2, 10, 7), x).shape[-2:] == (11, 8)  # floor-rounded pyramid


def test_downsample_is_3x3_stride_2_max_pooling():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    expected = torch.tensor([[6.0, 8.0, 9.0], [16.0, 18.0, 19.0], [21.0, 23.0, 24.0]])
    assert torch.equal(downsample_to(x, torch.empty(1, 1, 3, 3))[0, 0], expected)


# ----------------------------------------------------------------------------- registry


def test_feature_module_registry():
    assert set(BASELINES) | {"autofem_fpn", "autofem_cpm"} <= set(list_feature_modules())
    with pytest.raises(KeyError, match="unknown feature module 'fpnn'"):
        build_feature_module("fpnn", C)
    with pytest.raises(KeyError, match="already registered"):
        register_feature_module("fpn")(lambda channels: nn.Identity())


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_keeps_every_level_shape_at_odd_sizes(name):
    feats = pyramid()
    out = build_feature_module(name, C)(feats)
    assert [tuple(o.shape) for o in out] == [(1, C, h, w) for h, w in PYRAMID_SIZES]


def test_pyramid_errors_name_the_problem():
    module = build_feature_module("fpn", C)
    with pytest.raises(ValueError, match="expects 6 maps"):
        module(pyramid()[:5])
    bad = pyramid()
    bad[3] = torch.randn(1, C + 1, *PYRAMID_SIZES[3])
    with pytest.raises(ValueError, match="level P5"):
        module(bad)
    with pytest.raises(ValueError, match="not divisible by 4"):
        build_feature_module("fem_cpm", 6)


# ----------------------------------------------------------------------------- behaviour

SMALL = [(21, 15), (11, 8), (6, 4), (3, 2), (2, 1), (1, 1)]


def influence(name: str, out_level: int, in_level: int) -> float:
    """|d out[out_level] / d feats[in_level]|: whether information flows between two levels."""
    torch.manual_seed(0)
    module = build_feature_module(name, C).eval()
    feats = [f.requires_grad_() for f in pyramid(SMALL)]
    module(feats)[out_level].sum().backward()
    grad = feats[in_level].grad
    return 0.0 if grad is None else float(grad.abs().sum())


@pytest.mark.parametrize("name, top_sees_bottom, bottom_sees_top", [
    ("none", False, False), ("fpn", False, True), ("fem_fpn", False, True),
    ("bifpn", True, True), ("pan", True, True),
    ("fem_cpm", False, False), ("rfe", False, False), ("rfb", False, False),
])
def test_information_flow_between_levels(name, top_sees_bottom, bottom_sees_top):
    """Top-down modules pass the top to the bottom, bidirectional ones both ways, CPMs neither."""
    assert (influence(name, -1, 0) > 0) == top_sees_bottom
    assert (influence(name, 0, -1) > 0) == bottom_sees_top


def test_fem_fpn_merges_by_product_fpn_by_sum():
    """With zero lateral maps below the top, the product kills the top-down signal, the sum not."""
    feats = pyramid(SMALL)
    feats = [torch.zeros_like(f) for f in feats[:-1]] + feats[-1:]
    torch.manual_seed(0)
    fem = build_feature_module("fem_fpn", C).eval()
    torch.manual_seed(0)
    fpn = build_feature_module("fpn", C).eval()
    constant = fem.convs["P2"](torch.zeros_like(feats[0]))
    assert torch.allclose(fem(feats)[0], constant)
    assert not torch.allclose(fpn(feats)[0], constant)


def test_fast_normalized_fusion():
    fusion = FastNormalizedFusion(2)
    a, b = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 5.0)
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([1.0, 3.0]))
    assert torch.allclose(fusion([a, b]), (2.0 + 15.0) / (4.0 + 1e-4) * torch.ones_like(a))
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([-1.0, 2.0]))  # ReLU drops the negative weight
    assert torch.allclose(fusion([a, b]), 10.0 / (2.0 + 1e-4) * torch.ones_like(a))


@pytest.mark.parametrize("name", ["rfe", "rfb"])
def test_residual_context_blocks_add_the_input(name):
    """With the fuse BN zeroed, the branches contribute nothing: out = ReLU(x)."""
    module = build_feature_module(name, C).eval()
    for block in module.blocks.values():
        nn.init.zeros_(block.fuse[1].weight)
    feats = pyramid(SMALL)
    for x, y in zip(feats, module(feats)):
        assert torch.equal(y, torch.relu(x))


def test_fem_cpm_branch_widths():
    block = build_feature_module("fem_cpm", 16).blocks["P3"]
    x = torch.randn(1, 16, 9, 7)
    t = block.trunk(x)
    widths = [block.branch_a(x).shape[1], block.branch_b(t).shape[1], block.branch_c(t).shape[1]]
    assert widths == [8, 4, 4]
    assert set(build_feature_module("fem_cpm", 16).blocks) == set(LEVELS)
