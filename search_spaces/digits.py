"""A seconds-on-a-CPU search task: 8x8 handwritten digits (scikit-learn's bundled ``load_digits``).

It exercises the whole engine (every search strategy, resume, history, genotype export) on real
images without any download, and is what the engine's tests and the CLI's demo search run.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

import search_spaces.ops  # noqa: F401  (registers the S_FPN / S_CPM ops)
from genotypes.schema import ConcatMode, Genotype, GenotypeMeta
from nas_search.cell import SearchCell
from nas_search.registry import get_op_set, register_op_set
from nas_search.strategies import SearchStrategy
from nas_search.supernet import Supernet

Batch = tuple[Tensor, Tensor]

#: A 4-op subset of S_CPM, one per family (pointwise, square, rectangular, dilated), that keeps
#: a PC-DARTS search of the digits supernet at a few seconds on one CPU core.
S_CPM_LITE = register_op_set("S_CPM_LITE", (
    "conv_1x1", "sep_conv_3x3", "conv_1x3_3x1", "dil_conv_3x3_r2"))

#: Fractions of the 1797 images for the weight step, the architecture step, and the test.
SPLIT = (0.6, 0.2, 0.2)


class DigitsSupernet(Supernet):
    """stem conv3x3 + BN to ``channels`` -> one :class:`SearchCell` -> ReLU, 2x2 average pool
    to 4x4, linear (a global pool would throw away the layout an 8x8 digit is recognised by)."""

    def __init__(self, channels: int, n_nodes: int, op_set: str,
                 strategy: str | SearchStrategy, concat: ConcatMode, k: int, op_sampling: bool,
                 n_classes: int = 10):
        super().__init__()
        self.op_set = op_set
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        self.cell = SearchCell(channels, n_nodes, get_op_set(op_set), strategy, concat, k,
                               op_sampling)
        self.head = nn.Linear(channels * 16, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.avg_pool2d(F.relu(self.cell(self.stem(x))), 2).flatten(1))

    def genotype(self, top_k: int = 2) -> Genotype:
        return Genotype(cells={"cell": self.cell.derive(top_k)},
                        meta=GenotypeMeta(search_space="digits", op_set=self.op_set))


@dataclass
class DigitsSearchTask:
    """:class:`~nas_search.task.SearchTask` over scikit-learn's digits, split by ``seed``.

    ``mode`` is the search strategy, a registered name or an object. Batches are full (a last
    partial batch is dropped); ``batches_per_epoch`` caps an epoch (None: one pass over the split).
    """

    mode: str | SearchStrategy = "top1_tree"
    concat: ConcatMode = "cat_leaf"
    n_nodes: int = 4
    channels: int = 16
    k: int = 2
    op_set: str = "S_CPM_LITE"
    op_sampling: bool = False
    batch_size: int = 32
    batches_per_epoch: int | None = None
    seed: int = 0
    name: str = "digits"
    splits: dict[str, Batch] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        digits = load_digits()
        images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
        labels = torch.tensor(digits.target, dtype=torch.long)
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(len(labels)))
        bounds = np.cumsum([0, *(round(f * len(labels)) for f in SPLIT[:-1]), len(labels)])
        self.splits = {name: (images[order[a:b]], labels[order[a:b]])
                       for name, a, b in zip(("train", "val", "test"), bounds[:-1], bounds[1:])}

    def build_supernet(self) -> DigitsSupernet:
        return DigitsSupernet(self.channels, self.n_nodes, self.op_set, self.mode, self.concat,
                              self.k, self.op_sampling)

    def _batches(self, split: str, epoch: int) -> Iterator[Batch]:
        """Shuffled by ``(seed, epoch, split)``, independent of the global RNG (resume-exact)."""
        x, y = self.splits[split]
        stream = ("train", "val").index(split)
        rng = np.random.default_rng([self.seed, epoch, stream])
        order = torch.from_numpy(rng.permutation(len(y)))
        starts = range(0, len(y) - self.batch_size + 1, self.batch_size)
        for start in list(starts)[: self.batches_per_epoch]:
            idx = order[start:start + self.batch_size]
            yield x[idx], y[idx]

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        return self._batches("train", epoch)

    def val_batches(self, epoch: int) -> Iterator[Batch]:
        return self._batches("val", epoch)

    def loss(self, model: Supernet, batch: Batch) -> Tensor:
        x, y = (t.to(next(model.parameters()).device) for t in batch)
        return F.cross_entropy(model(x), y)

    def evaluate(self, model: Supernet) -> dict[str, float]:
        metrics = {}
        for split in ("val", "test"):
            x, y = (t.to(next(model.parameters()).device) for t in self.splits[split])
            logits = model(x)
            metrics[f"{split}_loss"] = float(F.cross_entropy(logits, y))
            metrics[f"{split}_acc"] = float((logits.argmax(1) == y).float().mean())
        return metrics

    def describe(self) -> dict[str, Any]:
        return {"dataset": "sklearn-digits",
                **{f"n_{name}": len(y) for name, (_, y) in self.splits.items()}}
