"""Child processes of `autodep serve`: start each in its own process group, stop them all.

Every child gets its own session so that stopping it stops its whole tree (gunicorn's workers,
Celery's pool children), and asks the kernel for SIGTERM when the parent dies, so even a
SIGKILLed `autodep serve` leaves no orphans. Used by cli and by the integration tests.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 10.0
"""How long a child may take to stop after SIGTERM before its group is SIGKILLed."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the signal handlers of `serve` still clean up
        pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the group, wait, then SIGKILL whatever is left of it."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, grace_s)
        # pool children may outlive their parent for a moment: sweep the whole group
        self.signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
            log.error("%s (pid %d) could not be killed", self.name, self.proc.pid)
        if self._log_file is not None:
            self._log_file.close()
        return self.proc.returncode


def start(
    name: str,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    cwd: str | None = None,
) -> Child:
    """Start `argv` in a new session; output to `log_path` or inherited."""
    out: IO[bytes] | None = None
    if log_path is not None:
        out = open(log_path, "ab")  # closed by Child.stop
    proc = subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT if out is not None else None,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    log.debug("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
    return Child(name, proc, log_path, out)


def stop_all(children: Sequence[Child], grace_s: float = STOP_GRACE_S) -> None:
    """Stop in reverse start order (web, then workers, then the broker), each given its grace.

    Stopping the broker last lets the web and workers shut down cleanly instead of spinning
    on reconnects; each child's own SIGTERM handling finishes in-flight work first.
    """
    for child in reversed(children):
        child.stop(grace_s)


def stop_together(children: Sequence[Child], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM all at once (peers such as the workers of several models), then reap each."""
    for child in children:
        if child.alive():
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        child.stop(max(0.1, deadline - time.monotonic()))


def wait_until(
    check: Callable[[], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll `check` until it is true; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: the process exited before it was ready")
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not ready after {timeout_s:.0f} s")


def python_argv(*args: str) -> list[str]:
    """Run a module with this interpreter, so a venv's packages are the ones used."""
    return [sys.executable, *args]


RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits before starting again a process that died, growing with each death in a row."""
STABLE_AFTER_S = 60.0
"""A process that ran this long is forgiven its earlier deaths."""


@dataclass
class Restarts:
    """When to start again, by name, a process that died: a growing backoff, forgiven after a
    stable run. The one policy of `autodep serve`'s supervisor and the autoscaler's workers."""

    clock: Callable[[], float] = time.monotonic
    _deaths: dict[str, int] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    def started(self, name: str) -> None:
        self._started[name] = self.clock()

    def alive(self, name: str) -> None:
        if self.clock() - self._started.get(name, self.clock()) > STABLE_AFTER_S:
            self._deaths[name] = 0

    def died(self, name: str) -> float | None:
        """Schedule a restart; the wait when this death is new, None when already scheduled."""
        if name in self._due:
            return None
        deaths = self._deaths.get(name, 0)
        wait = RESTART_BACKOFF_S[min(deaths, len(RESTART_BACKOFF_S) - 1)]
        self._deaths[name] = deaths + 1
        self._due[name] = self.clock() + wait
        return wait

    def due(self, name: str) -> bool:
        """True once, when the scheduled restart of `name` is due."""
        if name in self._due and self.clock() >= self._due[name]:
            del self._due[name]
            return True
        return False
