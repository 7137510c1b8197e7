"""The ``autodep.infer`` Celery task: one batch in, one reply out (docs/architecture.md §2.1, §2.4).

Found by the worker through the app's ``include=["autodep_celery.worker.tasks"]``; registered with
``shared_task`` so it binds to whichever app the worker runs. The work itself is
worker.batch.run_batch; this module adds attempt counting (a batch that keeps killing its
process fails with worker_lost), the process status, the reply push and one log line per batch
with its request ids (autodep_celery.logs). Importing it connects the signal handlers of
worker.signals and configures the worker's logging ([log], through Celery's ``setup_logging``
signal, in the parent and again in each pool child). The web tier sends by name and never
imports this.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import current_app, shared_task
from celery import signals as celery_signals

from autodep_celery import config, contract, errors, jobs, logs
from autodep_celery.celery_app import settings_of
from autodep_celery.worker import batch as batch_mod
from autodep_celery.worker import control as _control  # noqa: F401 - registers the pool control
from autodep_celery.worker import pool_buttons as _pool_buttons  # noqa: F401 - Flower's pool buttons
from autodep_celery.worker import runtime
from autodep_celery.worker import signals as _signals  # connects the handlers

log = logging.getLogger(__name__)
access_log = logging.getLogger(logs.ACCESS_LOGGER)


@celery_signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    """[log] replaces Celery's logging; a more verbose --loglevel still applies."""
    app = current_app._get_current_object()
    settings = getattr(app, "autodep_settings", None) or config.load()
    level = logging.getLevelName(settings.log.level.upper())
    if isinstance(loglevel, int) and 0 < loglevel < level:
        level = loglevel
    logs.setup(settings.log, "worker", level)


def _runtime(app: Any) -> runtime.Runtime:
    rt = runtime.current()
    if rt is not None:
        return rt
    # No signal started this process (an unusual pool): load models on first use.
    hostname = _signals._ctx.hostname or "autodep"
    return runtime.ensure(settings_of(app), hostname, [])


def _worker_lost(attempts: int) -> errors.WorkerLost:
    return errors.WorkerLost(
        f"the worker process died {attempts - 1} times while computing this batch; "
        "the input may crash the model"
    )


def _request_ids(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [str(i.get("request_id") or "") for i in items if isinstance(i, dict)]


def _log_batch(batch: Any, ids: list[str], reply: dict[str, Any], started: float) -> None:
    """One line per batch: the model, its size, failures by request id, time in this task."""
    model = batch.get("model") if isinstance(batch, dict) else None
    results = reply.get("results")
    extra: dict[str, Any] = {
        "model": model,
        "batch_id": reply.get("batch_id"),
        "items": len(ids),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if isinstance(results, list):
        failed = {
            (ids[i] if i < len(ids) and ids[i] else str(i)): (r.get("error") or {}).get("code")
            for i, r in enumerate(results)
            if isinstance(r, dict) and not r.get("ok")
        }
        if failed:
            extra["failed"] = failed
    elif reply.get("ok") is False:
        extra["failed"] = (reply.get("error") or {}).get("code")
    access_log.info("batch of %s: %d items", model, len(ids), extra=extra)


@shared_task(name=contract.INFER_TASK, bind=True)
def infer(self: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """Run `batch`; its reply is pushed to ``batch["reply_to"]`` when set, else returned."""
    began, started = time.time(), time.perf_counter()
    ids = _request_ids(batch.get("items") if isinstance(batch, dict) else None)
    token = logs.REQUEST_ID.set(",".join(i for i in ids if i) or None)
    try:
        return _infer(self, batch, ids, started, began)
    finally:
        logs.REQUEST_ID.reset(token)


def _infer(self: Any, batch: Any, ids: list[str], started: float, began: float) -> dict[str, Any]:
    batch_id = str(batch.get("batch_id", "")) if isinstance(batch, dict) else ""
    reply_to = batch.get("reply_to") if isinstance(batch, dict) else None
    items = batch.get("items") if isinstance(batch, dict) else None
    served = len(items) if isinstance(items, list) else 0
    job_items = jobs.job_items(items)  # items of asynchronous jobs: their state is ours to write
    rt = _runtime(self.app)
    worker = rt.worker_id
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        attempts = rt.begin(batch_id, redelivered)
        if attempts > rt.settings.worker.max_attempts:
            reply = contract.batch_error_reply(batch_id, worker, _worker_lost(attempts).to_dict())
        elif not isinstance(batch, dict):
            bad = errors.InvalidInput("the task argument must be a batch map")
            reply = contract.batch_error_reply(batch_id, worker, bad.to_dict())
        else:
            if job_items:
                rt.start_jobs(batch["items"], job_items)
            reply = batch_mod.run_batch(rt.registry, rt.settings, batch, worker)
    except Exception:
        model = batch.get("model") if isinstance(batch, dict) else None
        log.exception("batch %s of model %s failed", batch_id, model)
        internal = errors.AutodepError("the worker failed to compute this batch; see its log")
        reply = contract.batch_error_reply(batch_id, worker, internal.to_dict())
    pushed = isinstance(reply_to, str) and bool(reply_to)
    reply["t"] = [began, time.time()]  # the web splits the round trip into hops with it
    rt.finish(batch_id, reply, reply_to if pushed else None, served, redelivered, job_items)
    if access_log.isEnabledFor(logging.INFO):
        _log_batch(batch, ids, reply, started)
    # Celery saferepr()s every return value for its log, even when nothing logs it: a reply
    # with images costs more to repr than to compute. Callers with reply_to have it already.
    return {"batch_id": batch_id, "pushed": True} if pushed else reply
