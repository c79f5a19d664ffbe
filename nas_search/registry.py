"""Registries of candidate operations and of operation sets (search spaces' op lists).

An operation is registered by name with a constructor ``(channels, stride) -> nn.Module``;
an op set is a named, ordered tuple of registered op names. Nothing here knows about faces.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

OpFactory = Callable[[int, int], nn.Module]

_OPS: dict[str, OpFactory] = {}
_OP_SETS: dict[str, tuple[str, ...]] = {}


def register_op(name: str) -> Callable[[OpFactory], OpFactory]:
    """Decorator: register ``factory(channels, stride)`` under ``name``."""

    def deco(factory: OpFactory) -> OpFactory:
        if name in _OPS and _OPS[name] is not factory:
            raise KeyError(f"operation {name!r} is already registered")
        _OPS[name] = factory
        return factory

    return deco


def build_op(name: str, channels: int, stride: int = 1) -> nn.Module:
    try:
        factory = _OPS[name]
    except KeyError:
        raise KeyError(f"unknown operation {name!r}; registered: {sorted(_OPS)}") from None
    return factory(channels, stride)


def has_op(name: str) -> bool:
    return name in _OPS


def list_ops() -> list[str]:
    return sorted(_OPS)


def register_op_set(name: str, ops: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    ops = tuple(ops)
    missing = [o for o in ops if o not in _OPS]
    if missing:
        raise KeyError(f"op set {name!r} names unregistered operations {missing}")
    if _OP_SETS.get(name, ops) != ops:
        raise KeyError(f"op set {name!r} is already registered with other ops")
    _OP_SETS[name] = ops
    return ops


def get_op_set(name: str) -> tuple[str, ...]:
    try:
        return _OP_SETS[name]
    except KeyError:
        raise KeyError(f"unknown op set {name!r}; registered: {sorted(_OP_SETS)}") from None


def list_op_sets() -> list[str]:
    return sorted(_OP_SETS)
