"""glibc ``malloc`` settings that let a CPU training step reuse the memory the last one freed.

A CPU step allocates and frees many activations of 1-30 MB. By default glibc serves a block
above its mmap threshold (128 KiB at start, raised to the largest mmap'd block freed) with fresh
``mmap`` pages, and hands a freed heap top above its trim threshold (twice the mmap threshold)
back to the kernel, so the next step faults those pages in again and the kernel zeroes them.
D0's step at batch 16 and 320 px took ~30,000 minor page faults (README, "Training speed on
the CPU"). :func:`retain_freed_memory` pins the mmap threshold at glibc's 64-bit maximum
(32 MiB, so every activation of that size comes from the heap) and the trim threshold at
2 GiB, so the heap keeps the step's peak for the next step: the faults fall about tenfold.
The resident set stays at the step's peak instead of dropping between steps.
"""
from __future__ import annotations

import ctypes
import os

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``); larger values
#: are refused.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: Freed memory kept at the top of the heap before glibc trims it (``mallopt`` takes an int).
TRIM_THRESHOLD = 2**31 - 1
#: Environment variables through which a user sets glibc's malloc: where any is set, it wins.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``), else None
    (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # Windows has no handle for the running program
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return libc


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (module docstring); returns
    whether they were set. Nothing is changed off glibc, or where the user set glibc's malloc
    through :data:`USER_SETTINGS`. Processes forked afterwards (loader workers) inherit it."""
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    libc = glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and \
        bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
