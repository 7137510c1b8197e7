"""GET /metrics with the Flask test client (single-process registry) and the scrape-time
collectors from sample Redis data; the Grafana dashboard only asks for metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autodep_celery.autoscaler.backlog import Signal
from autodep_celery.web import metrics as metrics_mod
from autodep_celery.web.app import create_app
from autodep_celery.web.testing import FakeDispatcher, png_bytes, proc
from tests.unit.conftest import make_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = make_settings(("m", "n"))
AUTOSCALER_STATE = {
    "running": True,
    "ts": 1_700_000_000.0,
    "models": {
        "m": {
            "current": 2,
            "ready": 2,
            "desired": 3,
            "min": 1,
            "max": 4,
            "backlog": 9,
            "queue_wait_s": 0.4,
            "decisions": {"up": 2, "down": 1, "hold": 30},
            "last_decision": {"action": "up", "from": 2, "to": 3, "at": 1_700_000_000.0},
        },
        "n": {"current": 0, "min": 0, "max": 2, "decisions": {}, "last_decision": None},
    },
}


class FakeRedisCollector(metrics_mod.RedisCollector):
    """The real collector's output from fixed data instead of Redis."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(SETTINGS, "redis://unused")
        self.fail = fail

    def collect(self):
        if self.fail:
            yield from metrics_mod.RedisCollector(SETTINGS, "redis://127.0.0.1:1").collect()
            return
        procs = [proc("m", 1, state="Working"), proc("m", 2), proc("n", 3, ready=False)]
        signals = {"m": Signal(pending=3, sent=4, batches=1, queued=1, oldest_wait_s=0.2)}
        yield from metrics_mod.redis_metrics(SETTINGS, procs, signals, AUTOSCALER_STATE)


def app_with(collector=None):
    app = create_app(SETTINGS, FakeDispatcher([proc("m"), proc("n")]))
    stats = app.extensions["autodep"]["metrics"]
    if collector is not None:
        for c in list(stats.registry._collector_to_names):
            if isinstance(c, metrics_mod.RedisCollector):
                stats.registry.unregister(c)
        stats.registry.register(collector)
    return app, stats


def parse(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def body(model="m"):
    import base64

    image = base64.b64encode(png_bytes()).decode()
    return {
        "data": {"B64Image": {"image": image}},
        "inference_type": "ImageToImage",
        "model": model,
    }


def test_requests_latency_and_inference_time_are_counted():
    app, stats = app_with(FakeRedisCollector())
    client = app.test_client()
    for _ in range(3):
        assert client.post("/inference", json=body()).status_code == 200
    assert client.get("/nowhere").status_code == 404
    assert client.post("/inference", json={"data": 1, "model": "m"}).status_code == 422
    got = parse(client.get("/metrics").text)
    ok = (
        "autodep_http_requests_total",
        (("method", "POST"), ("route", "/inference"), ("status", "200")),
    )
    assert got[ok] == 3
    assert (
        got[
            (
                "autodep_http_requests_total",
                (("method", "GET"), ("route", "<unmatched>"), ("status", "404")),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "autodep_http_requests_total",
                (("method", "POST"), ("route", "/inference"), ("status", "422")),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "autodep_http_request_duration_seconds_count",
                (("method", "POST"), ("route", "/inference")),
            )
        ]
        == 4
    )
    # canned ImageToImage results report compute_ns = 7
    assert got[("autodep_inference_seconds_count", (("model", "m"),))] == 3
    assert got[("autodep_inference_seconds_sum", (("model", "m"),))] == pytest.approx(21e-9)


def test_paths_that_match_no_route_never_become_labels():
    app, _ = app_with(FakeRedisCollector())
    client = app.test_client()
    for path in ("/nowhere", "/secret-123/x", "/inference/extra"):
        assert client.get(path).status_code == 404
    got = parse(client.get("/metrics").text)
    unmatched = (("method", "GET"), ("route", "<unmatched>"), ("status", "404"))
    assert got[("autodep_http_requests_total", unmatched)] == 3  # one series for all three
    routes = {dict(labels).get("route") for name, labels in got if "_http_" in name}
    assert routes == {"<unmatched>"}


def test_batch_hook_observes_size_and_each_items_wait():
    _, stats = app_with(FakeRedisCollector())
    stats.batch_sent("m", 3, [0.001, 0.004, 0.2])
    got = parse(stats.render().decode())
    assert got[("autodep_batch_size_items_count", (("model", "m"),))] == 1
    assert got[("autodep_batch_size_items_sum", (("model", "m"),))] == 3
    assert got[("autodep_queue_wait_seconds_count", (("model", "m"),))] == 3
    assert got[("autodep_queue_wait_seconds_bucket", (("le", "0.005"), ("model", "m")))] == 2


def test_phases_hook_observes_each_hop_of_a_batch():
    _, stats = app_with(FakeRedisCollector())
    stats.batch_phases("m", (0.0002, 0.003, 0.0004))
    stats.batch_phases("m", (0.0009, 0.002, 0.0001))
    got = parse(stats.render().decode())
    for phase, total_s in (("to_worker", 0.0011), ("in_worker", 0.005), ("to_web", 0.0005)):
        labels = (("model", "m"), ("phase", phase))
        assert got[("autodep_batch_phase_seconds_count", labels)] == 2
        assert got[("autodep_batch_phase_seconds_sum", labels)] == pytest.approx(total_s)
    sub_ms = (("le", "0.00025"), ("model", "m"), ("phase", "to_worker"))
    assert got[("autodep_batch_phase_seconds_bucket", sub_ms)] == 1


def test_redis_gauges_workers_backlog_and_autoscaler():
    _, stats = app_with(FakeRedisCollector())
    got = parse(stats.render().decode())
    w = "autodep_worker_processes"
    assert got[(w, (("model", "m"), ("state", "working")))] == 1
    assert got[(w, (("model", "m"), ("state", "idle")))] == 1
    assert got[(w, (("model", "n"), ("state", "loading")))] == 1
    assert got[(w, (("model", "n"), ("state", "idle")))] == 0
    assert got[("autodep_backlog_items", (("model", "m"),))] == 7  # 3 pending + 4 sent
    assert got[("autodep_backlog_items", (("model", "n"),))] == 0
    assert got[("autodep_oldest_pending_seconds", (("model", "m"),))] == 0.2
    d = "autodep_autoscaler_decisions_total"
    assert got[(d, (("decision", "up"), ("model", "m")))] == 2
    assert got[(d, (("decision", "hold"), ("model", "n")))] == 0
    assert got[("autodep_autoscaler_processes", (("kind", "desired"), ("model", "m")))] == 3
    assert ("autodep_autoscaler_processes", (("kind", "desired"), ("model", "n"))) not in got
    assert got[("autodep_autoscaler_last_decision_timestamp_seconds", (("model", "m"),))] == 1.7e9


def test_unreachable_redis_still_answers_quickly():
    app, _ = app_with(FakeRedisCollector(fail=True))
    started = time.monotonic()
    r = app.test_client().get("/metrics")
    assert r.status_code == 200 and time.monotonic() - started < 2
    got = parse(r.text)
    assert got[("autodep_redis_up", ())] == 0
    assert not any(name.startswith("autodep_worker_") for name, _ in got)


def test_collector_reads_real_redis_shapes():
    """The collector's Redis reads, against an in-memory stand-in with redis-py's answers."""

    class Fake:
        def __init__(self):
            now = time.time()
            rec = {
                "worker": "w",
                "pid": 5,
                "models": ["m"],
                "ready": True,
                "state": "Idle",
                "ts": now,
                "heartbeat_s": 2.0,
            }
            self.hashes = {"autodep:procs": {b"w/5": json.dumps(rec).encode()}}
            self.values = {
                b"autodep:load:abc": json.dumps(
                    {
                        "ts": now,
                        "models": {"m": {"pending": 2, "sent": 1, "batches": 1, "oldest_s": 0.5}},
                    }
                ).encode(),
                b"autodep:autoscaler": json.dumps(AUTOSCALER_STATE).encode(),
            }

        def hgetall(self, key):
            return self.hashes.get(key, {})

        def hdel(self, *a):
            return 0

        def get(self, key):
            return self.values.get(key.encode() if isinstance(key, str) else key)

        def scan_iter(self, match, count=None):
            return [k for k in self.values if k.decode().startswith(match.rstrip("*"))]

        def mget(self, keys):
            return [self.values.get(k) for k in keys]

        def pipeline(self, transaction=False):

            class Pipe:
                def __init__(self):
                    self.calls = []

                def llen(self, key):
                    self.calls.append(key)

                def execute(self):
                    return [0 for _ in self.calls]

            return Pipe()

    collector = metrics_mod.RedisCollector(SETTINGS, "redis://unused", client=Fake)
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in collector.collect()
        for s in f.samples
    }
    assert got[("autodep_backlog_items", (("model", "m"),))] == 3
    assert got[("autodep_worker_processes", (("model", "m"), ("state", "idle")))] == 1
    assert got[("autodep_autoscaler_running", ())] == 1
    # its state expired: no autoscaler runs, and the gauge says 0 instead of vanishing
    Gone = type("Gone", (Fake,), {})
    gone_init = Fake.__init__

    def without_state(self):
        gone_init(self)
        del self.values[b"autodep:autoscaler"]

    Gone.__init__ = without_state
    collector = metrics_mod.RedisCollector(SETTINGS, "redis://unused", client=Gone)
    samples = {s.name: s.value for f in collector.collect() for s in f.samples}
    assert samples["autodep_autoscaler_running"] == 0


def test_exposition_passes_promtool():
    _, stats = app_with(FakeRedisCollector())
    stats.batch_sent("m", 2, [0.01, 0.02])
    promtool = shutil.which("promtool")
    if promtool is None:
        import os

        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    out = subprocess.run(
        [promtool, "check", "metrics"], input=stats.render(), capture_output=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_dashboard_is_json_and_uses_only_exported_metrics():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["panels"]
    app, stats = app_with(FakeRedisCollector())
    stats.batch_sent("m", 1, [0.0])
    stats.batch_phases("m", (0.001, 0.002, 0.001))
    app.test_client().post("/inference", json=body())
    exported = {name for name, _ in parse(stats.render().decode())}
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(autodep_[a-z_]+)", target["expr"]))
    assert used and used <= exported, used - exported
    wanted = {
        "autodep_http_requests_total",
        "autodep_http_request_duration_seconds_bucket",
        "autodep_backlog_items",
        "autodep_batch_size_items_bucket",
        "autodep_queue_wait_seconds_bucket",
        "autodep_worker_processes",
        "autodep_inference_seconds_bucket",
        "autodep_batch_phase_seconds_sum",
        "autodep_autoscaler_decisions_total",
    }
    assert wanted <= used, wanted - used
