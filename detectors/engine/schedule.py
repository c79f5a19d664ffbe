"""The training recipe's optimizer and learning-rate schedule (Sec. 4.1).

The lr is a pure function of the iteration (:func:`lr_at`), set on the optimizer before each
step, so a checkpoint needs no scheduler state beyond the iteration counter.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from detectors.engine.config import OptimConfig, ScheduleConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` names, at ``cfg.lr`` (see :class:`OptimConfig`)."""
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name {cfg.name!r}: use 'sgd' or 'adamw'")


def lr_at(iteration: int, iters_per_epoch: int, base_lr: float, schedule: ScheduleConfig,
          budget_used: float = 0.0) -> float:
    """Sec. 4.1: linear warm-up ``warmup_start_lr -> base_lr`` over ``warmup_iters``, then the
    ``step`` policy, ``base_lr * gamma ** (milestones passed)``, or the ``cosine`` one
    (:class:`~detectors.engine.config.ScheduleConfig`). An epoch milestone is passed at the first
    iteration of its epoch, a budget milestone once ``budget_used`` (the share of
    ``run.max_minutes`` elapsed) reaches it."""
    if iteration < schedule.warmup_iters:
        t = iteration / schedule.warmup_iters
        return schedule.warmup_start_lr + t * (base_lr - schedule.warmup_start_lr)
    by_epoch = schedule.milestone_unit == "epoch"
    if schedule.policy == "cosine":
        done = iteration / (schedule.epochs * iters_per_epoch) if by_epoch else budget_used
        r = schedule.min_lr_ratio
        return base_lr * (r + (1 - r) * (1 + math.cos(math.pi * min(done, 1.0))) / 2)
    where = iteration // iters_per_epoch if by_epoch else budget_used
    return base_lr * schedule.gamma ** sum(where >= m for m in schedule.milestones)
