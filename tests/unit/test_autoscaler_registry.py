"""The autoscaler follows the model registry without services: each step re-reads the model set
and bounds (tests/unit/test_autoscaler_loop's in-memory Redis and pools), starts a worker for a
registered model and drains and stops ours of an unregistered one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from autodep_celery.autoscaler.loop import Autoscaler
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.contract import AUTOSCALER_KEY, REGISTRY_KEY
from tests.unit.test_autoscaler_loop import CFG, FakeRedis, Pools

pytestmark = pytest.mark.unit


class Local:
    """LocalWorkers' surface, with the worker pids the test gives it."""

    def __init__(self) -> None:
        self.own: dict[int, str] = {}
        self.stopping: set[str] = set()
        self.started: list[tuple[str, int]] = []
        self.drains: list[str] = []
        self.settings: Settings | None = None

    def supervise(self) -> list[str]:
        return []

    def pids(self) -> dict[int, str]:
        return dict(self.own)

    def hostname(self, model: str) -> str:
        return f"{model}@host"

    def starting(self, model: str) -> int | None:
        return None if model in self.stopping or model not in self.own.values() else 1

    def present(self, model: str) -> bool:
        return model in self.own.values()

    def start(self, model: str, processes: int) -> None:
        self.started.append((model, processes))

    def stop(self, model: str, drain: Any = None) -> None:
        self.stopping.add(model)
        self.drains.append(model)


def registry(redis: FakeRedis, **entries: dict[str, Any]) -> None:
    redis.hashes[REGISTRY_KEY] = {name: json.dumps(value) for name, value in entries.items()}


def published(redis: FakeRedis) -> dict[str, Any]:
    return json.loads(redis.values[AUTOSCALER_KEY])["models"]  # type: ignore[no-any-return]


def test_each_step_follows_the_registry() -> None:
    redis, local, now = FakeRedis(), Local(), [1000.0]
    static = Settings(autoscaler=CFG, models=(ModelSettings("m", "/m.pt", min_workers=0),))
    scaler = Autoscaler(
        static,
        redis,  # type: ignore[arg-type]
        Pools(),  # type: ignore[arg-type]
        local,  # type: ignore[arg-type]
        clock=lambda: now[0],
        wall=lambda: now[0],
    )
    scaler.step()
    assert set(published(redis)) == {"m"} and local.started == []
    # registered with 2 initial workers: started on the next step with its minimum
    registry(redis, r={"fields": {"path": "/r.pt", "min_workers": 2}, "url": "r.pt"})
    now[0] += 1
    scaler.step()
    assert local.started == [("r", 2)]
    assert local.settings is not None and local.settings.model("r") is not None
    assert (published(redis)["r"]["min"], published(redis)["r"]["max"]) >= (2, 2)
    # rescaled: the bounds of the next step are the registry's
    registry(
        redis,
        r={"fields": {"path": "/r.pt", "min_workers": 1, "max_workers": 3}, "url": "r.pt"},
        m={"fields": {"min_workers": 0, "max_workers": 5}},
    )
    local.own = {41: "r"}
    now[0] += 1
    scaler.step()
    assert (published(redis)["r"]["min"], published(redis)["r"]["max"]) == (1, 3)
    assert published(redis)["m"]["max"] == 5
    # unregistered (and the config model tombstoned): ours is drained and stopped, once
    registry(redis, m={"deleted": True})
    for _ in range(3):
        now[0] += 1
        scaler.step()
    assert local.drains == ["r"]
    assert published(redis) == {} and scaler.decisions == {}
