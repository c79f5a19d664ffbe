"""MAC counter against hand counts, and the profiling helpers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectors.engine.macs import count_macs, count_parameters, measure_latency, profile_model


@pytest.mark.parametrize("meta", [True, False])
def test_conv_macs_hand_counts(meta):
    x = torch.zeros(2, 8, 10, 12)   # batch 2: counts are per image
    dense = nn.Conv2d(8, 16, 3, padding=1)
    assert count_macs(dense, x, meta=meta) == 10 * 12 * 16 * 8 * 9
    strided = nn.Conv2d(8, 4, (1, 5), stride=2, padding=(0, 2))     # output 5 x 6
    assert count_macs(strided, x, meta=meta) == 5 * 6 * 4 * 8 * 5
    depthwise = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
    assert count_macs(depthwise, x, meta=meta) == 10 * 12 * 8 * 1 * 9
    grouped = nn.Conv2d(8, 6, 1, groups=2)
    assert count_macs(grouped, x, meta=meta) == 10 * 12 * 6 * 4

    class ScaledConv(nn.Conv2d):   # a Conv2d subclass is still counted
        pass

    assert count_macs(ScaledConv(8, 2, 1), x, meta=meta) == 10 * 12 * 2 * 8


def test_linear_bn_and_elementwise_ops():
    assert count_macs(nn.Linear(7, 3), torch.zeros(4, 7)) == 21
    block = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Upsample(scale_factor=2), nn.MaxPool2d(2))
    assert count_macs(block.eval(), torch.zeros(1, 3, 5, 5)) == 5 * 5 * 4 * 3


class _SlicedConv(nn.Module):
    """Calls ``F.conv2d`` on a slice of its weight, as ``SlotProjection`` does: no Conv2d module
    runs, so a counter of module hooks sees nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 12, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.weight[:, :6]) + F.conv2d(x, self.weight[:, 6:], padding=0)


def test_functional_convs_and_matmuls_are_counted():
    x = torch.zeros(3, 6, 5, 7)
    assert count_macs(_SlicedConv(), x) == 2 * 5 * 7 * 4 * 6
    assert count_macs(_SlicedConv(), x, meta=False) == 2 * 5 * 7 * 4 * 6
    w = torch.randn(5, 9)

    class _Matmul(nn.Module):
        def forward(self, a):
            return a @ w

    assert count_macs(_Matmul(), torch.zeros(2, 3, 5)) == 3 * 5 * 9

    class _Pyramid(nn.Module):   # a feature module: a list of maps in
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(6, 4, 1)

        def forward(self, feats):
            return [self.conv(f) for f in feats]

    pyramid = [torch.zeros(2, 6, 4, 4), torch.zeros(2, 6, 2, 2)]
    assert count_macs(_Pyramid(), pyramid) == (16 + 4) * 4 * 6


def test_meta_count_leaves_the_model_untouched():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_macs(model, torch.rand(2, 3, 6, 6)) == 4 * 4 * 4 * 27
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.device.type == "cpu" for p in model.parameters())


class _TwoBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 2, 3, padding=1)
        self.b = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.a(x) * self.b(x) + x[:, :2]


def test_profile_model_counts_params_and_macs_at_width_x_height():
    model = _TwoBranch().train()
    prof = profile_model(model, size=(8, 4))
    assert prof.params == count_parameters(model) == (2 * 3 * 9 + 2) + (2 * 3 + 2)
    assert prof.macs == 8 * 4 * 2 * (3 * 9 + 3)
    assert model.training, "profiling must restore the training mode"
    assert measure_latency(model, size=(8, 4), repeats=2, warmup=1) > 0
