"""Faults of the broker and the web tier under load, with real processes: an external Redis
(password, AOF) restarted, the same Redis refusing writes (``maxmemory``), and a gunicorn worker
SIGKILLed. Every request gets its answer or a clear 503/504 within its deadline (none hangs,
none gets a 500), and serving comes back by itself; the recovery times are printed (``-s``).
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import redis
import torch

from autodep_celery import processes
from autodep_celery.config import (
    BrokerSettings,
    ModelSettings,
    Settings,
    WebSettings,
    WorkerSettings,
)
from autodep_celery.embedded_redis import redis_server_binary
from autodep_celery.worker.examples import Tiny
from tests.fault.load import CLIENTS, Load, Outcome, recovery_s, summary
from tests.integration.conftest import (
    IN_CI,
    Stack,
    Web,
    start_web,
    start_worker,
    wait_for_workers,
)

pytestmark = pytest.mark.fault

REQUEST_TIMEOUT_S = 8.0


@dataclass
class RedisServer:
    """redis-server with a password and an append-only file, on a fixed port across restarts."""

    workdir: Path
    port: int = field(default_factory=processes.free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    child: processes.Child | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def start(self) -> float:
        """Start it; the monotonic time it first answered PING."""
        argv = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--requirepass", self.password, "--dir", str(self.workdir), "--appendonly", "yes",
            "--appendfsync", "always", "--save", "",
        ]  # fmt: skip
        self.child = processes.start("redis", argv, log_path=self.workdir / "redis.log")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return time.monotonic()
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.child is not None
        self.child.proc.send_signal(signal.SIGKILL)
        self.child.proc.wait(10)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[tuple[RedisServer, Stack, Web]]:
    server = RedisServer(tmp_path)
    try:
        server.start()
    except (RuntimeError, FileNotFoundError) as exc:
        if IN_CI:
            raise
        pytest.skip(f"no redis-server: {exc}")
    torch.jit.script(Tiny().eval()).save(str(tmp_path / "tiny.pt"))
    settings = Settings(
        broker=BrokerSettings(url=server.url, visibility_timeout_s=20),
        worker=WorkerSettings(heartbeat_interval_s=0.5),
        web=WebSettings(
            port=processes.free_port(), processes=2, request_timeout_s=REQUEST_TIMEOUT_S
        ),
        models=(ModelSettings(name="tiny", path=str(tmp_path / "tiny.pt")),),
    )
    stack = Stack(server.url, settings, tmp_path, tmp_path)
    web = None
    try:
        worker = start_worker(stack, "tiny", ["tiny"], 1)
        wait_for_workers(stack, {"tiny": 1}, [worker])
        web = start_web(stack, settings, "web")
        yield server, stack, web
    finally:
        if web is not None:
            web.child.stop()
        processes.stop_all(list(stack.workers.values()))
        if server.child is not None:
            server.child.stop()


def check_answered(outcomes: list[Outcome], allowed: set[int | str]) -> None:
    """Every request answered with an allowed status, none later than its deadline."""
    assert outcomes, "the load sent nothing"
    statuses = {o.status for o in outcomes}
    assert statuses <= allowed, statuses
    slowest = max(o.ended - o.started for o in outcomes)
    assert slowest < REQUEST_TIMEOUT_S + 3, slowest


def test_external_redis_with_aof_restarted_under_load(
    system: tuple[RedisServer, Stack, Web],
) -> None:
    server, _, web = system
    with Load(web.url) as load:
        time.sleep(3)
        server.kill()
        time.sleep(2)
        back = server.start()
        time.sleep(12)
    check_answered(load.outcomes, {200, 503, 504})
    recovered = recovery_s(load.outcomes, back)
    late = [o.status for o in load.outcomes if o.started > back + recovered + 1]
    print(
        "\n"
        + summary(
            "external Redis (AOF, password) SIGKILLed, back after 2 s", load.outcomes, recovered
        )
    )
    assert recovered < 10, recovered
    assert late and set(late) == {200}, late


def test_redis_refusing_writes_gives_503_and_serving_resumes(
    system: tuple[RedisServer, Stack, Web],
) -> None:
    server, _, web = system
    client = server.client()
    with Load(web.url) as load:
        time.sleep(2)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", str(max(1, used // 2)))
        refused_from = time.monotonic()
        # requests in flight when Redis started refusing wait for their deadline (their
        # replies cannot be pushed); the ones sent after must get 503 at once
        time.sleep(REQUEST_TIMEOUT_S + 3)
        client.config_set("maxmemory", "0")
        allowed_again = time.monotonic()
        time.sleep(6)
    check_answered(load.outcomes, {200, 503, 504})
    during = [o for o in load.outcomes if refused_from + 1 < o.started and o.ended < allowed_again]
    timeline = [
        (round(o.started - refused_from, 2), round(o.ended - o.started, 2), o.status)
        for o in load.outcomes
    ]
    assert during and {o.status for o in during} <= {503}, timeline
    recovered = recovery_s(load.outcomes, allowed_again)
    print("\n" + summary("Redis refusing writes (maxmemory) for 11 s", load.outcomes, recovered))
    assert recovered < 5, recovered
    for pid in (p.pid for p in psutil.Process(web.child.proc.pid).children()):
        assert psutil.pid_exists(pid)


def test_a_killed_gunicorn_worker_is_replaced(system: tuple[RedisServer, Stack, Web]) -> None:
    _, _, web = system
    master = psutil.Process(web.child.proc.pid)
    before = {p.pid for p in master.children()}
    assert len(before) == 2
    with Load(web.url) as load:
        time.sleep(2)
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(5)
    after = {p.pid for p in master.children()}
    assert victim not in after and len(after) == 2, (before, after)
    # only requests in flight on the killed process may fail, with a dropped connection
    failed = [o for o in load.outcomes if o.status != 200]
    assert len(failed) <= CLIENTS, failed
    assert all(o.started <= killed + 0.1 for o in failed), failed
    assert all(isinstance(o.status, str) for o in failed), failed
    served = [o for o in load.outcomes if o.started > killed + 1]
    assert served and {o.status for o in served} == {200}
    check_answered([o for o in load.outcomes if o.status == 200], {200})
    print("\n" + summary("a gunicorn worker SIGKILLed", load.outcomes, None))
