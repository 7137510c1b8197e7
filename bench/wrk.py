"""The load generator: wrk with a Lua script that POSTs one body and reports one JSON line.

bench.cli calls run(); parse_output() and argv() are pure (unit-tested). The script's done()
prints a line starting with MARKER: requests, duration, latency percentiles (wrk's
latency:percentile, in µs), socket errors and the count of non-2xx responses (counted per
thread by response(), summed in done()). Imports nothing of the project.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = "BENCH_JSON "
TIMEOUT_S = 30
"""wrk's per-request timeout: the server's own deadline (web.request_timeout_s), not wrk's 2 s."""
INSTALL_HINT = (
    "wrk (the HTTP load generator) is not installed: `sudo apt-get install wrk` on Debian/Ubuntu, "
    "`brew install wrk` on macOS, or build it from https://github.com/wg/wrk"
)

LUA_SCRIPT = r"""
-- POST the body in the file given after `--`; report one JSON line in done().
local threads = {}
non2xx = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do
    n = n + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "bytes": %d, "latency_us": {"p50": %.1f, ' ..
    '"p90": %.1f, "p99": %.1f, "mean": %.1f, "max": %.1f}, "errors": {"connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d}, "non2xx": %d}\n',
    "BENCH_JSON ", summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max, e.connect, e.read, e.write, e.status, e.timeout, n))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)
    non2xx: int = 0
    cpu_s: float = 0.0
    """CPU time (user + system) wrk itself used: the load generator's share of the machine."""

    @property
    def ok(self) -> int:
        return max(0, self.requests - self.non2xx)

    @property
    def req_per_s(self) -> float:
        """2xx responses per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        """Failed requests: non-2xx responses plus socket errors (errors.status is within
        non2xx, so it is not counted twice)."""
        e = self.errors
        return self.non2xx + sum(e.get(k, 0) for k in ("connect", "read", "write", "timeout"))


def parse_output(stdout: str, cpu_s: float = 0.0) -> WrkResult:
    """The WrkResult of the script's JSON line in wrk's stdout; ValueError when there is none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            data: dict[str, Any] = json.loads(line[len(MARKER) :])
            lat = data["latency_us"]
            return WrkResult(
                requests=int(data["requests"]),
                duration_s=data["duration_us"] / 1e6,
                p50_ms=_ms(lat["p50"], data),
                p90_ms=_ms(lat["p90"], data),
                p99_ms=_ms(lat["p99"], data),
                mean_ms=_ms(lat["mean"], data),
                max_ms=_ms(lat["max"], data),
                errors={k: int(v) for k, v in data["errors"].items()},
                non2xx=int(data.get("non2xx", 0)),
                cpu_s=cpu_s,
            )
    tail = "\n".join(stdout.strip().splitlines()[-5:])
    raise ValueError(f"wrk printed no {MARKER.strip()} line; its output ended with:\n{tail}")


def _ms(microseconds: float, data: dict[str, Any]) -> float | None:
    """Milliseconds, or None when nothing completed (wrk then reports 0, not a latency)."""
    return microseconds / 1e3 if data["requests"] > 0 else None


def threads_for(concurrency: int) -> int:
    return max(1, min(2, concurrency))


def argv(
    binary: str, url: str, script: Path, body: Path, concurrency: int, duration_s: float
) -> list[str]:
    """wrk's command line: -t min(2, c), -c c, whole seconds (wrk's unit), our timeout."""
    return [
        binary,
        "-t",
        str(threads_for(concurrency)),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{TIMEOUT_S}s",
        "-s",
        str(script),
        url,
        "--",
        str(body),
    ]


def binary() -> str:
    """Path of wrk, or RuntimeError saying how to install it."""
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError(INSTALL_HINT)
    return found


def write_script(directory: Path) -> Path:
    path = directory / "post.lua"
    path.write_text(LUA_SCRIPT)
    return path


def run(url: str, script: Path, body: Path, concurrency: int, duration_s: float) -> WrkResult:
    """Run wrk once (blocking) and return what it measured, with its own CPU time."""
    cmd = argv(binary(), url, script, body, concurrency, duration_s)
    # Children's rusage grows only when a child is reaped; the servers are reaped only when
    # stopped, so the difference across this call is wrk's own CPU time.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return parse_output(proc.stdout, cpu_s)
