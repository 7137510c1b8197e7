"""The autodep.infer task body and the process runtime, with an in-memory Redis stand-in."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from autodep_celery import contract
from autodep_celery.config import BrokerSettings, ModelSettings, Settings, WorkerSettings
from autodep_celery.worker import runtime, signals, tasks
from tests.unit.conftest import make_settings

pytestmark = pytest.mark.unit


class FakeRedis:
    """The few commands the worker uses, with the redis-py pipeline protocol."""

    def __init__(self) -> None:
        self.lists: dict[str, list[bytes]] = {}
        self.counters: dict[str, int] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.ttl: dict[str, int] = {}
        self.strings: dict[str, str] = {}
        self._queued: list[tuple[str, tuple[Any, ...]]] | None = None

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        pipe = FakeRedis()
        pipe.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_queued"})
        pipe._queued = []
        return pipe

    def _do(self, name: str, *args: Any) -> Any:
        if self._queued is not None:
            self._queued.append((name, args))
            return self
        return getattr(self, "_" + name)(*args)

    def execute(self) -> list[Any]:
        queued, self._queued = self._queued or [], None
        return [getattr(self, "_" + name)(*args) for name, args in queued]

    def incr(self, key: str) -> Any:
        return self._do("incr", key)

    def expire(self, key: str, ttl: int) -> Any:
        return self._do("expire", key, ttl)

    def hset(self, key: str, field: str, value: str) -> Any:
        return self._do("hset", key, field, value)

    def hdel(self, key: str, *fields: str) -> Any:
        return self._do("hdel", key, *fields)

    def rpush(self, key: str, value: bytes) -> Any:
        return self._do("rpush", key, value)

    def delete(self, key: str) -> Any:
        return self._do("delete", key)

    def set(self, key: str, value: str) -> Any:
        return self._do("set", key, value)

    def exists(self, key: str) -> Any:
        return self._do("exists", key)

    def _set(self, key: str, value: str) -> bool:
        self.strings[key] = value
        return True

    def _exists(self, key: str) -> int:
        return int(key in self.strings)

    def _incr(self, key: str) -> int:
        self.counters[key] = self.counters.get(key, 0) + 1
        return self.counters[key]

    def _expire(self, key: str, ttl: int) -> bool:
        self.ttl[key] = ttl
        return True

    def _hset(self, key: str, field: str, value: str) -> int:
        self.hashes.setdefault(key, {})[field] = value
        return 1

    def _hdel(self, key: str, *fields: str) -> int:
        return sum(self.hashes.get(key, {}).pop(f, None) is not None for f in fields)

    def _rpush(self, key: str, value: bytes) -> int:
        self.lists.setdefault(key, []).append(value)
        return len(self.lists[key])

    def _delete(self, key: str) -> int:
        return int(self.counters.pop(key, None) is not None)


@pytest.fixture()
def rt(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> runtime.Runtime:
    settings = Settings(
        broker=BrokerSettings(url="redis://fake:1/0"),
        worker=WorkerSettings(max_attempts=2),
        models=(ModelSettings(name="echo", path=str(model_dir / "echo.pt")),),
    )
    r = runtime.Runtime(
        settings=settings, hostname="w@test", models=["echo"], queues=["autodep.echo"]
    )
    r._redis = FakeRedis()  # type: ignore[assignment]
    monkeypatch.setattr(runtime, "_current", r)
    r.load()
    return r


def echo_batch(batch_id: str = "b1", reply_to: str = "autodep:reply:t") -> dict[str, Any]:
    items = [
        contract.text_item("one", time.time() + 60),
        contract.text_item("two", time.time() + 60),
    ]
    return dict(contract.make_batch("echo", batch_id, reply_to, items))


def fake(rt: runtime.Runtime) -> FakeRedis:
    return rt._redis  # type: ignore[return-value]


def test_task_name_is_explicit() -> None:
    assert tasks.infer.name == contract.INFER_TASK


def test_reply_is_pushed_and_the_task_returns_a_receipt(rt: runtime.Runtime) -> None:
    assert tasks.infer.run(echo_batch()) == {"batch_id": "b1", "pushed": True}
    r = fake(rt)
    [pushed] = r.lists["autodep:reply:t"]
    reply = msgpack.unpackb(pushed, raw=False)
    assert [r["output"]["Text"] for r in reply["results"]] == ["echo: one", "echo: two"]
    assert reply["worker"] == f"w@test/{os.getpid()}"
    assert r.ttl["autodep:reply:t"] == contract.REPLY_TTL_S
    assert contract.attempts_key("b1") not in r.counters  # forgotten once answered
    record = json.loads(r.hashes[contract.PROCS_KEY][rt.status.key])
    assert record["state"] == "Idle" and record["served"] == 2 and record["ready"] is True
    assert record["models"] == ["echo"] and record["pid"] == os.getpid()


def test_no_reply_to_means_no_push_and_the_reply_is_returned(rt: runtime.Runtime) -> None:
    reply = tasks.infer.run(echo_batch(reply_to=""))
    assert [r["output"]["Text"] for r in reply["results"]] == ["echo: one", "echo: two"]
    assert fake(rt).lists == {}


def test_status_is_working_during_a_batch(
    rt: runtime.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(json.loads(fake(rt).hashes[contract.PROCS_KEY][rt.status.key])["state"])
        return contract.make_reply("b1", "w", [])

    monkeypatch.setattr(tasks.batch_mod, "run_batch", spy)
    tasks.infer.run(echo_batch())
    assert seen == ["Working"]


def redelivered(rt: runtime.Runtime, batch: dict[str, Any]) -> dict[str, Any]:
    """Run the task as the broker's redelivery of a batch whose process died; its reply."""
    tasks.infer.push_request(delivery_info={"redelivered": True})
    try:
        tasks.infer.run(batch)
    finally:
        tasks.infer.pop_request()
    return msgpack.unpackb(fake(rt).lists["autodep:reply:t"][-1], raw=False)


def test_first_delivery_costs_no_attempt_counter(rt: runtime.Runtime) -> None:
    tasks.infer.run(echo_batch("b8"))
    assert contract.attempts_key("b8") not in fake(rt).counters


def test_redelivered_batch_runs_until_max_attempts(rt: runtime.Runtime) -> None:
    reply = redelivered(rt, echo_batch("b7"))  # attempt 2 of max_attempts=2: still computed
    assert [r["output"]["Text"] for r in reply["results"]] == ["echo: one", "echo: two"]
    assert contract.attempts_key("b7") not in fake(rt).counters  # forgotten once answered


def test_batch_that_keeps_killing_its_process_fails_with_worker_lost(rt: runtime.Runtime) -> None:
    fake(rt).counters[contract.attempts_key("b9")] = 1  # redelivered once already, died again
    reply = redelivered(rt, echo_batch("b9"))  # attempt 3 > max_attempts=2
    assert reply["ok"] is False
    assert reply["error"]["code"] == "worker_lost"
    assert "died 2 times" in reply["error"]["message"]
    assert fake(rt).lists["autodep:reply:t"]


def test_unexpected_errors_become_a_fixed_internal_error(
    rt: runtime.Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise KeyError("secret detail")

    monkeypatch.setattr(tasks.batch_mod, "run_batch", boom)
    reply = tasks.infer.run(echo_batch(reply_to=""))
    assert reply["ok"] is False and reply["error"]["code"] == "internal_error"
    assert reply["error"]["status"] == 500 and "secret" not in reply["error"]["message"]
    assert "secret detail" in caplog.text  # logged with its traceback
    assert rt.status.state == "Idle" and rt.inflight == 0


def test_stop_removes_the_status_record(rt: runtime.Runtime) -> None:
    rt.write_status()
    assert rt.status.key in fake(rt).hashes[contract.PROCS_KEY]
    rt.stop()
    assert rt.status.key not in fake(rt).hashes[contract.PROCS_KEY]


def test_served_models_from_queues() -> None:
    settings = make_settings(("a", "b"))
    assert signals.served_models(settings, ["autodep.b", "autodep.default"]) == ["b"]
    assert signals.served_models(settings, []) == ["a", "b"]
