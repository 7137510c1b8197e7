"""API and admin keys (web.auth): which routes need which key, the 401/403 answers in each
protocol's error shape, keys from the environment and files, and the refusal to listen beyond
loopback without any key."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from autodep_celery.config import AuthSettings, ConfigError, WebSettings
from autodep_celery.web import auth
from autodep_celery.web.app import create_app
from autodep_celery.web.testing import FakeDispatcher, png_bytes, proc
from tests.unit.conftest import make_settings

API = "api-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"
BODY = {"data": {"Text": "hi"}, "inference_type": "TextToText", "model": "m"}


def client(monkeypatch: pytest.MonkeyPatch, api: str = "", admin: str = "") -> object:
    monkeypatch.setenv(auth.API_KEYS_ENV, api)
    monkeypatch.setenv(auth.ADMIN_KEYS_ENV, admin)
    settings = make_settings(["m"])
    return create_app(settings, FakeDispatcher([proc("m")])).test_client()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_keys_everything_is_open(monkeypatch: pytest.MonkeyPatch) -> None:
    c = client(monkeypatch)
    assert c.post("/inference", json=BODY).status_code == 200
    assert c.get("/management/models").status_code == 200


def test_an_api_key_guards_inference_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    c = client(monkeypatch, api=API)
    r = c.post("/inference", json=BODY)
    assert r.status_code == 401
    assert r.json["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert c.post("/inference", json=BODY, headers=bearer("x" * 24)).status_code == 401
    assert c.post("/inference", json=BODY, headers={"Authorization": API}).status_code == 401
    assert c.post("/inference", json=BODY, headers=bearer(API)).status_code == 200
    for path in ("/predictions/m", "/classify?model=m"):
        assert c.post(path, data=png_bytes(), content_type="image/png").status_code == 401
    assert c.post("/jobs", json=BODY).status_code == 401
    assert c.post("/serve?servable_identifier=m", json=[]).status_code == 401


def test_probes_docs_and_metrics_need_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    c = client(monkeypatch, api=API, admin=ADMIN)
    for path in (
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/ping",
        "/healthcheck",
        "/v2/health/live",
        "/v2/health/ready",
    ):
        assert c.get(path).status_code in (200, 503), path


def test_oip_gets_its_own_error_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    c = client(monkeypatch, api=API)
    r = c.post("/v2/models/m/infer", json={"inputs": []})
    assert r.status_code == 401
    assert isinstance(r.json["error"], str) and "API key" in r.json["error"]


def test_torchserving_keeps_its_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    c = client(monkeypatch, api=API)
    r = c.post("/serve?servable_identifier=m", json=[])
    assert r.status_code == 401
    assert r.json["code"] == 401 and r.json["error"]["code"] == "unauthorized"


def test_management_needs_the_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    c = client(monkeypatch, api=API, admin=ADMIN)
    assert c.get("/management/models").status_code == 401
    r = c.get("/management/models", headers=bearer(API))
    assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"
    assert c.get("/management/models", headers=bearer(ADMIN)).status_code == 200
    assert c.post("/inference", json=BODY, headers=bearer(ADMIN)).status_code == 200


def test_api_keys_without_an_admin_key_close_management(monkeypatch: pytest.MonkeyPatch) -> None:
    c = client(monkeypatch, api=API)
    r = c.get("/management/models", headers=bearer(API))
    assert r.status_code == 403 and "admin key" in r.json["error"]["message"]


def test_keys_are_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    c = client(monkeypatch, api=API, admin=ADMIN)
    with caplog.at_level(logging.DEBUG):
        c.post("/inference", json=BODY, headers=bearer("wrong-" + API))
        c.get("/management/models", headers=bearer(API))
        c.post("/inference", json=BODY, headers=bearer(API))
    assert API not in caplog.text and ADMIN not in caplog.text


def test_keys_from_files_with_comments(tmp_path: Path) -> None:
    api = tmp_path / "api"
    api.write_text(f"# the team's keys\n{API}\n\n{API}-2  # another\n")
    settings = dataclasses.replace(make_settings(["m"]), auth=AuthSettings(api_keys_file=str(api)))
    keys = auth.load_keys(settings, environ={auth.ADMIN_KEYS_ENV: ADMIN})
    assert keys.api == (API.encode(), f"{API}-2".encode())
    assert keys.admin == (ADMIN.encode(),)


def test_a_missing_key_file_and_a_short_key_are_config_errors(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        make_settings(["m"]), auth=AuthSettings(api_keys_file=str(tmp_path / "nope"))
    )
    with pytest.raises(ConfigError, match="api_keys_file"):
        auth.load_keys(settings, environ={})
    with pytest.raises(ConfigError, match="16 characters"):
        auth.load_keys(make_settings(["m"]), environ={auth.API_KEYS_ENV: "short"})


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.com"])
def test_listening_beyond_loopback_needs_a_key_or_an_explicit_allow(host: str) -> None:
    settings = dataclasses.replace(make_settings(["m"]), web=WebSettings(host=host))
    with pytest.raises(ConfigError, match="allow_unauthenticated"):
        auth.check_listen(settings, auth.Keys())
    auth.check_listen(settings, auth.Keys(api=(API.encode(),)))
    allowed = dataclasses.replace(settings, auth=AuthSettings(allow_unauthenticated=True))
    auth.check_listen(allowed, auth.Keys())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_key(host: str) -> None:
    settings = dataclasses.replace(make_settings(["m"]), web=WebSettings(host=host))
    auth.check_listen(settings, auth.Keys())
