"""What a soak run samples every few seconds: the memory of every process under `autodep serve`
and the state of its Redis.

bench.soak calls Probe.sample() from its sampler thread. The processes are the serve process's
tree (psutil, by parent pid, across the sessions its children start), each given a role by
role_of() (pure, unit-tested): the serve process itself (which runs the autoscaler thread), the
embedded redis-server, the gunicorn master and its workers, each Celery worker and its pool
children. Redis is read with INFO memory/clients/stats/keyspace; the URL of the embedded server
(with its password) is read from the private directory `autodep serve` made for it (the
redis-server's working directory; the same user runs both), or given when the serve
uses a configured broker. Imports no torch.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import redis

ROLES = ("serve", "redis", "web-master", "web-worker", "celery-parent", "pool-child", "other")
"""Process roles in the order they are reported; `serve` includes the autoscaler's thread."""
MB = 1024 * 1024
URL_FILE = "url"
"""autodep_celery.embedded_redis.URL_FILE: where the embedded server's URL is kept."""
_ID_LIKE = re.compile(r"[0-9a-fA-F-]{8,}|\d+")


def role_of(pid: int, cmdline: list[str], serve_pid: int, parent_role: str) -> str:
    """The role of one process of the serve tree, from its command line and its parent's role
    (a prefork child has its parent's command line)."""
    if pid == serve_pid:
        return "serve"
    text = " ".join(cmdline)
    if "redis-server" in text or (cmdline and Path(cmdline[0]).name.startswith("redis")):
        return "redis"
    if "gunicorn" in text:
        return "web-worker" if parent_role in ("web-master", "web-worker") else "web-master"
    if "celery" in text:
        return "pool-child" if parent_role in ("celery-parent", "pool-child") else "celery-parent"
    return "other"


def key_pattern(key: str) -> str:
    """A key with its ids and numbers replaced by *, so keys made per request or per process
    group together (e.g. "autodep:reply:*")."""
    return _ID_LIKE.sub("*", key)


class Probe:
    """Samples the tree of `serve_pid` and its Redis (at `redis_url`, else the embedded one)."""

    def __init__(self, serve_pid: int, redis_url: str | None = None) -> None:
        self.serve_pid = serve_pid
        self.redis_url = redis_url
        self._client: redis.Redis | None = None

    def processes(self) -> list[dict[str, Any]]:
        """One row per live process of the tree: pid, role, rss_mb, pss_mb (None when the
        kernel does not say), threads and cpu_s (user + system so far)."""
        try:
            root = psutil.Process(self.serve_pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        roles: dict[int, str] = {}
        rows = []
        for p in tree:
            try:
                with p.oneshot():
                    ppid, cmdline = p.ppid(), p.cmdline()
                    role = role_of(p.pid, cmdline, self.serve_pid, roles.get(ppid, ""))
                    roles[p.pid] = role
                    rss = p.memory_info().rss
                    threads = p.num_threads()
                    cpu = p.cpu_times()
                try:
                    pss: float | None = p.memory_full_info().pss / MB
                except (psutil.AccessDenied, AttributeError, OSError):
                    pss = None
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            rows.append(
                {
                    "pid": p.pid,
                    "role": role,
                    "rss_mb": rss / MB,
                    "pss_mb": pss,
                    "threads": threads,
                    "cpu_s": cpu.user + cpu.system,
                }
            )
        return rows

    def redis_stats(self) -> dict[str, Any] | None:
        """used_memory, clients, keys (all databases) and connections received so far; None
        when Redis cannot be found or does not answer."""
        client = self._redis()
        if client is None:
            return None
        try:
            info = client.info()
        except (redis.RedisError, OSError):
            return None
        keyspace = [v for k, v in info.items() if re.fullmatch(r"db\d+", k) and isinstance(v, dict)]
        return {
            "used_memory_mb": info["used_memory"] / MB,
            "used_memory_rss_mb": info.get("used_memory_rss", 0) / MB,
            "clients": info["connected_clients"],
            "blocked_clients": info.get("blocked_clients"),
            "keys": sum(int(db.get("keys", 0)) for db in keyspace),
            "keys_with_ttl": sum(int(db.get("expires", 0)) for db in keyspace),
            "connections_received": info.get("total_connections_received"),
        }

    def key_patterns(self, limit: int = 20000) -> dict[str, int] | None:
        """How many keys of each pattern (key_pattern) Redis holds, scanning at most `limit`
        keys of database 0: where a growing key count comes from."""
        client = self._redis()
        if client is None:
            return None
        counts: Counter[str] = Counter()
        try:
            for i, key in enumerate(client.scan_iter(count=500)):
                if i >= limit:
                    break
                text = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
                counts[key_pattern(text)] += 1
        except (redis.RedisError, OSError):
            return None
        return dict(counts.most_common())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _redis(self) -> redis.Redis | None:
        if self._client is None:
            url = self.redis_url or embedded_url(self.serve_pid)
            if url is None:
                return None
            self.redis_url = url
            self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return self._client


def embedded_url(serve_pid: int) -> str | None:
    """The URL of the redis-server that `autodep serve` started, from the URL file in its
    private directory (the server's working directory: its config's `dir`); None when there is
    none (a configured broker)."""
    try:
        children = psutil.Process(serve_pid).children()
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if "redis" not in child.name():
                continue
            path = Path(child.cwd()) / URL_FILE
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        try:
            return path.read_text().strip() or None
        except OSError:
            return None
    return None


def loadavg() -> float:
    return os.getloadavg()[0]
