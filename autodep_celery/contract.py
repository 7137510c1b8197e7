"""What crosses the queue between the web tier and the workers: names and payload shapes.

Both sides build and read messages only through this module, so the wire format lives in one
place. Messages are msgpack (Celery's ``msgpack`` serializer), so images travel as raw bytes, not
base64 inside JSON. Imports nothing heavy: no torch, no Flask.

A batch (the one argument of the ``autodep.infer`` task)::

    {"v": 1, "model": "resnet18", "batch_id": "<hex>", "reply_to": "autodep:reply:<hex>",
     "items": [Item, ...]}

An item is one request::

    {"kind": "image", "task": "ImageClassification", "top_n": 5, "image": b"<png/jpeg bytes>",
     "deadline": 1763771234.5, "request_id": "<X-Request-ID>"}
    {"kind": "text", "task": "TextToText", "text": "hello", "deadline": ..., "request_id": ...}
    {"kind": "args", "task": "Tensor", "args": [<wire value>, ...], "deadline": ..., ...}

``kind`` is the task type's input kind and names the field that holds the input; further
fields are the type's options (``top_n``). Both come from :mod:`autodep_celery.task_types`.
``request_id`` (optional) is the HTTP request's id; the worker logs it with the batch.
``job`` (optional) is the id of the asynchronous job the item belongs to (POST /jobs): the
worker records the job's state and result under ``job_key(job)`` (autodep_celery.jobs).

The reply (the task's return value, also pushed to ``reply_to`` when set)::

    {"v": 1, "batch_id": "<hex>", "worker": "<hostname>/<pid>",
     "results": [{"ok": True, "output": Output, "compute_ns": 123456},
                 {"ok": False, "error": {"code": ..., "message": ..., "status": 422}}]}

or, when the whole batch failed before any item ran, ``{"v": 1, "batch_id": ..., "ok": False,
"error": {...}}``. Either may carry ``"t": [started, finished]``: the wall-clock times (s) at
which the worker process began the task and pushed the reply; the web splits each batch's round
trip into its hops with them (:func:`batch_phases`). Output is Autodep's inference object
with images as raw PNG bytes::

    {"Classification": [{"probability": 0.9, "label": "tench"}, ...]}
    {"B64Image": {"image": b"<png>", "height": 224, "width": 224}}
    {"Text": "..."}
    {"Tensor": <wire value>}

Tensor's ``args`` hold one wire value (:mod:`autodep_celery.typed`: tensors as raw bytes) per
``forward()`` argument, and its output is forward's return value as one wire value.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypedDict, cast

from autodep_celery import task_types

WIRE_VERSION = 1
INFER_TASK = "autodep.infer"
"""Explicit task name: the web sends by name and never imports worker code."""

INFERENCE_TYPES = task_types.SERVED
"""What an item's ``task`` may name (autodep_celery.task_types registers them)."""
DEFAULT_TOP_N = 5

KEY_PREFIX = "autodep:"
PROCS_KEY = KEY_PREFIX + "procs"
"""Redis hash: field ``<hostname>/<pid>`` -> JSON status of one worker pool process."""

REPLY_TTL_S = 120
"""A reply list outlives its web process by at most this long."""

ATTEMPTS_TTL_S = 3600

LOAD_KEY_PREFIX = KEY_PREFIX + "load:"
"""``autodep:load:<web token>`` -> JSON ``{"ts", "models": {model: {"pending", "sent",
"oldest_s"}}}``: what one web process holds, written with a short TTL so that a dead process
stops counting (docs/architecture.md, autoscaler signal)."""

WORKERS_KEY = KEY_PREFIX + "workers"
"""Redis hash: field ``<worker hostname>`` -> JSON record of one Celery worker (its queues,
declared and current pool bounds, pool size, host memory), written by the worker's parent."""

AUTOSCALER_KEY = KEY_PREFIX + "autoscaler"
"""JSON state of the running autoscaler (per model current, desired, min, max, backlog, queue
wait, last decision), written every interval with a TTL; read by GET /autoscaler and /metrics."""

SCALE_KEY_PREFIX = KEY_PREFIX + "scale:"
"""``autodep:scale:<model>`` -> a pool size pinned by hand (`autodep scale MODEL N`)."""

REGISTRY_KEY = KEY_PREFIX + "registry"
"""Redis hash: field ``<model name>`` -> JSON entry of a model registered, changed or removed at
runtime through /management, merged over config.toml's models (autodep_celery.model_registry)."""

SCHEMA_KEY_PREFIX = KEY_PREFIX + "schema:"
"""``autodep:schema:<model>`` -> JSON ``{"inputs": [{"name", "type", "default"}], "output":
"<type>"}``: the model's TorchScript forward() signature, written by a worker when it loads the
model (worker.schemas), read by the web tier for the Open Inference Protocol (no torch there)."""


def schema_key(model: str) -> str:
    return SCHEMA_KEY_PREFIX + model


POOL_CONTROL = "autodep_autoscale"
"""Remote-control command: Celery's ``autoscale`` plus an immediate pool maintenance, so a
grown pool forks its children now instead of at the pool's next 5 s timer."""


class Item(TypedDict, total=False):
    kind: str
    """An input kind of autodep_celery.task_types: "image", "text" or "args"."""
    task: str
    top_n: int
    image: bytes
    text: str
    args: list[Any]
    """Tensor: one wire value (autodep_celery.typed) per forward() argument."""
    deadline: float
    request_id: str
    job: str


class Batch(TypedDict):
    v: int
    model: str
    batch_id: str
    reply_to: str
    items: list[Item]


def reply_key(token: str) -> str:
    return f"{KEY_PREFIX}reply:{token}"


def job_key(job_id: str) -> str:
    """``autodep:job:<id>``: the Redis hash of one asynchronous job (autodep_celery.jobs)."""
    return f"{KEY_PREFIX}job:{job_id}"


def attempts_key(batch_id: str) -> str:
    return f"{KEY_PREFIX}attempts:{batch_id}"


def process_id(hostname: str | None = None, pid: int | None = None) -> str:
    """The ``<worker>/<pid>`` name of a worker process used by /workers."""
    return f"{hostname or socket.gethostname()}/{pid if pid is not None else os.getpid()}"


_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


def make_item(
    task: task_types.TaskType, value: Any, deadline: float, options: Mapping[str, Any] = _NO_OPTIONS
) -> Item:
    """The item asking `task` to run on `value`; `options` are the type's own fields (top_n)."""
    kind = task.input
    if kind is None:
        raise ValueError(f"task type {task.name} is not served yet")
    item = {"kind": kind, "task": task.name, kind: value, "deadline": deadline, **options}
    return cast(Item, item)  # the input's field is named by its kind: no literal key to check


def image_item(task: str, image: bytes, deadline: float, top_n: int | None = None) -> Item:
    """An item of an image task type (make_item's shorthand for tests and tools)."""
    options = _NO_OPTIONS if top_n is None else {"top_n": top_n}
    return make_item(task_types.REGISTRY[task], image, deadline, options)


def text_item(text: str, deadline: float, task: str = "TextToText") -> Item:
    """An item of a text task type (make_item's shorthand for tests and tools)."""
    return make_item(task_types.REGISTRY[task], text, deadline)


def args_item(args: list[Any], deadline: float, task: str = "Tensor") -> Item:
    """An item of an args task type: one wire value per forward() argument (make_item's
    shorthand for protocol routes, tests and tools)."""
    return make_item(task_types.REGISTRY[task], args, deadline)


def batch_label(model: str, items: int) -> str:
    """How a batch shows in Flower and Celery's logs (its ``argsrepr``): never its bytes."""
    return f"{model} × {items} item{'' if items == 1 else 's'}"


def make_batch(model: str, batch_id: str, reply_to: str, items: list[Item]) -> Batch:
    return {
        "v": WIRE_VERSION,
        "model": model,
        "batch_id": batch_id,
        "reply_to": reply_to,
        "items": items,
    }


def ok_result(output: dict[str, Any], compute_ns: int) -> dict[str, Any]:
    return {"ok": True, "output": output, "compute_ns": int(compute_ns)}


def error_result(error: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "error": error}


def make_reply(batch_id: str, worker: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"v": WIRE_VERSION, "batch_id": batch_id, "worker": worker, "results": results}


PHASES = ("to_worker", "in_worker", "to_web")
"""A batch's round trip in hops: web send -> worker task start (broker, Celery's consumer and
its pool), task start -> reply pushed (decode, forward, encode), reply pushed -> web receipt."""


def batch_phases(
    reply: Mapping[str, Any], sent: float, received: float
) -> tuple[float, ...] | None:
    """The seconds of each of PHASES, from the reply's ``t`` and the web's wall-clock times of
    sending and receiving; None without valid times. Hops between machines are only as exact
    as their clocks agree, so negative readings count as 0."""
    times = reply.get("t")
    if not (isinstance(times, list | tuple) and len(times) == 2):
        return None
    started, finished = times
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in times):
        return None
    return (
        max(0.0, started - sent),
        max(0.0, finished - started),
        max(0.0, received - finished),
    )


def batch_error_reply(batch_id: str, worker: str, error: dict[str, Any]) -> dict[str, Any]:
    return {"v": WIRE_VERSION, "batch_id": batch_id, "worker": worker, "ok": False, "error": error}
