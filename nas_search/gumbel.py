"""Hard Gumbel-softmax sampling with a length-scaled straight-through gradient (Eq. 4-5).

The paper's Eq. 4 writes the sample as ``onehot(argmax softmax(gamma + g / tau))``. We use the
standard Gumbel-softmax of Jang et al. [13] as GDAS [6] does: ``p = softmax((gamma + g) / tau)``,
forward ``onehot(argmax p)`` (whose argmax, ``argmax(gamma + g)``, does not depend on ``tau``) and
backward through ``p``, so that ``tau`` only shapes the gradient, annealed from soft to sharp.
"""
from __future__ import annotations

import torch
from torch import Tensor


class GumbelSampled:
    """Mixin for modules that draw hard Gumbel samples.

    :class:`~nas_search.supernet.Supernet` sets ``temperature`` and ``gumbel_generator`` on every
    submodule that inherits this, so that all of them (and all DDP ranks, given generators in the
    same state) draw from one stream.
    """

    temperature: float = 1.0
    gumbel_generator: torch.Generator | None = None

    def gumbel_sample(self, logits: Tensor, scale_by_length: bool = True) -> tuple[Tensor, int]:
        """:func:`hard_gumbel_softmax` of ``logits`` at this module's temperature, drawn from
        its generator."""
        return hard_gumbel_softmax(logits, self.temperature, self.gumbel_generator,
                                   scale_by_length)

    @staticmethod
    def scale_by_sample(weight: Tensor, y: Tensor) -> Tensor:
        """:func:`scale_by_sample`."""
        return scale_by_sample(weight, y)


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """I.i.d. Gumbel(0, 1) samples ``g = -log(E)``, ``E ~ Exp(1)`` (= ``-log(-log(u))``).

    Drawn on the generator's device (a CPU generator by default, whatever ``device`` is) and then
    moved to ``device``, so one CPU generator state fixes the samples on any accelerator.
    """
    source = generator.device if generator is not None else torch.device("cpu")
    e = torch.empty(shape, device=source, dtype=dtype).exponential_(generator=generator)
    return (-e.log()).to(device if device is not None else source)


def hard_gumbel_softmax(logits: Tensor, tau: float, generator: torch.Generator | None = None,
                        scale_by_length: bool = True) -> tuple[Tensor, int]:
    """One hard Gumbel-softmax sample over the last (only) axis of 1-D ``logits`` (Eq. 4-5).

    Returns ``(weights, index)``: ``weights`` is exactly ``onehot(index)`` in the forward pass;
    its gradient is that of ``n * softmax((logits + g) / tau)`` with ``n = len(logits)`` when
    ``scale_by_length`` (Eq. 5: imbalanced parent counts get balanced gradients), else of the
    plain softmax. Written ``onehot + (s - s.detach())``, which is exactly ``onehot`` in floating
    point (GDAS' ``onehot - p.detach() + p`` can round the 1 away).
    """
    if logits.dim() != 1 or logits.numel() == 0:
        raise ValueError(f"hard_gumbel_softmax expects non-empty 1-D logits, "
                         f"got shape {tuple(logits.shape)}")
    if tau <= 0:
        raise ValueError(f"hard_gumbel_softmax: temperature must be > 0, got {tau}")
    g = gumbel_noise(logits.shape, generator, logits.device, logits.dtype)
    probs = torch.softmax((logits + g) / tau, dim=0)
    index = int(probs.argmax())
    one_hot = torch.zeros_like(probs)
    one_hot[index] = 1.0
    scaled = probs * logits.numel() if scale_by_length else probs
    return one_hot + (scaled - scaled.detach()), index


class _ScaleBySample(torch.autograd.Function):
    """``weight * y`` saving the product, not ``y``: ``d/d weight = <grad, out> / weight``."""

    @staticmethod
    def forward(ctx, weight: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        out = y * weight
        ctx.save_for_backward(weight, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        weight, out = ctx.saved_tensors
        grad_weight = ((grad * out).sum() / weight).to(weight.dtype) \
            if ctx.needs_input_grad[0] else None
        grad_y = grad * weight if ctx.needs_input_grad[1] else None
        return grad_weight, grad_y


def scale_by_sample(weight: Tensor, y: Tensor) -> Tensor:
    """``weight * y`` for the 0-dim ``weight`` of a hard sample (forward value exactly 1,
    :func:`hard_gumbel_softmax`), with the gradients of the plain product.

    Autograd's product saves ``y`` for the weight's gradient, and whatever consumes the product
    saves the product too. This one saves only the product (the weight's gradient is
    ``<grad, out> / weight``, exact for a weight of 1), so a consumer that also saves it (the
    cell's projection) shares one tensor. ``weight`` must not be 0.
    """
    return _ScaleBySample.apply(weight, y)


def linear_temperature(progress: float, total: float, start: float = 10.0,
                       end: float = 0.1) -> float:
    """GDAS' linear annealing: ``start`` at ``progress = 0``, ``end`` at ``progress = total - 1``.

    ``progress`` counts epochs (or steps) from 0 and ``total`` is their number, so the last one
    runs at ``end``; ``progress`` beyond it stays at ``end``.
    """
    if total < 1 or progress < 0:
        raise ValueError(f"linear_temperature: need total >= 1 and progress >= 0, "
                         f"got progress={progress}, total={total}")
    fraction = min(progress / (total - 1), 1.0) if total > 1 else 1.0
    return start + (end - start) * fraction
