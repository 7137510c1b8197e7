"""Per-process state is reset in a forked child, once, by the one registered mechanism."""

from __future__ import annotations

import gc
import os

import pytest

from autodep_celery import forksafe
from autodep_celery.web.publisher import RedisPublisher

pytestmark = pytest.mark.unit


class Holder:
    def __init__(self) -> None:
        self.state = "parent's"
        forksafe.register(self, Holder.reset)

    def reset(self) -> None:
        self.state = "fresh"


def in_child(check) -> str:
    """Run `check()` in a forked child and return what it printed."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        try:
            os.write(write, str(check()).encode())
        finally:
            os._exit(0)
    os.close(write)
    out = os.read(read, 1000).decode()
    os.close(read)
    os.waitpid(pid, 0)
    return out


def test_the_child_starts_fresh_and_the_parent_keeps_its_state():
    holder = Holder()
    assert in_child(lambda: holder.state) == "fresh"
    assert holder.state == "parent's"


def test_a_dead_object_is_forgotten():
    holder = Holder()
    del holder
    gc.collect()
    assert in_child(lambda: "ok") == "ok"  # no reset of a collected object runs


def test_a_sender_opens_its_own_connection_in_a_child():
    publisher = RedisPublisher("redis://127.0.0.1:1/0")
    publisher._client = object()  # type: ignore[assignment]  # the parent's connection
    assert in_child(lambda: publisher._client is None) == "True"
    assert publisher._client is not None


def test_unhashable_objects_register_too():
    from dataclasses import dataclass

    @dataclass
    class Record:  # eq=True: unhashable, like worker.runtime.Runtime
        state: str = "parent's"

    record = Record()
    forksafe.register(record, lambda r: setattr(r, "state", "fresh"))
    assert in_child(lambda: record.state) == "fresh"
