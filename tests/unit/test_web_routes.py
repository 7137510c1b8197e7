"""GET /workers*, /health and /ready, and the rule that the web tier never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from autodep_celery.web.app import create_app
from autodep_celery.web.testing import FakeDispatcher, proc

from autodep_celery.config import ModelSettings, Settings

pytestmark = pytest.mark.unit


def client_for(fake, models=("m",)):
    settings = Settings(models=tuple(ModelSettings(n, f"/tmp/{n}.pt") for n in models))
    return create_app(settings, fake).test_client()


PROCS = [proc("m", pid=1, state="Working", served=7), proc("m", pid=2, served=3)]


def test_workers_lists_busy_processes():
    assert client_for(FakeDispatcher(PROCS)).get("/workers").json == {"host/1": "Working"}


def test_workers_status_lists_all():
    r = client_for(FakeDispatcher(PROCS)).get("/workers/_status")
    assert r.json == {"host/1": "Working", "host/2": "Idle"}


def test_workers_info_shape():
    r = client_for(FakeDispatcher(PROCS)).get("/workers/_info")
    assert r.json == [
        [{"worker": "host", "pid": 1, "models": ["m"], "cpu_percent": 0.0, "rss_bytes": 0}, 7],
        [{"worker": "host", "pid": 2, "models": ["m"], "cpu_percent": 0.0, "rss_bytes": 0}, 3],
    ]


def test_workers_redis_down_is_503():
    fake = FakeDispatcher(PROCS)
    fake.error = "cannot reach Redis"
    r = client_for(fake).get("/workers")
    assert r.status_code == 503 and r.json["error"]["code"] == "broker_unavailable"


def test_health_is_always_ok():
    fake = FakeDispatcher([])
    fake.error = "redis down"
    r = client_for(fake).get("/health")
    assert r.status_code == 200 and r.json == {"status": "ok"}


def test_ready_when_every_model_has_a_worker():
    r = client_for(FakeDispatcher(PROCS, models=["m"])).get("/ready")
    assert r.status_code == 200 and r.json == {"status": "ready", "models": {"m": 2}}


def test_not_ready_names_the_model_without_worker():
    fake = FakeDispatcher([proc("a")], models=["a", "b"])
    r = client_for(fake, models=("a", "b")).get("/ready")
    assert r.status_code == 503
    assert r.json["error"]["code"] == "not_ready" and "b" in r.json["error"]["message"]


def test_not_ready_when_redis_unreachable():
    fake = FakeDispatcher(PROCS, models=["m"])
    fake.error = "cannot reach Redis at 127.0.0.1:1"
    r = client_for(fake).get("/ready")
    assert r.status_code == 503 and "127.0.0.1:1" in r.json["error"]["message"]


def test_web_never_imports_torch():
    code = (
        "import sys\n"
        "import autodep_celery.web.app as app, autodep_celery.web.transport\n"
        "app.create_app(app.config.Settings())\n"
        "print('torch' in sys.modules, 'autodep_celery.worker' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_model_the_autoscaler_starts_on_demand_counts_as_ready():
    fake = FakeDispatcher(PROCS, models=["m", "sleepy"])
    fake.status_view.can_start = frozenset({"sleepy"})
    r = client_for(fake, models=("m", "sleepy")).get("/ready")
    assert r.status_code == 200 and r.json["models"] == {"m": 2, "sleepy": 0}
    assert fake.has_worker("sleepy") and not fake.has_worker("ghost")


def test_autoscaler_route_shows_the_published_state():
    fake = FakeDispatcher(PROCS)
    fake.status_view.scaler_state = {"running": True, "models": {"m": {"current": 2}}}
    r = client_for(fake).get("/autoscaler")
    assert r.status_code == 200 and r.json == fake.status_view.scaler_state


def test_autoscaler_route_without_autoscaler_reports_the_pools():
    fake = FakeDispatcher(PROCS)
    fake.status_view.view = PROCS
    settings = Settings(models=(ModelSettings("m", "/tmp/m.pt", min_workers=1, max_workers=3),))
    r = create_app(settings, fake).test_client().get("/autoscaler")
    assert r.json == {
        "running": False,
        "models": {"m": {"current": 2, "ready": 2, "min": 1, "max": 3}},
    }
