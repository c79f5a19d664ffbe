"""The one typed config loader: YAML (with YAML 1.2 floats) into nested dataclasses.

Every YAML config of the toolkit (training, search, compare / tune / demo) is read by
:func:`read_config_file` (``_base_: other.yaml`` starts from another file), changed by
:func:`apply_overrides` (``key=value``, values parsed as YAML) and typed by
:func:`dataclass_from_dict`: unknown keys, missing required keys and wrong types are a
:class:`ConfigError` naming the file and the dotted key. :func:`refuse_changes` checks that a
resumed run keeps the settings it started with.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A malformed config: the message names the file and the dotted key."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1) that also reads YAML 1.2 floats without a dot
    (``8e-3``, ``1e5``), which YAML 1.1 leaves as strings."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text with :class:`_Loader`; a syntax error is a one-line :class:`ConfigError`
    naming ``source`` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML: {problem}") from None


# ----------------------------------------------------------------------------- files
def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, section by section; within a section, values are replaced
    whole (a data source given in a child config is not mixed with the base's)."""
    return {**base, **{section: {**base[section], **value}
                       if isinstance(value, dict) and isinstance(base.get(section), dict)
                       else value for section, value in update.items()}}


def read_config_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as plain data, its ``_base_`` chain resolved."""
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is no UTF-8)") from None
    data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = data.pop("_base_", None)
    if base is None:
        return data
    return merge(read_config_file(path.parent / base, (*_seen, path.resolve())), data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys from ``key=value`` strings (values parsed as YAML) in nested ``data``."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=0.01")
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = load_yaml(raw, f"override {item!r}")
    return data


# ----------------------------------------------------------------------------- typed conversion
def _at(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}" if where else message)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` (plain YAML data) as type ``tp``; ``ConfigError`` naming ``where`` otherwise."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise (ConfigError(errors[0]) if len(errors) == 1 else _at(
            where, f"{value!r} fits none of {[getattr(o, '__name__', str(o)) for o in options]}"))
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _at(where, f"{value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _at(where, f"expected a list, got {value!r}")
        items = typing.get_args(tp)
        if origin is list or items[-1:] == (Ellipsis,):
            items = items[:1] * len(value)
        elif len(items) != len(value):
            raise _at(where, f"expected {len(items)} values, got {value!r}")
        converted = [_convert(v, item, f"{where}[{i}]")
                     for i, (v, item) in enumerate(zip(value, items))]
        return converted if origin is list else tuple(converted)
    if origin is dict:
        if not isinstance(value, dict):
            raise _at(where, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise _at(where, f"expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _dataclass(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, Mapping):
        raise _at(where, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _at(where, f"unknown key(s) {unknown}; known: {sorted(names)}")
    missing = [f.name for f in fields if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise _at(where, f"missing required key(s) {missing}")
    return cls(**{k: _convert(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in data.items()})


def dataclass_from_dict(cls: type[T], data: Any, where: str = "", source: str = "") -> T:
    """Build dataclass ``cls`` (nested dataclasses, lists, tuples, unions, literals) from plain
    ``data`` with type checks; errors name ``source`` and the dotted key (``where`` for
    ``data`` itself)."""
    try:
        return _dataclass(cls, data, where)
    except ConfigError as exc:
        if not source:
            raise
        raise ConfigError(f"{source}: {exc}") from None


def replace_fields(obj: T, changes: Mapping[str, Any], what: str) -> T:
    """``dataclasses.replace(obj, **changes)``; keys that are no field of ``obj`` are a
    :class:`ConfigError` naming ``what`` and the known keys."""
    known = sorted(f.name for f in dataclasses.fields(obj) if f.init)
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown}; known: {known}")
    return dataclasses.replace(obj, **changes)


# ----------------------------------------------------------------------------- resume
def changed_settings(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = ""
                     ) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, current value)}`` for every leaf that differs between two
    nested mappings (a key absent on one side has the value None there)."""
    changes: dict[str, tuple[Any, Any]] = {}
    for key in [*current, *(k for k in saved if k not in current)]:
        old, new = saved.get(key), current.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes |= changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changes[f"{prefix}{key}"] = (old, new)
    return changes


def is_under(key: str, prefixes: Collection[str]) -> bool:
    """Whether dotted ``key`` is one of ``prefixes`` or inside one (``eval.every`` in ``eval``)."""
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def refuse_changes(saved: Mapping[str, Any], current: Mapping[str, Any], where: str,
                   free: Collection[str] = (), allowed: Collection[str] = (), hint: str = ""
                   ) -> None:
    """Check that a run resumed from ``where`` keeps its ``saved`` settings: keys under ``free``
    (no effect on the result) and ``allowed`` (accepted by the user) may differ, any other
    change is a :class:`ConfigError` naming the keys, old and new values, and ``hint``."""
    refused = {k: v for k, v in changed_settings(saved, current).items()
               if not is_under(k, free) and not is_under(k, allowed)}
    if refused:
        diff = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ConfigError(f"{where}: cannot resume with changed settings ({diff}); a resumed run "
                          f"keeps the settings it started with{hint}")
