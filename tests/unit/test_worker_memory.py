"""worker.memory: the allocator settings apply on glibc and are harmless to repeat."""

from __future__ import annotations

import platform

import pytest

from worker import memory

pytestmark = pytest.mark.unit


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_taken_by_glibc() -> None:
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory() is True  # every pool process calls it once; twice is fine


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.keep_freed_memory() is False
