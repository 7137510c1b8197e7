"""Start the systems under test as subprocesses and know when they are ready.

Called by bench.cli, which owns the returned processes.Child objects and stops them (always, in a
finally). `served` is `autodep serve MODEL.pt` with an explicit empty config (so the repo's
config.toml and AUTODEP_* variables do not change what is measured); `baseline` is
bench.baseline_fastapi under `uvicorn --workers 2`. Does not import torch.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from autodep_celery import processes

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 30.0
"""`autodep serve` itself waits up to 10 s per child after SIGTERM: give it time to finish."""
BASELINE_WORKERS = 2
BASELINE_TORCH_THREADS = 1


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without AUTODEP_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODEP_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_served(
    model: Path, port: int, workdir: Path, children: list[processes.Child]
) -> processes.Child:
    """`autodep serve MODEL.pt`, appended to `children` before waiting (so it is always
    stopped), returned once GET /ready answers 200."""
    config = workdir / "empty-config.toml"
    config.write_text("# bench: defaults only; the model comes from the command line\n")
    log_dir = workdir / "served-logs"
    argv = processes.python_argv(
        "-m",
        "autodep_celery.cli",
        "serve",
        str(model),
        "--port",
        str(port),
        "--log-dir",
        str(log_dir),
        "--config",
        str(config),
    )
    child = processes.start(
        "autodep serve", argv, env=clean_env(), log_path=workdir / "served.log", cwd=str(workdir)
    )
    children.append(child)
    processes.wait_until(
        lambda: http_status(f"http://127.0.0.1:{port}/ready") == 200,
        READY_TIMEOUT_S,
        "autodep serve",
        interval_s=0.5,
        alive=child.alive,
    )
    return child


def start_baseline(
    model: Path, port: int, workdir: Path, children: list[processes.Child]
) -> processes.Child:
    """uvicorn with the baseline app, appended to `children` before waiting, returned once
    every worker has loaded and warmed up its model."""
    ready_dir = workdir / f"baseline-ready-{port}"
    ready_dir.mkdir(parents=True, exist_ok=True)
    argv = processes.python_argv(
        "-m",
        "uvicorn",
        "autodep_celery.bench.baseline_fastapi:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(BASELINE_WORKERS),
        "--log-level",
        "warning",
        "--no-access-log",
    )
    env = clean_env(
        {
            "BENCH_MODEL": str(model),
            "BENCH_READY_DIR": str(ready_dir),
            "BENCH_TORCH_THREADS": str(BASELINE_TORCH_THREADS),
        }
    )
    child = processes.start(
        "baseline (uvicorn)", argv, env=env, log_path=workdir / "baseline.log", cwd=str(workdir)
    )
    children.append(child)
    processes.wait_until(
        lambda: (
            len(list(ready_dir.iterdir())) >= BASELINE_WORKERS
            and http_status(f"http://127.0.0.1:{port}/health") == 200
        ),
        READY_TIMEOUT_S,
        "uvicorn baseline",
        interval_s=0.2,
        alive=child.alive,
    )
    return child


def stop(children: list[processes.Child]) -> None:
    """Stop `children` and every process below them, even ones in other sessions (serve's
    Redis, workers and gunicorn), so no system still runs when the next one is measured."""
    below: list[psutil.Process] = []
    for child in children:
        try:
            below.extend(psutil.Process(child.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    processes.stop_all(children, grace_s=STOP_GRACE_S)
    _gone, alive = psutil.wait_procs(below, timeout=5)
    for proc in alive:
        log.warning("killing leftover process %d (%s)", proc.pid, proc.name())
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    children.clear()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def check_inference(url: str, body: bytes, top_n: int, timeout_s: float = 60.0) -> Any:
    """POST until a 200 with `top_n` classes; a 503 (not every web process has seen the
    worker yet) is retried until `timeout_s`, any other answer is a RuntimeError."""
    deadline = time.monotonic() + timeout_s
    while True:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                reply = json.loads(resp.read())
            break
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:300]!r}") from None
        time.sleep(0.2)
    classes = reply[0].get("Classification") if isinstance(reply, list) and reply else None
    if not isinstance(classes, list) or len(classes) != top_n:
        raise RuntimeError(f"{url} did not classify the image: {str(reply)[:300]}")
    return reply


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
