"""The embedded Redis (autodep_celery.embedded_redis) that the whole integration suite runs on:
other local users cannot use it. It refuses clients without the password, refuses the commands
that write files or stop it even with the password, and keeps its directory private."""

from __future__ import annotations

import socket
import stat
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis

from autodep_celery import embedded_redis


def _raw(url: str, command: bytes) -> bytes:
    """One inline command over a bare socket, as any local user could send it."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.sendall(command + b"\r\n")
        return s.recv(4096)


def test_a_client_without_the_password_is_refused(redis_url: str) -> None:
    assert urlsplit(redis_url).password
    assert _raw(redis_url, b"PING").startswith(b"-NOAUTH")
    assert _raw(redis_url, b"KEYS *").startswith(b"-NOAUTH")
    assert _raw(redis_url, b"LPUSH autodep.tiny x").startswith(b"-NOAUTH")
    # renamed commands are unknown before the password is even asked for
    assert _raw(redis_url, b"CONFIG SET dir /tmp").startswith(b"-ERR unknown command")
    assert _raw(redis_url, b"SHUTDOWN NOSAVE").startswith(b"-ERR unknown command")
    assert _raw(redis_url, b"AUTH wrong-password").startswith(b"-WRONGPASS")
    wrong = redis_url.replace(f":{urlsplit(redis_url).password}@", ":wrong@")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(wrong).ping()


@pytest.mark.parametrize(
    "command",
    [
        ("CONFIG", "SET", "dir", "/tmp"),
        ("CONFIG", "GET", "dir"),
        ("SHUTDOWN", "NOSAVE"),
        ("SAVE",),
        ("BGSAVE",),
        ("DEBUG", "SLEEP", "0"),
        ("MODULE", "LIST"),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("FLUSHALL",),
    ],
)
def test_dangerous_commands_are_refused_even_with_the_password(
    redis_url: str, command: tuple[str, ...]
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.execute_command(*command)
        assert client.ping()  # still up
    finally:
        client.close()


def test_its_directory_is_private_and_the_password_is_on_no_command_line(
    redis_url: str, workdir: Path
) -> None:
    d = workdir / "redis"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("redis.conf", embedded_redis.URL_FILE):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    assert (d / embedded_redis.URL_FILE).read_text().strip() == redis_url
    password = urlsplit(redis_url).password
    assert password
    for proc in psutil.process_iter(["cmdline"]):
        assert password not in " ".join(proc.info["cmdline"] or [])
