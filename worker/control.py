"""The remote-control command the autoscaler uses: Celery's ``autoscale``, then fork now.

Celery's ``autoscale`` control only raises billiard's target count; the children are forked by
the pool's maintenance timer, up to 5 s later. This command applies the same bounds through the
worker's own Autoscaler (so `celery inspect stats`, Flower and Celery's ``autoscale`` control keep
seeing one truth) and then runs the pool maintenance at once, which forks the missing children.
Shrinking stays billiard's: only children without a job are stopped. Registered when the worker
imports worker.tasks; runs in the worker parent's event loop.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.autoscale import Autoscaler
from celery.worker.control import control_command

from autodep_celery.contract import POOL_CONTROL
from autodep_celery.worker import pool_status

log = logging.getLogger(__name__)


class RemoteOnlyAutoscaler(Autoscaler):  # type: ignore[misc]  # Celery is untyped
    """Celery's autoscaler with its own policy switched off: the pool changes only when told
    (autoscale controls from the autodep autoscaler, `celery control`, Flower).

    Celery's policy sizes the pool by the tasks the worker already reserved, which with
    prefetch 1 and late acks is at most the pool itself, and it shrinks 30 s after the last
    task message; left on, it grew and shrank pools between our decisions (seen in tests).
    With `--autoscale=MAX,MIN` a worker therefore starts at MIN and stays there until the
    autodep autoscaler (or an operator) resizes it; if the autoscaler dies, pools keep
    their size. Installed by the app's ``worker_autoscaler`` setting.
    """

    def _maybe_scale(self, req: Any = None) -> bool:
        return False


@control_command(
    name=POOL_CONTROL,
    args=[("max", int), ("min", int)],
    signature="[max [min]]",
)
def autodep_autoscale(
    state: Any, max: int | None = None, min: int | None = None
) -> dict[str, Any]:  # Celery's names for them
    controller = state.consumer.controller
    scaler = getattr(controller, "autoscaler", None)
    if scaler is None:
        return {"error": "autoscale is not enabled: start the worker with --autoscale=MAX,MIN"}
    before = scaler.processes
    max_, min_ = scaler.update(max, min)
    try:
        state.consumer.pool.maintain_pool()
    except Exception as exc:  # the 5 s timer will try again
        log.warning("pool maintenance after autoscale failed: %r", exc)
    after = scaler.processes
    writer = pool_status.current()
    if writer is not None:
        writer.poke()
    if before != after:
        log.info("pool %d -> %d processes (autoscale max=%d min=%d)", before, after, max_, min_)
    return {"ok": f"autoscale now max={max_} min={min_}", "processes": after}
