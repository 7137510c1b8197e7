"""Celery signal handlers that give each worker process its models, threads and status record.

Imported by worker.tasks, so the handlers connect when the worker imports its task modules.
Order in a prefork worker (celery 5.7): ``worker_init`` and ``celeryd_after_setup`` run in the
parent before the pool forks (hostname, concurrency and ``-Q`` queues are known there); then
``worker_process_init`` runs in each child, which loads and warms up the models. The parent never
runs a forward pass: that hangs multi-threaded children (docs/architecture.md §2.3). The solo pool
sends ``worker_process_init`` in the worker process itself; the threads pool sends nothing per
process, so ``worker_ready`` loads the models there.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from celery import Celery, signals
from celery.concurrency import get_implementation, prefork

from autodep_celery.celery_app import settings_of
from autodep_celery.config import Settings, queue_name
from autodep_celery.worker import memory, pool_status, runtime

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What the worker parent knows before forking; children inherit it."""

    app: Celery | None = None
    hostname: str = ""
    concurrency: int = 1
    queues: list[str] = field(default_factory=list)
    parent_pid: int = 0
    pool: str = ""


_ctx = WorkerContext()


def served_models(settings: Settings, queues: list[str]) -> list[str]:
    """Models whose queue is consumed; every configured model when no queue is known."""
    if not queues:
        return [m.name for m in settings.models]
    names = set(queues)
    return [m.name for m in settings.models if queue_name(m.name) in names]


def _pool_name(pool: Any) -> str:
    """ "prefork" for Celery's prefork pool and subclasses (worker.pool's), else the pool's
    module; `pool` is a name ("solo", "module:Class") at worker_init, a class from then on."""
    cls = get_implementation(pool) if isinstance(pool, str) else pool
    return "prefork" if issubclass(cls, prefork.TaskPool) else str(cls.__module__)


def _remember(worker: Any) -> None:
    app = worker.app
    _ctx.app = app
    _ctx.hostname = worker.hostname
    _ctx.parent_pid = os.getpid()
    _ctx.pool = _pool_name(worker.pool_cls)
    concurrency = worker.concurrency
    autoscale = getattr(worker, "autoscale", None)
    if autoscale:  # threads per child are sized for the largest pool the worker may grow to
        concurrency = int(autoscale[0])
    _ctx.concurrency = concurrency if isinstance(concurrency, int) and concurrency > 0 else 1
    _ctx.queues = sorted(app.amqp.queues.consume_from.keys())


PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")
"""Celery logs every task received and succeeded (with a repr of its result) at INFO: at
thousands of batches a second that is most of a worker's own CPU. Shown with --loglevel DEBUG."""


def _quiet_task_logs() -> None:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    _remember(sender)


@signals.celeryd_after_setup.connect
def _on_after_setup(sender: Any = None, instance: Any = None, **_: Any) -> None:
    # Runs after "auto" concurrency is resolved, still before the pool forks.
    _remember(instance)
    _quiet_task_logs()
    models = served_models(settings_of(instance.app), _ctx.queues)
    log.info(
        "autodep worker %s (%s pool, concurrency %d) serving %s",
        _ctx.hostname,
        _ctx.pool.rsplit(".", 1)[-1],
        _ctx.concurrency,
        ", ".join(models) or "no configured model",
    )
    if _ctx.pool == "prefork":
        # Everything imported so far (torch, Celery, the app) moves to the permanent generation:
        # a full collection in the parent no longer walks it, so it no longer writes to pages
        # the pool children share (a soak run saw a one-time ~47 MB PSS step), as CPython's
        # gc.freeze documentation advises before fork.
        gc.freeze()


def start_process(processes_per_host: int) -> runtime.Runtime | None:
    """Set torch threads, load the models and start the heartbeat in this process."""
    if runtime.current() is not None or _ctx.app is None:
        return runtime.current()
    settings = settings_of(_ctx.app)
    memory.keep_freed_memory()  # before any model or batch allocates
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(1, processes_per_host)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only allowed before any inter-op work started in this process
        pass
    rt = runtime.install(
        runtime.Runtime(
            settings=settings,
            hostname=_ctx.hostname,
            models=served_models(settings, _ctx.queues),
            queues=list(_ctx.queues),
        )
    )
    rt.write_status()  # visible (not ready) while loading
    rt.load()
    rt.start_heartbeat()
    log.info(
        "process %s ready with %s (%d torch threads)",
        rt.worker_id,
        ", ".join(rt.status.models) or "no model",
        torch.get_num_threads(),
    )
    return rt


@signals.worker_process_init.connect
def _on_process_init(sender: Any = None, **_: Any) -> None:
    if sender and not _ctx.hostname:
        _ctx.hostname = str(sender)
    in_child = os.getpid() != _ctx.parent_pid
    # A prefork child shares the cores with its siblings; the solo pool runs alone.
    start_process(_ctx.concurrency if in_child else 1)


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    controller = getattr(sender, "controller", None)
    if controller is not None and _ctx.app is not None and os.getpid() == _ctx.parent_pid:
        settings = settings_of(_ctx.app)
        pool_status.start(controller, settings, served_models(settings, _ctx.queues))
    if "prefork" in _ctx.pool or os.getpid() != _ctx.parent_pid:
        return  # models live in the children, never in the prefork parent
    start_process(1)


@signals.worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    rt = runtime.current()
    if rt is not None:
        rt.stop()


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    writer = pool_status.current()
    if writer is not None:
        writer.stop()
    rt = runtime.current()  # solo and threads pools: the worker process itself
    if rt is not None:
        rt.stop()
