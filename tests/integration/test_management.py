"""TorchServe's management API on real processes: Redis, two gunicorn web servers (each with
its own processes) and `autodep autoscaler --spawn-workers`, whose LocalWorkers start and stop
model workers as `autodep serve` does. Nothing is restarted between registering, serving,
rescaling and unregistering a model.

The store holds copies of the example `tiny` model under names no other test uses, so the
session's other workers never consume these queues.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis
import requests

from autodep_celery import launch, processes
from autodep_celery.config import (
    AutoscalerSettings,
    BrokerSettings,
    LogSettings,
    ManagementSettings,
    ModelSettings,
    Settings,
    WebSettings,
    WorkerSettings,
)
from autodep_celery.contract import REGISTRY_KEY
from tests.integration.conftest import Stack, Web, _log, start_web
from tests.integration.support import b64, image_bytes

MODEL = "mgmt-tiny"
STATIC = "mgmt-static"


@dataclass
class Env:
    a: Web
    b: Web
    store: Path
    redis_url: str
    scaler: processes.Child


def body(model: str, seed: int = 0) -> dict:
    return {
        "data": {"B64Image": {"image": b64(image_bytes(16, 16, seed=seed))}},
        "inference_type": {"ImageClassification": {"top_n": 1}},
        "model": model,
    }


def clear_registry(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.delete(REGISTRY_KEY)
    finally:
        client.close()


@pytest.fixture(scope="module")
def env(redis_url: str, model_dir: Path, workdir: Path) -> Iterator[Env]:
    store = workdir / "mgmt-store"
    store.mkdir()
    shutil.copy(model_dir / "tiny.pt", store / f"{MODEL}.pt")
    shutil.copy(model_dir / "tiny.pt", store / f"{STATIC}.pt")
    (workdir / "mgmt-secret.pt").write_bytes((model_dir / "tiny.pt").read_bytes())
    (store / "escape.pt").symlink_to(workdir / "mgmt-secret.pt")
    clear_registry(redis_url)
    static = ModelSettings(
        STATIC, str(store / f"{STATIC}.pt"), task="ImageClassification", min_workers=0
    )
    settings = Settings(
        web=WebSettings(port=processes.free_port(), processes=2, request_timeout_s=90),
        broker=BrokerSettings(url=redis_url),
        worker=WorkerSettings(heartbeat_interval_s=0.5),
        autoscaler=AutoscalerSettings(
            interval_s=0.5, scale_up_delay_s=0.5, scale_down_delay_s=60, cooldown_s=0.5
        ),
        log=LogSettings(access=True),
        models=(static,),
        management=ManagementSettings(model_store=str(store)),
    )
    stack = Stack(redis_url, settings, model_dir, workdir)
    (workdir / "mgmt-workers").mkdir()
    argv = [sys.executable, "-m", "autodep_celery.cli", "autoscaler", "--spawn-workers"]
    argv += ["--log-dir", str(workdir / "mgmt-workers")]
    scaler = processes.start(
        "mgmt-autoscaler",
        argv,
        env=launch.child_env(settings),
        log_path=_log(workdir, "mgmt-autoscaler"),
    )
    other = dataclasses.replace(
        settings, web=dataclasses.replace(settings.web, port=processes.free_port())
    )
    webs: list[Web] = []
    try:
        webs.append(start_web(stack, settings, "mgmt-web-a"))
        webs.append(start_web(stack, other, "mgmt-web-b"))
        yield Env(webs[0], webs[1], store, redis_url, scaler)
    finally:
        for w in webs:
            w.child.stop()
        scaler.stop()  # stops the workers it spawned
        clear_registry(redis_url)
    for path in (workdir / "mgmt-workers").glob("*.log"):
        _log(path.parent, path.stem)  # attached to a failing test's report


def wait_until(check, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    processes.wait_until(check, timeout_s, what, 0.2)


def test_register_serve_everywhere_rescale_and_unregister(env: Env) -> None:
    a, b = env.a, env.b
    assert b.post("/inference", json=body(MODEL)).status_code == 404  # b knows the model set
    r = a.post(
        f"/management/models?url={MODEL}.pt&initial_workers=1&synchronous=true"
        "&task=ImageClassification&batch_size=4",
        timeout=120,
    )
    assert (r.status_code, r.json()) == (
        200,
        {"status": f'Model "{MODEL}" Version: 1.0 registered with 1 initial workers'},
    )
    # the other web server serves it on its next request, without a restart
    for web in (b, a, b):
        resp = web.post("/inference", json=body(MODEL))
        assert resp.status_code == 200, resp.text
        assert len(resp.json()[0]["Classification"]) == 1
    listed = {m["modelName"]: m["modelUrl"] for m in b.get("/management/models").json()["models"]}
    assert listed == {STATIC: f"{STATIC}.pt", MODEL: f"{MODEL}.pt"}
    [described] = b.get(f"/management/models/{MODEL}").json()
    assert (described["batchSize"], described["minWorkers"], described["loadedAtStartup"]) == (
        4,
        1,
        False,
    )
    pids = [w["pid"] for w in described["workers"] if w["status"] == "READY"]
    assert pids and all(psutil.pid_exists(p) for p in pids)
    # scale: the bounds feed the autoscaler, which grows the pool to the new minimum
    r = requests.put(
        f"{b.url}/management/models/{MODEL}?min_worker=2&max_worker=3&synchronous=true",
        timeout=120,
    )
    assert (r.status_code, r.json()) == (200, {"status": f"Workers scaled to 2 for model: {MODEL}"})
    view = a.get("/autoscaler").json()["models"][MODEL]
    assert (view["min"], view["max"]) == (2, 3) and view["ready"] >= 2
    [described] = a.get(f"/management/models/{MODEL}").json()
    pids = [w["pid"] for w in described["workers"]]
    assert (described["minWorkers"], described["maxWorkers"]) == (2, 3) and len(pids) >= 2
    # unregister: 404 on every web process within a second (model_table.REFRESH_S); the
    # autoscaler drains and stops the model's worker
    r = requests.delete(f"{a.url}/management/models/{MODEL}", timeout=30)
    assert (r.status_code, r.json()) == (200, {"status": f'Model "{MODEL}" unregistered'})
    deleted = time.monotonic()
    for web in (a, b):
        while (gone := web.post("/inference", json=body(MODEL))).status_code != 404:
            assert gone.status_code == 200, gone.text
            assert time.monotonic() - deleted < 3, f"{web.url} still serves it"
            time.sleep(0.05)
        assert gone.json()["error"]["code"] == "unknown_model"
    time.sleep(1.2)  # every process of both servers has refreshed by now
    for _ in range(8):
        assert a.post("/inference", json=body(MODEL)).status_code == 404
        assert b.get(f"/management/models/{MODEL}").status_code == 404

    def stopped() -> bool:
        alive = [p for p in pids if psutil.pid_exists(p)]
        alive = [p for p in alive if psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        return not alive and MODEL not in a.get("/autoscaler").json()["models"]

    wait_until(stopped, 60, "the unregistered model's worker processes to stop")
    assert "unregistered; draining and stopping" in Path(env.scaler.log_path).read_text()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("../mgmt-secret.pt", 400, "invalid_url"),
        ("{workdir}/mgmt-secret.pt", 403, "outside_model_store"),
        ("/etc/passwd", 403, "outside_model_store"),
        ("escape.pt", 403, "outside_model_store"),
        ("http://127.0.0.1:1/x.pt", 400, "invalid_url"),
        ("absent.pt", 404, "model_file_not_found"),
    ],
)
def test_files_outside_the_store_are_refused(env: Env, url: str, status: int, code: str) -> None:
    url = url.replace("{workdir}", str(env.store.parent))
    r = env.a.post("/management/models", params={"url": url, "model_name": "evil"})
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["error"]["code"] == code
    assert "evil" not in [m["modelName"] for m in env.b.get("/management/models").json()["models"]]


def test_a_config_model_is_unregistered_everywhere_then_registered_again(env: Env) -> None:
    a, b = env.a, env.b
    r = requests.delete(f"{b.url}/management/models/{STATIC}", timeout=30)
    assert r.status_code == 200, r.text
    assert a.get(f"/management/models/{STATIC}").status_code == 404  # a reads it on the miss
    assert requests.delete(f"{a.url}/management/models/{STATIC}", timeout=30).status_code == 404
    r = a.post(f"/management/models?url={STATIC}.pt&initial_workers=0&task=ImageClassification")
    assert r.status_code == 200 and "registered with 0 initial workers" in r.json()["status"], (
        r.text
    )
    [described] = b.get(f"/management/models/{STATIC}").json()
    assert (described["loadedAtStartup"], described["modelUrl"]) == (False, f"{STATIC}.pt")
    assert b.post(f"/management/models?url={STATIC}.pt").status_code == 409


def test_a_worker_started_by_hand_finds_a_registered_model(env: Env, workdir: Path) -> None:
    """`autodep worker --models NAME` on another machine: the model's settings come from the
    registry, not from that machine's config.toml."""
    name = "mgmt-byhand"
    shutil.copy(env.store / f"{MODEL}.pt", env.store / f"{name}.pt")
    r = env.a.post(f"/management/models?url={name}.pt&initial_workers=0&batch_size=2")
    assert r.status_code == 200, r.text
    toml = workdir / "mgmt-byhand.toml"  # knows no model at all
    toml.write_text(
        f'[broker]\nurl = "{env.redis_url}"\n[worker]\nheartbeat_interval_s = 0.5\n'
        f'[management]\nmodel_store = "{env.store}"\n'
    )
    argv = [sys.executable, "-m", "autodep_celery.cli", "worker", "--config", str(toml)]
    argv += ["--models", name, "--concurrency", "1"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUTODEP_")}
    child = processes.start("mgmt-byhand", argv, env=clean, log_path=_log(workdir, "mgmt-byhand"))
    try:

        def ready() -> bool:
            [described] = env.b.get(f"/management/models/{name}").json()
            return any(w["status"] == "READY" for w in described["workers"])

        processes.wait_until(ready, 120, "the hand-started worker", 0.25, child.alive)
        resp = env.b.post("/inference", json=body(name))
        assert resp.status_code == 200, resp.text
    finally:
        child.stop()
        requests.delete(f"{env.a.url}/management/models/{name}", timeout=30)
