"""GET /openapi.json: the OpenAPI 3.0 document of the app, built from the app itself.

Every route of the app's URL map is described (a test checks none is missing): its summary,
request body and responses come from the :func:`operation` decorator on its view, whose specs
are the declarations of :mod:`web.schema` that validation uses; a view without the decorator
still appears, with its docstring as summary. Swagger UI (:mod:`web.routes.docs`) renders it.
Must not import torch.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask

import autodep_celery
from autodep_celery.config import Settings
from autodep_celery.web import schema
from autodep_celery.web.spec import Spec

OPENAPI_VERSION = "3.0.3"
"""3.0, not 3.1: the Swagger UI that swagger-ui-bundle ships (4.x) renders 3.0."""
REQUEST_ID_HEADER = "X-Request-ID"
ERROR_DESCRIPTIONS = {
    400: "Invalid JSON or an ambiguous model",
    404: "Unknown model or route",
    405: "Method not allowed",
    413: "Body or image too large",
    415: "Body is not JSON",
    422: "Invalid input: the error code and message say which field and how to fix it",
    429: "Too many requests waiting for this model in this web process (Retry-After)",
    503: "No worker for the model, or Redis/broker unreachable",
    504: "The request's deadline passed (web.request_timeout_s)",
}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Media:
    """A body in other media types than JSON, or in several: media type (``image/*`` allowed)
    -> its spec, or a raw OpenAPI schema (``{"type": "string", "format": "binary"}``)."""

    content: dict[str, Spec | dict[str, Any]]
    description: str = ""

    def render(self) -> dict[str, Any]:
        return {
            media: {"schema": spec.schema() if isinstance(spec, Spec) else spec}
            for media, spec in self.content.items()
        }


Response = Spec | str | tuple[str, str] | Media
"""A JSON body's spec, or a description (errors: the error envelope), or (media type, description)
for a non-JSON body, or a Media for several."""


def operation(
    summary: str,
    responses: dict[int, Response],
    *,
    request: Spec | Media | None = None,
    description: str = "",
    tag: str = "",
    errors: tuple[int, ...] = (),
    query: dict[str, str] | None = None,
) -> Callable[[F], F]:
    """Describe a view for the OpenAPI document; `errors` adds error-envelope responses,
    `query` optional string query parameters (name -> description)."""

    def wrap(view: F) -> F:
        view.openapi = {  # type: ignore[attr-defined]  # an attribute on the view function
            "summary": summary,
            "description": description,
            "request": request,
            "responses": {**responses, **{code: ERROR_DESCRIPTIONS[code] for code in errors}},
            "tag": tag,
            "query": query or {},
        }
        return view

    return wrap


def _json(spec: Spec | dict[str, Any]) -> dict[str, Any]:
    body = spec.schema() if isinstance(spec, Spec) else spec
    return {"application/json": {"schema": body}}


def _response(status: int, resp: Response) -> dict[str, Any]:
    headers = {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}}
    if isinstance(resp, Spec):
        desc = resp.description or "OK"
        return {"description": desc, "headers": headers, "content": _json(resp)}
    if isinstance(resp, Media):
        return {
            "description": resp.description or "OK",
            "headers": headers,
            "content": resp.render(),
        }
    if isinstance(resp, tuple):
        media, desc = resp
        return {
            "description": desc,
            "headers": headers,
            "content": {media: {"schema": {"type": "string"}}},
        }
    out: dict[str, Any] = {"description": resp, "headers": headers}
    if status >= 400:
        out["content"] = _json({"$ref": "#/components/schemas/Error"})
    return out


def _path(rule: str) -> tuple[str, list[str]]:
    names = re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule)
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule), names


def _operation(view: Any, endpoint: str, params: list[str], settings: Settings) -> dict[str, Any]:
    doc = view.__doc__ or getattr(sys.modules.get(view.__module__), "__doc__", None) or endpoint
    meta = getattr(view, "openapi", None) or {
        "summary": (doc.strip().splitlines() or [endpoint])[0],
        "description": "",
        "request": None,
        "responses": {200: schema.ANY_JSON},
        "tag": "",
    }
    op: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"),
        "summary": meta["summary"],
        "tags": [meta["tag"] or endpoint.split(".")[0]],
        "parameters": [{"$ref": "#/components/parameters/RequestId"}]
        + [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in params
        ]
        + [
            {
                "name": n,
                "in": "query",
                "required": False,
                "description": d,
                "schema": {"type": "string"},
            }
            for n, d in meta.get("query", {}).items()
        ],
        "responses": {
            str(code): _response(code, resp) for code, resp in sorted(meta["responses"].items())
        },
    }
    op["responses"]["default"] = _response(500, "Model or server fault")
    if meta["description"]:
        op["description"] = meta["description"]
    if isinstance(meta["request"], Media):
        op["requestBody"] = {"required": True, "content": meta["request"].render()}
        if meta["request"].description:
            op["requestBody"]["description"] = meta["request"].description
    elif meta["request"] is not None:
        body = meta["request"].schema()
        if meta["request"] is schema.INFERENCE_REQUEST and settings.models:
            body["properties"]["model"]["enum"] = [m.name for m in settings.models]
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


def document(app: Flask, settings: Settings) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        path, params = _path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                view, rule.endpoint, params, settings
            )
    models = ", ".join(m.name for m in settings.models) or "none configured"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "autodep-celery",
            "version": autodep_celery.__version__,
            "description": "TorchScript models served over REST by Celery workers "
            f"(Autodep's API). Models: {models}. Every error is "
            '{"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": schema.ERROR.schema()},
            "parameters": {
                "RequestId": {
                    "name": REQUEST_ID_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "Follows the request through web and worker logs; "
                    "generated when absent or invalid (1-128 of A-Z a-z 0-9 . _ : / + = @ -).",
                    "schema": {"type": "string", "maxLength": 128},
                }
            },
            "headers": {
                "RequestId": {
                    "description": "The request's id: the client's X-Request-ID, or generated.",
                    "schema": {"type": "string"},
                }
            },
        },
    }
