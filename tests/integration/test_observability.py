"""/metrics across gunicorn processes (prometheus_client's parser and promtool), the request id
from client to worker log and back, JSON logs to a directory from web and worker, and Swagger UI
rendered by headless Chromium with every non-local address unreachable."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autodep_celery import config, contract, processes
from autodep_celery.config import ModelSettings
from tests.integration.conftest import (
    IN_CI,
    Stack,
    Web,
    start_web,
    start_worker,
    wait_for_workers,
)
from tests.integration.support import tiny_body, wait_s


def samples(web: Web) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = web.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(snapshot: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in snapshot.items() if n == name and want <= set(lab))


def test_metrics_count_every_process_and_pass_promtool(web: Web, stack: Stack) -> None:
    before = samples(web)
    n = 24
    with ThreadPoolExecutor(8) as pool:  # separate connections: both gunicorn processes answer
        codes = list(
            pool.map(lambda i: web.post("/inference", tiny_body(900 + i)).status_code, range(n))
        )
    assert codes == [200] * n
    for _ in range(6):  # whichever process answers the scrape, the sums are the same
        after = samples(web)
        req = {"route": "/inference", "method": "POST", "status": "200"}
        assert (
            total(after, "autodep_http_requests_total", **req)
            - total(before, "autodep_http_requests_total", **req)
            == n
        )
        assert (
            total(after, "autodep_inference_seconds_count", model="tiny")
            - total(before, "autodep_inference_seconds_count", model="tiny")
            == n
        )
        assert (
            total(after, "autodep_http_request_duration_seconds_count", route="/inference")
            - (total(before, "autodep_http_request_duration_seconds_count", route="/inference"))
            == n
        )
    # worker processes per model, from the status hash
    assert total(after, "autodep_worker_processes", model="resnet18") >= 2
    assert total(after, "autodep_worker_processes", model="tiny") >= 1
    assert total(after, "autodep_worker_processes", model="ghost") == 0
    assert ("autodep_backlog_items", (("model", "tiny"),)) in after
    assert after[("autodep_redis_up", ())] == 1
    client = stack.redis()
    try:
        if client.get(contract.AUTOSCALER_KEY) is None:
            # no autoscaler: only its running gauge shows, at 0
            got = samples(web)
            shown = {name for name, _ in got if name.startswith("autodep_autoscaler_")}
            assert shown == {"autodep_autoscaler_running"}
            assert got[("autodep_autoscaler_running", ())] == 0
    finally:
        client.close()

    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("promtool is missing (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus); the parser passed")
    text = web.get("/metrics").text
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_batch_hooks_fill_batch_size_queue_wait_and_phases(web: Web) -> None:
    before = samples(web)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: web.post("/inference", tiny_body(950 + i)), range(16)))
    after = samples(web)
    sent = total(after, "autodep_batch_size_items_sum", model="tiny") - total(
        before, "autodep_batch_size_items_sum", model="tiny"
    )
    waited = total(after, "autodep_queue_wait_seconds_count", model="tiny") - total(
        before, "autodep_queue_wait_seconds_count", model="tiny"
    )
    assert sent == 16 and waited == 16
    batches = total(after, "autodep_batch_size_items_count", model="tiny") - total(
        before, "autodep_batch_size_items_count", model="tiny"
    )
    for phase in contract.PHASES:  # every reply carried the worker's times
        timed = total(after, "autodep_batch_phase_seconds_count", model="tiny", phase=phase)
        timed -= total(before, "autodep_batch_phase_seconds_count", model="tiny", phase=phase)
        assert timed == batches, (phase, timed, batches)
    computed = total(after, "autodep_batch_phase_seconds_sum", model="tiny", phase="in_worker")
    computed -= total(before, "autodep_batch_phase_seconds_sum", model="tiny", phase="in_worker")
    assert computed > 0


def test_autoscaler_state_is_exported_while_published(web: Web, stack: Stack) -> None:
    state = {
        "running": True,
        "ts": time.time(),
        "models": {
            "tiny": {
                "current": 1,
                "ready": 1,
                "desired": 2,
                "min": 1,
                "max": 4,
                "backlog": 7.5,
                "queue_wait_s": 0.25,
                "decisions": {"up": 3, "down": 1, "hold": 40},
                "last_decision": {"action": "up", "from": 1, "to": 2, "at": time.time()},
            }
        },
    }
    client = stack.redis()
    try:
        client.set(contract.AUTOSCALER_KEY, json.dumps(state), px=20_000)
        got = samples(web)
        assert (
            got[("autodep_autoscaler_decisions_total", (("decision", "up"), ("model", "tiny")))]
            == 3
        )
        assert got[("autodep_autoscaler_processes", (("kind", "desired"), ("model", "tiny")))] == 2
        assert got[("autodep_autoscaler_backlog_items", (("model", "tiny"),))] == 7.5
        assert got[("autodep_autoscaler_running", ())] == 1
    finally:
        client.delete(contract.AUTOSCALER_KEY)
        client.close()
    gone = samples(web)
    assert {n for n, _ in gone if n.startswith("autodep_autoscaler_")} == {
        "autodep_autoscaler_running"
    }
    assert gone[("autodep_autoscaler_running", ())] == 0


def test_request_id_goes_from_client_to_worker_log_and_back(web: Web, stack: Stack) -> None:
    rid = f"it-{time.time_ns()}"
    resp = web.post("/inference", tiny_body(5), headers={"X-Request-ID": rid})
    assert resp.status_code == 200 and resp.headers["X-Request-ID"] == rid
    worker_log = stack.workdir / "worker-small.log"
    web_log = stack.workdir / "web.log"
    deadline = wait_s(10)
    while time.monotonic() < deadline and rid not in worker_log.read_text(errors="replace"):
        time.sleep(0.1)
    lines = [ln for ln in worker_log.read_text(errors="replace").splitlines() if rid in ln]
    assert lines and "batch of tiny" in lines[-1], lines
    web_lines = [ln for ln in web_log.read_text(errors="replace").splitlines() if rid in ln]
    assert any("POST /inference 200" in ln for ln in web_lines), web_lines
    # no id (or a bad one) from the client: the server makes a new one each time
    made = [
        web.post("/inference", tiny_body(6), headers=headers).headers["X-Request-ID"]
        for headers in ({}, {"X-Request-ID": "bad id with spaces"})
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", m) for m in made) and made[0] != made[1], made


def test_json_logs_from_web_and_worker_go_to_stderr_and_the_log_dir(
    stack: Stack, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"
    echo = ModelSettings(name="echojson", path=str(stack.model_dir / "echo.pt"), task="TextToText")
    settings = dataclasses.replace(
        stack.settings,
        models=(*stack.settings.models, echo),
        log=config.LogSettings(format="json", dir=str(log_dir), access=True),
        web=dataclasses.replace(stack.settings.web, port=processes.free_port(), processes=1),
    )
    json_stack = dataclasses.replace(stack, settings=settings, workers={})
    worker = start_worker(json_stack, "echojson", ["echojson"], 1)
    try:
        wait_for_workers(json_stack, {"echojson": 1}, [worker], timeout_s=120)
        web = start_web(json_stack, settings, "json-web")
        try:
            rid = f"json-{time.time_ns()}"
            body = {"data": {"Text": "a b"}, "inference_type": "TextToText", "model": "echojson"}
            resp = web.post("/inference", body, headers={"X-Request-ID": rid})
            assert resp.status_code == 200, resp.text
            deadline = wait_s(10)
            files = {role: log_dir / f"autodep-{role}.log" for role in ("web", "worker")}
            while time.monotonic() < deadline and not all(
                f.exists() and rid in f.read_text() for f in files.values()
            ):
                time.sleep(0.1)
            for role, path in files.items():
                records = [json.loads(line) for line in path.read_text().splitlines()]
                assert all(r["role"] == role and "ts" in r and "msg" in r for r in records)
                mine = [r for r in records if rid in (r.get("request_id") or "")]
                assert mine, (role, records[-5:])
            stderr_lines = (stack.workdir / "json-web.log").read_text().splitlines()
            assert stderr_lines and all(json.loads(line)["role"] == "web" for line in stderr_lines)
        finally:
            web.child.stop()
    finally:
        worker.stop()


def test_swagger_ui_renders_offline_in_chromium(web: Web, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if IN_CI:
            pytest.fail("chromium is missing (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    argv = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        # every address but this machine's loopback goes to a dead proxy: no CDN can load
        "--proxy-server=http://127.0.0.1:9",
        "--virtual-time-budget=20000",
        "--dump-dom",
        web.url + "/docs",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ})
    dom = out.stdout
    assert 'class="swagger-ui' in dom, out.stderr[-2000:]
    for path in ("/inference", "/workers/_status", "/metrics", "/health"):
        assert f'data-path="{path}"' in dom, path
    assert "autodep-celery" in dom
