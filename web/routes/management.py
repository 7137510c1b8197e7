"""TorchServe's management API on the main port under /management (a TorchServe client changes
only its base URL, http://host:8081 -> http://host:8000/management): list, describe, register,
scale and unregister models while everything runs.

Registrations live in Redis (autodep_celery.model_registry): this process sees a change at once,
every other web process on its next request for the model (web.model_table), the autoscaler on
its next tick (it starts, resizes or drains and stops the model's worker), a worker when it
starts. All routes are in this one blueprint so that an admin-key check can wrap them; its
``before_app_request`` hook keeps every route's model set fresh. Must not import torch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

import orjson
import redis
from flask import Blueprint, Response, request

from autodep_celery import config, errors, model_registry
from autodep_celery.config import ConfigError, ModelSettings, Settings
from autodep_celery.web import management, routes
from autodep_celery.web.openapi import operation
from autodep_celery.web.redis_client import unreachable
from autodep_celery.web.responses import json_response
from autodep_celery.web.spec import ArrayOf, Boolean, Integer, Object, String

bp = Blueprint("management", __name__, url_prefix="/management")

NO_REFRESH = frozenset({"health.health"})
"""Endpoints that never read the registry: /health must not wait on Redis."""
POLL_S = 0.25
"""How often a synchronous registration or scaling looks at the worker status."""

STATUS = Object({"status": String()}, required=("status",), description="TorchServe's status")
MODEL_LIST = Object(
    {
        "nextPageToken": String(description="Pass as next_page_token for the next page"),
        "models": ArrayOf(
            Object({"modelName": String(), "modelUrl": String()}, required=("modelName",))
        ),
    },
    required=("models",),
)
DESCRIPTION = ArrayOf(
    Object(
        {
            "modelName": String(),
            "modelVersion": String(),
            "modelUrl": String(),
            "runtime": String(),
            "minWorkers": Integer(minimum=0),
            "maxWorkers": Integer(minimum=1),
            "batchSize": Integer(minimum=1),
            "maxBatchDelay": Integer(minimum=0, description="milliseconds"),
            "loadedAtStartup": Boolean(description="defined in config.toml"),
            "workers": ArrayOf(
                Object(
                    {
                        "id": String(description='"<worker>/<pid>"'),
                        "startTime": String(format="date-time"),
                        "status": String(enum=("READY", "LOADING")),
                        "memoryUsage": Integer(minimum=0, description="RSS bytes"),
                        "pid": Integer(),
                        "gpu": Boolean(),
                    }
                )
            ),
        },
        closed=False,
    ),
    description="One entry: every model has one version, 1.0",
)
_STILL = "Workers scaling in progress..."


@bp.before_app_request
def refresh_models() -> None:
    """Every request but /health sees a model set at most model_table.REFRESH_S old."""
    if request.endpoint not in NO_REFRESH:
        routes.model_table().refresh()


@contextlib.contextmanager
def _redis() -> Iterator[redis.Redis]:
    table = routes.model_table()
    if table.source is None:
        raise errors.BrokerUnavailable("this web process has no model registry (no Redis)")
    try:
        yield table.source.client()
    except (redis.RedisError, OSError) as exc:
        raise errors.BrokerUnavailable(unreachable(routes.settings().result_url, exc)) from None


def _params() -> Mapping[str, Any]:
    """The query string, and a JSON body's fields over it (TorchServe takes either)."""
    params: dict[str, Any] = request.args.to_dict()
    if request.mimetype == "application/json" and request.content_length:
        try:  # orjson: a depth limit (no RecursionError) and strict UTF-8 (no lone surrogates)
            body = orjson.loads(request.get_data(cache=False))
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise errors.InvalidJSON('the body must be a JSON object, e.g. {"url": "x.pt"}')
        params.update(body)
    return params


def _current() -> Settings:
    """The model set as Redis has it now: management requests are rare, and must not act on
    a set up to a second old (another process may have just unregistered the model)."""
    return routes.model_table().refresh(force=True)


def _served(name: str) -> ModelSettings:
    model = _current().model(name)
    if model is None:
        raise errors.UnknownModel(
            f"Model not found: {name}; GET /management/models lists the registered models"
        )
    return model


def _status(message: str, code: int = 200) -> Response:
    return json_response({"status": message}, code)


@bp.get("/models")
@operation(
    "List the models (TorchServe's management API)",
    {200: MODEL_LIST},
    tag="management",
    query=management.LIST_PARAMS,
    errors=(400,),
)
def list_models() -> Response:
    limit, start = management.parse_page(request.args)
    settings = _current()
    table = routes.model_table()
    body = management.listing(settings, table.static, table.raw(), limit, start)
    return json_response(body)


@bp.get("/models/<model_name>")
@bp.get("/models/<model_name>/<version>", endpoint="describe_version")
@operation(
    "Describe a model and its worker processes (TorchServe's management API)",
    {200: DESCRIPTION},
    tag="management",
    errors=(404, 503),
)
def describe(model_name: str, version: str | None = None) -> Response:
    management.check_version(model_name, version)
    model = _served(model_name)
    table = routes.model_table()
    # read now, not the view cached for up to worker_check_interval_s: a describe right
    # after a synchronous scale must list the processes that scale waited for
    procs = routes.status().procs(fresh=True)
    body = management.describe(routes.settings(), table.static, table.raw(), model, procs)
    return json_response(body)


@bp.post("/models")
@operation(
    "Register a TorchScript file of the model store (TorchServe's management API)",
    {
        200: STATUS,
        202: STATUS,
        206: STATUS,
        403: "url leads outside the model store",
        409: "A model of that name is registered already",
    },
    tag="management",
    query=management.REGISTER_PARAMS,
    required_query=("url",),
    description="Parameters in the query string or as a JSON object. The file must be inside "
    "[management] model_store (no URLs, no '..', no symlink out of it) and be TorchScript. "
    "202: registered, its workers are starting; 200 with synchronous=true: a worker is ready; "
    "206: registered, but no worker was ready within the request timeout.",
    errors=(400, 404, 422, 503),
)
def register() -> Response:
    reg = management.parse_registration(_params())
    table = routes.model_table()
    settings = routes.settings()
    path = model_registry.resolve_in_store(settings.management.model_store, reg.url)
    name = reg.model_name or PurePosixPath(reg.url).stem
    if not config.is_model_name(name):
        raise errors.ClientError(
            f"model name {name!r} must be {config.MODEL_NAME_RULE}; pass model_name=...",
            code="invalid_model_name",
        )
    model = management.registered_model(reg, name, str(path))
    try:
        config.check_model(table.static, model)
    except ConfigError as exc:
        raise errors.ClientError(str(exc), code="invalid_model_settings") from None
    with _redis() as client:
        model_registry.register(client, table.static, model, reg.url)
    settings = table.refresh(force=True)
    workers = settings.pool_bounds(model)[0]
    message = management.registered_message(name, workers)
    if workers == 0:
        return _status(f"{message}; a worker starts on its first request (scale to zero)")
    if not reg.synchronous:
        return _status(f"{message}. Processing worker updates...", 202)
    return _await_ready(model, message)


def _await_ready(model: ModelSettings, message: str) -> Response:
    deadline = management.deadline_s(routes.settings())
    view = routes.status()
    while True:
        procs = view.procs(fresh=True)
        if management.ready_count(procs, model.name) > 0:
            return _status(message)
        if management.failed_to_load(procs, model):
            with _redis() as client:  # undone, as TorchServe does when its workers fail
                model_registry.unregister(client, routes.model_table().static, model.name)
            routes.model_table().refresh(force=True)
            raise errors.ClientError(
                f"the worker could not load {model.path} (its log says why); the model was "
                "not registered",
                code="model_load_failed",
                http_status=422,
            )
        if time.monotonic() >= deadline:
            return _status(f"{message}; no worker is ready yet. {_STILL}", 206)
        time.sleep(POLL_S)


@bp.put("/models/<model_name>")
@bp.put("/models/<model_name>/<version>", endpoint="scale_version")
@operation(
    "Set a model's worker bounds for the autoscaler (TorchServe's scale workers)",
    {200: STATUS, 202: STATUS, 206: STATUS},
    tag="management",
    query=management.SCALE_PARAMS,
    description="min_worker and max_worker become the model's min_workers and max_workers; "
    "the autoscaler applies them on its next tick. 202 at once; 200 with synchronous=true "
    "once the autoscaler runs with them and min_worker processes are ready; 206 if that "
    "took longer than the request timeout.",
    errors=(400, 404, 503),
)
def scale(model_name: str, version: str | None = None) -> Response:
    management.check_version(model_name, version)
    low, high, synchronous = management.parse_scale(_params())
    current = _served(model_name)
    table = routes.model_table()
    with _redis() as client:
        model_registry.set_bounds(client, table.static, current, low, high)
    settings = table.refresh(force=True)
    if not synchronous:
        return _status("Processing worker updates...", 202)
    bounds = settings.pool_bounds(settings.model(model_name) or current)
    deadline = management.deadline_s(settings)
    while True:
        state = routes.status().autoscaler(fresh=True)
        if state is None:
            return _status(f"No autoscaler runs; the bounds apply when one starts. {_STILL}", 202)
        if _applied((state.get("models") or {}).get(model_name) or {}, bounds):
            return _status(f"Workers scaled to {low} for model: {model_name}")
        if time.monotonic() >= deadline:
            return _status(_STILL, 206)
        time.sleep(POLL_S)


def _applied(published: dict[str, Any], bounds: tuple[int, int]) -> bool:
    """The autoscaler runs with `bounds` and the pool is inside them."""
    low, high = bounds
    return (
        (published.get("min"), published.get("max")) == bounds
        and published.get("ready", 0) >= low
        and published.get("current", 0) <= high
    )


@bp.delete("/models/<model_name>")
@bp.delete("/models/<model_name>/<version>", endpoint="unregister_version")
@operation(
    "Unregister a model (TorchServe's management API)",
    {200: STATUS},
    tag="management",
    description="New requests for it get 404 at once here and within a second on every web "
    "process; the autoscaler drains its workers (they finish the batches they hold) and stops "
    "them. A config.toml model stays unregistered until registered again.",
    errors=(404, 503),
)
def unregister(model_name: str, version: str | None = None) -> Response:
    management.check_version(model_name, version)
    _served(model_name)
    table = routes.model_table()
    with _redis() as client:
        model_registry.unregister(client, table.static, model_name)
    table.refresh(force=True)
    return _status(f'Model "{model_name}" unregistered')
