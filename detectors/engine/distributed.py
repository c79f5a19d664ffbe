"""Distributed set-up of training and search runs.

Training under ``torchrun --nproc_per_node N -m asfd_cli.main train ...`` joins the process
group from the ``env://`` variables (gloo on CPU, NCCL on GPU, one GPU per local rank,
SyncBatchNorm on GPU): :class:`TrainProcess`. Multi-process search: :func:`spawn_gloo` starts
``nproc`` local workers joined in a gloo process group (gloo on CPU and GPU alike: the search
engine's collectives include CPU scalars, which NCCL rejects); ``torchrun`` launches are joined
by :func:`init_from_env`.
"""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nas_search.runtime import (DistContext, cpu_threads, rank, resolve_device,
                                retain_freed_memory)


# ----------------------------------------------------------------------------- training
def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the ``env://`` group (gloo on CPU, NCCL on GPU). Rank 0 evaluates while the others
    wait at their next collective, hence the generous timeout."""
    if ctx.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method="env://", timeout=timedelta(hours=2))


@dataclass(frozen=True)
class TrainProcess:
    """This process of a training run: its rank context and device, and what the ranks share."""

    ctx: DistContext
    device: torch.device

    @classmethod
    def join(cls, device: str, threads: int) -> TrainProcess:
        """Resolve ``device`` for this rank, join the process group under ``torchrun``, and set
        the CPU threads (``threads``; 0: this rank's share of the cores) and, on a CPU, glibc's
        malloc to keep the memory a step frees (:func:`retain_freed_memory`)."""
        ctx = DistContext.current()
        resolved = resolve_device(device, ctx)
        init_process_group(ctx, resolved)
        if resolved.type == "cpu":
            torch.set_num_threads(cpu_threads(threads, ctx))
            retain_freed_memory()
        return cls(ctx, resolved)

    def sync_batchnorm(self, model: nn.Module) -> nn.Module:
        """``model`` with SyncBatchNorm on a multi-GPU run, else itself."""
        if self.ctx.enabled and self.device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)`` on a distributed run, else ``model``."""
        if not self.ctx.enabled:
            return model
        return DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def from_rank0(self, value: float) -> float:
        """Rank 0's ``value`` on every rank."""
        if not self.ctx.enabled:
            return value
        shared = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(shared, src=0)
        return float(shared)

    def agree(self, nonfinite: bool, stop: bool) -> tuple[bool, bool]:
        """Any rank's ``nonfinite`` and rank 0's ``stop``, on every rank."""
        if not self.ctx.enabled:
            return nonfinite, stop
        flags = torch.tensor([float(nonfinite), float(stop and self.ctx.is_main)],
                             device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])


# ----------------------------------------------------------------------------- local workers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_worker(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(cpu_threads(0, DistContext(rank, world)))
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


class WorkerError(RuntimeError):
    """A spawned worker process raised (the message ends with its traceback) or died."""


def spawn_gloo(fn: Callable[..., Any], nproc: int, *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` spawned processes joined in a local gloo process group.

    ``fn`` and ``args`` must be picklable (a module-level function); an exception in any worker,
    or its death, is a :class:`WorkerError` here (the other workers are stopped).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    try:
        mp.spawn(_gloo_worker, args=(nproc, _free_port(), fn, args), nprocs=nproc, join=True)
    except mp.ProcessExitedException as exc:
        raise WorkerError(f"worker {exc}; its run keeps the last checkpoint written") from None
    except mp.ProcessRaisedException as exc:
        raise WorkerError(f"worker process {exc.error_index} failed: {str(exc).strip()}") \
            from None


@contextlib.contextmanager
def init_from_env() -> Iterator[int]:
    """Join the gloo process group described by ``torchrun``'s environment (``WORLD_SIZE`` > 1)
    for the duration of the block; yields this process's rank (0 without torchrun)."""
    if not DistContext.current().enabled or dist.is_initialized():
        yield rank()
        return
    dist.init_process_group("gloo")
    try:
        yield rank()
    finally:
        dist.destroy_process_group()
