"""API and admin keys against a real gunicorn (web.auth): keys from the environment, a bearer
token per protocol's client (curl-like requests, tritonclient), probes open, and the server's
refusal to listen beyond loopback without a key."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator

import pytest
import requests

from autodep_celery import launch, processes
from autodep_celery.config import WebSettings
from autodep_celery.web import auth
from tests.integration.conftest import Stack, Web, start_web
from tests.integration.support import tiny_body

API = "it-api-key-0123456789abcdef"
ADMIN = "it-admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed_web(stack: Stack) -> Iterator[Web]:
    settings = dataclasses.replace(
        stack.settings,
        web=dataclasses.replace(stack.settings.web, port=processes.free_port(), processes=1),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(auth.API_KEYS_ENV, API)
        mp.setenv(auth.ADMIN_KEYS_ENV, ADMIN)
        w = start_web(stack, settings, "web-keyed")
    yield w
    w.child.stop()


def test_inference_needs_the_api_key(keyed_web: Web) -> None:
    url = keyed_web.url + "/inference"
    r = requests.post(url, json=tiny_body(), timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    ok = requests.post(
        url, json=tiny_body(), headers={"Authorization": f"Bearer {API}"}, timeout=30
    )
    assert ok.status_code == 200, ok.text
    assert requests.get(keyed_web.url + "/health", timeout=5).status_code == 200
    assert requests.get(keyed_web.url + "/metrics", timeout=5).status_code == 200


def test_management_needs_the_admin_key(keyed_web: Web) -> None:
    url = keyed_web.url + "/management/models"
    assert requests.get(url, timeout=10).status_code == 401
    api = requests.get(url, headers={"Authorization": f"Bearer {API}"}, timeout=10)
    assert api.status_code == 403
    admin = requests.get(url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert admin.status_code == 200 and "models" in admin.json()


def test_tritonclient_sends_the_key_as_a_header(keyed_web: Web) -> None:
    import numpy as np
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(keyed_web.url.removeprefix("http://"))
    assert client.is_server_live()  # probes need no key
    x = triton.InferInput("x", [1, 3, 4, 4], "FP32")
    x.set_data_from_numpy(np.zeros((1, 3, 4, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="API key"):
        client.infer("tiny", [x])
    result = client.infer("tiny", [x], headers={"Authorization": f"Bearer {API}"})
    assert result.as_numpy("OUTPUT__0").shape == (1, 10)


def test_beyond_loopback_without_a_key_refuses_to_start(stack: Stack) -> None:
    settings = dataclasses.replace(
        stack.settings, web=WebSettings(host="0.0.0.0", port=processes.free_port())
    )
    env = launch.child_env(settings)
    env.pop(auth.API_KEYS_ENV, None)
    env.pop(auth.ADMIN_KEYS_ENV, None)
    done = subprocess.run(launch.web_argv(), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "allow_unauthenticated" in done.stderr + done.stdout
