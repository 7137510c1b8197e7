"""The ``autodep.infer`` Celery task: one batch in, one reply out (DESIGN §2.1, §2.4).

Found by the worker through the app's ``include=["worker.tasks"]``; registered with
``shared_task`` so it binds to whichever app the worker runs. The work itself is
worker.batch.run_batch; this module adds attempt counting (a batch that keeps killing its
process fails with worker_lost), the process status and the reply push. Importing it connects
the signal handlers of worker.signals. The web tier sends by name and never imports this.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from autodep_celery import contract, errors
from autodep_celery.celery_app import settings_of
from worker import batch as batch_mod
from worker import runtime
from worker import signals as _signals  # noqa: F401 - connects the handlers

log = logging.getLogger(__name__)


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


@shared_task(name=contract.INFER_TASK, bind=True)
def infer(self: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """Run `batch`; its reply is pushed to ``batch["reply_to"]`` when set, else returned."""
    batch_id = str(batch.get("batch_id", "")) if isinstance(batch, dict) else ""
    reply_to = batch.get("reply_to") if isinstance(batch, dict) else None
    items = batch.get("items") if isinstance(batch, dict) else None
    served = len(items) if isinstance(items, list) else 0
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
            reply = batch_mod.run_batch(rt.registry, rt.settings, batch, worker)
    except Exception:
        model = batch.get("model") if isinstance(batch, dict) else None
        log.exception("batch %s of model %s failed", batch_id, model)
        internal = errors.AutodepError("the worker failed to compute this batch; see its log")
        reply = contract.batch_error_reply(batch_id, worker, internal.to_dict())
    pushed = isinstance(reply_to, str) and bool(reply_to)
    rt.finish(batch_id, reply, reply_to if pushed else None, served, redelivered)
    # Celery saferepr()s every return value for its log, even when nothing logs it: a reply
    # with images costs more to repr than to compute. Callers with reply_to have it already.
    return {"batch_id": batch_id, "pushed": True} if pushed else reply
