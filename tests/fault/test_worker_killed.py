"""A whole Celery worker (parent and pool children) SIGKILLed while its batch computes: the
batch comes back within the visibility timeout plus kombu's restore interval, not ~100 s later,
and the request is answered.

The batch's delivery time is the score kombu gave it in the ``unacked_index`` sorted set; it is
restored when that entry leaves (or is re-added by the next delivery). A second worker that
consumes another queue runs kombu's periodic restore scan the whole time, as the other models'
workers of ``autodep serve`` do; the replacement worker starts right after the kill.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
import redis
import torch

from autodep_celery import embedded_redis, processes
from autodep_celery.celery_app import unacked_restore_interval_s
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
from tests.integration.support import b64, image_bytes, wait_s

VISIBILITY_S = 7
"""Above the test batch (~2-4 s), short enough for a test."""
RESTORE_INTERVAL_S = unacked_restore_interval_s(VISIBILITY_S)
SLACK_S = 1.0
"""Lateness of the restore timer (the worker's event loop runs it when its poll returns, which
is bounded by the next timer) plus this test's 50 ms polling."""
WIDTH = 150
"""The slow model computes ~10-20 ms per pixel of image width."""

T = TypeVar("T")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    try:
        redis_child, url = embedded_redis.start(tmp_path / "redis", log_path=tmp_path / "redis.log")
    except RuntimeError as exc:
        if IN_CI:
            raise
        pytest.skip(f"no redis-server: {exc}")
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    torch.jit.script(Slow().eval()).save(str(model_dir / "slow.pt"))
    models = tuple(
        ModelSettings(
            name=n, path=str(model_dir / "slow.pt"), task="ImageToImage", max_batch_size=1
        )
        for n in ("slow", "bystander")
    )
    settings = Settings(
        broker=BrokerSettings(url=url, visibility_timeout_s=VISIBILITY_S),
        worker=WorkerSettings(heartbeat_interval_s=0.5, max_attempts=3),
        web=WebSettings(port=processes.free_port(), processes=1, request_timeout_s=40.0),
        models=models,
    )
    s = Stack(url, settings, model_dir, tmp_path)
    try:
        yield s
    finally:
        processes.stop_all(list(s.workers.values()))
        redis_child.stop()


def unacked(client: redis.Redis) -> list[tuple[bytes, float]]:
    return client.zrange("unacked_index", 0, -1, withscores=True)  # type: ignore[return-value]


def poll(what: str, timeout_s: float, check: Callable[[], T]) -> T:
    deadline = wait_s(timeout_s)
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_batch_comes_back_within_visibility_timeout(stack: Stack) -> None:
    children = [
        start_worker(stack, "first", ["slow"], 1),
        start_worker(stack, "bystander", ["bystander"], 1),
    ]
    wait_for_workers(stack, {"slow": 1, "bystander": 1}, children)
    web: Web = start_web(stack, stack.settings, "web")
    client = stack.redis()
    body = {
        "data": {"B64Image": {"image": b64(image_bytes(WIDTH, 8, seed=3))}},
        "inference_type": "ImageToImage",
        "model": "slow",
    }
    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(web.post, "/inference", body)
            [(tag, delivered_at)] = poll("the batch's delivery", 20, lambda: unacked(client))
            poll(
                "the first worker to compute",
                20,
                lambda: "Working" in web.get("/workers").json().values(),
            )
            first = stack.workers["first"]
            first.signal_group(signal.SIGKILL)  # parent and pool child, as a crash or OOM would
            first.proc.wait(10)
            assert not future.done()
            start_worker(stack, "second", ["slow"], 1)

            def restored() -> float | None:
                score = client.zscore("unacked_index", tag)
                return time.time() if score != delivered_at else None

            restored_at = poll("the batch to be restored", VISIBILITY_S + 30, restored)
            assert restored_at is not None
            resp = future.result(timeout=60)
    finally:
        client.close()
        web.child.stop()
    delay = restored_at - delivered_at
    print(f"batch restored {delay:.2f} s after its delivery")
    assert resp.status_code == 200, resp.text[:300]
    out = resp.json()[0]["B64Image"]
    assert (out["width"], out["height"]) == (WIDTH, 8)
    # never before the visibility timeout, and at the first restore scan after it
    assert VISIBILITY_S <= delay <= VISIBILITY_S + RESTORE_INTERVAL_S + SLACK_S
