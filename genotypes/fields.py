"""Typed readers of a genotype file's fields: each returns the value or raises
:class:`~genotypes.validate.GenotypeError` naming the field path. Shared by the generic loader
and the sections that search spaces register (:mod:`genotypes.spaces`)."""
from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from genotypes.validate import GenotypeError


def read_mapping(value: Any, path: str, keys: tuple[str, ...] | None = None,
                 required: tuple[str, ...] = ()) -> Mapping[str, Any]:
    """``value`` as a mapping; with ``keys``, any other key is an error."""
    if not isinstance(value, Mapping):
        raise GenotypeError(f"{path}: expected a mapping, got {type(value).__name__}")
    unknown = [] if keys is None else [k for k in value if k not in keys]
    if unknown:
        raise GenotypeError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; "
                            f"allowed: {', '.join(keys)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise GenotypeError(f"{path}: missing key(s) {', '.join(missing)}")
    return value


def read_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise GenotypeError(f"{path}: expected a list, got {type(value).__name__}")
    return value


def read_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenotypeError(f"{path}: expected an integer, got {value!r}")
    return value


def read_str(value: Any, path: str) -> str:
    if isinstance(value, datetime.date):  # YAML reads an unquoted ISO time as a timestamp
        return value.isoformat()
    if not isinstance(value, str):
        raise GenotypeError(f"{path}: expected a string, got {value!r}")
    return value


def read_optional_int(value: Any, path: str) -> int | None:
    return None if value is None else read_int(value, path)


def read_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenotypeError(f"{path}: expected a number, got {value!r}")
    return float(value)
