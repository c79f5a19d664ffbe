"""The weights' moving average: its warmed-up decay and its update of parameters and buffers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detectors.engine.ema import ema_decay_at, weight_ema


def test_decay_warms_up_then_holds():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(10**6, 0.999) == 0.999
    assert [ema_decay_at(n, 0.999) for n in range(5)] == sorted(ema_decay_at(n, 0.999)
                                                                 for n in range(5))


def test_average_follows_the_formula_over_weights_and_batchnorm_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    ema = weight_ema(model, decay=0.5)
    snapshots = []
    for _ in range(3):
        model(torch.randn(4, 2, 5, 5))                  # moves BN's running statistics
        with torch.no_grad():
            model[0].weight.add_(torch.randn_like(model[0].weight))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        ema.update_parameters(model)
    expected = dict(snapshots[0])                       # the first update copies
    for n, snap in enumerate(snapshots[1:], start=1):
        d = ema_decay_at(n, 0.5)                        # 0.2, then 0.25
        expected = {k: d * v + (1 - d) * snap[k] if v.is_floating_point() else snap[k]
                    for k, v in expected.items()}
    averaged = ema.module.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value, msg=key)
    assert averaged["1.num_batches_tracked"] == 3
    assert not torch.equal(averaged["0.weight"], model[0].weight)
