"""Asynchronous jobs on the real stack: POST /jobs, then GET /jobs/<id> until done or failed.

A job's result equals what POST /inference answers for the same body, its failure carries the
same error, and it outlives the web process that accepted it (SIGKILLed right after the 202),
a pool child killed under it, and its own deadline (a job no worker finished fails)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from autodep_celery import processes
from autodep_celery.config import JobsSettings
from tests.integration.conftest import Stack, Web, start_web
from tests.integration.support import b64, image_bytes, tiny_body, wait_s

FINISHED = ("done", "failed")
ORDER = ("queued", "running", "done", "failed")


def slow_body(width: int, seed: int = 0) -> dict:
    # the slow model computes ~10 matmuls (~20 ms here) per pixel of width
    return {
        "data": {"B64Image": {"image": b64(image_bytes(width, 8, seed=seed))}},
        "inference_type": "ImageToImage",
        "model": "slow",
    }


def submit(web: Web, body: dict) -> str:
    r = web.post("/jobs", json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.json() == {"job_id": job_id, "status_url": f"/jobs/{job_id}"}
    assert r.headers["Location"] == f"/jobs/{job_id}"
    return str(job_id)


def poll(web: Web, job_id: str, timeout_s: float = 120.0) -> tuple[dict, list[str]]:
    """The finished job, and each status seen on the way (in the order seen)."""
    seen: list[str] = []
    deadline = wait_s(timeout_s)
    while time.monotonic() < deadline:
        r = web.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in FINISHED:
            assert [ORDER.index(s) for s in seen] == sorted(ORDER.index(s) for s in seen), seen
            return body, seen
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s; seen {seen}")


def same_inference(job_result: list, sync: list) -> None:
    """Equal answers; probabilities may differ in the last bits between two forward passes."""
    assert set(job_result[1]) == {"secs", "nanos"}
    inference, expected = job_result[0], sync[0]
    if "Classification" in expected:
        got = inference["Classification"]
        assert [c["label"] for c in got] == [c["label"] for c in expected["Classification"]]
        assert [c["probability"] for c in got] == pytest.approx(
            [c["probability"] for c in expected["Classification"]], rel=1e-5
        )
    else:
        assert inference == expected


def live_in_group(pgid: int) -> list[int]:
    """Processes of the group that still run (zombies wait only for their reaper)."""
    ps = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True)
    rows = [line.split() for line in ps.stdout.splitlines()]
    return [int(pid) for pid, stat in rows if not stat.startswith("Z")]


def delete(web: Web, path: str) -> requests.Response:
    return requests.delete(web.url + path, timeout=30)


def slow_processes(web: Web) -> dict[int, str]:
    return {
        int(name.rsplit("/", 1)[1]): state
        for name, state in web.get("/workers/_status").json().items()
        if name.startswith("slow@")
    }


def kill_working_slow(web: Web, killed: set[int]) -> None:
    """SIGKILL a slow pool process that computes a batch (a record of one killed earlier may
    still say Working for a few heartbeats: those are skipped)."""
    deadline = wait_s(60)
    while time.monotonic() < deadline:
        for pid, state in slow_processes(web).items():
            if state == "Working" and pid not in killed:
                killed.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                    return
                except ProcessLookupError:
                    continue
        time.sleep(0.05)
    raise AssertionError("no slow worker process became busy")


def wait_for_slow_pool(web: Web, killed: set[int]) -> None:
    """Until the pool has replaced the killed processes (the next tests need both)."""

    def recovered() -> bool:
        pids = slow_processes(web)
        return len(pids) == 2 and not killed & set(pids)

    processes.wait_until(recovered, 90, "the slow pool's new processes", 0.2)


@pytest.fixture(scope="module")
def short_web(stack: Stack) -> Iterator[Web]:
    """A web process whose jobs are kept 1 s once finished and time out after 3 s."""
    settings = dataclasses.replace(
        stack.settings,
        jobs=JobsSettings(result_ttl_s=1.0, timeout_s=3.0),
        web=dataclasses.replace(stack.settings.web, port=processes.free_port(), processes=1),
    )
    w = start_web(stack, settings, "jobs-short-web")
    yield w
    w.child.stop()


TEXT = {"data": {"Text": "hello"}, "inference_type": "TextToText", "model": "echo"}
SEGMENT = {
    "data": {"B64Image": {"image": b64(image_bytes(32, 24, seed=3))}},
    "inference_type": "ImageToImage",
    "model": "segmenter",
}


@pytest.mark.parametrize(
    "body", [tiny_body(seed=4), SEGMENT, TEXT], ids=["classification", "image", "text"]
)
def test_a_job_ends_done_with_what_inference_answers(web: Web, body: dict) -> None:
    job_id = submit(web, body)
    job, seen = poll(web, job_id)
    assert seen[-1] == "done" and set(seen) <= {"queued", "running", "done"}
    assert job["model"] == body["model"] and "error" not in job
    assert job["created"] <= job["updated"] < job["deadline"]
    sync = web.post("/inference", json=body)
    assert sync.status_code == 200, sync.text
    same_inference(job["result"], sync.json())


def test_a_job_is_running_while_its_batch_computes(web: Web) -> None:
    body = slow_body(25, seed=2)  # ~0.5 s of compute
    job, seen = poll(web, submit(web, body))
    assert seen[-2:] == ["running", "done"], seen
    same_inference(job["result"], web.post("/inference", json=body).json())


def test_a_job_with_a_broken_image_fails_as_inference_does(web: Web) -> None:
    body = tiny_body(seed=5)
    broken = b64(image_bytes(64, 64, seed=1)[:200])  # a valid PNG header, then nothing
    body["data"]["B64Image"]["image"] = broken
    job, seen = poll(web, submit(web, body))
    sync = web.post("/inference", json=body)
    assert sync.status_code == 422, sync.text
    assert seen[-1] == "failed" and "result" not in job
    assert job["error"] == sync.json()["error"]
    assert job["error"]["code"] == "invalid_image"


def test_unknown_and_malformed_ids_are_404(web: Web) -> None:
    for path in ("/jobs/" + "0" * 32, "/jobs/KEYS%20*", "/jobs/" + "a" * 33):
        for method in ("GET", "DELETE"):
            r = web.get(path) if method == "GET" else delete(web, path)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["code"] == "unknown_job"


def test_a_finished_job_expires_after_its_result_ttl(web: Web, short_web: Web) -> None:
    job_id = submit(short_web, tiny_body(seed=6))
    job, _ = poll(short_web, job_id)
    assert job["status"] == "done"
    assert web.get(f"/jobs/{job_id}").status_code == 200  # any web process answers
    time.sleep(max(0.0, job["updated"] + 1.5 - time.time()))
    for w in (short_web, web):
        r = w.get(f"/jobs/{job_id}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_job"


def test_deleting_a_job_forgets_it(web: Web) -> None:
    job_id = submit(web, TEXT)
    poll(web, job_id)
    r = delete(web, f"/jobs/{job_id}")
    assert r.status_code == 204 and r.content == b""
    assert web.get(f"/jobs/{job_id}").status_code == 404


def test_a_job_no_worker_finishes_in_time_fails_with_deadline_exceeded(
    web: Web, short_web: Web
) -> None:
    with ThreadPoolExecutor(2) as pool:
        # both slow processes busy for ~6 s; the job may wait 3 s (short_web's jobs.timeout_s)
        busy = [pool.submit(web.post, "/inference", slow_body(300, seed=s)) for s in (7, 8)]
        deadline = wait_s(30)
        while list(slow_processes(web).values()).count("Working") < 2:
            assert time.monotonic() < deadline, "the slow processes did not both start"
            time.sleep(0.05)
        job, _ = poll(short_web, submit(short_web, slow_body(10, seed=9)), timeout_s=40)
        assert job["status"] == "failed" and job["error"]["code"] == "deadline_exceeded"
        assert job["updated"] >= job["deadline"] - 0.5
        assert all(f.result(timeout=60).status_code == 200 for f in busy)


def test_a_job_deleted_while_queued_is_not_computed(stack: Stack, web: Web, short_web: Web) -> None:
    request_id = f"cancelled-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(2) as pool:
        # both slow processes busy for ~6 s, through another web process (its own batch slots)
        busy = [pool.submit(short_web.post, "/inference", slow_body(300, seed=s)) for s in (13, 14)]
        deadline = wait_s(30)
        while list(slow_processes(web).values()).count("Working") < 2:
            assert time.monotonic() < deadline, "the slow processes did not both start"
            time.sleep(0.05)
        r = web.post("/jobs", json=slow_body(300, seed=15), headers={"X-Request-ID": request_id})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert web.get(f"/jobs/{job_id}").json()["status"] == "queued"
        assert delete(web, f"/jobs/{job_id}").status_code == 204
        assert all(f.result(timeout=120).status_code == 200 for f in busy)
    log = stack.workdir / "worker-slow.log"

    def batch_line() -> str | None:
        lines = log.read_text(errors="replace").splitlines()
        return next((line for line in lines if request_id in line and "batch of" in line), None)

    processes.wait_until(lambda: batch_line() is not None, 60, "the cancelled job's batch")
    assert "deadline_exceeded" in str(batch_line())  # skipped, not computed for ~6 s
    assert web.get(f"/jobs/{job_id}").status_code == 404


def test_a_job_outlives_the_web_process_that_accepted_it(stack: Stack, web: Web) -> None:
    settings = dataclasses.replace(
        stack.settings,
        web=dataclasses.replace(stack.settings.web, port=processes.free_port()),
    )
    other = start_web(stack, settings, "jobs-doomed-web")
    try:
        body = slow_body(40, seed=10)  # ~0.8 s: the reply comes after the web is gone
        job_id = submit(other, body)
        other.child.signal_group(signal.SIGKILL)  # gunicorn's master and its workers at once
        other.child.proc.wait(timeout=10)
        processes.wait_until(lambda: not live_in_group(other.child.pid), 10, "the killed web")
        job, _ = poll(web, job_id, timeout_s=180)
    finally:
        other.child.stop(2)
    assert job["status"] == "done", job
    same_inference(job["result"], web.post("/inference", json=body).json())


def test_a_job_whose_pool_process_dies_is_redelivered_and_done(web: Web) -> None:
    body = slow_body(100, seed=11)  # ~2 s
    job_id = submit(web, body)
    killed: set[int] = set()
    kill_working_slow(web, killed)
    job, _ = poll(web, job_id, timeout_s=180)
    assert job["status"] == "done", job
    image = job["result"][0]["B64Image"]
    assert (image["width"], image["height"]) == (100, 8)
    wait_for_slow_pool(web, killed)


def test_a_job_whose_batch_keeps_killing_its_process_fails(stack: Stack, web: Web) -> None:
    job_id = submit(web, slow_body(150, seed=12))
    killed: set[int] = set()
    for _ in range(stack.settings.worker.max_attempts):
        kill_working_slow(web, killed)
    job, _ = poll(web, job_id, timeout_s=180)
    assert job["status"] == "failed" and job["error"]["code"] == "worker_lost", job
    wait_for_slow_pool(web, killed)


SUBMIT = """curl -s -X POST http://127.0.0.1:8000/jobs -H 'Content-Type: application/json' \\
     -d '{"data": {"Text": "hello"}, "inference_type": "TextToText", "model": "echo"}'"""
"""The README's example (docs: Asynchronous jobs), run as written against the test server."""
STATUS = "curl -s http://127.0.0.1:8000/jobs/$JOB_ID"


def test_the_readme_curl_example(web: Web) -> None:
    def sh(command: str, **env: str) -> Any:
        command = command.replace("http://127.0.0.1:8000", web.url)
        out = subprocess.run(
            ["bash", "-c", command], env={**os.environ, **env}, capture_output=True, check=True
        )
        return json.loads(out.stdout)

    accepted = sh(SUBMIT)
    deadline = wait_s(30)
    while (job := sh(STATUS, JOB_ID=accepted["job_id"]))["status"] not in FINISHED:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["status"] == "done" and job["result"][0] == {"Text": "echo: hello"}
