"""Flower (`celery -A autodep_celery flower`) against the live test stack: its API lists the
workers, shows each batch by model and size (never image bytes), and its pool buttons resize a
worker started with --autoscale (worker.pool_buttons)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from autodep_celery import contract, launch, processes
from autodep_celery.config import ModelSettings
from tests.integration.conftest import Stack, Web, _log
from tests.integration.support import tiny_body, wait_s

POT = "flowerpot@test"
"""A worker of its own model, so resizing it leaves the shared stack's pools alone."""


@dataclass
class Flower:
    url: str

    def get(self, path: str, **params: object) -> requests.Response:
        return requests.get(self.url + path, params=params, timeout=30)  # type: ignore[arg-type]

    def post(self, path: str, **params: object) -> requests.Response:
        return requests.post(self.url + path, params=params, timeout=30)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Iterator[Flower]:
    port = processes.free_port()
    env = launch.child_env(stack.settings)
    env["FLOWER_UNAUTHENTICATED_API"] = "true"  # the API (and Flower's buttons) without login
    argv = processes.python_argv(
        "-m", "celery", "-A", "autodep_celery", "flower", f"--port={port}", "--address=127.0.0.1"
    )
    child = processes.start("flower", argv, env=env, log_path=_log(stack.workdir, "flower"))
    f = Flower(f"http://127.0.0.1:{port}")

    def healthy() -> bool:
        try:
            return f.get("/healthcheck").status_code == 200
        except requests.RequestException:
            return False

    try:
        processes.wait_until(healthy, 60, "flower", alive=child.alive)
        yield f
    finally:
        child.stop()


@pytest.fixture(scope="module")
def pot_worker(stack: Stack) -> Iterator[processes.Child]:
    pot = ModelSettings("flowerpot", str(stack.model_dir / "tiny.pt"), task="ImageClassification")
    settings = dataclasses.replace(stack.settings, models=(*stack.settings.models, pot))
    argv = launch.worker_argv(
        settings, ["flowerpot"], concurrency=1, hostname=POT, extra=["--autoscale=3,1"]
    )
    child = processes.start(
        "worker flowerpot",
        argv,
        env=launch.child_env(settings),
        log_path=_log(stack.workdir, "worker-flowerpot"),
    )
    try:
        processes.wait_until(lambda: pot_processes(stack) == 1, 120, POT, 0.25, child.alive)
        yield child
    finally:
        child.stop()
        client = stack.redis()  # no record of it may linger for the tests that count workers
        try:
            for key in client.hkeys(contract.PROCS_KEY):
                if key.decode().startswith(POT + "/"):
                    client.hdel(contract.PROCS_KEY, key)
            client.hdel(getattr(contract, "WORKERS_KEY", "autodep:workers"), POT)
        finally:
            client.close()


def pot_processes(stack: Stack) -> int:
    """Pool processes of the flowerpot worker with their model loaded."""
    return sum(1 for p in stack.procs() if p.worker == POT and p.ready)


def test_flower_lists_workers_and_readable_tasks(stack: Stack, web: Web, flower: Flower) -> None:
    workers = flower.get("/api/workers", refresh="true").json()
    assert {"resnet18@test", "slow@test", "small@test"} <= set(workers)
    assert workers["small@test"]["stats"]["pool"]["processes"]

    # Flower turns on task events when it starts; batches sent from now on show up
    deadline = wait_s(30)
    args: list[str] = []
    while not any("tiny" in a for a in args):
        assert web.post("/inference", json=tiny_body(seed=3)).status_code == 200
        tasks = flower.get("/api/tasks", limit=50).json()
        args = [t["args"] for t in tasks.values() if t["name"] == contract.INFER_TASK]
        assert wait_s(0) < deadline, f"no autodep.infer task of tiny in Flower: {tasks}"
    shown = next(a for a in args if "tiny" in a)
    assert re.fullmatch(r"tiny × \d+ items?", shown), shown  # model and size, not the image


def test_flower_pool_buttons_resize_an_autoscaling_worker(
    stack: Stack, flower: Flower, pot_worker: processes.Child
) -> None:
    def settles_at(n: int) -> None:
        processes.wait_until(lambda: pot_processes(stack) == n, 60, f"{n} processes", 0.25)

    def listed() -> bool:  # Flower learns of a worker started after it on a refresh
        return POT in flower.get("/api/workers", refresh="true").json()

    processes.wait_until(listed, 30, f"{POT} in Flower", 1.0)

    grow = flower.post(f"/api/worker/pool/grow/{POT}", n=1)
    assert grow.status_code == 200, grow.text
    settles_at(2)

    shrink = flower.post(f"/api/worker/pool/shrink/{POT}", n=1)
    assert shrink.status_code == 200, shrink.text
    settles_at(1)

    autoscale = flower.post(f"/api/worker/pool/autoscale/{POT}", min=2, max=3)
    assert autoscale.status_code == 200, autoscale.text
    settles_at(2)
    stats = flower.get("/api/workers", refresh="true", workername=POT).json()[POT]["stats"]
    auto = stats["autoscaler"]
    assert (auto["max"], auto["min"], auto["current"]) == (3, 2, 2)
