"""This process's place in a multi-process run, and the device and CPU threads it uses."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the initialised process group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the initialised process group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0)."""
    return rank() == 0


@dataclass(frozen=True)
class DistContext:
    """This process's place in a ``torchrun`` launch (world size 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> DistContext:
        """From the initialised process group if there is one, else ``torchrun``'s variables."""
        env = os.environ
        if dist.is_available() and dist.is_initialized():
            return cls(rank(), world_size(), int(env.get("LOCAL_RANK", rank())))
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                   int(env.get("LOCAL_RANK", 0)))


def available_device(name: str) -> torch.device:
    """``torch.device(name)``; a ValueError when ``name`` is no device or names a CUDA device
    this machine lacks."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: not a device name (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ValueError(f"device {name!r}: this machine has {found} CUDA device(s) usable by "
                         f"torch {torch.__version__}; use 'cpu' (or 'auto' where accepted)")
    return device


def resolve_device(name: str, ctx: DistContext) -> torch.device:
    """``auto``: a GPU when CUDA is available, else the CPU; plain ``cuda`` is this local rank's
    GPU (modulo the GPUs present); a CUDA device this machine lacks is a ValueError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = available_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return device


def cpu_threads(requested: int, ctx: DistContext) -> int:
    """``requested``, or the cores shared out among the local processes (at least 1)."""
    if requested > 0:
        return requested
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
    return max(1, (os.cpu_count() or 1) // local)
