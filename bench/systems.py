"""Start the systems under test as subprocesses and know when they are ready.

Called by bench.cli, which owns the returned processes.Child objects and stops them (always, in a
finally). `served` is `autodep serve MODEL.pt` with an explicit empty config (so the repo's
config.toml and AUTODEP_* variables do not change what is measured); `baseline` is
bench.baseline_fastapi under `uvicorn --workers 2`. Does not import torch.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from autodep_celery import processes

READY_TIMEOUT_S = 180.0
BASELINE_WORKERS = 2
BASELINE_TORCH_THREADS = 1


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without AUTODEP_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODEP_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_served(model: Path, port: int, workdir: Path) -> processes.Child:
    config = workdir / "empty-config.toml"
    config.write_text("# bench: defaults only, no [[models]]; the model comes from the command line\n")
    log_dir = workdir / "served-logs"
    argv = processes.python_argv(
        "-m", "autodep_celery.cli", "serve", str(model), "--port", str(port),
        "--log-dir", str(log_dir), "--config", str(config))
    child = processes.start("autodep serve", argv, env=clean_env(),
                            log_path=workdir / "served.log", cwd=str(workdir))
    processes.wait_until(lambda: http_status(f"http://127.0.0.1:{port}/ready") == 200,
                         READY_TIMEOUT_S, "autodep serve", interval_s=0.5, alive=child.alive)
    return child


def start_baseline(model: Path, port: int, workdir: Path) -> processes.Child:
    ready_dir = workdir / f"baseline-ready-{port}"
    ready_dir.mkdir(parents=True, exist_ok=True)
    argv = processes.python_argv(
        "-m", "uvicorn", "bench.baseline_fastapi:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(BASELINE_WORKERS), "--log-level", "warning",
        "--no-access-log")
    env = clean_env({"BENCH_MODEL": str(model), "BENCH_READY_DIR": str(ready_dir),
                     "BENCH_TORCH_THREADS": str(BASELINE_TORCH_THREADS)})
    child = processes.start("baseline (uvicorn)", argv, env=env,
                            log_path=workdir / "baseline.log", cwd=str(workdir))
    processes.wait_until(
        lambda: len(list(ready_dir.iterdir())) >= BASELINE_WORKERS
        and http_status(f"http://127.0.0.1:{port}/health") == 200,
        READY_TIMEOUT_S, "uvicorn baseline", interval_s=0.2, alive=child.alive)
    return child


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def check_inference(url: str, body: bytes, top_n: int) -> Any:
    """POST one request; RuntimeError unless it is a 200 with `top_n` classes."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:300]!r}") from None
    classes = reply[0].get("Classification") if isinstance(reply, list) and reply else None
    if not isinstance(classes, list) or len(classes) != top_n:
        raise RuntimeError(f"{url} did not classify the image: {str(reply)[:300]}")
    return reply


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
