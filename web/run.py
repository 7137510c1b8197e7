"""Run one item through the dispatcher and wait for its result: the request path that every
protocol shares (/inference, /serve, /v2, /predictions, /classify), so that their requests for
one model land in the same batches and fail the same way (503 no worker, 504 deadline).

Callers parse their own request format into a contract Item and encode the result dict
(``{"ok": True, "output": ..., "compute_ns": ...}`` or ``{"ok": False, "error": ...}``) in their
own answer format. Must not import torch.
"""

from __future__ import annotations

import time
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import g

from autodep_celery import errors
from autodep_celery.contract import Item
from autodep_celery.web import observe, routes


def check_worker(name: str) -> None:
    """503 now, rather than a 504 later, when no worker can take `name`'s items."""
    if not routes.dispatcher().has_worker(name):
        raise errors.NoWorker(
            f"no worker is ready for model {name}; start one (autodep worker --models {name}) "
            "or wait for it to finish loading"
        )


def run_item(name: str, item: Item, deadline: float) -> dict[str, Any]:
    """`item`'s per-item result from model `name`, waited for until `deadline` (wall clock)."""
    g.model = name
    item["request_id"] = observe.request_id()
    check_worker(name)
    future = routes.dispatcher().submit(name, item)
    try:
        result = future.result(timeout=max(0.0, deadline - time.time()))
    except FutureTimeout:
        future.cancel()  # if still unsent, it is never sent; a late reply is dropped
        timeout_s = routes.settings().web.request_timeout_s
        raise errors.DeadlineExceeded(
            f"model {name} did not answer within {timeout_s:g} s (web.request_timeout_s); "
            "the workers are busy or slow: retry later, add workers or raise the timeout"
        ) from None
    routes.stats().result(name, result)
    return result


def deadline() -> float:
    """This request's deadline (wall clock): now + web.request_timeout_s."""
    return time.time() + routes.settings().web.request_timeout_s
