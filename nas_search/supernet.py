"""The supernet base class: architecture / weight parameter split, Gumbel control, arch log.

Architecture parameters are the ``nn.Parameter`` s whose attribute name starts with ``arch_``
(``arch_alpha``, ``arch_gamma``, ``arch_beta``...); every other parameter is a weight. Modules that
own architecture parameters report their softmaxes through :class:`ReportsArchWeights`; modules
that draw Gumbel samples inherit :class:`~nas_search.gumbel.GumbelSampled`.
"""
from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from genotypes.schema import Genotype
from nas_search.gumbel import GumbelSampled

ARCH_PREFIX = "arch_"

#: ``{row label: {choice label: probability}}``, e.g. ``{"0->1": {"conv_1x1": 0.4, ...}}``.
ArchTable = dict[str, dict[str, float]]


def is_arch_parameter(name: str) -> bool:
    """Whether the (dotted) parameter name ``name`` is an architecture parameter."""
    return name.rsplit(".", 1)[-1].startswith(ARCH_PREFIX)


@runtime_checkable
class ReportsArchWeights(Protocol):
    """A module owning architecture parameters reports their softmaxes, keyed by a short name
    (``"alpha"``, ``"gamma"``, ``"beta"``). It reports its OWN ``arch_`` parameters only, not
    those of its submodules, which report themselves."""

    def arch_weights(self) -> dict[str, ArchTable]: ...


class Supernet(nn.Module, abc.ABC):
    """Base of every supernet searched by :func:`nas_search.search.search`."""

    def named_arch_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if is_arch_parameter(n))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_arch_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not is_arch_parameter(n)]

    def set_temperature(self, tau: float) -> None:
        """Set the Gumbel-softmax temperature of every sampling submodule."""
        for m in self.modules():
            if isinstance(m, GumbelSampled):
                m.temperature = tau

    def set_gumbel_generator(self, generator: torch.Generator | None) -> None:
        """Make every sampling submodule draw from ``generator`` (one shared stream)."""
        for m in self.modules():
            if isinstance(m, GumbelSampled):
                m.gumbel_generator = generator

    def arch_weights(self) -> dict[str, ArchTable]:
        """All reported softmaxes, keyed ``"<module path>.<name>"`` (e.g. ``"cells.0.alpha"``).

        A supernet nested in this one is walked through, not asked, so nothing is counted twice.
        """
        out: dict[str, ArchTable] = {}
        for path, m in self.named_modules():
            if not isinstance(m, Supernet) and isinstance(m, ReportsArchWeights):
                out.update({f"{path}.{key}": table for key, table in m.arch_weights().items()})
        return out

    @abc.abstractmethod
    def genotype(self, top_k: int = 2) -> Genotype:
        """The derived architecture (``top_k`` parents per node for ``pcdarts`` cells)."""
