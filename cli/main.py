"""The `autodep` command: serve, web, worker, example-models.

`serve` runs everything for one machine (embedded Redis unless a broker is configured, one Celery
worker per model, gunicorn) and stops all of it on Ctrl-C or SIGTERM. `web` and `worker` exec one
component each, for deployments that spread them over machines.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autodep_celery import config, embedded_redis, launch, logs, processes
from autodep_celery.autoscaler.actuators import CeleryPools, LocalWorkers
from autodep_celery.autoscaler.loop import Autoscaler
from autodep_celery.config import ConfigError, Settings

log = logging.getLogger("autodep")

READY_TIMEOUT_S = 180.0
"""How long `serve` waits for every model's worker to load and warm up."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", metavar="FILE", help="config.toml (default: $AUTODEP_CONFIG or ./config.toml)"
    )
    p.add_argument("--broker", metavar="URL", help="broker URL, e.g. redis://host:6379/0")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autodep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve models on this machine: redis, workers, web")
    _common(serve)
    serve.add_argument("models", nargs="*", metavar="MODEL.pt", help="TorchScript files to serve")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--concurrency", type=int, help="fixed pools of N processes per model (no autoscaling)"
    )
    serve.add_argument("--log-dir", metavar="DIR", help="write each process's log to a file here")

    web = sub.add_parser("web", help="run the HTTP tier (gunicorn)")
    _common(web)
    web.add_argument("--host")
    web.add_argument("--port", type=int)

    worker = sub.add_parser("worker", help="run a Celery worker for some models")
    _common(worker)
    worker.add_argument("--models", help="comma-separated model names (default: all)")
    worker.add_argument("--concurrency", type=int, help="a fixed pool (no autoscaling)")
    worker.add_argument(
        "--autoscale",
        metavar="MAX,MIN",
        help="pool bounds the autoscaler may use (default: the models' max_workers,min_workers)",
    )
    worker.add_argument("--pool", default="prefork")
    worker.add_argument("--loglevel", help="default: [log] level")

    scaler = sub.add_parser(
        "autoscaler", help="run the autoscaler alone (resizes worker pools by backlog)"
    )
    _common(scaler)
    scaler.add_argument(
        "--spawn-workers",
        action="store_true",
        help="also start and stop whole worker processes on this host (scale to zero)",
    )
    scaler.add_argument("--log-dir", metavar="DIR", help="log files of spawned workers")

    scale = sub.add_parser("scale", help="pin a model's pool size by hand, or give it back")
    _common(scale)
    scale.add_argument("model")
    scale.add_argument("processes", help="a number of processes, or 'auto'")

    ex = sub.add_parser("example-models", help="write the example TorchScript models to DIR")
    ex.add_argument("directory", metavar="DIR")
    sub.add_parser(
        "bench",
        add_help=False,
        help="benchmark: in-process limit vs served vs FastAPI (autodep bench --help)",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    if getattr(args, "broker", None):
        out.setdefault("broker", {})["url"] = args.broker
    if getattr(args, "host", None):
        out.setdefault("web", {})["host"] = args.host
    if getattr(args, "port", None):
        out.setdefault("web", {})["port"] = args.port
    if getattr(args, "concurrency", None):
        out.setdefault("worker", {})["concurrency"] = args.concurrency
        if args.command == "serve":  # a fixed size asked for: no autoscaling
            out.setdefault("autoscaler", {})["enabled"] = False
    return out


def _settings(args: argparse.Namespace, model_paths: list[str] | None = None) -> Settings:
    settings = config.load(args.config, overrides=_overrides(args), model_paths=model_paths)
    config.check_model_files(settings)
    return settings


def _http_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode(errors="replace"))[:500]
    except urllib.error.HTTPError as exc:
        return exc.read().decode(errors="replace")[:500]
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class _Stop(Exception):
    pass


def _check_access(settings: Settings) -> None:
    """Keys readable, and none needed only on loopback (web.auth): refused before anything
    starts, with the message naming the settings."""
    from autodep_celery.web import auth

    auth.check_listen(settings, auth.load_keys(settings))


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args, args.models)
    logs.setup(settings.log, "serve")
    _check_access(settings)
    if not settings.models and not settings.management.enabled:
        raise ConfigError(
            "nothing to serve: give MODEL.pt files or [[models]] in config.toml "
            "(`autodep example-models models` writes some)"
        )
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    children: list[processes.Child] = []
    restarters: dict[str, Callable[[], processes.Child]] = {}
    """How to start each of `children` again when it dies (workers: LocalWorkers does it)."""
    workdir: Path | None = None
    local: LocalWorkers | None = None
    scaler: Autoscaler | None = None
    scaler_thread: threading.Thread | None = None

    def on_signal(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not settings.broker.url:
            workdir = Path(tempfile.mkdtemp(prefix="autodep-redis-"))
            redis_log = log_dir / "redis.log" if log_dir else None
            child, url = embedded_redis.start(workdir, log_path=redis_log)
            children.append(child)
            redis_dir = workdir
            restarters["redis"] = lambda: embedded_redis.restart(redis_dir, redis_log)
            settings = dataclasses.replace(
                settings, broker=dataclasses.replace(settings.broker, url=url)
            )
            log.info(
                "embedded Redis at %s (no broker configured; the URL with its password is in %s)",
                embedded_redis.redact(url),
                workdir / embedded_redis.URL_FILE,
            )
        env = launch.child_env(settings)
        enabled = settings.autoscaler.enabled
        served = _with_registry(settings)  # models registered through /management before
        local = LocalWorkers(served, env, log_dir, autoscale=enabled)
        for m in served.models:
            low = served.pool_bounds(m)[0]
            if low > 0 or not enabled:
                local.start(m.name, low)
        if enabled:
            scaler = _autoscaler(settings, local)
            scaler_thread = scaler.start_thread()
        web_log = log_dir / "web.log" if log_dir else None
        web_env = env

        def start_web() -> processes.Child:
            return processes.start("web", launch.web_argv(), env=web_env, log_path=web_log)

        children.append(start_web())
        restarters["web"] = start_web
        base = f"http://{settings.web.host}:{settings.web.port}"

        def all_alive() -> bool:
            return all(child.alive() for child in children)  # workers restart: not counted

        processes.wait_until(lambda: _http_ok(base + "/health"), 60, "web", alive=all_alive)
        try:
            processes.wait_until(
                lambda: not served.models or _http_ok(base + "/ready"),
                READY_TIMEOUT_S,
                "model workers",
                interval_s=0.5,
                alive=all_alive,
            )
        except (TimeoutError, RuntimeError) as exc:
            dead = [c.name for c in children if not c.alive()]
            why = f"{', '.join(dead)} exited" if dead else _http_text(base + "/ready")
            raise RuntimeError(f"{exc} ({why}; see the logs above or in --log-dir)") from None
        names = ", ".join(m.name for m in served.models) or "no model yet"
        print(f"autodep: serving {names} on {base}  (Ctrl-C stops)", flush=True)
        if not served.models:
            print(f"autodep: register one: curl -X POST '{base}/management/models?url=FILE.pt'")
        supervisor = _Supervisor(children, restarters)
        while True:
            supervisor.check()
            if scaler is None:
                local.supervise()  # the autoscaler does it when it runs
            time.sleep(0.5)
    except _Stop as stop:
        log.info("%s: stopping %d processes", stop, len(children))
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # web first (no new work), then the workers together, then the broker
        if scaler is not None:
            scaler.stop()
            if scaler_thread is not None:  # no step may start a worker after stop_all
                scaler_thread.join(10)
        web_children = [c for c in children if c.name == "web"]
        processes.stop_all(web_children)
        if local is not None:
            local.stop_all()
        processes.stop_all([c for c in children if c not in web_children])
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


class _Supervisor:
    """Restarts a child of `serve` that dies (the web tier, the embedded Redis), with backoff,
    so one crash never stops the server; the model workers have LocalWorkers for this."""

    def __init__(
        self,
        children: list[processes.Child],
        restarters: dict[str, Callable[[], processes.Child]],
    ) -> None:
        self.children = children
        self.restarters = restarters
        self.restarts = processes.Restarts()
        for child in children:
            self.restarts.started(child.name)

    def check(self) -> None:
        for i, child in enumerate(self.children):
            name = child.name
            if child.alive():
                self.restarts.alive(name)
                continue
            wait = self.restarts.died(name)
            if wait is not None:
                log.error(
                    "%s exited with code %s; restarting in %.0f s",
                    name,
                    child.proc.returncode,
                    wait,
                )
                child.stop(1.0)  # sweep what is left of its group (gunicorn's workers)
            elif self.restarts.due(name):
                try:
                    self.children[i] = self.restarters[name]()
                    self.restarts.started(name)
                    log.info("%s restarted (pid %d)", name, self.children[i].pid)
                except Exception as exc:  # try again after the next backoff
                    log.error("restarting %s failed: %s", name, exc)


def web(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _check_access(settings)
    env = launch.child_env(settings)
    argv = launch.web_argv()
    os.execve(argv[0], argv, env)
    return 0  # pragma: no cover


def worker(args: argparse.Namespace) -> int:
    settings = _with_registry(_settings(args))
    names = (
        [n.strip() for n in args.models.split(",")]
        if args.models
        else [m.name for m in settings.models]
    )
    unknown = [n for n in names if settings.model(n) is None]
    if unknown or not names:
        known = ", ".join(m.name for m in settings.models) or "none"
        raise ConfigError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; configured: {known}"
        )
    autoscale = None
    if args.autoscale:
        try:
            high, _, low = args.autoscale.partition(",")
            autoscale = (int(high), int(low or 1))
        except ValueError:
            raise ConfigError("--autoscale takes MAX,MIN, e.g. --autoscale=4,1") from None
    elif settings.autoscaler.enabled and not args.concurrency and args.pool == "prefork":
        bounds = [settings.pool_bounds(m) for n in names if (m := settings.model(n))]
        autoscale = (sum(b[1] for b in bounds), max(1, sum(b[0] for b in bounds)))
    argv = launch.worker_argv(
        settings, names, pool=args.pool, loglevel=args.loglevel, autoscale=autoscale
    )
    os.execve(argv[0], argv, launch.child_env(settings))
    return 0  # pragma: no cover


def _with_registry(settings: Settings) -> Settings:
    """With the models registered at runtime (/management), when Redis answers."""
    from autodep_celery.celery_app import with_registry  # imports Celery: only when needed

    return with_registry(settings)


def _autoscaler(settings: Settings, local: LocalWorkers | None) -> Autoscaler:
    import redis

    from autodep_celery.celery_app import make_celery

    client = redis.Redis.from_url(settings.result_url, socket_timeout=5, socket_connect_timeout=5)
    return Autoscaler(settings, client, CeleryPools(make_celery(settings)), local)


def autoscaler(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.setup(settings.log, "autoscaler")
    local = None
    if args.spawn_workers or settings.autoscaler.spawn_workers:
        log_dir = Path(args.log_dir) if args.log_dir else None
        local = LocalWorkers(settings, launch.child_env(settings), log_dir)
    scaler = _autoscaler(settings, local)

    def on_signal(signum: int, _frame: Any) -> None:
        scaler.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        scaler.run()
    finally:
        if local is not None:
            local.stop_all()
    return 0


def scale(args: argparse.Namespace) -> int:
    import redis

    from autodep_celery.autoscaler import state

    settings = _settings(args)
    m = settings.model(args.model)
    if m is None:
        known = ", ".join(x.name for x in settings.models) or "none"
        raise ConfigError(f"unknown model {args.model}; configured: {known}")
    if args.processes == "auto":
        target = None
    else:
        try:
            target = int(args.processes)
        except ValueError:
            raise ConfigError("processes must be a whole number or 'auto'") from None
        high = settings.pool_bounds(m)[1]
        if not 0 <= target <= high:
            raise ConfigError(f"{m.name} takes 0 to {high} processes (its max_workers)")
    client = redis.Redis.from_url(settings.result_url, socket_timeout=5, socket_connect_timeout=5)
    state.pin(client, m.name, target)
    running = state.read(client) is not None
    if target is None:
        print(f"{m.name}: back to automatic scaling" + ("" if running else " (no autoscaler runs)"))
    elif running:
        print(f"{m.name}: pinned at {target} processes; the autoscaler applies it within a second")
    else:
        print(f"{m.name}: pinned at {target}; no autoscaler runs, so resizing its workers now")
        _resize_now(settings, client, m.name, target)
    return 0


def _resize_now(settings: Settings, client: Any, model: str, target: int) -> None:
    from autodep_celery import status
    from autodep_celery.autoscaler import allocate
    from autodep_celery.autoscaler.loop import _slots
    from autodep_celery.celery_app import make_celery

    queue = config.queue_name(model)
    workers = [w for w in status.read_workers(client) if w.consuming and queue in w.queues]
    if not workers:
        raise RuntimeError(f"no worker consumes {queue}")
    pools = CeleryPools(make_celery(settings))
    slots = _slots(workers)
    sizes = allocate.pool_sizes({model: target}, slots)
    for w in workers:
        if w.autoscale:
            ok = pools.resize(w.hostname, sizes[w.hostname])
            print(f"  {w.hostname}: {sizes[w.hostname]} processes" + ("" if ok else " (no reply)"))


def example_models(args: argparse.Namespace) -> int:
    from autodep_celery.worker.examples import write_example_models  # torch: only for this command

    for name, path in write_example_models(Path(args.directory)).items():
        print(f"{name}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logs.setup(config.LogSettings(), "cli")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # bench has its own parser; import it (torch, wrk) only when asked
        from autodep_celery.bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    handler = {
        "serve": serve,
        "web": web,
        "worker": worker,
        "autoscaler": autoscaler,
        "scale": scale,
        "example-models": example_models,
    }
    try:
        return handler[args.command](args)
    except (ConfigError, TimeoutError, RuntimeError) as exc:
        print(f"autodep: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
