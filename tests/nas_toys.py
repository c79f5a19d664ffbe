"""Tiny ops, a toy supernet and a toy task for the engine's tests (no search_spaces import).

Ops are registered under ``test_*`` names, once per process whatever the import path.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genotypes.schema import Genotype
from nas_search.cell import SearchCell
from nas_search.registry import has_op, register_op
from nas_search.supernet import Supernet


class Scale(nn.Module):
    """``factor * x``: a weight-free op whose output is known exactly."""

    def __init__(self, channels: int, stride: int, factor: float):
        super().__init__()
        if stride != 1:
            raise ValueError("Scale ops are stride-1 only")
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return self.factor * x


class ChannelProbe(Scale):
    """The identity, recording the channel count of every input it sees."""

    def __init__(self, channels: int, stride: int):
        super().__init__(channels, stride, 1.0)
        self.seen: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.shape[1])
        return x


def conv3(channels: int, stride: int) -> nn.Module:
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False)


def conv1(channels: int, stride: int) -> nn.Module:
    return nn.Conv2d(channels, channels, 1, stride, bias=False)


def double(channels: int, stride: int) -> nn.Module:
    return Scale(channels, stride, 2.0)


def negate(channels: int, stride: int) -> nn.Module:
    return Scale(channels, stride, -1.0)


TEST_OPS = {"test_conv3": conv3, "test_conv1": conv1, "test_double": double,
            "test_negate": negate, "test_probe": ChannelProbe}
for _name, _factory in TEST_OPS.items():
    if not has_op(_name):
        register_op(_name)(_factory)

CONV_OPS = ("test_conv3", "test_conv1")


class ToySupernet(Supernet):
    """One or more SearchCells on ``channels``-channel inputs, then pool and a linear layer."""

    def __init__(self, channels: int = 4, n_nodes: int = 3, n_cells: int = 1,
                 ops: tuple[str, ...] = CONV_OPS, mode: str = "top1_tree",
                 concat: str = "cat_leaf", **cell_kwargs: Any):
        super().__init__()
        self.cells = nn.ModuleList(SearchCell(channels, n_nodes, ops, mode, concat, **cell_kwargs)
                                   for _ in range(n_cells))
        self.head = nn.Linear(channels, 2)

    def forward(self, x: Tensor) -> Tensor:
        for cell in self.cells:
            x = cell(x)
        return self.head(x.mean(dim=(2, 3)))

    def genotype(self, top_k: int = 2) -> Genotype:
        return Genotype(cells={f"cell{i}": c.derive(top_k) for i, c in enumerate(self.cells)})


@dataclass
class ToyTask:
    """Random 4x4 inputs labelled by the sign of their mean, deterministic in ``(seed, epoch)``.

    ``nan_epoch``: training batches of that epoch are NaN (to test the non-finite loss guard).
    ``shard``: added to the data seed (one shard per rank in a multi-process test).
    """

    mode: str = "top1_tree"
    concat: str = "cat_leaf"
    op_sampling: bool = True
    k: int = 2
    n_batches: int = 3
    seed: int = 0
    shard: int = 0
    nan_epoch: int | None = None
    name: str = "toy"
    built: list[ToySupernet] = field(default_factory=list, repr=False)

    def build_supernet(self) -> ToySupernet:
        model = ToySupernet(mode=self.mode, concat=self.concat, k=self.k,
                            op_sampling=self.op_sampling)
        self.built.append(model)
        return model

    def _batches(self, epoch: int, stream: int) -> Iterator[tuple[Tensor, Tensor]]:
        key = np.random.SeedSequence([self.seed, self.shard, epoch, stream]).generate_state(1)
        gen = torch.Generator().manual_seed(int(key[0]))
        for _ in range(self.n_batches):
            x = torch.randn(8, 4, 4, 4, generator=gen)
            if stream == 0 and epoch == self.nan_epoch:
                x = torch.full_like(x, float("nan"))
            yield x, (x.mean(dim=(1, 2, 3)) > 0).long()

    def train_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._batches(epoch, 0)

    def val_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._batches(epoch, 1)

    def loss(self, model: Supernet, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def evaluate(self, model: Supernet) -> dict[str, float]:
        losses = [float(self.loss(model, b)) for b in self._batches(10_000, 1)]
        return {"val_loss": float(np.mean(losses))}

    def describe(self) -> dict[str, Any]:
        return {"dataset": "toy-random"}
