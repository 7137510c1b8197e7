"""A whole Celery worker (parent and pool child) SIGSTOPped mid-batch for longer than its task
time limit, then SIGCONTed: the time limit does not count the frozen time, so the healthy child
is not killed on resume (worker.pool), the batch finishes, and the worker keeps serving.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import torch

from autodep_celery import embedded_redis, processes
from autodep_celery.celery_app import task_time_limit_s
from autodep_celery.config import (
    BrokerSettings,
    ModelSettings,
    Settings,
    WebSettings,
    WorkerSettings,
)
from tests.integration.conftest import (
    IN_CI,
    Slow,
    Stack,
    Web,
    start_web,
    start_worker,
    wait_for_workers,
)
from tests.integration.support import b64, image_bytes

pytestmark = pytest.mark.fault

VISIBILITY_S = 20
"""Gives the shortest task time limit, 10 s (celery_app.task_time_limit_s)."""
WIDTH = 40
"""The slow model computes ~10-20 ms per pixel of width: a batch of well under a second (and
its warm-up, at the `resize` size, as long), so that even on a machine ten times slower than
usual it computes for less than the 10 s time limit once thawed."""


@pytest.fixture
def system(tmp_path: Path) -> Iterator[tuple[Stack, Web]]:
    try:
        redis_child, url = embedded_redis.start(tmp_path / "redis", log_path=tmp_path / "redis.log")
    except RuntimeError as exc:
        if IN_CI:
            raise
        pytest.skip(f"no redis-server: {exc}")
    torch.jit.script(Slow().eval()).save(str(tmp_path / "slow.pt"))
    settings = Settings(
        broker=BrokerSettings(url=url, visibility_timeout_s=VISIBILITY_S),
        worker=WorkerSettings(heartbeat_interval_s=0.5),
        web=WebSettings(port=processes.free_port(), processes=1, request_timeout_s=60.0),
        models=(
            ModelSettings(
                name="slow",
                path=str(tmp_path / "slow.pt"),
                task="ImageToImage",
                max_batch_size=1,
                resize=(8, WIDTH),
            ),
        ),
    )
    stack = Stack(url, settings, tmp_path, tmp_path)
    web = None
    try:
        worker = start_worker(stack, "slow", ["slow"], 1)
        wait_for_workers(stack, {"slow": 1}, [worker])
        web = start_web(stack, settings, "web")
        yield stack, web
    finally:
        if web is not None:
            web.child.stop()
        processes.stop_all(list(stack.workers.values()))
        redis_child.stop()


def freeze_mid_batch(
    stack: Stack, pool: ThreadPoolExecutor, url: str, body: dict[str, Any]
) -> Future[requests.Response]:
    """Send `body` and SIGSTOP the worker (parent and child) while its batch computes, as its
    child's status says ("Working"); again if the batch ended before it was seen."""
    parent = psutil.Process(stack.workers["slow"].pid)
    for _ in range(10):
        answer = pool.submit(requests.post, url, json=body, timeout=90)
        while not answer.done():
            if any(p.state == "Working" for p in stack.procs()):
                for p in (parent, *parent.children()):
                    p.send_signal(signal.SIGSTOP)
                return answer
            time.sleep(0.01)
    pytest.fail("the batch was never seen computing")


def test_frozen_time_does_not_count_toward_the_time_limit(system: tuple[Stack, Web]) -> None:
    stack, web = system
    limit_s = task_time_limit_s(stack.settings)
    assert limit_s == 10
    parent = psutil.Process(stack.workers["slow"].pid)
    children = parent.children()
    assert len(children) == 1
    body = {
        "model": "slow",
        "inference_type": "ImageToImage",
        "data": {"B64Image": {"image": b64(image_bytes(WIDTH, 8))}},
    }
    with ThreadPoolExecutor(1) as pool:
        answer = freeze_mid_batch(stack, pool, web.url + "/inference", body)
        time.sleep(limit_s + 3)
        for p in (parent, *children):
            p.send_signal(signal.SIGCONT)
        response = answer.result(timeout=90)
    assert response.status_code == 200, response.text
    assert [c.pid for c in parent.children()] == [c.pid for c in children], "a child was replaced"
    log = (stack.workdir / "worker-slow.log").read_text()
    assert "Hard time limit" not in log
    assert "postponed" in log or "did not run" in log
    again = requests.post(web.url + "/inference", json=body, timeout=60)
    assert again.status_code == 200
