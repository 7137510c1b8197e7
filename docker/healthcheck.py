"""Health checks that docker compose runs inside the containers (docker-compose.yml).

    python /opt/autodep/healthcheck.py web [PORT]     GET /health answers 200 (default 8000)
    python /opt/autodep/healthcheck.py flower [PORT]  Flower's GET /healthcheck (default 5555)
    python /opt/autodep/healthcheck.py worker         a pool process of this container has
                                                      loaded its models (its status in Redis),
                                                      or the pool is scaled to zero on purpose

Exit status 0 is healthy. Docker runs these every few seconds in every container, so they stay
cheap: no Celery, Flask or torch import, one HTTP request or one Redis read.
"""

from __future__ import annotations

import socket
import sys
import urllib.request

TIMEOUT_S = 3.0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def worker_ready() -> bool:
    """This container's worker (`-n <name>@%h`) has a pool process with its models loaded, or
    its parent is alive with a pool scaled to zero on purpose (min_workers = 0)."""
    import redis

    from autodep_celery import config, status

    settings = config.load()
    client = redis.Redis.from_url(settings.result_url, socket_timeout=TIMEOUT_S)
    suffix = "@" + socket.gethostname()
    try:
        if any(p.ready and p.worker.endswith(suffix) for p in status.read_all(client)):
            return True
        read_workers = getattr(status, "read_workers", None)  # the parent's own record
        return read_workers is not None and any(
            w.hostname.endswith(suffix) and w.processes == 0 and w.min == 0
            for w in read_workers(client)
        )
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def main(argv: list[str]) -> int:
    what = argv[0] if argv else ""
    port = argv[1] if len(argv) > 1 else ""
    if what == "web":
        ok = http_ok(f"http://127.0.0.1:{port or 8000}/health")
    elif what == "flower":
        ok = http_ok(f"http://127.0.0.1:{port or 5555}/healthcheck")
    elif what == "worker":
        ok = worker_ready()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
