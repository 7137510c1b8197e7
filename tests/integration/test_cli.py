"""`autodep serve` in one command, and workers started by hand with `celery -A autodep_celery`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis
import requests

from autodep_celery import config, processes
from tests.integration.conftest import Stack, Web, _log
from tests.integration.support import b64, image_bytes, tiny_body, wait_s


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODEP_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_serve_one_command_with_embedded_redis_and_no_orphans(
    model_dir: Path, workdir: Path
) -> None:
    port = processes.free_port()
    run_dir = workdir / "serve"
    run_dir.mkdir()
    log_dir = run_dir / "logs"
    out_path = _log(workdir, "serve-stdout")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autodep_celery.cli",
                "serve",
                str(model_dir / "tiny.pt"),
                "--port",
                str(port),
                "--concurrency",
                "1",
                "--log-dir",
                str(log_dir),
            ],
            cwd=run_dir,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = wait_s(180)
        while "serving tiny on" not in out_path.read_text():
            assert proc.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(tree) >= 4  # redis, celery worker + a pool child, gunicorn master + workers
        assert requests.get(base + "/ready", timeout=10).status_code == 200
        # one model served: the request may leave `model` out
        resp = requests.post(
            base + "/inference",
            timeout=60,
            json={
                "data": {
                    "B64Image": {"image": b64(image_bytes(32, 32)), "height": 32, "width": 32}
                },
                "inference_type": {"ImageClassification": {"top_n": 2}},
            },
        )
        assert resp.status_code == 200, resp.text
        assert [e["label"][:6] for e in resp.json()[0]["Classification"]] == ["class_"] * 2
        # the embedded Redis wants the password, which only the file the log names holds
        url = _embedded_url(out_path.read_text())
        password = urlsplit(url).password
        assert password and redis.Redis.from_url(url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=urlsplit(url).port).ping()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, out_path.read_text()
        deadline = wait_s(15)
        while time.monotonic() < deadline:
            left = [
                pid
                for pid in tree
                if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            ]
            if not left:
                break
            time.sleep(0.2)
        assert not left, f"orphans left behind: {left}"
        # no log of any process shows the password (Celery's banner masks it, we redact it)
        for path in [out_path, *sorted(log_dir.iterdir())]:
            assert password not in path.read_text(errors="replace"), path.name
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _embedded_url(log: str) -> str:
    found = re.findall(r"embedded Redis at redis://:\*\*\*@\S+ .* is in (\S+)\)", log)
    assert found, log
    return Path(found[-1]).read_text().strip()


def test_serve_reports_a_bad_config_clearly(workdir: Path) -> None:
    bad = workdir / "bad.toml"
    bad.write_text('[worker]\ndevcie = "cpu"\n')
    result = subprocess.run(
        [sys.executable, "-m", "autodep_celery.cli", "serve", "--config", str(bad)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "devcie" in result.stderr and "device" in result.stderr


BY_HAND = {
    # what a user runs on another machine: plain Celery with the same config.toml
    "celery": (
        [
            "-m",
            "celery",
            "-A",
            "autodep_celery",
            "worker",
            "-Q",
            "autodep.tiny",
            "-n",
            "byhand@%h",
            "-c",
            "1",
            "--without-mingle",
            "--without-gossip",
        ],
        "byhand@",
    ),
    # or the project's own command, which names the worker after its models
    "autodep": (
        ["-m", "autodep_celery.cli", "worker", "--models", "tiny", "--concurrency", "1"],
        "tiny@",
    ),
}


@pytest.mark.parametrize("how", sorted(BY_HAND))
def test_worker_started_by_hand_joins(stack: Stack, web: Web, workdir: Path, how: str) -> None:
    toml = workdir / f"byhand-{how}.toml"
    toml.write_text(
        f'[[models]]\nname = "tiny"\npath = "{stack.model_dir / "tiny.pt"}"\n'
        f'task = "ImageClassification"\n'
    )
    env = clean_env()
    env.update(
        {
            config.CONFIG_ENV: str(toml),
            "AUTODEP_BROKER__URL": stack.redis_url,
            "AUTODEP_WORKER__HEARTBEAT_INTERVAL_S": "0.5",
        }
    )
    args, prefix = BY_HAND[how]
    child = processes.start(
        how, [sys.executable, *args], env=env, log_path=_log(workdir, f"worker-byhand-{how}")
    )

    def listed() -> bool:
        return any(n.startswith(prefix) for n in web.get("/workers/_status").json())

    try:
        processes.wait_until(listed, 120, f"worker started with {how}", 0.25, child.alive)
        # requests keep working with the extra worker competing on the queue
        for i in range(6):
            resp = web.post("/inference", json=tiny_body(i))
            assert resp.status_code == 200, resp.text
    finally:
        child.stop()
    processes.wait_until(lambda: not listed(), 15, "the stopped worker leaving the list")


def test_serve_restarts_its_web_tier_redis_and_workers_when_they_die(
    model_dir: Path, workdir: Path
) -> None:
    """SIGKILL the gunicorn master, the embedded Redis, then the model's Celery worker:
    `autodep serve` starts each again (Redis on its old port and password, so every client
    reconnects) and serves again."""
    port = processes.free_port()
    run_dir = workdir / "serve-supervised"
    run_dir.mkdir()
    out_path = _log(workdir, "serve-supervised-stdout")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autodep_celery.cli", "serve", str(model_dir / "tiny.pt")]
            + ["--port", str(port), "--log-dir", str(run_dir / "logs")],
            cwd=run_dir,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    body = tiny_body()
    body.pop("model")

    def serves() -> bool:
        try:
            return requests.post(base + "/inference", json=body, timeout=10).status_code == 200
        except requests.RequestException:
            return False

    def direct_child(word: str) -> psutil.Process:
        for p in psutil.Process(proc.pid).children():
            if any(word in part for part in p.cmdline()):
                return p
        raise AssertionError(f"no {word} child of autodep serve")

    try:
        deadline = wait_s(180)
        while "serving tiny on" not in out_path.read_text():
            assert proc.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.2)
        assert serves()
        for word in ("gunicorn", "redis-server", "celery"):
            victim = direct_child(word)
            victim.kill()
            victim.wait(10)
            deadline = wait_s(60)
            while not serves():
                assert proc.poll() is None, f"serve stopped after {word} died"
                assert time.monotonic() < deadline, f"not serving again after {word} died"
                time.sleep(0.5)
            assert direct_child(word).pid != victim.pid
        assert "restarted" in out_path.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
