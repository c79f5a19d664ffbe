"""Parameter, multiply-add (MAC) and CPU-latency profiling (Table 5's #Params, #FLOPS, LAT).

Table 5's "#FLOPS" are multiply-adds, so we count MACs: ``torch.utils.flop_counter``'s
``FlopCounterMode`` counts the FLOPs of every aten convolution and matrix product the forward
pass dispatches (modules and functional calls alike, e.g. the sliced-weight ``F.conv2d`` of
:class:`nas_search.cell.SlotProjection`), and a multiply-add is two of its FLOPs. What it does
not count is 0 here too: BatchNorm (folded into the preceding conv at inference), biases,
activations, pooling, up-sampling and element-wise sums/products (memory-bound, and small next
to the convolutions: the usual convention of fvcore/thop-style counters).

The count runs on the ``meta`` device by default: shapes only, no arithmetic, so D6 at 640x480
takes a fraction of a second.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import FlopCounterMode


def _on_meta(value: object) -> object:
    return torch.empty_like(value, device="meta") if isinstance(value, Tensor) else value


@torch.no_grad()
def count_macs(model: nn.Module, *inputs: Any, meta: bool = True, **kwargs) -> int:
    """Multiply-adds of one forward pass of ``model(*inputs, **kwargs)``, per image of the batch
    (FLOPs / 2, divided by the batch size of the first input tensor; inputs may be nested lists,
    e.g. a pyramid).

    ``meta=True`` runs the pass on ``meta`` copies of the inputs, parameters and buffers (the
    model is not touched); a model whose forward reads tensor values (``.item()``,
    ``.tolist()``) needs ``meta=False``, which computes for real.
    """
    batch = next(x for x in tree_leaves(inputs) if isinstance(x, Tensor)).shape[0]
    if meta:
        state = {name: _on_meta(t) for name, t in
                 [*model.named_parameters(), *model.named_buffers()]}
        inputs, kwargs = tree_map(_on_meta, (inputs, kwargs))
    with FlopCounterMode(display=False) as counter:
        if meta:
            functional_call(model, state, inputs, kwargs)
        else:
            model(*inputs, **kwargs)
    return counter.get_total_flops() // 2 // batch


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Profile:
    params: int
    macs: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def macs_b(self) -> float:
        return self.macs / 1e9


def _image(size: tuple[int, int], model: nn.Module) -> Tensor:
    """A zero image for ``size = (width, height)`` (the paper's "640x480" is VGA, W x H)."""
    width, height = size
    ref = next(model.parameters(), None)
    return torch.zeros(1, 3, height, width, device=None if ref is None else ref.device)


def profile_model(model: nn.Module, size: tuple[int, int] = (640, 480)) -> Profile:
    """Parameters and MACs of the eval-mode forward pass (the inference graph) at ``size``."""
    was_training = model.training
    model.eval()
    try:
        return Profile(count_parameters(model), count_macs(model, _image(size, model)))
    finally:
        model.train(was_training)


def measure_latency(
    model: nn.Module, size: tuple[int, int] = (640, 480), repeats: int = 10, warmup: int = 2,
) -> float:
    """Median wall-clock milliseconds of an eval-mode forward pass on one image.

    On CUDA the clock stops after ``torch.cuda.synchronize``: kernels run asynchronously."""
    was_training = model.training
    model.eval()
    x = _image(size, model)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
    return statistics.median(times)
