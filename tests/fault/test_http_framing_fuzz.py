"""Raw-socket fuzzing of HTTP framing against a real gunicorn web process (the slow-clients
stack of test_slow_clients, which covers five hand-picked cases; these are generated): chunked
bodies with bad sizes, extensions, missing terminators and huge chunk sizes; Content-Length
that lies, is negative, doubled or sent beside Transfer-Encoding; headers beyond gunicorn's
limits; long URLs; bad request lines; HTTP/0.9, the HTTP/2 preface, TLS and garbage bytes;
pipelined requests; and connections closed mid-request.

Hundreds of cases come from a seeded RNG (``AUTODEP_FRAMING_SEED``, ``AUTODEP_FRAMING_CASES``).
Every reply must be a JSON answer or the JSON error shape ``{"error": {"code", "message"}}``,
none a 5xx; every connection must be answered or closed within the read timeout; and the
server must answer GET /health after each case.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from tests.fault.test_slow_clients import READ_TIMEOUT_S, connect, web
from tests.integration.conftest import Web

pytestmark = pytest.mark.fault

SEED = int(os.environ.get("AUTODEP_FRAMING_SEED", "2024"))
CASES = int(os.environ.get("AUTODEP_FRAMING_CASES", "400"))
PARALLEL = 8
"""Cases in flight at once: well under the stack's connections (test_slow_clients)."""
ANSWER_BOUND_S = READ_TIMEOUT_S + 8.0
"""Longest a connection may stay open without an answer: the server's read timeout, plus
gevent's header bound (gunicorn keepalive, 5 s) for a client that stops inside its headers."""
PATHS = ("/health", "/inference", "/jobs", "/classify", "/nowhere", "/ready")
_ = web  # the stack fixture of test_slow_clients, used here by name


@dataclass
class Case:
    name: str
    payload: bytes
    half_close: bool = True
    """Shut our side down after sending (the server sees the end at once), else keep it open."""
    abort: bool = False
    """Close without reading: a client that goes away mid-request."""
    silent_ok: bool = False
    """The server may close without an answer (nothing, or too little, to answer)."""


def request(
    method: str = "POST",
    path: str = "/inference",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    head = [f"{method} {path} {version}", "Host: fuzz"]
    head += [f"{k}: {v}" for k, v in headers or []]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


BODY = b'{"data": {"Text": "hi"}, "inference_type": "Nope"}'
"""Valid JSON that validation refuses (422): this stack has no worker, and framing is what
is tested here, so no request is meant to reach a model."""


def _chunked(rng: random.Random) -> Case:
    parts: list[bytes] = []
    for _ in range(rng.randint(0, 3)):
        data = rng.randbytes(rng.randint(0, 20))
        size = rng.choice(
            [
                f"{len(data):x}",
                f"{len(data) + rng.randint(1, 9):x}",
                f"{max(0, len(data) - 1):x}",
                "zz",
                "-1",
                "0x10",
                " 5",
                "f" * rng.randint(9, 40),
                str(10**30),
                "",
            ]
        )
        ext = rng.choice(["", ";a=b", ';name="q"', ";", ";" + "x" * 5000, "\x00"])
        end = rng.choice(["\r\n", "\r\n", "\n", "", "\r"])
        parts.append(f"{size}{ext}{end}".encode("latin-1") + data + end.encode())
    parts.append(rng.choice([b"0\r\n\r\n", b"0\r\n", b"0;x=y\r\nTrailer: v\r\n\r\n", b"", b"0"]))
    te = rng.choice(["chunked", "chunked", "Chunked", " chunked", "gzip, chunked", "chunked, gzip"])
    payload = request(headers=[("Transfer-Encoding", te)], body=b"".join(parts))
    return Case(f"chunked te={te!r}", payload)


def _content_length(rng: random.Random) -> Case:
    body = rng.choice([BODY, b"", rng.randbytes(rng.randint(1, 30))])
    cl = rng.choice(
        [
            str(len(body)),
            str(max(0, len(body) - rng.randint(1, 10))),
            str(len(body) + rng.randint(1, 50)),
            "-1",
            "+5",
            " 5",
            "5x",
            "0x10",
            str(10**25),
            "",
        ]
    )
    headers = [("Content-Type", "application/json"), ("Content-Length", cl)]
    how = rng.choice(["plain", "duplicate", "conflict", "with-te", "te-identity"])
    if how == "duplicate":
        headers.append(("Content-Length", cl))
    elif how == "conflict":
        headers.append(("Content-Length", str(len(body) + 1)))
    elif how == "with-te":
        headers.append(("Transfer-Encoding", "chunked"))
    elif how == "te-identity":
        headers.append(("Transfer-Encoding", rng.choice(["identity", "gzip", "x", "chunked\x00"])))
    half_close = rng.random() < 0.8
    return Case(f"content-length {cl!r} {how}", request(headers=headers, body=body), half_close)


def _headers(rng: random.Random) -> Case:
    how = rng.choice(["many", "huge", "total", "no-colon", "fold", "nul", "space-name", "8bit"])
    headers: list[tuple[str, str]] = []
    if how == "many":
        headers = [(f"X-{i}", "v") for i in range(rng.randint(95, 400))]
    elif how == "huge":
        headers = [("X-Big", "b" * rng.randint(8000, 70000))]
    elif how == "total":
        headers = [(f"X-{i}", "c" * 4000) for i in range(rng.randint(10, 60))]
    elif how == "no-colon":
        headers = [("X-NoColon" + " " * rng.randint(0, 3), "")]
        return Case(how, request("GET", "/health").replace(b"Host: fuzz", b"Host: fuzz\r\nBroken"))
    elif how == "fold":
        headers = [("X-A", "one\r\n two")]
    elif how == "nul":
        headers = [("X-N", "a\x00b")]
    elif how == "space-name":
        headers = [("X Bad", "v")]
    else:
        headers = [("X-8", "".join(chr(rng.randint(128, 255)) for _ in range(10)))]
    method, path = rng.choice([("GET", "/health"), ("POST", "/inference")])
    return Case(f"headers {how} ({len(headers)})", request(method, path, headers, b""))


def _url(rng: random.Random) -> Case:
    path = rng.choice(
        [
            "/" + "a" * rng.randint(4000, 20000),
            "/health?" + "q=" + "x" * rng.randint(4000, 9000),
            "/health%zz",
            "/%00",
            "*",
            "",
            "http://fuzz/health",
            "/health#frag",
            "//health",
            "/../../etc/passwd",
            "/health?" + "&".join(f"k{i}=v" for i in range(rng.randint(100, 2000))),
            "/predictions/" + "m" * 300,
        ]
    )
    return Case(f"url {path[:30]!r}", request("GET", path))


def _request_line(rng: random.Random) -> Case:
    line = rng.choice(
        [
            "GET /health HTTP/1.1 extra",
            "get /health HTTP/1.1",
            "GET  /health  HTTP/1.1",
            "GET /health",
            "GET",
            "GET /health HTTP/1.0",
            "GET /health HTTP/2.0",
            "GET /health HTTP/0.9",
            "GET /health HTTP/1.1x",
            "GET /health HTTP/11",
            "G\x00T /health HTTP/1.1",
            "\tGET /health HTTP/1.1",
            "POST\t/inference\tHTTP/1.1",
            "BREW /health HTTP/1.1",
            "X" * rng.randint(100, 6000) + " / HTTP/1.1",
            "GET /health HTTP/1.1\rX",
        ]
    )
    return Case(f"request line {line[:30]!r}", (line + "\r\nHost: fuzz\r\n\r\n").encode("latin-1"))


def _protocol(rng: random.Random) -> Case:
    name, payload = rng.choice(
        [
            ("http/0.9", b"GET /health\r\n"),
            ("http/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00" * 3),
            ("tls hello", bytes.fromhex("160301002a0100002603035a") + rng.randbytes(40)),
            ("garbage", rng.randbytes(rng.randint(1, 3000))),
            ("crlf only", b"\r\n" * rng.randint(1, 50)),
            ("empty", b""),
            ("nul", b"\x00" * rng.randint(1, 100)),
        ]
    )
    # nothing to answer: no request line ends before the client's end (gunicorn closes)
    silent = name in ("empty", "crlf only", "http/0.9", "tls hello", "nul", "garbage")
    return Case(name, payload, silent_ok=silent)


def _pipelined(rng: random.Random) -> Case:
    pieces = []
    for _ in range(rng.randint(2, 5)):
        pieces.append(
            rng.choice(
                [
                    request("GET", "/health"),
                    request(headers=[("Content-Length", str(len(BODY)))], body=BODY),
                    request("GET", "/nowhere"),
                    request(headers=[("Content-Length", "3")], body=b"{}}"),
                    b"GARBAGE\r\n\r\n",
                ]
            )
        )
    return Case(f"pipelined x{len(pieces)}", b"".join(pieces))


def _aborted(rng: random.Random) -> Case:
    full = request(
        headers=[("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))],
        body=BODY,
    )
    return Case("closed mid-request", full[: rng.randint(0, len(full) - 1)], abort=True)


GENERATORS = (
    _chunked,
    _content_length,
    _headers,
    _url,
    _request_line,
    _protocol,
    _pipelined,
    _aborted,
)


def cases() -> list[Case]:
    rng = random.Random(SEED)
    return [GENERATORS[i % len(GENERATORS)](rng) for i in range(CASES)]


def read_until_closed(s: socket.socket, bound_s: float) -> tuple[bytes, bool]:
    """What the server sends until it closes, and whether it closed within `bound_s`."""
    deadline = time.monotonic() + bound_s
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


def responses(raw: bytes) -> list[tuple[int, bytes, bytes]]:
    """(status, head, body) of each HTTP/1.1 response in `raw`, in order."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"a reply without the end of its headers: {raw[:200]!r}"
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        assert b"transfer-encoding" not in head.lower(), head
        out.append((status, head, rest[:length]))
        raw = rest[length:]
    return out


def check_reply(case: Case, raw: bytes) -> list[int]:
    replies = responses(raw)
    for status, head, body in replies:
        where = f"{case.name}: {status} {head[:200]!r} {body[:200]!r}"
        assert status < 500, where
        assert b"content-type: application/json" in head.lower(), where
        parsed = json.loads(body)
        assert isinstance(parsed, dict), where
        if status >= 400:
            error = parsed.get("error")
            assert isinstance(error, dict) and error.get("code") and error.get("message"), where
    return [status for status, _, _ in replies]


def run(web: Web, case: Case) -> list[int]:
    s = connect(web)
    try:
        if case.payload:
            try:
                s.sendall(case.payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused while sending (too large): its answer is read below
        if case.abort:
            return []
        if case.half_close:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        raw, closed = read_until_closed(s, ANSWER_BOUND_S)
    finally:
        s.close()
    assert closed or raw, f"{case.name}: no answer and not closed in {ANSWER_BOUND_S} s"
    statuses = check_reply(case, raw) if raw else []
    assert statuses or case.silent_ok, f"{case.name}: closed without an answer"
    health = requests.get(web.url + "/health", timeout=10)
    assert health.status_code == 200, f"after {case.name}: {health.status_code}"
    return statuses


def test_generated_framing_cases_get_json_4xx_and_the_server_keeps_serving(
    web: Web, capsys: pytest.CaptureFixture[str]
) -> None:
    all_cases = cases()
    seen: dict[str, int] = {}
    silent: list[str] = []
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda c: (c, run(web, c)), all_cases))
    for case, statuses in results:
        for status in statuses:
            seen[str(status)] = seen.get(str(status), 0) + 1
        if not statuses and not case.abort:
            silent.append(case.name)
    with capsys.disabled():  # shown without -s too
        print(
            f"\nframing fuzz (seed {SEED}): {len(all_cases)} cases, statuses "
            f"{sorted(seen.items())}, {len(silent)} closed without an answer: "
            f"{sorted(set(silent))}"
        )
    assert seen and all(int(s) < 500 for s in seen)
    assert requests.get(web.url + "/health", timeout=10).status_code == 200
