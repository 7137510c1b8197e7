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
from autodep_celery.web import params
from autodep_celery.web.spec import String

MAX_BATCH_DELAY_MS = 60_000.0
"""A batch gathering longer than a minute would outlive any request waiting in it."""
HANDLERS = {"image_classifier": "ImageClassification"}
"""TorchServe's default handlers that match a task type here."""
REGISTER_PARAMS: dict[str, String] = {
    "url": String(
        min_length=1,
        description="A TorchScript file inside [management] model_store, as a relative path "
        "(400 for NUL characters, '..', absolute paths and URLs; 404 for no such file)",
    ),
    "model_name": String(description="Name to serve it under (default: the file name)"),
    "batch_size": params.whole_spec(1, "Largest batch (max_batch_size; default 16)"),
    "max_batch_delay": params.decimal_spec(
        "Milliseconds a batch may gather (max_batch_delay_ms; default 2; at most 60000)"
    ),
    "initial_workers": params.whole_spec(
        0, "Pool processes kept (min_workers; default [autoscaler] min_workers)"
    ),
    "synchronous": params.boolean_spec(
        "true: answer once a worker of the model is ready (within the request timeout)"
    ),
    "task": String(
        enum=(*task_types.NAMES, ""), description="The model's task type (default: any)"
    ),
    "handler": String(
        enum=(*HANDLERS, ""),
        description="TorchServe's handler: only image_classifier (= task ImageClassification)",
    ),
    "runtime": String(description="Accepted and ignored (TorchServe's python runtime)"),
    "response_timeout": String(
        description="Accepted and ignored: [web] request_timeout_s bounds every request"
    ),
    "startup_timeout": String(description="Accepted and ignored"),
}
SCALE_PARAMS: dict[str, String] = {
    "min_worker": params.whole_spec(
        0, "Pool processes kept (min_workers; default 1; 0 = scale to zero)"
    ),
    "max_worker": params.whole_spec(0, "Most pool processes (max_workers; default min_worker)"),
    "synchronous": params.boolean_spec(
        "true: answer once the autoscaler applied the bounds (within the timeout)"
    ),
    "timeout": String(
        description="Accepted and ignored: a worker stopped for a lower max finishes its batches"
    ),
}
LIST_PARAMS: dict[str, String] = {
    "limit": params.whole_spec(0, "Models per page (1-100; 0 or none: 100)"),
    "next_page_token": params.whole_spec(
        0, "Where the page starts: nextPageToken of the previous page"
    ),
}
"""The parameters of each call: name -> what it accepts (web.params), for /openapi.json."""
MAX_PAGE = 100


def _bad(message: str, code: str = "invalid_parameter") -> errors.ClientError:
    return errors.ClientError(message, code=code, http_status=400)


def check_known(params: Mapping[str, Any], known: Mapping[str, object]) -> None:
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"
            raise _bad(f"unknown parameter {key!r}{hint}", "unknown_parameter")


@dataclass(frozen=True)
class Registration:
    url: str
    model_name: str | None
    batch_size: int | None
    max_batch_delay_ms: float | None
    initial_workers: int | None
    synchronous: bool
    task: str | None


def _text_or_none(given: Mapping[str, Any], key: str) -> str | None:
    """A string parameter, None when absent or empty; anything else (a JSON list, a number)
    is a 400, not a value to guess about."""
    value = given.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(f"{key} must be a string, not {value!r}"[:300])
    return value


def parse_registration(given: Mapping[str, Any]) -> Registration:
    check_known(given, REGISTER_PARAMS)
    url = given.get("url")
    if not isinstance(url, str) or not url:
        raise _bad(
            "url is required: a TorchScript file in the model store, e.g. "
            "POST /management/models?url=resnet18.pt",
            "missing_url",
        )
    name = given.get("model_name")
    if name is not None and not isinstance(name, str):
        raise _bad(f"model_name must be a string, not {name!r}")
    task = _text_or_none(given, "task")
    handler = _text_or_none(given, "handler")
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
    return Registration(
        url=url,
        model_name=name or None,
        batch_size=params.whole(given, "batch_size", 1),
        max_batch_delay_ms=params.decimal(given, "max_batch_delay", MAX_BATCH_DELAY_MS),
        initial_workers=params.whole(given, "initial_workers", 0),
        synchronous=params.boolean(given, "synchronous"),
        task=task,
    )


def registered_model(reg: Registration, name: str, path: str) -> ModelSettings:
    """The model a registration adds; unset parameters keep config's defaults."""
    model = ModelSettings(name=name, path=path, task=reg.task, min_workers=reg.initial_workers)
    changes: dict[str, Any] = {}
    if reg.batch_size is not None:
        changes["max_batch_size"] = reg.batch_size
    if reg.max_batch_delay_ms is not None:
        changes["max_batch_delay_ms"] = reg.max_batch_delay_ms
    return dataclasses.replace(model, **changes)


def _whole(ms: float) -> int | float:
    """TorchServe's whole milliseconds, unless too large for a JSON integer (a config value)."""
    return round(ms) if ms < 2**53 else ms


def parse_scale(given: Mapping[str, Any]) -> tuple[int, int, bool]:
    """(min, max, synchronous) of PUT; TorchServe's defaults: min 1, max = min."""
    check_known(given, SCALE_PARAMS)
    low = params.whole(given, "min_worker", 0)
    low = 1 if low is None else low
    high = params.whole(given, "max_worker", 0)
    high = low if high is None else high
    if high < low:
        raise _bad(f"max_worker ({high}) cannot be less than min_worker ({low})")
    if high < 1:
        raise _bad("max_worker must be >= 1 (min_worker=0 alone scales the model to zero)")
    return low, high, params.boolean(given, "synchronous")


def parse_page(given: Mapping[str, Any]) -> tuple[int, int]:
    check_known(given, LIST_PARAMS)
    limit = params.whole(given, "limit", 0)
    start = params.whole(given, "next_page_token", 0) or 0
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
            "maxBatchDelay": _whole(model.max_batch_delay_ms),
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
