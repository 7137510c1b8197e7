"""Draining a worker before it stops: it stops taking the model's queue, waits until no batch
runs, and gives up the stop when demand comes back meanwhile (the queue is taken again and the
worker is kept), so returning requests do not wait for a cold start."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from autodep_celery.autoscaler import actuators
from autodep_celery.autoscaler.actuators import LocalWorkers, _Local
from autodep_celery.config import ModelSettings, Settings


class Pools:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def cancel_consumer(self, hostname: str, queue: str) -> None:
        self.calls.append(("cancel", hostname, queue))

    def add_consumer(self, hostname: str, queue: str) -> None:
        self.calls.append(("add", hostname, queue))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def drain(busy: list[bool], wanted: list[bool], timeout_s: float = 30.0) -> tuple[bool, list]:
    """Drain with scripted readings, one of `busy` and of `wanted` per poll (the last repeats)."""
    pools, clock = Pools(), Clock()
    polls = {"busy": 0, "wanted": 0}

    def read(name: str, script: list[bool]) -> bool:
        i = polls[name] = polls[name] + 1
        return script[min(i, len(script)) - 1]

    done = actuators.drain_worker(
        pools,  # type: ignore[arg-type]
        "m@host",
        "m",
        lambda: read("busy", busy),
        timeout_s,
        clock=clock,
        wanted=lambda: read("wanted", wanted),
        sleep=clock.sleep,
    )
    return done, pools.calls


def test_an_idle_worker_drains_after_two_quiet_polls() -> None:
    done, calls = drain(busy=[True, True, False], wanted=[False])
    assert done is True
    assert calls == [("cancel", "m@host", "autodep.m")]


def test_demand_coming_back_keeps_the_worker_and_its_queue() -> None:
    done, calls = drain(busy=[True], wanted=[False, False, True])
    assert done is False
    assert calls == [("cancel", "m@host", "autodep.m"), ("add", "m@host", "autodep.m")]


def test_a_worker_busy_past_the_timeout_is_stopped_anyway() -> None:
    done, calls = drain(busy=[True], wanted=[False], timeout_s=2.0)
    assert done is True and calls == [("cancel", "m@host", "autodep.m")]


@dataclass
class Child:
    pid: int = 4242
    stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.stopped.set()

    def alive(self) -> bool:
        return not self.stopped.is_set()


def workers_with(child: Child) -> LocalWorkers:
    local = LocalWorkers(Settings(models=(ModelSettings("m", "/tmp/m.pt"),)), env={})
    local._workers["m"] = _Local("m", child)  # type: ignore[arg-type]  # a stand-in child
    return local


def test_a_drain_that_finds_demand_cancels_the_stop() -> None:
    child = Child()
    local = workers_with(child)
    drained = threading.Event()

    def drain_found_demand() -> bool:
        drained.set()
        return False

    local.stop("m", drain=drain_found_demand)
    assert drained.wait(5)
    for _ in range(200):  # the stop runs on its own thread
        if local.starting("m") is not None:
            break
        threading.Event().wait(0.01)
    assert local.starting("m") == 1, "kept, and counted as serving again"
    assert not child.stopped.is_set() and local.present("m")


def test_a_completed_drain_stops_the_worker() -> None:
    child = Child()
    local = workers_with(child)
    local.stop("m", drain=lambda: True)
    assert child.stopped.wait(5)
    for _ in range(200):
        if not local.present("m"):
            break
        threading.Event().wait(0.01)
    assert not local.present("m")
