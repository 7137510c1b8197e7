"""GET /workers*, /health and /ready, and the rule that the web tier never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autodep_celery.config import ModelSettings
from autodep_celery.web.testing import FakeDispatcher, proc
from tests.unit.conftest import client_for

pytestmark = pytest.mark.unit

PROCS = [proc("m", pid=1, state="Working", served=7), proc("m", pid=2, served=3)]


def test_workers_lists_busy_processes():
    client, _ = client_for(FakeDispatcher(PROCS))
    assert client.get("/workers").json == {"host/1": "Working"}


def test_workers_status_lists_all():
    client, _ = client_for(FakeDispatcher(PROCS))
    r = client.get("/workers/_status")
    assert r.json == {"host/1": "Working", "host/2": "Idle"}


def test_workers_info_shape():
    client, _ = client_for(FakeDispatcher(PROCS))
    r = client.get("/workers/_info")
    assert r.json == [
        [{"worker": "host", "pid": 1, "models": ["m"], "cpu_percent": 0.0, "rss_bytes": 0}, 7],
        [{"worker": "host", "pid": 2, "models": ["m"], "cpu_percent": 0.0, "rss_bytes": 0}, 3],
    ]


def test_workers_redis_down_is_503():
    fake = FakeDispatcher(PROCS)
    fake.error = "cannot reach Redis"
    client, _ = client_for(fake)
    r = client.get("/workers")
    assert r.status_code == 503 and r.json["error"]["code"] == "broker_unavailable"


def test_health_is_always_ok():
    fake = FakeDispatcher([])
    fake.error = "redis down"
    client, _ = client_for(fake)
    r = client.get("/health")
    assert r.status_code == 200 and r.json == {"status": "ok"}


def test_ready_when_every_model_has_a_worker():
    client, _ = client_for(FakeDispatcher(PROCS, models=["m"]))
    r = client.get("/ready")
    assert r.status_code == 200 and r.json == {"status": "ready", "models": {"m": 2}}


def test_not_ready_names_the_model_without_worker():
    fake = FakeDispatcher([proc("a")], models=["a", "b"])
    client, _ = client_for(fake, models=("a", "b"))
    r = client.get("/ready")
    assert r.status_code == 503
    assert r.json["error"]["code"] == "not_ready" and "b" in r.json["error"]["message"]


def test_not_ready_when_redis_unreachable():
    fake = FakeDispatcher(PROCS, models=["m"])
    fake.error = "cannot reach Redis at 127.0.0.1:1"
    client, _ = client_for(fake)
    r = client.get("/ready")
    assert r.status_code == 503 and "127.0.0.1:1" in r.json["error"]["message"]


def test_web_never_imports_torch():
    code = (
        "import sys\n"
        "import autodep_celery.web.app as app, autodep_celery.web.wiring\n"
        "app.create_app(app.config.Settings())\n"
        "print('torch' in sys.modules, 'autodep_celery.worker' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_model_the_autoscaler_starts_on_demand_counts_as_ready():
    # the route's side; Dispatcher.ready() and has_worker() are in test_web_dispatcher
    fake = FakeDispatcher(PROCS, models=["m", "sleepy"])
    fake.status_view.can_start = frozenset({"sleepy"})
    client, _ = client_for(fake, models=("m", "sleepy"))
    r = client.get("/ready")
    assert r.status_code == 200 and r.json["models"] == {"m": 2, "sleepy": 0}


def test_autoscaler_route_shows_the_published_state():
    fake = FakeDispatcher(PROCS)
    fake.status_view.scaler_state = {"running": True, "models": {"m": {"current": 2}}}
    client, _ = client_for(fake)
    r = client.get("/autoscaler")
    assert r.status_code == 200 and r.json == fake.status_view.scaler_state


def test_autoscaler_route_without_autoscaler_reports_the_pools():
    fake = FakeDispatcher(PROCS)
    fake.status_view.view = PROCS
    client, _ = client_for(fake, [ModelSettings("m", "/tmp/m.pt", min_workers=1, max_workers=3)])
    r = client.get("/autoscaler")
    assert r.json == {
        "running": False,
        "models": {"m": {"current": 2, "ready": 2, "min": 1, "max": 3}},
    }
