"""Allocator settings shared by the benchmarks.

With glibc's default settings every tensor above the mmap threshold is a fresh mapping, so each large
temporary pays for page faults (measured here: 10 ms instead of 2 ms for the same rotary call). The
cost falls on every contender but swamps memory-bound kernels, so by default the benchmarks keep freed
memory on the heap, as jemalloc/tcmalloc or ``MALLOC_MMAP_THRESHOLD_`` would in a training job.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def steady_allocator(enabled: bool = True) -> str:
    """Raise glibc's mmap and trim thresholds to 1 GiB; returns a description for the report."""
    if not enabled:
        return "glibc defaults (fresh pages for large tensors)"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        ok = False
    return (
        "heap reuse (mallopt mmap/trim thresholds 1 GiB)" if ok else "allocator unchanged (no glibc mallopt)"
    )
