"""TorchServe's management API, the parts without HTTP: its parameters checked into values, and
its answers (list, describe) built from the settings, the registry and the worker status.

Called by web.routes.management. Parameters come from the query string, or from a JSON body for
registration (TorchServe accepts both); every bad one raises a 400 naming it and the fix.
TorchServe's names and shapes are kept (docs/management_api.md and the frontend's ApiUtils of
pytorch/serve); what differs is documented in the README. Must not import torch or Flask.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from autodep_celery import errors, model_registry, task_types
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.status import ProcStatus

REGISTER_PARAMS = {
    "url": "A TorchScript file inside [management] model_store, as a relative path (required)",
    "model_name": "Name to serve it under (default: the file name without extension)",
    "batch_size": "Largest batch (max_batch_size; default 16)",
    "max_batch_delay": "Milliseconds a batch may gather (max_batch_delay_ms; default 2)",
    "initial_workers": "Pool processes kept (min_workers; default [autoscaler] min_workers)",
    "synchronous": "true: answer once a worker of the model is ready (within the request timeout)",
    "task": "The model's task type (default: any; the request chooses)",
    "handler": "TorchServe's handler: only image_classifier (= task ImageClassification)",
    "runtime": "Accepted and ignored (TorchServe's python runtime)",
    "response_timeout": "Accepted and ignored: [web] request_timeout_s bounds every request",
    "startup_timeout": "Accepted and ignored",
}
SCALE_PARAMS = {
    "min_worker": "Pool processes kept (min_workers; default 1; 0 = scale to zero)",
    "max_worker": "Most pool processes (max_workers; default min_worker)",
    "synchronous": "true: answer once the autoscaler applied the bounds (within the timeout)",
    "timeout": "Accepted and ignored: a worker stopped for a lower max finishes its batches",
}
LIST_PARAMS = {
    "limit": "Models per page (1-100, default 100)",
    "next_page_token": "Where the page starts: nextPageToken of the previous page",
}
HANDLERS = {"image_classifier": "ImageClassification"}
"""TorchServe's default handlers that match a task type here."""
MAX_PAGE = 100


def _bad(message: str, code: str = "invalid_parameter") -> errors.ClientError:
    return errors.ClientError(message, code=code, http_status=400)


def check_known(params: Mapping[str, Any], known: Mapping[str, str]) -> None:
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"
            raise _bad(f"unknown parameter {key!r}{hint}", "unknown_parameter")


def integer(params: Mapping[str, Any], key: str, minimum: int) -> int | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    try:
        number = value if isinstance(value, int) and not isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        raise _bad(f"{key} must be a whole number >= {minimum}, not {value!r}") from None
    if number < minimum:
        raise _bad(f"{key} must be >= {minimum}, not {number}")
    return number


def boolean(params: Mapping[str, Any], key: str) -> bool:
    value = params.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise _bad(f"{key} must be true or false, not {value!r}")


@dataclass(frozen=True)
class Registration:
    url: str
    model_name: str | None
    batch_size: int | None
    max_batch_delay_ms: float | None
    initial_workers: int | None
    synchronous: bool
    task: str | None


def parse_registration(params: Mapping[str, Any]) -> Registration:
    check_known(params, REGISTER_PARAMS)
    url = params.get("url")
    if not isinstance(url, str) or not url:
        raise _bad(
            "url is required: a TorchScript file in the model store, e.g. "
            "POST /management/models?url=resnet18.pt",
            "missing_url",
        )
    name = params.get("model_name")
    if name is not None and not isinstance(name, str):
        raise _bad(f"model_name must be a string, not {name!r}")
    task = params.get("task") or None
    handler = params.get("handler") or None
    if handler is not None:
        if handler not in HANDLERS:
            raise _bad(
                f"handler {handler!r} is not supported: models here are TorchScript files run by "
                f"a task type; pass task= one of {', '.join(task_types.NAMES)}",
                "unsupported_handler",
            )
        task = task or HANDLERS[str(handler)]
    if task is not None and task not in task_types.NAMES:
        close = difflib.get_close_matches(str(task), list(task_types.NAMES), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise _bad(f"task {task!r} is not one of {', '.join(task_types.NAMES)}{hint}")
    delay = params.get("max_batch_delay")
    return Registration(
        url=url,
        model_name=name or None,
        batch_size=integer(params, "batch_size", 1),
        max_batch_delay_ms=None if delay in (None, "") else float(_nonnegative(delay)),
        initial_workers=integer(params, "initial_workers", 0),
        synchronous=boolean(params, "synchronous"),
        task=task,
    )


def _nonnegative(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not number >= 0 or isinstance(value, bool):  # NaN fails too
        raise _bad(f"max_batch_delay must be a number of milliseconds >= 0, not {value!r}")
    return number


def registered_model(reg: Registration, name: str, path: str) -> ModelSettings:
    """The model a registration adds; unset parameters keep config's defaults."""
    model = ModelSettings(name=name, path=path, task=reg.task, min_workers=reg.initial_workers)
    changes: dict[str, Any] = {}
    if reg.batch_size is not None:
        changes["max_batch_size"] = reg.batch_size
    if reg.max_batch_delay_ms is not None:
        changes["max_batch_delay_ms"] = reg.max_batch_delay_ms
    return dataclasses.replace(model, **changes)


def parse_scale(params: Mapping[str, Any]) -> tuple[int, int, bool]:
    """(min, max, synchronous) of PUT; TorchServe's defaults: min 1, max = min."""
    check_known(params, SCALE_PARAMS)
    low = integer(params, "min_worker", 0)
    low = 1 if low is None else low
    high = integer(params, "max_worker", 0)
    high = low if high is None else high
    if high < low:
        raise _bad(f"max_worker ({high}) cannot be less than min_worker ({low})")
    if high < 1:
        raise _bad("max_worker must be >= 1 (min_worker=0 alone scales the model to zero)")
    return low, high, boolean(params, "synchronous")


def parse_page(params: Mapping[str, Any]) -> tuple[int, int]:
    check_known(params, LIST_PARAMS)
    limit = integer(params, "limit", 0)
    start = integer(params, "next_page_token", 0) or 0
    return (MAX_PAGE if not limit or limit > MAX_PAGE else limit), start


def listing(
    settings: Settings, static: Settings, raw: Mapping[str, bytes], limit: int, start: int
) -> dict[str, Any]:
    """``{"nextPageToken"?, "models": [{"modelName", "modelUrl"}]}``, sorted by name."""
    models = sorted(settings.models, key=lambda m: m.name)
    page = models[start : start + limit]
    body: dict[str, Any] = {}
    if start + limit < len(models):
        body["nextPageToken"] = str(start + limit)
    body["models"] = [
        {"modelName": m.name, "modelUrl": model_registry.origin(static, raw, m)[0]} for m in page
    ]
    return body


def check_version(name: str, version: str | None) -> None:
    """Every model has one version, MODEL_VERSION ("1" too); "all" names it too."""
    if version not in (None, "all", *model_registry.VERSION_NAMES):
        raise errors.UnknownModel(
            f"Model version: {version} does not exist for model: {name} (every model has "
            f"version {model_registry.MODEL_VERSION})"
        )


def describe(
    settings: Settings,
    static: Settings,
    raw: Mapping[str, bytes],
    model: ModelSettings,
    procs: list[ProcStatus],
) -> list[dict[str, Any]]:
    """TorchServe's describe answer: a list with the model's one version."""
    low, high = settings.pool_bounds(model)
    url, at_startup = model_registry.origin(static, raw, model)
    device = model.device or settings.worker.device
    return [
        {
            "modelName": model.name,
            "modelVersion": model_registry.MODEL_VERSION,
            "modelUrl": url,
            "runtime": "python",
            "minWorkers": low,
            "maxWorkers": high,
            "batchSize": model.max_batch_size,
            "maxBatchDelay": round(model.max_batch_delay_ms),
            "loadedAtStartup": at_startup,
            "workers": [
                worker(p, device.startswith("cuda")) for p in procs if model.name in p.models
            ],
        }
    ]


def worker(p: ProcStatus, gpu: bool) -> dict[str, Any]:
    started = p.started or p.ts
    return {
        "id": p.key,
        "startTime": datetime.fromtimestamp(started, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "status": "READY" if p.ready else "LOADING",
        "memoryUsage": p.rss_bytes,
        "pid": p.pid,
        "gpu": gpu,
    }


def registered_message(name: str, workers: int) -> str:
    version = model_registry.MODEL_VERSION
    return f'Model "{name}" Version: {version} registered with {workers} initial workers'


def ready_count(procs: list[ProcStatus], name: str) -> int:
    return sum(1 for p in procs if p.ready and name in p.models)


def failed_to_load(procs: list[ProcStatus], model: ModelSettings) -> bool:
    """A process of the model's queue is ready without the model: loading it failed."""
    return any(p.ready and model.queue in p.queues and model.name not in p.models for p in procs)


def deadline_s(settings: Settings) -> float:
    return time.monotonic() + settings.web.request_timeout_s
