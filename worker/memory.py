"""Keep freed tensor memory in the process instead of handing it back to the kernel each batch.

glibc serves large allocations with mmap and trims the heap top on free, so every batch of a
CNN re-faults its activations page by page. Fixing the mmap threshold at its maximum (32 MiB;
larger blocks are still mapped) and never trimming keeps them (the measurements are in
docs/architecture.md §2.3). The cost is that a process keeps its peak heap: RSS stays at the
largest batch's working set rather than falling between batches.

Called by worker.signals when a pool process starts, and by bench.inprocess so the in-process
limit runs with the same allocator. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
"""glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)."""
TRIM_THRESHOLD = 2**31 - 1
"""Largest value mallopt takes (an int): in practice, never trim."""


def keep_freed_memory() -> bool:
    """Apply the settings above; True when the C library took them."""
    if not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded in this process
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))
    ok = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and ok
    if not ok:
        log.warning("mallopt refused the allocator settings; batches may page-fault more")
    return ok


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):  # not a glibc system
        return False
