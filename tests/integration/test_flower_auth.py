"""`celery -A autodep_celery flower` is behind a login whenever it listens beyond loopback
(autodep_celery.flower_guard), checked on real Flower processes: asked for 0.0.0.0 without a
login it refuses to start; given no address it binds 127.0.0.1 only; with FLOWER_BASIC_AUTH it
listens where asked and its API answers 401 without the credentials and 200 with them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from autodep_celery import flower_guard, launch, processes
from autodep_celery.config import AuthSettings, Settings
from tests.integration.conftest import _log, make_settings

CREDENTIALS = ("watcher", "a-long-flower-password")


@pytest.fixture(scope="module")
def settings(redis_url: str, model_dir: Path) -> Settings:
    return make_settings(model_dir, redis_url)


@pytest.fixture
def flowers() -> Iterator[list[processes.Child]]:
    started: list[processes.Child] = []
    yield started
    processes.stop_together(started)


def start_flower(
    settings: Settings, workdir: Path, started: list[processes.Child], *args: str, **env: str
) -> tuple[processes.Child, int]:
    port = processes.free_port()
    argv = processes.python_argv(
        "-m", "celery", "-A", "autodep_celery", "flower", f"--port={port}", *args
    )
    child_env = {**launch.child_env(settings), **env}
    name = f"flower-{port}"
    child = processes.start(name, argv, env=child_env, log_path=_log(workdir, name))
    started.append(child)
    return child, port


def listening(child: processes.Child, port: int) -> set[str]:
    """The addresses `child` listens on at `port`; empty until it does."""
    try:
        conns = psutil.Process(child.proc.pid).net_connections(kind="inet")
    except psutil.NoSuchProcess:
        return set()
    return {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def wait_listening(child: processes.Child, port: int) -> set[str]:
    processes.wait_until(lambda: bool(listening(child, port)), 90, "flower", alive=child.alive)
    return listening(child, port)


def test_beyond_loopback_without_a_login_refuses_to_start(
    settings: Settings, workdir: Path, flowers: list[processes.Child]
) -> None:
    child, _ = start_flower(settings, workdir, flowers, "--address=0.0.0.0")
    assert child.proc.wait(90) != 0
    assert child.log_path is not None
    text = child.log_path.read_text()
    assert "Flower would listen on '0.0.0.0', beyond loopback, without a login" in text
    assert "--basic_auth" in text and flower_guard.ALLOW_ENV in text


def test_no_address_and_no_login_binds_loopback_only(
    settings: Settings, workdir: Path, flowers: list[processes.Child]
) -> None:
    child, port = start_flower(settings, workdir, flowers)
    assert wait_listening(child, port) == {"127.0.0.1"}  # Flower alone would bind every address
    assert requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=10).status_code == 200


def test_basic_auth_protects_a_flower_on_every_interface(
    settings: Settings, workdir: Path, flowers: list[processes.Child]
) -> None:
    child, port = start_flower(
        settings, workdir, flowers, "--address=0.0.0.0", FLOWER_BASIC_AUTH=":".join(CREDENTIALS)
    )
    assert wait_listening(child, port) == {"0.0.0.0"}
    url = f"http://127.0.0.1:{port}/api/workers"
    processes.wait_until(
        lambda: requests.get(url, auth=CREDENTIALS, timeout=10).status_code == 200, 30, "API"
    )
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=("watcher", "wrong"), timeout=10).status_code == 401
    assert requests.get(f"http://127.0.0.1:{port}/workers", timeout=10).status_code == 401


def test_the_explicit_opt_out_lets_it_listen_without_a_login(
    settings: Settings, workdir: Path, flowers: list[processes.Child]
) -> None:
    allowed = dataclasses.replace(settings, auth=AuthSettings(allow_unauthenticated_flower=True))
    child, port = start_flower(allowed, workdir, flowers, "--address=0.0.0.0")
    assert wait_listening(child, port) == {"0.0.0.0"}
