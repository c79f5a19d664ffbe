"""Activation memory of a forward + backward pass, measured rather than estimated."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch
from torch import Tensor


class ActivationMeter:
    """Context manager measuring the passes run inside it.

    ``saved_bytes`` (any device): the bytes autograd saves for the backward pass, each storage
    counted once (views share it); leaf tensors that require grad (parameters, architecture
    parameters) and the storages of ``exclude`` are not activations and are skipped.
    ``saved_by``: the same bytes by what made the saved tensor and its channels (dim 1), e.g.
    ``"NativeBatchNormBackward0, 8 ch"`` (``"no grad"`` for tensors outside autograd).
    ``cuda_peak_bytes`` (CUDA ``device`` only, else None): ``torch.cuda.max_memory_allocated``
    above the memory held on entry, which also counts transient buffers and gradients.
    """

    def __init__(self, device: str | torch.device | None = None,
                 exclude: Iterable[Tensor] = ()) -> None:
        self.device = None if device is None else torch.device(device)
        self.saved_bytes = 0
        self.saved_by: Counter[str] = Counter()
        self.cuda_peak_bytes: int | None = None
        self._storages = {t.untyped_storage().data_ptr() for t in exclude}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._held = 0

    @property
    def cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def _pack(self, t: Tensor) -> Tensor:
        if not (t.is_leaf and t.requires_grad):
            storage = t.untyped_storage()
            if storage.data_ptr() not in self._storages:
                self._storages.add(storage.data_ptr())
                self.saved_bytes += storage.nbytes()
                maker = "no grad" if t.grad_fn is None else t.grad_fn.name()
                self.saved_by[f"{maker}, {t.shape[1] if t.dim() > 1 else '-'} ch"] += \
                    storage.nbytes()
        return t

    def __enter__(self) -> ActivationMeter:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._held = torch.cuda.memory_allocated(self.device)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.cuda_peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._held

    @property
    def bytes(self) -> int:
        """The CUDA peak on a CUDA device, else the saved bytes."""
        return self.saved_bytes if self.cuda_peak_bytes is None else self.cuda_peak_bytes
