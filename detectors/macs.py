"""Parameter, multiply-add (MAC) and CPU-latency profiling (Table 5's #Params, #FLOPS, LAT).

Table 5's "#FLOPS" are multiply-adds, so we count MACs. A forward hook on every leaf module adds,
per image of the batch:

* ``Conv2d`` (any groups/dilation/stride): ``H_out * W_out * C_out * (C_in / groups) * kh * kw``;
* ``Linear``: ``out_elements * in_features``;
* everything else counts 0: BatchNorm (folded into the preceding conv at inference), biases,
  activations, pooling, up-sampling and element-wise sums/products (memory-bound, and small next
  to the convolutions: the usual convention of fvcore/thop-style counters).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


def conv2d_macs(module: nn.Conv2d, output: Tensor) -> int:
    kh, kw = module.kernel_size
    per_output = (module.in_channels // module.groups) * kh * kw
    return output[0].numel() * per_output


def linear_macs(module: nn.Linear, output: Tensor) -> int:
    return output[0].numel() * module.in_features


MAC_RULES: dict[type[nn.Module], Callable[[nn.Module, Tensor], int]] = {
    nn.Conv2d: conv2d_macs,
    nn.Linear: linear_macs,
}


def mac_rule(module: nn.Module) -> Callable[[nn.Module, Tensor], int] | None:
    """The counting rule of ``module`` (subclasses included); None for modules counted as 0."""
    return next((rule for kind, rule in MAC_RULES.items() if isinstance(module, kind)), None)


@torch.inference_mode()
def count_macs(model: nn.Module, *inputs: Tensor, **kwargs) -> int:
    """Multiply-adds of one forward pass of ``model(*inputs, **kwargs)``, per image of the batch
    (inputs must be batched: the counts read the first element of each output)."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        nonlocal total
        total += mac_rule(module)(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if mac_rule(m) is not None]
    try:
        model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return total


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
    """Median wall-clock milliseconds of an eval-mode forward pass on one image."""
    was_training = model.training
    model.eval()
    x = _image(size, model)
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
    return statistics.median(times)
