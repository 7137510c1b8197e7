"""worker.memory: the allocator settings apply on glibc and are harmless to repeat."""

from __future__ import annotations

import platform

import pytest
from autodep_celery.worker import memory

pytestmark = pytest.mark.unit


def test_glibc_detection_agrees_with_platform() -> None:
    # memory._glibc asks confstr (cheap, for every pool process); platform scans the binary.
    assert memory._glibc() == (platform.libc_ver()[0] == "glibc")


@pytest.mark.skipif(not memory._glibc(), reason="mallopt is glibc's")
def test_keep_freed_memory_is_taken_by_glibc() -> None:
    # Changes this test process's allocator too: harmless, and what every pool process does.
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory() is True  # idempotent


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_glibc", lambda: False)
    assert memory.keep_freed_memory() is False
