"""The autoscaler on a real stack: Redis, Celery workers with --autoscale, gunicorn and the
`autodep autoscaler` process, all started as users start them.

The `elastic` model is deliberately slow (~20 ms per pixel of image width), so a handful of
clients saturate it. Each test starts its own workers and its own autoscaler, configured for
fast reactions (0.5 s interval, 3 s down delay), and manages only its own model.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from autodep_celery import launch, processes, status
from autodep_celery.config import AutoscalerSettings, Settings
from tests.integration.conftest import Stack, Web, _log, wait_for_workers
from tests.integration.support import b64, image_bytes, tiny_body, wait_s

FAST = AutoscalerSettings(
    interval_s=0.5,
    scale_up_delay_s=0.5,
    scale_down_delay_s=3.0,
    cooldown_s=1.0,
    target_backlog_per_process=2.0,
)


def elastic_body(seed: int = 0, width: int = 12) -> dict:
    return {
        "data": {"B64Image": {"image": b64(image_bytes(width, 8, seed=seed))}},
        "inference_type": "ImageToImage",
        "model": "elastic",
    }


def only(settings: Settings, model: str, **model_changes: object) -> Settings:
    """The autoscaler's own settings: just `model`, with FAST reactions."""
    m = dataclasses.replace(settings.model(model), **model_changes)  # type: ignore[arg-type]
    return dataclasses.replace(settings, models=(m,), autoscaler=FAST)


def start_autoscaler(stack: Stack, settings: Settings, name: str, *extra: str) -> processes.Child:
    argv = [sys.executable, "-m", "autodep_celery.cli", "autoscaler", *extra]
    return processes.start(
        name, argv, env=launch.child_env(settings), log_path=_log(stack.workdir, name)
    )


def start_elastic_worker(stack: Stack, name: str, autoscale: tuple[int, int]) -> processes.Child:
    argv = launch.worker_argv(
        stack.settings, ["elastic"], hostname=f"{name}@test", autoscale=autoscale
    )
    return processes.start(
        f"worker {name}",
        argv,
        env=launch.child_env(stack.settings),
        log_path=_log(stack.workdir, f"worker-{name}"),
    )


def records(stack: Stack) -> dict[str, status.WorkerRecord]:
    client = stack.redis()
    try:
        return {w.hostname: w for w in status.read_workers(client)}
    finally:
        client.close()


def grown_to(stack: Stack, n: int, worker: str = "elastic-a@test") -> bool:
    r = records(stack)[worker]
    return (r.max, r.min, r.processes, r.alive) == (n, n, n, n)


def scaler_view(web: Web, model: str) -> dict:
    body = web.get("/autoscaler").json()
    return body["models"].get(model, {}) if body.get("running") else {}


def wait_for(check, timeout_s: float, what: str) -> None:
    processes.wait_until(check, timeout_s, what, 0.2)


@dataclass
class Load:
    """Closed-loop clients posting until stopped; every answer is kept."""

    web: Web
    body: object
    clients: int
    codes: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, i: int) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            body = self.body(i) if callable(self.body) else self.body
            try:
                r = session.post(self.web.url + "/inference", json=body, timeout=60)
                self.codes[r.status_code] = self.codes.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    self.errors.append(r.text[:200])
            except requests.RequestException as exc:
                self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.clients)
        ]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)


@pytest.fixture
def elastic_workers(stack: Stack) -> Iterator[dict[str, processes.Child]]:
    """`elastic-a` as `autodep serve` starts workers (--autoscale=2,1), and `hand`: plain
    `celery -A autodep_celery worker` as a user starts one by hand on another machine."""
    a = start_elastic_worker(stack, "elastic-a", (2, 1))
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "autodep_celery",
        "worker",
        "-Q",
        "autodep.elastic",
        "-n",
        "hand@test",
        "--autoscale=1,1",
        "--without-mingle",
        "--without-gossip",
    ]
    hand = processes.start(
        "worker hand",
        argv,
        env=launch.child_env(stack.settings),
        log_path=_log(stack.workdir, "worker-hand"),
    )
    children = {"elastic-a@test": a, "hand@test": hand}
    try:
        wait_for(lambda: set(children) <= set(records(stack)), 120, "elastic worker records")
        wait_for_workers(stack, {"elastic": 2}, list(children.values()))
        yield children
    finally:
        processes.stop_together(list(children.values()))


def test_pool_follows_load_idle_saturated_idle(
    stack: Stack, web: Web, elastic_workers: dict[str, processes.Child]
) -> None:
    scaler = start_autoscaler(stack, only(stack.settings, "elastic"), "autoscaler-follow")
    try:
        # idle: both workers counted (one started by hand), nothing waiting
        wait_for(lambda: scaler_view(web, "elastic").get("current") == 2, 30, "the idle pool of 2")
        assert scaler_view(web, "elastic")["backlog"] == 0
        peak_backlog, peak_current = 0.0, 0
        with Load(web, elastic_body, clients=8) as load:
            deadline = wait_s(40)
            while time.monotonic() < deadline:
                view = scaler_view(web, "elastic")
                peak_backlog = max(peak_backlog, view.get("backlog", 0))
                peak_current = max(peak_current, view.get("current", 0))
                if grown_to(stack, 2) and peak_backlog >= 4:
                    break
                time.sleep(0.2)
            grown = records(stack)["elastic-a@test"]
            time.sleep(2)  # the new child serves under load too
        assert load.codes and set(load.codes) == {200}, (load.codes, load.errors[:3])
        assert peak_backlog >= 4, "the signal did not see the saturation"
        assert (grown.max, grown.min, grown.alive) == (2, 2, 2), grown
        assert records(stack)["hand@test"].processes == 1  # its declared max is 1
        # idle again: the backlog falls to zero and the pool returns to its minimum
        wait_for(lambda: scaler_view(web, "elastic").get("backlog") == 0, 15, "backlog back to 0")
        wait_for(
            lambda: records(stack)["elastic-a@test"].alive == 1, 30, "pool back to the minimum"
        )
        view = scaler_view(web, "elastic")
        assert view["current"] == 2 and view["last_decision"]["action"] == "down"
        assert view["decisions"]["up"] >= 1 and view["decisions"]["down"] >= 1
    finally:
        scaler.stop()
    log = Path(scaler.log_path).read_text()  # type: ignore[arg-type]
    assert "elastic: backlog" in log and "-> 3, up" in log


def test_killing_the_autoscaler_leaves_serving_at_the_current_size(
    stack: Stack, web: Web, elastic_workers: dict[str, processes.Child]
) -> None:
    scaler = start_autoscaler(stack, only(stack.settings, "elastic"), "autoscaler-killed")
    try:
        with Load(web, elastic_body, clients=8) as load:
            wait_for(lambda: grown_to(stack, 2), 40, "the pool growing to 2")
            scaler.signal_group(signal.SIGKILL)
            scaler.proc.wait(10)
            served = sum(load.codes.values())
            time.sleep(4)
            after = sum(load.codes.values()) - served
        assert set(load.codes) == {200}, (load.codes, load.errors[:3])
        assert after > 0, "nothing was served after the autoscaler died"
        assert records(stack)["elastic-a@test"].processes == 2
        wait_for(lambda: web.get("/autoscaler").json()["running"] is False, 10, "state expiry")
    finally:
        scaler.stop()


def test_scale_to_zero_and_cold_start(stack: Stack, web: Web) -> None:
    settings = only(stack.settings, "sleepy")
    scaler = start_autoscaler(stack, settings, "autoscaler-zero", "--spawn-workers")

    def sleepy_procs() -> list[dict]:
        return [p for p, _ in web.get("/workers/_info").json() if "sleepy" in p["models"]]

    body = {**tiny_body(), "model": "sleepy"}
    try:
        wait_for(lambda: scaler_view(web, "sleepy").get("startable") is True, 30, "the autoscaler")
        assert sleepy_procs() == []
        for round_ in range(2):
            started = time.monotonic()
            resp = web.post("/inference", json=body)
            cold = time.monotonic() - started
            assert resp.status_code == 200, resp.text
            print(f"cold start {round_}: {cold:.2f} s")
            assert len(sleepy_procs()) == 1
            assert web.post("/inference", json=body).status_code == 200
            # idle for the down delay: drained, stopped, listed nowhere
            wait_for(lambda: sleepy_procs() == [], 30, "the idle worker stopping")
            wait_for(lambda: scaler_view(web, "sleepy")["current"] == 0, 5, "current 0")
    finally:
        scaler.stop()
    assert not any(h.startswith("sleepy@") for h in records(stack)), "worker record left"


def test_scaling_by_hand_pins_the_pool(
    stack: Stack, web: Web, elastic_workers: dict[str, processes.Child]
) -> None:
    settings = only(stack.settings, "elastic")
    scaler = start_autoscaler(stack, settings, "autoscaler-pinned")
    env = launch.child_env(settings)

    def scale(value: str) -> str:
        out = processes.start(
            "scale",
            [sys.executable, "-m", "autodep_celery.cli", "scale", "elastic", value],
            env=env,
            log_path=_log(stack.workdir, "scale"),
        )
        assert out.proc.wait(60) == 0
        return Path(out.log_path).read_text()  # type: ignore[arg-type]

    try:
        wait_for(lambda: scaler_view(web, "elastic").get("current") == 2, 30, "the autoscaler")
        assert "pinned at 3" in scale("3")
        wait_for(lambda: grown_to(stack, 2), 30, "the pinned size")
        time.sleep(4)  # idle past the down delay: a pin is not undone
        assert records(stack)["elastic-a@test"].processes == 2
        assert scaler_view(web, "elastic")["pinned"] == 3
        # shrinking while every child computes: billiard stops one only once it is idle, and
        # no request fails or is lost
        with Load(web, elastic_body, clients=8) as load:
            time.sleep(1)
            assert "pinned at 2" in scale("2")
            wait_for(lambda: grown_to(stack, 1), 30, "the pool shrinking under load")
            served = sum(load.codes.values())
            time.sleep(2)
        assert set(load.codes) == {200}, (load.codes, load.errors[:3])
        assert sum(load.codes.values()) > served
        assert "automatic" in scale("auto")
        with Load(web, elastic_body, clients=8):  # automatic again: the load grows it back
            wait_for(lambda: grown_to(stack, 2), 30, "back to automatic")
    finally:
        scaler.stop()
        stack.redis().delete("autodep:scale:elastic")
