"""Load for fault tests: client threads sending requests back to back while a fault is
injected, recording each request's start, end and status (or the exception a dropped
connection raised), and the summary a fault test prints for the README's reliability table."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.integration.support import tiny_body

CLIENTS = 4
TIMEOUT_S = 20.0
"""Client-side bound on one request: above every test's request_timeout_s."""


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | str
    """The HTTP status, or the name of the exception (a dropped connection)."""


Body = Callable[[int, int], tuple[str, dict[str, Any]]]
"""(client index, request number) -> (path, JSON body)."""


def tiny_requests(client: int, n: int) -> tuple[str, dict[str, Any]]:
    return "/inference", tiny_body(client)


@dataclass
class Load:
    """`clients` threads sending requests to `url` back to back until stopped."""

    url: str
    body: Body = tiny_requests
    clients: int = CLIENTS
    outcomes: list[Outcome] = field(default_factory=list)
    by_path: dict[str, list[Outcome]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _client(self, index: int) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            path, body = self.body(index, n)
            n += 1
            started = time.monotonic()
            try:
                r = session.post(self.url + path, json=body, timeout=TIMEOUT_S)
                status: int | str = r.status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
                session = requests.Session()
            outcome = Outcome(started, time.monotonic(), status)
            self.outcomes.append(outcome)
            self.by_path.setdefault(path, []).append(outcome)
            if status != 200:
                time.sleep(0.05)

    def __enter__(self) -> Load:
        self.threads = [
            threading.Thread(target=self._client, args=(i,)) for i in range(self.clients)
        ]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(TIMEOUT_S + 10)


def recovery_s(outcomes: list[Outcome], since: float) -> float:
    """From `since` to the end of the first 200 of a request that started after it."""
    ok = [o.ended for o in outcomes if o.started >= since and o.status == 200]
    assert ok, "no request succeeded after the fault"
    return min(ok) - since


def outage_s(outcomes: list[Outcome], since: float) -> float:
    """From `since` to the end of the last request that started after it and failed: how long
    clients saw errors (0 when none did)."""
    failed = [o.ended for o in outcomes if o.started >= since and o.status != 200]
    return max(failed) - since if failed else 0.0


def summary(fault: str, outcomes: list[Outcome], recovery: float | None) -> str:
    """One line of the reliability table: requests, lost (no answer at all within the client's
    bound: must be 0), answers by status, recovery."""
    counts = Counter(str(o.status) for o in outcomes)
    lost = sum(1 for o in outcomes if o.status == "ReadTimeout")
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    took = f"{recovery:.2f} s" if recovery is not None else "-"
    return f"FAULT | {fault} | {len(outcomes)} | {lost} | {kinds} | {took}"
