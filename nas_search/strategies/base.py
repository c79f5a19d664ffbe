"""The search-strategy interface, its registry, and the strategy rule of a derived genotype.

A strategy decides how a searched node combines the edges from its candidate parents (the
forward pass), which parents the derived node keeps, and how many incoming edges a derived node
has. The cell (:class:`~nas_search.cell.SearchCell`) owns the parameters and the edges; the
strategy only reads a node's parent logits ``gamma`` and runs the edges it needs.

Strategy modules use tensor methods and import torch for type checking only, so that reading
the registry (``asfd genotypes validate``, the CLI's choices) does not load torch.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

from genotypes.schema import Genotype
from genotypes.validate import GenotypeError
from nas_search.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

#: ``edge(i)``: the output of the edge from candidate parent ``i`` (it runs when called).
EdgeFn = Callable[[int], "Tensor"]


class NodeSampler(Protocol):
    """What a strategy may ask of the module it runs in: whether it trains, a hard Gumbel
    sample from its stream, and the product of a sample's weight with an edge output that saves
    only the product (:class:`~nas_search.gumbel.GumbelSampled`)."""

    training: bool

    def gumbel_sample(self, logits: Tensor, scale_by_length: bool = True
                      ) -> tuple[Tensor, int]: ...

    def scale_by_sample(self, weight: Tensor, y: Tensor) -> Tensor: ...


class SearchStrategy(abc.ABC):
    """One search algorithm: the node forward, the derivation, the edges-per-node rule.

    ``name`` is the registered name (a genotype's ``meta.mode``, a config's ``task.mode``).
    ``samples_path``: a forward runs a sampled sub-cell, which the cell records as its
    ``last_path`` and whose leaves are the ``cat_leaf`` outputs; otherwise every edge runs and
    ``cat_leaf`` outputs the leaves of the current derived cell. ``edges_per_node``: the
    incoming edges of every derived node (None: any number, at least one).
    """

    name: ClassVar[str]
    samples_path: ClassVar[bool] = False
    edges_per_node: ClassVar[int | None] = None

    @abc.abstractmethod
    def node_forward(self, gamma: Tensor, edge: EdgeFn, sampler: NodeSampler) -> Tensor:
        """The value of a node whose candidate parents are ``0..len(gamma)-1``, with parent
        logits ``gamma``; call ``edge(i)`` only for the edges the node uses."""

    @abc.abstractmethod
    def derive_parents(self, gamma: Tensor, op_strength: Sequence[float],
                       top_k: int) -> list[int]:
        """The parents a derived node keeps, ascending. ``op_strength[i]`` is the probability
        of the op the edge from parent ``i`` derives to (its largest softmax(alpha))."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


StrategyType = TypeVar("StrategyType", bound=type[SearchStrategy])

STRATEGIES: Registry[type[SearchStrategy]] = Registry("search strategy")


def register_strategy(cls: StrategyType) -> StrategyType:
    """Class decorator: register a :class:`SearchStrategy` subclass under its ``name``."""
    STRATEGIES.add(cls.name, cls)
    return cls


def get_strategy(strategy: str | SearchStrategy) -> SearchStrategy:
    """``strategy`` itself, or an instance of the strategy registered under that name (an
    unknown name is a KeyError listing the registered ones)."""
    return strategy if isinstance(strategy, SearchStrategy) else STRATEGIES[strategy]()


def list_strategies() -> list[str]:
    """The registered strategy names, sorted."""
    return STRATEGIES.names()


def strategy_problems(genotype: Genotype) -> list[str]:
    """What ``genotype`` breaks of the rules of its strategy ``meta.mode`` (none when the mode
    is empty): an unregistered name, or a node with another edge count than the strategy's.
    Nodes without edges are left to :func:`~genotypes.validate.validate_genotype`."""
    mode = genotype.meta.mode
    if not mode:
        return []
    try:
        count = STRATEGIES[mode].edges_per_node
    except KeyError as exc:  # names the registered strategies
        return [f"meta.mode: {exc.args[0]}"]
    return [f"cells.{name}.nodes[{i}].edges: a {mode} genotype has exactly {count} "
            f"edge{'s' * (count != 1)} per node, node {i + 1} has {len(node.edges)}"
            for name, cell in genotype.cells.items() for i, node in enumerate(cell.nodes)
            if count is not None and node.edges and len(node.edges) != count]


def validate_for_strategy(genotype: Genotype, source: str | None = None) -> None:
    """Raise :class:`~genotypes.validate.GenotypeError` (naming ``source``) listing
    :func:`strategy_problems`; the structural checks are ``validate_genotype``'s."""
    problems = strategy_problems(genotype)
    if problems:
        raise GenotypeError(problems, source)
