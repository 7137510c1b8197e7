"""GET /workers, /workers/_status, /workers/_info: real processes, real counters."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from tests.integration.conftest import Stack, Web
from tests.integration.support import b64, image_bytes, tiny_body, wait_s


def tiny_request(web: Web, seed: int) -> None:
    resp = web.post("/inference", json=tiny_body(seed))
    assert resp.status_code == 200, resp.text


def test_status_lists_every_pool_process_with_real_pids(stack: Stack, web: Web) -> None:
    listed = web.get("/workers/_status").json()
    assert set(listed.values()) <= {"Working", "Idle"}
    by_worker: dict[str, list[int]] = {}
    for name in listed:
        worker, pid = name.rsplit("/", 1)
        by_worker.setdefault(worker, []).append(int(pid))
    for group, child in stack.workers.items():
        pids = by_worker.get(f"{group}@test", [])
        parent = psutil.Process(child.pid)
        kids = {p.pid for p in parent.children()}
        assert pids, listed
        assert set(pids) <= kids, (pids, kids)


def test_workers_lists_only_busy_processes(web: Web) -> None:
    body = {
        "data": {"B64Image": {"image": b64(image_bytes(150, 8, seed=7))}},
        "inference_type": "ImageToImage",
        "model": "slow",
    }
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(web.post, "/inference", body)
        deadline = wait_s(20)
        busy: dict[str, str] = {}
        while time.monotonic() < deadline and not any(n.startswith("slow@") for n in busy):
            busy = web.get("/workers").json()
            time.sleep(0.05)
        everyone = web.get("/workers/_status").json()
        assert future.result(timeout=60).status_code == 200
    assert any(n.startswith("slow@") for n in busy), busy
    assert set(busy.values()) == {"Working"}
    assert set(busy) <= set(everyone)
    idle_small = [n for n, state in everyone.items() if n.startswith("small@") and state == "Idle"]
    assert idle_small and not set(idle_small) & set(busy)


def test_info_counts_requests_and_reports_cpu_and_rss(web: Web) -> None:
    def served() -> int:
        return sum(n for info, n in web.get("/workers/_info").json() if "tiny" in info["models"])

    before = served()
    for i in range(5):
        tiny_request(web, seed=300 + i)
    deadline = wait_s(10)
    while served() < before + 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served() >= before + 5
    for info, n in web.get("/workers/_info").json():
        assert set(info) >= {"worker", "pid", "models", "cpu_percent", "rss_bytes"}
        assert psutil.pid_exists(info["pid"])
        assert info["rss_bytes"] > 20 * 1024 * 1024  # torch and a model are loaded
        assert info["cpu_percent"] >= 0
        assert isinstance(n, int) and n >= 0
