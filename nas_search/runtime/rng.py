"""Seeding and the capture / restore of every global RNG, for runs that resume bit-identically.

:func:`rng_state` holds only tensors and plain data (NumPy's key array as an int64 tensor), so
a checkpoint holding it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, numpy_seed: int | None = None, torch_seed: int | None = None
                    ) -> None:
    """Seed Python's global RNG with ``seed``, NumPy's and torch's with their own seeds
    (``seed`` when not given)."""
    random.seed(seed)
    np.random.seed(seed if numpy_seed is None else numpy_seed)
    torch.manual_seed(seed if torch_seed is None else torch_seed)


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's, torch's and (when present) CUDA's global RNGs."""
    name, keys, *rest = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), *rest),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured. Also reads the older layouts: NumPy's keys as an
    array, and no ``cuda`` entry on a machine without CUDA."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
