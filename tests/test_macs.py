"""MAC counter against hand counts, and the profiling helpers."""
from __future__ import annotations

import torch
from torch import nn

from detectors.macs import count_macs, count_parameters, measure_latency, profile_model


def test_conv_macs_hand_counts():
    x = torch.zeros(2, 8, 10, 12)   # batch 2: counts are per image
    dense = nn.Conv2d(8, 16, 3, padding=1)
    assert count_macs(dense, x) == 10 * 12 * 16 * 8 * 9
    strided = nn.Conv2d(8, 4, (1, 5), stride=2, padding=(0, 2))     # output 5 x 6
    assert count_macs(strided, x) == 5 * 6 * 4 * 8 * 5
    depthwise = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
    assert count_macs(depthwise, x) == 10 * 12 * 8 * 1 * 9
    grouped = nn.Conv2d(8, 6, 1, groups=2)
    assert count_macs(grouped, x) == 10 * 12 * 6 * 4

    class ScaledConv(nn.Conv2d):   # a Conv2d subclass is still counted
        pass

    assert count_macs(ScaledConv(8, 2, 1), x) == 10 * 12 * 2 * 8


def test_linear_bn_and_elementwise_ops():
    assert count_macs(nn.Linear(7, 3), torch.zeros(4, 7)) == 21
    block = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Upsample(scale_factor=2), nn.MaxPool2d(2))
    assert count_macs(block.eval(), torch.zeros(1, 3, 5, 5)) == 5 * 5 * 4 * 3


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
