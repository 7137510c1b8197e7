"""The autoscaler's loop without services: an in-memory Redis holding worker and process records,
fake actuators that record what they were told, and a clock the test moves. Covers what the
integration tests cannot force: lost broadcasts, workers restarted under their old name, and a
worker of our own started large that must still shrink to zero."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from autodep_celery.autoscaler.loop import RESEND_AFTER_S, Autoscaler
from autodep_celery.config import AutoscalerSettings, ModelSettings, Settings
from autodep_celery.contract import PROCS_KEY, WORKERS_KEY
from autodep_celery.status import ProcStatus, WorkerRecord

pytestmark = pytest.mark.unit

CFG = AutoscalerSettings(
    interval_s=1.0, scale_up_delay_s=1.0, scale_down_delay_s=5.0, cooldown_s=1.0
)


class FakeRedis:
    """The few commands the autoscaler uses, on dicts."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.values: dict[str, bytes] = {}

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.hashes.get(key, {}))

    def hdel(self, key: str, *names: str) -> None:
        for n in names:
            self.hashes.get(key, {}).pop(n, None)

    def scan_iter(self, match: str, count: int = 0) -> list[str]:
        prefix = match.rstrip("*")
        return [k for k in self.values if k.startswith(prefix)]

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.values.get(k) for k in keys]

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    def set(self, key: str, value: Any, px: int | None = None) -> None:
        self.values[key] = value if isinstance(value, bytes) else str(value).encode()

    def delete(self, key: str) -> None:
        self.values.pop(key, None)

    def pipeline(self, transaction: bool = False) -> FakeRedis.Pipe:
        return FakeRedis.Pipe()

    class Pipe:
        def __init__(self) -> None:
            self.n = 0

        def llen(self, key: str) -> None:
            self.n += 1

        def execute(self) -> list[int]:
            return [0] * self.n


class Pools:
    """Records resizes; `confirm` False loses them like a broadcast nobody answered."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.confirm = True

    def resize(self, hostname: str, processes: int) -> bool:
        self.sent.append((hostname, processes))
        return self.confirm

    def cancel_consumer(self, hostname: str, queue: str) -> None:
        pass


class Local:
    """LocalWorkers' surface: one worker per model, whose pid the test chooses."""

    def __init__(self, pids: dict[int, str]) -> None:
        self.own = dict(pids)
        self.stopped: list[str] = []
        self.started: list[tuple[str, int]] = []

    def supervise(self) -> list[str]:
        return []

    def pids(self) -> dict[int, str]:
        return dict(self.own)

    def starting(self, model: str) -> int | None:
        return None

    def present(self, model: str) -> bool:
        return model in self.own.values()

    def start(self, model: str, processes: int) -> None:
        self.started.append((model, processes))

    def stop(self, model: str, drain: Any = None) -> None:
        self.stopped.append(model)


class World:
    def __init__(self, *, min_workers: int = 1, max_workers: int = 4, local: Local | None = None):
        self.redis = FakeRedis()
        self.pools = Pools()
        self.now = 1000.0
        model = ModelSettings("m", "/tmp/m.pt", min_workers=min_workers, max_workers=max_workers)
        self.scaler = Autoscaler(
            Settings(autoscaler=CFG, models=(model,)),
            self.redis,  # type: ignore[arg-type]
            self.pools,  # type: ignore[arg-type]
            local,  # type: ignore[arg-type]
            clock=lambda: self.now,
            wall=lambda: self.now,
        )

    def worker(self, pid: int, processes: int, bounds: tuple[int, int], declared=(4, 1)) -> None:
        record = WorkerRecord(
            hostname="m@host",
            pid=pid,
            queues=["autodep.m"],
            models=["m"],
            autoscale=True,
            declared_max=declared[0],
            declared_min=declared[1],
            max=bounds[0],
            min=bounds[1],
            processes=processes,
            alive=processes,
            mem_available=16 * 2**30,
            ts=time.time(),  # freshness is judged on the wall clock
        )
        self.redis.hashes.setdefault(WORKERS_KEY, {})["m@host"] = json.dumps(vars(record))
        procs = self.redis.hashes.setdefault(PROCS_KEY, {})
        procs.clear()
        for i in range(processes):
            p = ProcStatus(worker="m@host", pid=pid * 100 + i, models=["m"], ready=True)
            p.ts = time.time()
            procs[p.key] = json.dumps(vars(p))

    def step(self, seconds: float = 1.0) -> None:
        self.now += seconds
        self.scaler.step()


def test_a_lost_resize_is_sent_again_not_taken_for_a_hand_resize():
    w = World()
    w.worker(pid=7, processes=1, bounds=(4, 1))  # just started: Celery's bounds, not pinned
    w.pools.confirm = False  # the broadcast is lost
    w.step()
    assert w.pools.sent == [("m@host", 1)]  # pinned at its size (Celery's policy is off)
    w.step(RESEND_AFTER_S)
    assert w.pools.sent == [("m@host", 1), ("m@host", 1)]  # sent again, not put on hold
    w.pools.confirm = True
    w.step(RESEND_AFTER_S)
    w.worker(pid=7, processes=1, bounds=(1, 1))  # the worker applied it
    for _ in range(5):
        w.step(RESEND_AFTER_S)
    assert len(w.pools.sent) == 3 and w.scaler._manual_until == {}


def test_a_confirmed_resize_undone_by_hand_is_left_alone():
    w = World()
    w.worker(pid=7, processes=2, bounds=(4, 1))
    w.step()
    assert w.pools.sent == [("m@host", 2)]
    w.worker(pid=7, processes=3, bounds=(3, 3))  # celery control autoscale 3 3, by hand
    for _ in range(10):  # well past the down delay: still not fought
        w.step(RESEND_AFTER_S)
    assert w.pools.sent == [("m@host", 2)]
    assert ("m@host", 7) in w.scaler._manual_until


def test_a_worker_restarted_under_its_old_name_is_managed_at_once():
    w = World()
    w.worker(pid=7, processes=2, bounds=(4, 1))
    w.step()
    w.worker(pid=8, processes=1, bounds=(4, 1))  # crashed and restarted: same hostname
    w.step(RESEND_AFTER_S)
    assert w.pools.sent[-1] == ("m@host", 1)  # pinned as a new worker at once, no hold
    assert w.scaler._manual_until == {}


def test_our_worker_started_large_shrinks_and_stops_at_zero():
    local = Local({9: "m"})
    w = World(min_workers=0, local=local)
    # a burst started it with 4 processes: Celery's min is 4, but it is ours to shrink
    w.worker(pid=9, processes=4, bounds=(4, 4), declared=(4, 4))
    for _ in range(40):
        w.step()
        sizes = [n for _, n in w.pools.sent]
        if sizes and sizes[-1] < 4:
            w.worker(pid=9, processes=sizes[-1], bounds=(sizes[-1], sizes[-1]), declared=(4, 4))
        if local.stopped:
            break
    assert [n for _, n in w.pools.sent] == [3, 2, 1]  # one step at a time
    assert local.stopped == ["m"]  # then drained and stopped: scale to zero


def test_memory_granted_to_a_model_earlier_in_a_step_is_taken_for_the_next():
    from autodep_celery import status

    w = World()
    w.worker(pid=7, processes=1, bounds=(4, 1))
    serving, procs = status.read_workers(w.redis), status.read_all(w.redis)  # type: ignore[arg-type]
    m = w.scaler.settings.models[0]
    room, per_proc = w.scaler._room(m, serving, procs)
    assert room is not None and room > 3
    w.scaler._claimed_bytes = 3 * per_proc  # another model grew by 3 processes this step
    assert w.scaler._room(m, serving, procs)[0] == room - 3
