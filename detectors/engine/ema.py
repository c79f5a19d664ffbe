"""An exponential moving average of a detector's weights, the model a run ships.

``optim.ema_decay`` > 0 keeps, beside the trained network, ``w_ema <- d w_ema + (1 - d) w``
after every optimizer step, over parameters and BatchNorm buffers alike (float tensors; the
integer batch counters are copied). The decay warms up as TensorFlow's
``ExponentialMovingAverage(num_updates)`` does, ``d_n = min(decay, (1 + n) / (10 + n))``, so
the first updates do not drag the average back to the random initialisation: a short run
(2,000 updates of a 40-minute CPU run) would otherwise still weigh it by ``0.999^2000 = 0.14``.

The paper trains with SGD and says nothing of weight averaging; this is our choice for short,
high-lr runs from scratch (README, "Detectors that learn"). Built on PyTorch's
:class:`~torch.optim.swa_utils.AveragedModel`, whose state dict (average and count) goes into
``last.pt``.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_decay_at(updates: int, decay: float) -> float:
    """The decay of the average's update after ``updates`` earlier ones (warmed up)."""
    return min(decay, (1 + updates) / (10 + updates))


def weight_ema(model: nn.Module, decay: float) -> AveragedModel:
    """A moving average of ``model``'s parameters and buffers with ``decay`` (see module)."""

    def update(averaged: list[Tensor], current: list[Tensor], updates: Tensor) -> None:
        weight = 1.0 - ema_decay_at(int(updates), decay)
        for avg, cur in zip(averaged, current, strict=True):
            if avg.is_floating_point():
                avg.lerp_(cur, weight)
            else:                   # BatchNorm's num_batches_tracked
                avg.copy_(cur)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
