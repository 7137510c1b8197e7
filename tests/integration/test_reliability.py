"""Failure paths: a SIGKILLed pool child, deadlines (504), backpressure (429), no worker (503)."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import Stack, Web
from tests.integration.support import b64, image_bytes, tiny_body, wait_s


def slow_body(width: int, seed: int = 0) -> dict:
    # the slow model computes ~10 matmuls (~20 ms here) per pixel of width
    return {
        "data": {"B64Image": {"image": b64(image_bytes(width, 8, seed=seed))}},
        "inference_type": "ImageToImage",
        "model": "slow",
    }


def working_slow_pid(web: Web, timeout_s: float = 20, not_in: frozenset[int] = frozenset()) -> int:
    deadline = wait_s(timeout_s)
    while time.monotonic() < deadline:
        busy = web.get("/workers").json()
        for name, state in busy.items():
            pid = int(name.rsplit("/", 1)[1])
            if name.startswith("slow@") and state == "Working" and pid not in not_in:
                return pid
        time.sleep(0.05)
    raise AssertionError("no slow worker process became busy")


def test_sigkilled_child_loses_no_request(stack: Stack, web: Web) -> None:
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(web.post, "/inference", slow_body(300, seed=1))
        pid = working_slow_pid(web)
        parent = stack.workers["slow"].pid
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == parent  # a pool child of ours
        os.kill(pid, signal.SIGKILL)
        resp = future.result(timeout=90)
    assert resp.status_code == 200, resp.text
    out = resp.json()[0]["B64Image"]
    assert (out["width"], out["height"]) == (300, 8)
    # the pool replaces the dead child and the dead one leaves the status list
    deadline = wait_s(30)
    while time.monotonic() < deadline:
        names = web.get("/workers/_status").json()
        slow = [n for n in names if n.startswith("slow@")]
        if len(slow) == 2 and all(not n.endswith(f"/{pid}") for n in slow):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"pool did not recover: {names}")


def test_batch_that_keeps_killing_its_process_fails_with_worker_lost(
    stack: Stack, web: Web
) -> None:
    attempts = stack.settings.worker.max_attempts
    killed: set[int] = set()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(web.post, "/inference", slow_body(300, seed=5))
        for _ in range(attempts):
            pid = working_slow_pid(web, not_in=frozenset(killed))
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        resp = future.result(timeout=90)
    assert resp.status_code == 500, resp.text[:300]
    error = resp.json()["error"]
    assert error["code"] == "worker_lost"
    assert f"died {attempts} times" in error["message"]


def test_deadline_gives_504_and_server_keeps_serving(tight_web: Web) -> None:
    start = time.monotonic()
    resp = tight_web.post("/inference", json=slow_body(300, seed=2))
    took = time.monotonic() - start
    assert resp.status_code == 504, (resp.status_code, resp.text[:300])
    assert resp.json()["error"]["code"] == "deadline_exceeded"
    assert took < tight_web.settings.web.request_timeout_s + 1.5
    # the slow batch still occupies one child; a small request gets through (a respawning
    # child from an earlier test may need a moment, hence a few tries)
    codes = []
    for _ in range(10):
        ok = tight_web.post("/inference", json=slow_body(4, seed=3))
        codes.append(ok.status_code)
        if ok.status_code == 200:
            break
    assert codes[-1] == 200, codes


def test_backpressure_gives_429_with_retry_after(tight_web: Web) -> None:
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda i: tight_web.post("/inference", json=slow_body(30, seed=i)), range(8))
        )
    codes = sorted(r.status_code for r in responses)
    rejected = [r for r in responses if r.status_code == 429]
    assert rejected, codes
    assert any(r.status_code == 200 for r in responses), codes
    for r in rejected:
        assert r.json()["error"]["code"] == "overloaded"
        assert int(r.headers["Retry-After"]) >= 1
    assert set(codes) <= {200, 429, 504}, codes


def test_model_without_worker_gives_503_fast(web: Web) -> None:
    start = time.monotonic()
    resp = web.post(
        "/inference",
        json={
            "data": {"B64Image": {"image": b64(image_bytes(8, 8))}},
            "inference_type": {"ImageClassification": {"top_n": 1}},
            "model": "ghost",
        },
    )
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "no_worker"
    assert "ghost" in resp.json()["error"]["message"]
    assert time.monotonic() - start < 3


def test_ready_names_the_model_without_worker(web: Web) -> None:
    resp = web.get("/ready")
    assert resp.status_code == 503
    assert "ghost" in resp.json()["error"]["message"]
    assert web.get("/health").status_code == 200


@pytest.mark.parametrize("path", ["/health", "/workers", "/workers/_status", "/workers/_info"])
def test_health_and_status_answer_while_models_compute(web: Web, path: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(web.post, "/inference", slow_body(150, seed=10 + i)) for i in range(4)]
        working_slow_pid(web)
        resp = web.get(path)
        still_computing = sum(not f.done() for f in busy)
        for f in busy:
            assert f.result(timeout=120).status_code == 200
    assert resp.status_code == 200
    assert still_computing > 0


def test_both_gunicorn_worker_classes_serve_and_answer_health_while_busy(
    web: Web, tight_web: Web
) -> None:
    # The default web runs gevent; tight_web runs gthread (see conftest): both must really be
    # what they claim, and a request computing must not hold up /health in either.
    for server, worker_class in ((web, "GeventWorker"), (tight_web, "ThreadWorker")):
        log = server.child.log_path
        used = f"Using worker: autodep_celery.web.http_workers.{worker_class}"
        assert log is not None and used in log.read_text()
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(server.post, "/inference", slow_body(100, seed=40))
            time.sleep(0.2)
            start = time.monotonic()
            health = server.get("/health")
            answered_s = time.monotonic() - start
            computing = not busy.done()
            assert busy.result(timeout=120).status_code in (200, 504)
        assert health.status_code == 200
        assert computing and answered_s < 1.0


def test_a_frozen_worker_is_not_ready_and_recovers(stack: Stack, web: Web) -> None:
    """SIGSTOP of a worker's parent: its children keep their heartbeats but nothing is
    dispatched to them. Within a few heartbeats the web stops counting them (a request gets
    503 at once instead of waiting for its deadline), and after SIGCONT it serves again."""
    from tests.integration.conftest import start_worker, wait_for_workers

    child = start_worker(stack, "sleepy-frozen", ["sleepy"], 1)
    body = {**tiny_body(), "model": "sleepy"}
    try:
        wait_for_workers(stack, {"sleepy": 1}, [child])
        deadline = wait_s(10)
        while web.post("/inference", json=body).status_code != 200:
            assert time.monotonic() < deadline, "the new worker never served"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGSTOP)  # the Celery parent only

        def listed() -> bool:
            return any(k.startswith("sleepy-frozen@") for k in web.get("/workers/_status").json())

        deadline = wait_s(15)
        while listed():  # its children still write heartbeats; its own record goes stale
            assert time.monotonic() < deadline, "a frozen worker still counted as serving"
            time.sleep(0.2)
        time.sleep(1.5)  # every web process's cached view (worker_check_interval_s) is past it
        started = time.monotonic()
        resp = web.post("/inference", json=body)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "no_worker", resp.text
        assert time.monotonic() - started < 5  # at once, not after the 30 s deadline
        os.kill(child.pid, signal.SIGCONT)
        deadline = wait_s(20)
        while web.post("/inference", json=body).status_code != 200:
            assert time.monotonic() < deadline, "the thawed worker never served again"
            time.sleep(0.2)
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.stop()
        stack.workers.pop("sleepy-frozen", None)
