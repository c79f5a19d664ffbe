"""The genotype file format (versioned YAML) and the shipped library of genotypes.

A file, format version 1 (every key explicit; unknown keys are errors, so typos are caught)::

    version: 1
    meta: {search_space: autofem, op_set: S_CPM, mode: top1_tree, nodes: 6, ...}
    fpn: ...                   # the sections of the search space's schema (genotypes.spaces),
                               # here AutoFEM's FPN (search_spaces/schemas.py); null: absent
    cells:
      P2:
        concat: cat_leaf
        leaves: [3, 6]         # written for the reader; checked against the nodes on load
        nodes:                 # nodes[i] is node i+1; parents come from 0..i
        - [{parent: 0, op: dil_conv_5x5_r2}]
        - [{parent: 1, op: dil_conv_3x3_r3}]
        ...

Loading always validates (:func:`genotypes.validate.validate_genotype`); operation names are
checked only when the caller passes ``known_ops`` (e.g. ``nas_search.registry.list_ops()``),
since this package does not import the op registry. A file of a search space whose schema is
not registered is a one-line error naming its ``meta.search_space`` or section.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import typing
from collections.abc import Collection, Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from genotypes.fields import (
    read_int, read_list, read_mapping, read_number, read_optional_int, read_str,
)
from genotypes.schema import (
    GENOTYPE_VERSION, CellGenotype, Edge, Genotype, GenotypeMeta, NodeGenotype,
)
from genotypes.spaces import (
    BASE_KEYS, SectionSchema, claiming_schemas, section_schemas, unknown_space_problem,
)
from genotypes.validate import (
    DEFAULT_LIMITS, NO_LIMITS, GenotypeError, GenotypeLimits, unknown_sections_problem,
    validate_genotype,
)

LIBRARY_PACKAGE = "genotypes"
LIBRARY_DIR = "library"
_HEADER = f"# ASFD genotype, format version {GENOTYPE_VERSION} (see genotypes/io.py)\n"
#: A search run folder's log of architecture weights, one JSON line per epoch: written by
#: ``nas_search.search``, read by ``visualize.history``, which must not import the engine.
HISTORY_FILE = "history.jsonl"


# ----------------------------------------------------------------------------- to dict / YAML
def genotype_to_dict(genotype: Genotype) -> dict[str, Any]:
    """Plain dicts/lists/scalars, in file order (version, meta, every section of the schemas
    that claim the genotype, ``None`` where absent, cells); the inverse of
    :func:`genotype_from_dict`."""
    sections = {key: None if (value := genotype.sections.get(key)) is None
                else section.to_dict(value) for key, section in _sections_of(genotype).items()}
    cells = {name: {"concat": cell.concat,
                    "leaves": list(cell.leaves),
                    "nodes": [[{"parent": e.parent, "op": e.op} for e in node.edges]
                              for node in cell.nodes]}
             for name, cell in genotype.cells.items()}
    return {"version": genotype.version, "meta": dataclasses.asdict(genotype.meta),
            **sections, "cells": cells}


def _sections_of(genotype: Genotype) -> dict[str, SectionSchema]:
    """The sections a file of ``genotype`` lists: those of the schemas claiming it, then any
    other it holds."""
    problem = unknown_space_problem(genotype.meta.search_space) or unknown_sections_problem(
        genotype.sections)
    if problem:
        raise GenotypeError(problem)
    known = section_schemas()
    keys = [s.key for schema in claiming_schemas(genotype) for s in schema.sections]
    return {key: known[key] for key in dict.fromkeys([*keys, *genotype.sections])}


class _FlowList(list):
    """A list YAML writes on one line: one cell node per line reads like the graph."""


class _FlowDict(dict):
    """A mapping YAML writes on one line (e.g. one FPN level per line)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_FlowList, lambda d, data: d.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))
_Dumper.add_representer(_FlowDict, lambda d, data: d.represent_mapping(
    "tag:yaml.org,2002:map", data.items(), flow_style=True))


def _flow(data: Any, depth: int) -> Any:
    """``data`` with the mappings ``depth`` levels down written on one line."""
    if not isinstance(data, dict):
        return data
    if depth == 0:
        return _FlowDict(data)
    return {k: _flow(v, depth - 1) for k, v in data.items()}


def genotype_to_yaml(genotype: Genotype) -> str:
    data = genotype_to_dict(genotype)
    for key, section in _sections_of(genotype).items():
        if section.flow_depth is not None:
            data[key] = _flow(data[key], section.flow_depth)
    for cell in data["cells"].values():
        cell["leaves"] = _FlowList(cell["leaves"])
        cell["nodes"] = [_FlowList(edges) for edges in cell["nodes"]]
    return _HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                               allow_unicode=True, width=120)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` to write to; on leaving the block it replaces
    ``path`` (``os.replace``, readable by all), or, when the block raised, it is removed. The
    project's one atomic write: it lives in its lowest package so that every package can use it
    (:mod:`nas_search.runtime` re-exports it for checkpoints and logs)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; what we save is meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_genotype(genotype: Genotype, path: str | os.PathLike) -> Path:
    """Validate (without the size caps: a search's result is always kept), then write
    ``genotype`` to ``path`` atomically (:func:`atomic_path`)."""
    validate_genotype(genotype, limits=NO_LIMITS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = genotype_to_yaml(genotype)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- from dict / YAML
def genotype_from_dict(data: Any, *, known_ops: Collection[str] | None = None,
                       source: str | None = None,
                       limits: GenotypeLimits = DEFAULT_LIMITS) -> Genotype:
    """Parse and validate. Errors are :class:`GenotypeError` naming ``source`` and the field."""
    try:
        genotype, written_leaves = _parse_genotype(data)
        validate_genotype(genotype, known_ops=known_ops, limits=limits)
        problems = [
            f"cells.{name}.leaves: written {written} but the nodes give {list(cell.leaves)}"
            for name, cell in genotype.cells.items()
            if (written := written_leaves.get(name)) is not None
            and sorted(written) != list(cell.leaves)]
        if problems:
            raise GenotypeError(problems)
    except GenotypeError as exc:
        raise GenotypeError(exc.problems, source) from None
    return genotype


def genotype_from_yaml(text: str, *, known_ops: Collection[str] | None = None,
                       source: str | None = None,
                       limits: GenotypeLimits = DEFAULT_LIMITS) -> Genotype:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GenotypeError(f"invalid YAML{where}: {problem}", source) from None
    return genotype_from_dict(data, known_ops=known_ops, source=source, limits=limits)


def _metrics(value: Any, path: str) -> dict[str, float]:
    return {str(k): read_number(v, f"{path}.{k}") for k, v in read_mapping(value, path).items()}


# One parser per annotation used by GenotypeMeta's fields.
_META_PARSERS = {str: read_str, int | None: read_optional_int, dict[str, float]: _metrics}
_META_HINTS = typing.get_type_hints(GenotypeMeta)


def _parse_meta(value: Any) -> GenotypeMeta:
    if value is None:
        return GenotypeMeta()
    fields = tuple(f.name for f in dataclasses.fields(GenotypeMeta))
    data = read_mapping(value, "meta", keys=fields)
    return GenotypeMeta(**{k: _META_PARSERS[_META_HINTS[k]](v, f"meta.{k}")
                           for k, v in data.items()})


def _parse_cell(value: Any, path: str) -> tuple[CellGenotype, list[int] | None]:
    data = read_mapping(value, path, keys=("concat", "leaves", "nodes"),
                        required=("concat", "nodes"))
    nodes = []
    for i, edges in enumerate(read_list(data["nodes"], f"{path}.nodes")):
        npath = f"{path}.nodes[{i}]"
        parsed = []
        for k, e in enumerate(read_list(edges, npath)):
            e = read_mapping(e, f"{npath}.edges[{k}]", keys=("parent", "op"),
                             required=("parent", "op"))
            parsed.append(Edge(parent=read_int(e["parent"], f"{npath}.edges[{k}].parent"),
                               op=read_str(e["op"], f"{npath}.edges[{k}].op")))
        nodes.append(NodeGenotype(edges=tuple(parsed)))
    leaves = None
    if data.get("leaves") is not None:
        leaves = [read_int(x, f"{path}.leaves[{i}]")
                  for i, x in enumerate(read_list(data["leaves"], f"{path}.leaves"))]
    cell = CellGenotype(nodes=tuple(nodes), concat=read_str(data["concat"], f"{path}.concat"))
    return cell, leaves


def _parse_genotype(data: Any) -> tuple[Genotype, dict[str, list[int] | None]]:
    """Structure and types only (the first problem raises); semantics are the validator's.
    A section's value is read by its registered :class:`~genotypes.spaces.SectionSchema`;
    ``null`` reads as absent."""
    data = read_mapping(data, "genotype", required=("version",))
    version = read_int(data["version"], "version")
    if version != GENOTYPE_VERSION:
        raise GenotypeError(f"version: unsupported genotype version {version} "
                            f"(this toolkit reads version {GENOTYPE_VERSION})")
    meta = _parse_meta(data.get("meta"))
    problem = unknown_space_problem(meta.search_space) or unknown_sections_problem(data)
    if problem:
        raise GenotypeError(problem)
    known = section_schemas()
    sections = {key: known[key].parse(value) for key, value in data.items()
                if key not in BASE_KEYS and value is not None}
    cells, leaves = {}, {}
    for name, raw in read_mapping(data.get("cells") or {}, "cells").items():
        cells[str(name)], leaves[str(name)] = _parse_cell(raw, f"cells.{name}")
    return Genotype(cells=cells, sections=sections, meta=meta, version=version), leaves


# ------------------------------------------------------------------------------------ library
def _library() -> Traversable:
    return resources.files(LIBRARY_PACKAGE) / LIBRARY_DIR


def list_library() -> list[str]:
    """Names of the shipped genotypes (file stems under ``genotypes/library``)."""
    return sorted(p.name[:-len(".yaml")] for p in _library().iterdir()
                  if p.name.endswith(".yaml"))


def load_genotype(path_or_name: str | os.PathLike, *,
                  known_ops: Collection[str] | None = None,
                  limits: GenotypeLimits = DEFAULT_LIMITS) -> Genotype:
    """Load and validate a genotype file, or a shipped one by name (see :func:`list_library`).

    An existing file path wins over a library name. ``known_ops`` enables the op-name check;
    ``limits`` sets the size caps of a cell.
    """
    path = Path(path_or_name)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise GenotypeError(f"not a text file (byte {exc.start} is no UTF-8)",
                                str(path)) from None
        return genotype_from_yaml(text, known_ops=known_ops, source=str(path), limits=limits)
    name = path.name[:-len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") and name in list_library():
        resource = _library() / f"{name}.yaml"
        return genotype_from_yaml(resource.read_text(encoding="utf-8"), known_ops=known_ops,
                                  source=f"library:{name}", limits=limits)
    raise FileNotFoundError(f"no genotype file {str(path_or_name)!r} and no shipped genotype of "
                            f"that name; shipped: {', '.join(list_library())}")
