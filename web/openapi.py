"""GET /openapi.json: the OpenAPI 3.0 document of the app, built from the app itself.

Every route of the app's URL map is described (a test checks none is missing): its summary,
request body and responses come from the :func:`operation` decorator on its view, whose specs
are the declarations of :mod:`web.schema` that validation uses; a view without the decorator
still appears, with its docstring as summary. Swagger UI (:mod:`web.routes.docs`) renders it.
Must not import torch.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask

import autodep_celery
from autodep_celery.config import Settings
from autodep_celery.web import auth, schema
from autodep_celery.web.spec import Spec, String

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
    500: "Model or server fault",
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
    query: Mapping[str, str | Spec] | None = None,
    required_query: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Describe a view for the OpenAPI document; `errors` adds error-envelope responses,
    `query` the query parameters (name -> a description of a free string, or the Spec of
    what the view accepts), optional unless named in `required_query`."""

    def wrap(view: F) -> F:
        view.openapi = {  # type: ignore[attr-defined]  # an attribute on the view function
            "summary": summary,
            "description": description,
            "request": request,
            "responses": {**responses, **{code: ERROR_DESCRIPTIONS[code] for code in errors}},
            "tag": tag,
            "query": query or {},
            "required_query": required_query,
        }
        return view

    return wrap


def error_responses(spec: Spec, *statuses: int) -> dict[int, Response]:
    """`statuses` answered with `spec` (a protocol's own error body), described as usual."""
    return {s: dataclasses.replace(spec, description=ERROR_DESCRIPTIONS[s]) for s in statuses}


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


def _query(name: str, param: str | Spec, required: bool) -> dict[str, Any]:
    if isinstance(param, str):
        param = String(description=param)
    schema = param.schema()
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": schema.pop("description", ""),
        "schema": schema,
    }


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
            _query(n, d, n in meta.get("required_query", ()))
            for n, d in meta.get("query", {}).items()
        ],
        "responses": {
            str(code): _response(code, resp) for code, resp in sorted(meta["responses"].items())
        },
    }
    # 500, not "default": a default response would make every status code conform
    op["responses"].setdefault("500", _response(500, ERROR_DESCRIPTIONS[500]))
    if meta["description"]:
        op["description"] = meta["description"]
    if isinstance(meta["request"], Media):
        op["requestBody"] = {"required": True, "content": meta["request"].render()}
        if meta["request"].description:
            op["requestBody"]["description"] = meta["request"].description
    elif meta["request"] is not None:
        body = meta["request"].schema()
        if meta["request"] is schema.INFERENCE_BODY and settings.models:
            for variant in body["oneOf"]:
                variant["properties"]["model"]["enum"] = [m.name for m in settings.models]
                if len(settings.models) > 1:  # web.validation: "model_required"
                    variant["required"].append("model")
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


_AUTH_ERRORS = {
    auth.INFERENCE: {401: "No valid API key: send Authorization: Bearer <key>"},
    auth.ADMIN: {
        401: "No valid admin key: send Authorization: Bearer <admin key>",
        403: "An API key on a management route, or no admin key is configured",
    },
}


def _secure(op: dict[str, Any], endpoint: str, keys: auth.Keys) -> None:
    """With keys configured, a protected operation's 401 (and 403), in the shape of its other
    4xx errors (each protocol keeps its own: web.auth)."""
    blueprint = endpoint.split(".")[0]
    access = auth.OPEN if endpoint in auth.OPEN_ENDPOINTS else auth.ACCESS.get(blueprint, auth.OPEN)
    if not keys.any or access == auth.OPEN:
        return
    errors = [r for code, r in sorted(op["responses"].items()) if code.startswith("4")]
    shape = errors[0] if errors else op["responses"]["500"]
    for status, description in _AUTH_ERRORS[access].items():
        op["responses"][str(status)] = {**shape, "description": description}
    op["security"] = [{"bearer": []}]


def document(app: Flask, settings: Settings) -> dict[str, Any]:
    keys = auth.load_keys(settings)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        path, params = _path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = _operation(view, rule.endpoint, params, settings)
            _secure(op, rule.endpoint, keys)
            paths.setdefault(path, {})[method.lower()] = op
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
                    "generated when absent or invalid (1-128 of A-Z a-z 0-9 . _ : / + = @ -): "
                    "any value is accepted.",
                    "schema": {"type": "string"},
                }
            },
            **(
                {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
                if keys.any
                else {}
            ),
            "headers": {
                "RequestId": {
                    "description": "The request's id: the client's X-Request-ID, or generated.",
                    "schema": {"type": "string"},
                }
            },
        },
    }
