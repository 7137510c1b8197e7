"""Where the CPU goes while a point is measured: per-process CPU seconds of the system under
test, grouped by role (web, worker parent, pool children, redis) and divided by the requests
served, so every run says which tier a change should target.

Called by bench.cli around each wrk run. Reads /proc through psutil only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psutil


@dataclass
class Snapshot:
    cpu_s: dict[int, float]
    roles: dict[int, str]


def _is_worker(cmd: str) -> bool:
    # `celery ... worker`, or the [celeryd: ...] title setproctitle gives it
    return "celery" in cmd and (" worker" in cmd or "celeryd" in cmd)


def snapshot(root_pid: int) -> Snapshot:
    """CPU seconds so far of `root_pid` and all its descendants, with their roles."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return Snapshot({}, {})
    cmds: dict[int, str] = {}
    for p in procs:
        try:
            cmds[p.pid] = " ".join(p.cmdline())
        except psutil.Error:
            pass
    cpu: dict[int, float] = {}
    roles: dict[int, str] = {}
    for p in procs:
        try:
            t = p.cpu_times()
            ppid = p.ppid()
        except psutil.Error:
            continue
        cmd = cmds.get(p.pid, "")
        if p.pid == root_pid:
            role = "supervisor"
        elif "redis-server" in cmd:
            role = "redis"
        elif _is_worker(cmds.get(ppid, "")):  # forks of a worker, whatever their title
            role = "worker children"
        elif _is_worker(cmd):
            role = "worker parent"
        else:
            role = "web"
        cpu[p.pid] = t.user + t.system
        roles[p.pid] = role
    return Snapshot(cpu, roles)


def split(before: Snapshot, after: Snapshot, seconds: float, requests: int) -> dict[str, Any]:
    """Per role: share of one core and CPU milliseconds per request over the interval."""
    used: dict[str, float] = {}
    for pid, total in after.cpu_s.items():
        role = after.roles[pid]
        used[role] = used.get(role, 0.0) + total - before.cpu_s.get(pid, 0.0)
    out: dict[str, Any] = {}
    for role, cpu_s in sorted(used.items()):
        if role == "supervisor" and cpu_s < 0.01 * seconds:
            continue
        out[role] = {
            "cores": cpu_s / seconds if seconds > 0 else 0.0,
            "ms_per_request": cpu_s * 1000 / requests if requests else None,
        }
    return out
