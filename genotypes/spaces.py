"""Search-space schemas: what a search space adds to the generic genotype format, by name.

The generic format knows cells, nodes, edges and metadata. A search space that needs more
registers a :class:`SpaceSchema` under the ``meta.search_space`` names it owns, with

- the rules its genotypes follow beyond the generic ones (e.g. one cell per pyramid level);
- its *sections*: top-level keys of the file beside ``cells`` (:class:`SectionSchema`, e.g.
  AutoFEM's ``fpn``), which it parses, writes, checks and describes for drawing.

This package never imports a search space: the search space registers its schema when it is
imported (``search_spaces`` does on import), and a genotype naming a ``meta.search_space``
that no schema owns is an error naming it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from genotypes.schema import Genotype

#: The top-level keys every genotype file may hold; sections add theirs.
BASE_KEYS: tuple[str, ...] = ("version", "meta", "cells")


@dataclass(frozen=True)
class DrawnEdge:
    """One edge of a section's drawing: input node ``source`` feeds output node ``target``."""

    source: str
    target: str
    label: str
    kind: str


@dataclass(frozen=True)
class SectionDrawing:
    """A section as a graph of input nodes feeding output nodes, for ``visualize.render``.

    ``inputs`` and ``outputs`` are node names (and labels) in drawing order; an output named
    like a cell is drawn feeding that cell, explained in the legend by ``feeds_cells``.
    ``kinds`` are the edge kinds with their legend text, in legend order (a kind's place picks
    its line style).
    """

    title: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    edges: tuple[DrawnEdge, ...]
    kinds: tuple[tuple[str, str], ...]
    feeds_cells: str = "output feeds the cell of its name"


class SectionSchema(ABC):
    """A top-level key of the file that a search space adds, and how its value is read,
    written, checked and drawn. ``parse`` raises ``GenotypeError`` naming the field path;
    ``problems`` lists every rule the parsed value breaks, each starting with its field path."""

    #: The top-level key of the file, e.g. ``"fpn"``.
    key: str
    #: Mappings this many levels inside the section are written on one line (``None``: none).
    flow_depth: int | None = None

    @abstractmethod
    def parse(self, value: Any) -> Any:
        """The section's value from plain data (YAML / a model file)."""

    @abstractmethod
    def to_dict(self, section: Any) -> dict[str, Any]:
        """Plain data in file order; the inverse of :meth:`parse`."""

    @abstractmethod
    def problems(self, section: Any, known_ops: Collection[str] | None) -> list[str]:
        """Every rule ``section`` breaks; op names are checked only against ``known_ops``."""

    @abstractmethod
    def drawing(self, section: Any) -> SectionDrawing:
        """The section as a graph to draw."""


class SpaceSchema:
    """What the search spaces named ``search_spaces`` add to the generic format: ``sections``
    and, in :meth:`problems`, their own rules. ``cell_names`` are the names their cells take
    (e.g. pyramid levels; empty: free), which also mark a genotype as theirs."""

    def __init__(self, name: str, search_spaces: tuple[str, ...],
                 sections: tuple[SectionSchema, ...] = (), cell_names: tuple[str, ...] = ()):
        self.name, self.search_spaces = name, search_spaces
        self.sections, self.cell_names = sections, cell_names

    def claims(self, genotype: Genotype) -> bool:
        """Whether this schema's rules apply: the genotype names one of its search spaces,
        holds one of its sections, or a cell named as its cells are."""
        return (genotype.meta.search_space in self.search_spaces
                or any(s.key in genotype.sections for s in self.sections)
                or any(name in self.cell_names for name in genotype.cells))

    def problems(self, genotype: Genotype) -> list[str]:
        """The rules of this search space that ``genotype`` breaks (beyond its sections')."""
        return []


_SCHEMAS: dict[str, SpaceSchema] = {}


def register_space_schema(schema: SpaceSchema) -> SpaceSchema:
    """Register ``schema`` (again, for the same name: replace it); a search space name or a
    section key that another schema owns is a ``ValueError``."""
    for other in _SCHEMAS.values():
        if other.name == schema.name:
            continue
        taken = (set(other.search_spaces) & set(schema.search_spaces)) | (
            {s.key for s in other.sections} & {s.key for s in schema.sections})
        if taken:
            raise ValueError(f"genotype schema {schema.name!r}: {', '.join(sorted(taken))} "
                             f"already belong(s) to schema {other.name!r}")
    _SCHEMAS[schema.name] = schema
    return schema


def list_space_schemas() -> list[str]:
    return sorted(_SCHEMAS)


def schema_for_space(search_space: str) -> SpaceSchema | None:
    """The schema owning ``meta.search_space`` ``search_space``, or ``None``."""
    return next((s for s in _SCHEMAS.values() if search_space in s.search_spaces), None)


def section_schemas() -> dict[str, SectionSchema]:
    """Every registered section, by key, in registration order."""
    return {sec.key: sec for s in _SCHEMAS.values() for sec in s.sections}


def claiming_schemas(genotype: Genotype) -> list[SpaceSchema]:
    """The registered schemas whose rules apply to ``genotype`` (:meth:`SpaceSchema.claims`)."""
    return [s for s in _SCHEMAS.values() if s.claims(genotype)]


def cell_names() -> tuple[str, ...]:
    """The cell names the registered schemas fix (e.g. pyramid levels), in their order."""
    return tuple(dict.fromkeys(n for s in _SCHEMAS.values() for n in s.cell_names))


def unknown_space_problem(search_space: str) -> str | None:
    """The one-line problem of a ``meta.search_space`` that no registered schema owns."""
    if not search_space or schema_for_space(search_space) is not None:
        return None
    known = sorted(n for s in _SCHEMAS.values() for n in s.search_spaces)
    return (f"meta.search_space: no genotype schema is registered for {search_space!r} "
            f"(known: {', '.join(known) or 'none'}; a search space registers its schema when "
            f"it is imported)")
