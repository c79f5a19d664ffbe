"""Name registries: one generic :class:`Registry`, and the two the search engine owns.

An operation is registered by name with a constructor ``(channels, stride) -> nn.Module``;
an op set is a named, ordered tuple of registered op names. The same :class:`Registry` serves
the other registries of the toolkit (feature modules, backbones, losses), so every one of them
reports duplicates and unknown names the same way. Nothing here knows about faces.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Callable, Generic, TypeVar

if TYPE_CHECKING:  # the generic Registry is read without loading torch (nas_search.strategies)
    from torch import nn

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping ``name -> item`` filled through :meth:`register`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``item`` under ``name``; re-registering another item is an error."""

        def deco(item: T) -> T:
            self.add(name, item)
            return item

        return deco

    def add(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item and self._items[name] != item:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {sorted(self._items)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def build(self, name: str, *args, **kwargs):
        """Call the factory registered under ``name``."""
        return self[name](*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)


OpFactory = Callable[[int, int], "nn.Module"]

OPS: Registry[OpFactory] = Registry("operation")
OP_SETS: Registry[tuple[str, ...]] = Registry("op set")

register_op = OPS.register
list_ops = OPS.names
list_op_sets = OP_SETS.names


def build_op(name: str, channels: int, stride: int = 1) -> nn.Module:
    return OPS.build(name, channels, stride)


def has_op(name: str) -> bool:
    return name in OPS


def register_op_set(name: str, ops: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    ops = tuple(ops)
    missing = [o for o in ops if o not in OPS]
    if missing:
        raise KeyError(f"op set {name!r} names unregistered operations {missing}")
    return OP_SETS.add(name, ops)


def get_op_set(name: str) -> tuple[str, ...]:
    return OP_SETS[name]
