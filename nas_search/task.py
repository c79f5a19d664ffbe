"""What a search needs from a task: data, loss, evaluation, and a supernet to search."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from nas_search.supernet import Supernet


@runtime_checkable
class SearchTask(Protocol):
    """A task searched by :func:`nas_search.search.search`.

    Reproducibility contract: ``train_batches(epoch)`` and ``val_batches(epoch)`` must be
    deterministic functions of the task's seed and ``epoch`` (shuffle with a generator seeded by
    both, not with the global RNG), so that a resumed search replays the same batches. Batches may
    live on the CPU: ``loss`` moves them to the model's device. In a multi-process search each
    rank's task yields its own shard.
    """

    name: str

    def build_supernet(self) -> Supernet:
        """A freshly initialised supernet (on the CPU; the search moves it)."""
        ...

    def train_batches(self, epoch: int) -> Iterable[Any]:
        """Batches for the weight step (the ``w`` of the bilevel problem)."""
        ...

    def val_batches(self, epoch: int) -> Iterable[Any]:
        """Held-out batches for the architecture step."""
        ...

    def loss(self, model: Supernet, batch: Any) -> Tensor:
        """Scalar training loss of ``model`` on ``batch``."""
        ...

    def evaluate(self, model: Supernet) -> dict[str, float]:
        """Validation metrics, at least ``"val_loss"`` (called in eval mode, without grad)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance for the genotype's metadata: at least ``"dataset"``."""
        ...
