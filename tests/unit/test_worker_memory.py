"""worker.memory: on glibc, freed activation-sized blocks stay in the process's heap; the
settings are harmless to repeat; other C libraries are left alone."""

from __future__ import annotations

import ctypes
import platform

import pytest

from autodep_celery.worker import memory

pytestmark = pytest.mark.unit


def test_glibc_detection_agrees_with_platform() -> None:
    # memory._glibc asks confstr (cheap, for every pool process); platform scans the binary.
    assert memory._glibc() == (platform.libc_ver()[0] == "glibc")


class MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (2.33+), in bytes: `arena` the heap taken from the kernel,
    `hblkhd` the blocks mapped on their own, `uordblks` the heap in use."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()
    ]


@pytest.mark.skipif(not memory._glibc(), reason="mallopt is glibc's")
def test_freed_activation_sized_blocks_stay_in_the_heap() -> None:
    """Four 24 MiB blocks, a batch's activations: with glibc's defaults each is a mapping of
    its own, unmapped on free (or, once its threshold has grown, the heap is trimmed by the
    96 MiB freed at its top); either way the next batch faults them in again."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    # Changes this test process's allocator too: harmless, and what every pool process does.
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory() is True  # idempotent
    size = 24 * 2**20
    before = libc.mallinfo2()
    blocks = [libc.malloc(size) for _ in range(4)]
    held = libc.mallinfo2()
    for block in reversed(blocks):
        libc.free(block)
    freed = libc.mallinfo2()
    assert all(blocks)
    assert held.hblkhd - before.hblkhd < size  # none is a mapping of its own
    assert held.uordblks - before.uordblks >= 4 * size  # all four are in the heap
    assert freed.arena >= held.arena  # and freeing them gives none of it back


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_glibc", lambda: False)
    assert memory.keep_freed_memory() is False
