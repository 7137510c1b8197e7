"""A RabbitMQ broker end to end: the web sends batches with Celery's send_task (CelerySender) from
gunicorn's default gevent worker, while replies and worker status still go through Redis.

Runs against the RabbitMQ on 127.0.0.1:5672 (guest/guest) in a private vhost, since other runs
may share that server; skips when rabbitmqctl or RabbitMQ is missing.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from autodep_celery import processes
from autodep_celery.config import Settings
from tests.integration.conftest import (
    Stack,
    Web,
    make_settings,
    start_web,
    start_worker,
    wait_for_workers,
)
from tests.integration.support import image_bytes, reference_probabilities, tiny_body

AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
TINY_LABELS = [f"class_{i}" for i in range(10)]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    """A throwaway vhost, so queues never mix with another run's on the shared server."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl not found: RabbitMQ is not installed here")
    try:
        socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=2).close()
    except OSError as exc:
        pytest.skip(f"RabbitMQ is not reachable on {AMQP_HOST}:{AMQP_PORT}: {exc}")
    vhost = f"autodep-test-{uuid.uuid4().hex[:12]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"rabbitmqctl add_vhost failed: {exc.stderr.decode(errors='replace').strip()}")
    except (subprocess.SubprocessError, OSError) as exc:  # e.g. a hung rabbitmqctl
        pytest.skip(f"rabbitmqctl add_vhost failed: {exc}")
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (subprocess.SubprocessError, OSError) as exc:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=30)
        pytest.skip(f"rabbitmqctl set_permissions failed: {exc}")
    try:
        yield f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def amqp_settings(model_dir: Path, redis_url: str, amqp_url: str) -> Settings:
    """Only `tiny` (so /ready needs just our worker), and Redis DB 1 for replies and status, so
    the Redis-broker stack's workers of the same session never count as ours."""
    result_url = redis_url.rsplit("/", 1)[0] + "/1"
    base = make_settings(model_dir, result_url, processes=1)
    return dataclasses.replace(
        base,
        models=tuple(m for m in base.models if m.name == "tiny"),
        broker=dataclasses.replace(base.broker, url=amqp_url, result_url=result_url),
    )


@pytest.fixture(scope="module")
def amqp_web(amqp_url: str, workdir: Path, redis_url: str, model_dir: Path) -> Iterator[Web]:
    settings = amqp_settings(model_dir, redis_url, amqp_url)
    assert settings.web.worker_class == "gevent"  # the default is what this module tests
    stack = Stack(settings.result_url, settings, model_dir, workdir)
    children: list[processes.Child] = []
    try:
        children.append(start_worker(stack, "amqp", ["tiny"], 1))
        wait_for_workers(stack, {"tiny": 1}, children, timeout_s=60)
        web = start_web(stack, settings, "amqp-web")
        children.append(web.child)
        yield web
    finally:
        processes.stop_all(children)


def tiny_top5(seed: int) -> dict:
    body = tiny_body(seed)
    body["inference_type"] = {"ImageClassification": {"top_n": 5}}
    return body


def assert_tiny_top5(answer: object, model_dir: Path, seed: int) -> None:
    """The in-process reference the Redis-broker tests check against (test_inference)."""
    assert isinstance(answer, list) and len(answer) == 2
    got = answer[0]["Classification"]
    assert set(answer[1]) == {"secs", "nanos"}
    probs = reference_probabilities(str(model_dir / "tiny.pt"), image_bytes(16, 16, seed=seed))
    top = torch.topk(probs, 5)
    assert [e["label"] for e in got] == [TINY_LABELS[i] for i in top.indices.tolist()]
    for entry, p in zip(got, top.values.tolist(), strict=True):
        assert entry["probability"] == pytest.approx(p, abs=1e-4)


def test_inference_through_rabbitmq(amqp_web: Web, model_dir: Path) -> None:
    resp = amqp_web.post("/inference", json=tiny_top5(seed=1))
    assert resp.status_code == 200, resp.text
    assert_tiny_top5(resp.json(), model_dir, seed=1)


def test_concurrent_requests_batch_and_send_under_gevent(amqp_web: Web, model_dir: Path) -> None:
    seeds = list(range(100, 116))
    with ThreadPoolExecutor(len(seeds)) as pool:
        responses = list(pool.map(lambda s: amqp_web.post("/inference", json=tiny_top5(s)), seeds))
    for seed, resp in zip(seeds, responses, strict=True):
        assert resp.status_code == 200, resp.text
        assert_tiny_top5(resp.json(), model_dir, seed)


def test_ready_and_workers_see_the_amqp_worker(amqp_web: Web) -> None:
    ready = amqp_web.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "models": {"tiny": 1}}
    listed = amqp_web.get("/workers/_status").json()
    assert listed and all(name.startswith("amqp@test/") for name in listed), listed
    busy = amqp_web.get("/workers")
    assert busy.status_code == 200 and set(busy.json()) <= set(listed)
