"""Run one batch message: decode, group, forward, postprocess; one result per item, in order.

`run_batch` is the body of the ``autodep.infer`` task without Celery or Redis (worker.tasks adds
attempt counting, status and the reply push), so unit tests call it directly. Known failures
become per-item or per-batch error dicts (docs/architecture.md §2.9); anything else propagates to
the task. What differs between task types (decoding, the batching key, collating, postprocessing)
is each type's handler in :mod:`worker.task_types`; this module names no task type.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

import torch

from autodep_celery import contract, errors
from autodep_celery.config import Settings
from autodep_celery.worker import processing
from autodep_celery.worker.registry import LoadedModel, Registry
from autodep_celery.worker.task_types import HANDLERS, Handler

Result = dict[str, Any]
Member = tuple[int, Any]
"""(index of the item in the batch, its decoded input: a tensor, a string...)."""


def run_batch(
    registry: Registry,
    settings: Settings,
    batch: dict[str, Any],
    worker: str = "",
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """The reply for `batch` (contract.make_reply, or batch_error_reply when no item can run)."""
    batch_id = str(batch.get("batch_id", ""))
    items = batch.get("items")
    if not isinstance(items, list):
        bad = errors.InvalidInput("the batch has no list of items")
        return contract.batch_error_reply(batch_id, worker, bad.to_dict())
    try:
        loaded = registry.get(str(batch.get("model", "")))
    except errors.AutodepError as exc:
        return contract.batch_error_reply(batch_id, worker, exc.to_dict())

    results: list[Result | None] = [None] * len(items)
    deadlines = [_deadline(item) for item in items]
    # (task type, batching key) -> the items of one forward pass, in order of arrival
    groups: dict[tuple[str, Hashable], list[Member]] = {}
    now = clock()
    for index, item in enumerate(items):
        try:
            if deadlines[index] < now:
                raise _expired()
            handler = _handler(loaded, item)
            key, value = handler.preprocess(loaded, item, settings)
            groups.setdefault((handler.name, key), []).append((index, value))
        except errors.AutodepError as exc:
            results[index] = contract.error_result(exc.to_dict())

    for (task, _key), members in groups.items():
        live = _drop_expired(members, deadlines, results, clock())
        if live:
            _run_group(HANDLERS[task], loaded, live, items, results)
    lost = contract.error_result(errors.AutodepError("the item was not processed").to_dict())
    return contract.make_reply(batch_id, worker, [r if r is not None else lost for r in results])


def _deadline(item: Any) -> float:
    deadline = item.get("deadline") if isinstance(item, dict) else None
    return float(deadline) if isinstance(deadline, int | float) else float("inf")


def _expired() -> errors.DeadlineExceeded:
    return errors.DeadlineExceeded(
        "the request passed its deadline while queued and was not computed; "
        "retry later or raise web.request_timeout_s"
    )


def _drop_expired(
    members: list[Member], deadlines: list[float], results: list[Result | None], now: float
) -> list[Member]:
    # Earlier groups of a batch take time; a request whose client has given up is not computed.
    live = []
    for member in members:
        if deadlines[member[0]] < now:
            results[member[0]] = contract.error_result(_expired().to_dict())
        else:
            live.append(member)
    return live


def _handler(loaded: LoadedModel, item: Any) -> Handler:
    """The handler of the item's task type, once the item is known to fit it and the model."""
    if not isinstance(item, dict):
        raise errors.InvalidInput("a batch item must be a map")
    task = item.get("task")
    handler = HANDLERS.get(task) if isinstance(task, str) else None
    if handler is None:
        raise errors.InvalidInput(
            f"inference_type {task!r} is not one of {', '.join(contract.INFERENCE_TYPES)}"
        )
    kind = item.get("kind")
    if kind != handler.type.input:
        raise errors.InvalidInput(f"a {kind!r} input cannot be used for {task}")
    configured = loaded.settings.task
    if configured is not None and configured != task and not handler.type.raw:
        raise errors.InvalidInput(
            f"model {loaded.name} is configured for {configured}; this request asks for {task}",
            code="wrong_inference_type",
        )
    return handler


def _rejected(loaded: LoadedModel, what: str, exc: BaseException) -> Result:
    error = errors.InvalidInput(
        f"model {loaded.name} rejected {what}: {processing.torch_error_line(exc)}",
        code="model_rejected_input",
    )
    return contract.error_result(error.to_dict())


def _forward(handler: Handler, loaded: LoadedModel, inputs: Any) -> tuple[Any, int]:
    started = time.perf_counter_ns()
    with torch.inference_mode():
        output = handler.call(loaded, inputs)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)  # kernels are async: time the real work
    return output, time.perf_counter_ns() - started


def _run_group(
    handler: Handler,
    loaded: LoadedModel,
    members: list[Member],
    items: list[Any],
    results: list[Result | None],
) -> None:
    """One forward pass over `members` (one per member when the handler does not batch)."""
    if len(members) > 1 and not handler.batched(loaded):
        for member in members:
            _run_group(handler, loaded, [member], items, results)
        return
    try:
        inputs = handler.collate(loaded, [value for _, value in members])
        output, compute_ns = _forward(handler, loaded, inputs)
    except Exception as exc:
        if len(members) > 1:
            # One bad input must not fail the requests batched with it: run each alone.
            for member in members:
                _run_group(handler, loaded, [member], items, results)
            return
        index, value = members[0]
        results[index] = _rejected(loaded, handler.describe(value), exc)
        return
    try:
        outputs = handler.postprocess(loaded, output, [items[index] for index, _ in members])
        if len(outputs) != len(members):
            raise errors.ModelError(
                f"model {loaded.name} returned {len(outputs)} outputs for {len(members)} inputs"
            )
    except errors.AutodepError as exc:
        for index, _ in members:
            results[index] = contract.error_result(exc.to_dict())
        return
    for (index, _), out in zip(members, outputs, strict=True):
        if isinstance(out, errors.AutodepError):
            results[index] = contract.error_result(out.to_dict())
        else:
            results[index] = contract.ok_result(out, compute_ns)
