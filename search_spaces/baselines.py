"""Feature modules: the registry, the common interface, and the hand-designed baselines of Table 2.

A feature module maps the backbone pyramid ``[C_2, ..., C_7]`` (a list, finest level first, one
map per name in ``levels``, ``channels`` channels each, strides 4..128) to an enhanced pyramid of
the same shapes, so that modules compose by name (e.g. an FPN followed by a CPM). Stride-2 steps
produce ``ceil(size / 2)`` and up-sampling resizes to the exact size of the finer map, so odd
sizes (a 641x479 image) work everywhere.

Registered names: ``none`` (identity, the Table 2 baseline without FEM), ``fpn`` (Eq. 1),
``fem_fpn`` (DSFD), ``bifpn`` (EfficientDet), ``pan`` (PANet), ``fem_cpm`` (DSFD), ``rfe``
(RefineFace), ``rfb`` (RFBNet); ``autofem_fpn`` and ``autofem_cpm`` are registered by fpn.py and
cpm.py. Every block is built from ``ops.ConvBNAct`` / ``ops.SepConv``.
"""
from __future__ import annotations

from typing import Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_search.registry import Registry
from search_spaces.ops import ConvBNAct, Kernel, SepConv, downsample_to, fit_to, upsample_to
from search_spaces.schemas import LEVELS

FeatureModuleFactory = Callable[..., nn.Module]

FEATURE_MODULES: Registry[FeatureModuleFactory] = Registry("feature module")
register_feature_module = FEATURE_MODULES.register
list_feature_modules = FEATURE_MODULES.names


def build_feature_module(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the registered feature module ``name`` (``factory(channels, **kwargs)``)."""
    return FEATURE_MODULES.build(name, channels, **kwargs)


class FeatureModule(nn.Module):
    """Base class: a pyramid (list of ``len(levels)`` maps, ``channels`` each) in and out."""

    def __init__(self, channels: int, levels: Sequence[str] = LEVELS) -> None:
        super().__init__()
        self.channels = channels
        self.levels = tuple(levels)

    def check_pyramid(self, feats: Sequence[Tensor]) -> None:
        """Raise a ValueError naming the module and the offending level on a malformed pyramid."""
        name = type(self).__name__
        if len(feats) != len(self.levels):
            raise ValueError(f"{name} expects {len(self.levels)} maps {self.levels}, "
                             f"got {len(feats)}")
        for level, f in zip(self.levels, feats):
            if f.dim() != 4 or f.shape[1] != self.channels:
                raise ValueError(f"{name}: level {level} must be (B, {self.channels}, H, W), "
                                 f"got {tuple(f.shape)}")


class PerLevel(FeatureModule):
    """One block per level, each with its own weights (CPM style): ``out_i = block_i(C_i)``."""

    def __init__(self, channels: int, blocks: Mapping[str, nn.Module]) -> None:
        super().__init__(channels, tuple(blocks))
        self.blocks = nn.ModuleDict(blocks)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self.check_pyramid(feats)
        return [self.blocks[level](f) for level, f in zip(self.levels, feats)]


@register_feature_module("none")
class IdentityPyramid(FeatureModule):
    """No feature module: the pyramid passes through (Table 2's baseline column)."""

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self.check_pyramid(feats)
        return list(feats)


# ----------------------------------------------------------------------------- FPN family


class TopDownFPN(FeatureModule):
    """Eq. 1: ``P_top = F_c(C_top)``, ``P_i = F_c(merge(C_i, F_up(P_{i+1})))``.

    ``merge="add"`` is FPN; ``merge="mul"`` is DSFD's FEM-FPN (element-wise product of the
    up-sampled top map and the lateral map). ``F_c`` is a 3x3 conv + BN + ReLU per level. The
    inputs already have ``channels`` channels, so there are no lateral 1x1 convs.
    """

    def __init__(self, channels: int, levels: Sequence[str] = LEVELS,
                 merge: Literal["add", "mul"] = "add") -> None:
        super().__init__(channels, levels)
        if merge not in ("add", "mul"):
            raise ValueError(f"merge must be 'add' or 'mul', got {merge!r}")
        self.merge = merge
        self.convs = nn.ModuleDict({level: ConvBNAct(channels, channels, 3) for level in levels})

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self.check_pyramid(feats)
        merge = torch.add if self.merge == "add" else torch.mul
        out: list[Tensor] = list(feats)
        top = len(feats) - 1
        for i in reversed(range(len(feats))):
            x = feats[i] if i == top else merge(feats[i], upsample_to(out[i + 1], feats[i]))
            out[i] = self.convs[self.levels[i]](x)
        return out


@register_feature_module("fpn")
def fpn(channels: int, levels: Sequence[str] = LEVELS) -> TopDownFPN:
    """FPN (Eq. 1): top-down, up-sample + add, 3x3 conv."""
    return TopDownFPN(channels, levels, merge="add")


@register_feature_module("fem_fpn")
def fem_fpn(channels: int, levels: Sequence[str] = LEVELS) -> TopDownFPN:
    """DSFD FEM-FPN: top-down, up-sample x lateral (element-wise product), 3x3 conv."""
    return TopDownFPN(channels, levels, merge="mul")


class FastNormalizedFusion(nn.Module):
    """BiFPN fusion: ``O = sum_i w_i I_i / (sum_i w_i + eps)``, ``w = ReLU(raw)``, raw init 1."""

    def __init__(self, n_inputs: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_inputs))
        self.eps = eps

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        w = F.relu(self.weight)
        w = w / (w.sum() + self.eps)
        return sum(wi * x for wi, x in zip(w, inputs))


@register_feature_module("bifpn")
class BiFPN(FeatureModule):
    """One BiFPN layer (EfficientDet): a top-down then a bottom-up pass of fused nodes.

    ``td_i = conv(fuse(C_i, up(td_{i+1})))`` with ``td_top = C_top``; ``out_bottom = td_bottom``,
    ``out_i = conv(fuse(C_i, td_i, down(out_{i-1})))`` (no ``td_i`` term at the top). ``conv`` is
    swish -> separable 3x3 -> BN; ``down`` is 3x3/2 max pooling.
    """

    def __init__(self, channels: int, levels: Sequence[str] = LEVELS) -> None:
        super().__init__(channels, levels)
        below_top, above_bottom = self.levels[:-1], self.levels[1:]
        self.td_fuse = nn.ModuleDict({lv: FastNormalizedFusion(2) for lv in below_top})
        self.td_conv = nn.ModuleDict({lv: SepConv(channels, act=nn.SiLU) for lv in below_top})
        self.out_fuse = nn.ModuleDict({lv: FastNormalizedFusion(2 if lv == self.levels[-1] else 3)
                                       for lv in above_bottom})
        self.out_conv = nn.ModuleDict({lv: SepConv(channels, act=nn.SiLU) for lv in above_bottom})

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self.check_pyramid(feats)
        n = len(feats)
        td = list(feats)
        for i in reversed(range(n - 1)):
            lv = self.levels[i]
            td[i] = self.td_conv[lv](self.td_fuse[lv]([feats[i], upsample_to(td[i + 1], feats[i])]))
        out = [td[0]]
        for i in range(1, n):
            lv = self.levels[i]
            inputs = [feats[i], td[i]] if i < n - 1 else [feats[i]]
            inputs.append(downsample_to(out[i - 1], feats[i]))
            out.append(self.out_conv[lv](self.out_fuse[lv](inputs)))
        return out


@register_feature_module("pan")
class PAN(FeatureModule):
    """PANet: FPN (Eq. 1), then bottom-up ``N_bottom = P_bottom``,
    ``N_{i+1} = conv3x3(P_{i+1} + conv3x3_stride2(N_i))`` (convs with BN + ReLU)."""

    def __init__(self, channels: int, levels: Sequence[str] = LEVELS) -> None:
        super().__init__(channels, levels)
        self.fpn = TopDownFPN(channels, levels, merge="add")
        self.down = nn.ModuleDict({lv: ConvBNAct(channels, channels, 3, stride=2)
                                   for lv in self.levels[1:]})
        self.fuse = nn.ModuleDict({lv: ConvBNAct(channels, channels, 3) for lv in self.levels[1:]})

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        p = self.fpn(feats)
        out = [p[0]]
        for i in range(1, len(p)):
            lv = self.levels[i]
            out.append(self.fuse[lv](p[i] + fit_to(self.down[lv](out[-1]), p[i])))
        return out


# ----------------------------------------------------------------------------- CPM family


def _check_divisible(channels: int, by: int, module: str) -> None:
    if channels % by:
        raise ValueError(f"{module} splits channels into parts of channels/{by}; "
                         f"channels={channels} is not divisible by {by}")


class DilatedContextBlock(nn.Module):
    """DSFD FEM-CPM, widths scaled from 512 to ``C``: branches of C/2, C/4, C/4 concatenated.

    ``a = conv3x3(x)``; a shared trunk ``t = conv3x3_d2(x)`` (C/2); ``b = conv3x3(t)``;
    ``c = conv3x3(conv3x3_d2(t))``; ``out = cat(a, b, c)``. Every conv is followed by BN + ReLU.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        _check_divisible(channels, 4, "fem_cpm")
        half, quarter = channels // 2, channels // 4
        self.branch_a = ConvBNAct(channels, half, 3)
        self.trunk = ConvBNAct(channels, half, 3, dilation=2)
        self.branch_b = ConvBNAct(half, quarter, 3)
        self.branch_c = nn.Sequential(ConvBNAct(half, quarter, 3, dilation=2),
                                      ConvBNAct(quarter, quarter, 3))

    def forward(self, x: Tensor) -> Tensor:
        t = self.trunk(x)
        return torch.cat([self.branch_a(x), self.branch_b(t), self.branch_c(t)], dim=1)


class MultiBranchResidual(nn.Module):
    """``ReLU(x + BN(conv1x1(cat(branch_1(x), ..., branch_n(x)))))``: the RFE / RFB pattern."""

    def __init__(self, channels: int, branches: Sequence[nn.Module], branch_channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.fuse = ConvBNAct(branch_channels * len(branches), channels, 1, act=None)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.fuse(torch.cat([b(x) for b in self.branches], dim=1)))


def rectangle_context_block(channels: int) -> MultiBranchResidual:
    """RefineFace RFE (our reading): four C/4 branches ``1x1 -> 1xk or kx1 -> 1x1`` for the
    rectangles 1x3, 3x1, 1x5, 5x1, concatenated, fused by a 1x1 conv, plus the input."""
    _check_divisible(channels, 4, "rfe")
    q = channels // 4
    rectangles: tuple[Kernel, ...] = ((1, 3), (3, 1), (1, 5), (5, 1))
    branches = [nn.Sequential(ConvBNAct(channels, q, 1), ConvBNAct(q, q, k), ConvBNAct(q, q, 1))
                for k in rectangles]
    return MultiBranchResidual(channels, branches, q)


def multi_dilation_context_block(channels: int) -> MultiBranchResidual:
    """RFB (RFBNet): three C/4 branches ``1x1 -> [kxk] -> 3x3 dilation d`` for (k, d) = (-, 1),
    (3, 3), (5, 5), concatenated, fused by a 1x1 conv, plus the input (identity shortcut)."""
    _check_divisible(channels, 4, "rfb")
    q = channels // 4
    branches = [
        nn.Sequential(ConvBNAct(channels, q, 1), *(ConvBNAct(q, q, k) for k in pre),
                      ConvBNAct(q, q, 3, dilation=d, act=None))
        for pre, d in (((), 1), ((3,), 3), ((5,), 5))
    ]
    return MultiBranchResidual(channels, branches, q)


@register_feature_module("fem_cpm")
def fem_cpm(channels: int, levels: Sequence[str] = LEVELS) -> PerLevel:
    """DSFD FEM-CPM on every level (own weights per level)."""
    return PerLevel(channels, {lv: DilatedContextBlock(channels) for lv in levels})


@register_feature_module("rfe")
def rfe(channels: int, levels: Sequence[str] = LEVELS) -> PerLevel:
    """RefineFace RFE on every level (own weights per level)."""
    return PerLevel(channels, {lv: rectangle_context_block(channels) for lv in levels})


@register_feature_module("rfb")
def rfb(channels: int, levels: Sequence[str] = LEVELS) -> PerLevel:
    """RFB on every level (own weights per level)."""
    return PerLevel(channels, {lv: multi_dilation_context_block(channels) for lv in levels})
