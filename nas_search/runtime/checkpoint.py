"""The toolkit's ``.pt`` files: written atomically, read safely (``weights_only=True``).

A file is written to a temporary path beside its target, then renamed onto it, so that a crash
never leaves a torn file. A pickle can run any code while it loads; ``weights_only=True``
unpickles only tensors, plain containers and scalars, plus the types a caller allows (e.g. the
NumPy RNG state of an old training checkpoint). Every failure (an empty, truncated or foreign
file, a refused object) is a :class:`CheckpointError` naming the file, never a traceback from
the unpickler.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genotypes.io import atomic_path

#: The globals a NumPy array needs (the ``numpy`` entry of ``np.random.get_state()`` as training
#: checkpoints saved it before :mod:`nas_search.runtime.rng` stored it as a tensor).
NUMPY_ARRAY_GLOBALS: tuple[Any, ...] = (
    np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)))


#: What ``torch.load`` raises on a file it cannot read: an empty, truncated, corrupt or foreign
#: file (the unpickler's stack ops give IndexError on garbage, a corrupt record the other types).
UNREADABLE: tuple[type[BaseException], ...] = (
    pickle.UnpicklingError, EOFError, OSError, RuntimeError, KeyError, ValueError, IndexError,
    TypeError, AttributeError, zipfile.BadZipFile, UnicodeDecodeError)


class CheckpointError(ValueError):
    """A ``.pt`` file that cannot be read safely; the message names the file and the reason."""


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line (torch wraps the unpickler's message in boilerplate)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if "unsupported" in line.lower()),
                  lines[0] if lines else "unexpected end of file")
    refused = re.search(r"GLOBAL (\S+)", detail)
    if refused:
        return (f"it holds {refused.group(1)}: objects other than tensors and plain data could "
                "run code when loaded")
    return f"truncated, corrupt or not a PyTorch file ({type(exc).__name__}: {detail})"


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint",
                    map_location: str | torch.device = "cpu",
                    allowed: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)``, with the extra ``allowed`` globals (classes,
    functions) permitted. A missing file is a ``FileNotFoundError``; an unreadable one, or one
    holding anything else, a :class:`CheckpointError` naming ``path`` as a ``what``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            # garbage that starts like a pickle names a protocol; the error below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except UNREADABLE as exc:
        raise CheckpointError(f"{path}: not a readable {what}: {_reason(exc)}") from None


def save_checkpoint(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (:func:`atomic_path`), creating its
    folder; :func:`load_checkpoint` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path
