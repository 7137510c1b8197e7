"""torch-serving's API: ``POST /serve?servable_identifier=<model>`` (typed tensor JSON in and out,
any TorchScript signature) and ``GET /healthcheck``.

Every answer is torch-serving's envelope ``{"code", "message", "description", "result"}``. An
error keeps it (a 4xx/5xx ``code``, torch-serving's ``detail``) and adds our
``{"error": {"code", "message"}}``, so clients of either kind read it: the app's error handlers
render the error as usual and `_envelope_errors` wraps it, so status, logging and Retry-After
are the same as on every route. The identifier is a configured model's name, never a path. A
request becomes a Tensor item (web.torchserving_json) sent through web.run like /inference's,
so both share batches. Must not import torch.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request

from autodep_celery import contract, errors, input_limits
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.web import routes, run, torchserving_json
from autodep_celery.web.openapi import error_responses, operation
from autodep_celery.web.responses import JSON, json_response
from autodep_celery.web.spec import Integer, Object, String

bp = Blueprint("torchserving", __name__)

IDENTIFIER = "servable_identifier"
_DESCRIPTIONS = {
    "invalid_json": "Invalid JSON",
    "empty_body": "Empty body",
    "shape_mismatch": "Incompatible tensor shapes",
    "unknown_dtype": "Incompatible tensor data type",
    "invalid_tensor_value": "Incompatible tensor data type",
    "missing_servable_identifier": "Missing required parameter `servable_identifier`",
    "duplicate_servable_identifier": "Required parameter `servable_identifier` must only be "
    "passed in once",
    "unknown_model": "Invalid servable identifier",
    "invalid_arguments": "Arguments do not fit the model's forward()",
    "model_rejected_input": "The model rejected the input",
}
"""Our error code -> the envelope's description (torch-serving's wording where it has one)."""
_BY_STATUS = {
    400: "Invalid Input JSON",
    404: "Not found",
    413: "Body too large",
    422: "Invalid input",
    429: "Too many requests",
    503: "Service unavailable",
    504: "Deadline exceeded",
}


_NO_RESULT: Any = object()


def envelope(
    status: int, description: str, result: Any = _NO_RESULT, **more: Any
) -> dict[str, Any]:
    """torch-serving's body; `result` only when there is one, as it does."""
    message = "OK" if status < 400 else "Client Error" if status < 500 else "Server Error"
    body: dict[str, Any] = {"code": status, "message": message, "description": description}
    if result is not _NO_RESULT:
        body["result"] = result
    body.update(more)
    return body


@bp.get("/healthcheck")
@operation(
    "The web process answers (torch-serving's health check)",
    {200: Object({"code": Integer(), "message": String(), "description": String()})},
    tag="torch-serving",
)
def healthcheck() -> Response:
    return json_response(envelope(200, "OK"))


# ---- POST /serve ----------------------------------------------------------------------------
_CODE = Integer(description="The HTTP status.")
SERVE_RESPONSE = Object(
    {
        "code": _CODE,
        "message": String(example="OK"),
        "description": String(example="Success"),
        "result": torchserving_json.OUTPUT,
    },
    required=("code", "message", "description"),
    description="forward()'s result in torch-serving's typed JSON",
    example=envelope(
        200,
        "Success",
        {
            "type": "generic_dict",
            "value": {
                "out": [
                    [
                        {
                            "type": "tensor",
                            "data_type": "float32",
                            "shape": [1, 3],
                            "value": [50, 33, 33],
                        }
                    ],
                    {"type": "string", "value": "Hello!"},
                    {"type": "scalar", "data_type": "int64", "value": 30},
                ]
            },
        },
    ),
)
ERROR_ENVELOPE = Object(
    {
        "code": _CODE,
        "message": String(enum=("Client Error", "Server Error")),
        "description": String(description="What kind of error (torch-serving's wording)."),
        "detail": String(description="What is wrong and how to fix it."),
        "error": Object(
            {"code": String(example="shape_mismatch"), "message": String()},
            required=("code", "message"),
        ),
    },
    required=("code", "message", "description", "error"),
)


@bp.post("/serve")
@operation(
    "Run a model on typed tensors (torch-serving's API)",
    {
        200: SERVE_RESPONSE,
        **error_responses(ERROR_ENVELOPE, 400, 404, 413, 422, 429, 500, 503, 504),
    },
    request=torchserving_json.BODY,
    description="One typed value per forward() argument (or one typed value for a single "
    "argument); the answer is forward()'s result in the same typed JSON. Any served model takes "
    "it, whatever its configured task. Tensors are flat row-major `value`s with a `shape`; "
    "int64 values round-trip exactly.",
    tag="torch-serving",
    query={IDENTIFIER: "The name of a served model (never a file path)."},
    required_query=(IDENTIFIER,),
)
def serve() -> Response:
    model = servable(request.args.getlist(IDENTIFIER), routes.settings())
    data = request.get_data(cache=False)
    if not data.strip():
        raise errors.ClientError(
            'the body is empty; send a typed value like {"type": "tensor", "shape": [1, 2], '
            '"value": [10, 1]} or an array of them, one per forward() argument',
            code="empty_body",
        )
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidJSON(f"the body is not valid JSON: {exc}") from None
    args = torchserving_json.parse_body(body)
    input_limits.check_tensor_args(args, model)
    deadline = run.deadline()
    result = run.run_item(model.name, contract.args_item(args, deadline), deadline)
    if not result.get("ok"):
        error = result.get("error")
        raise errors.from_dict(error if isinstance(error, dict) else {})
    output = result.get("output")
    if not isinstance(output, dict) or "Tensor" not in output:
        raise errors.AutodepError("the worker returned a result without a Tensor output")
    return json_response(envelope(200, "Success", torchserving_json.to_json(output["Tensor"])))


def servable(given: list[str], settings: Settings) -> ModelSettings:
    """The model a servable_identifier names: exactly one, a configured model's name."""
    names = ", ".join(m.name for m in settings.models) or "none"
    if not given:
        raise errors.ClientError(
            f"missing required parameter `{IDENTIFIER}`: POST /serve?{IDENTIFIER}=<model>, "
            f"one of: {names}",
            code="missing_servable_identifier",
        )
    if len(given) > 1:
        raise errors.ClientError(
            f"required parameter `{IDENTIFIER}` must only be passed in once, not {len(given)} "
            "times",
            code="duplicate_servable_identifier",
        )
    name = given[0]
    model = None if _path_like(name) else settings.model(name)
    if model is None:
        hint = ""
        stem = name.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".pt")
        if stem != name and settings.model(stem) is not None:
            hint = f"; did you mean {stem!r}?"
        raise errors.UnknownModel(
            f"unknown {IDENTIFIER} {name[:100]!r}: it is a served model's name, never a file "
            f"path; served models: {names}{hint}"
        )
    return model


def _path_like(name: str) -> bool:
    return "/" in name or "\\" in name or name in (".", "..") or name.startswith("..")


@bp.after_request
def _envelope_errors(response: Response) -> Response:
    """An error rendered by the app's handlers, in torch-serving's envelope (ours kept)."""
    if response.status_code < 400 or response.mimetype != JSON:
        return response
    try:
        body = orjson.loads(response.get_data())
    except orjson.JSONDecodeError:
        return response
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or "code" in body:
        return response
    status = response.status_code
    code = str(error.get("code", ""))
    description = _DESCRIPTIONS.get(code) or _BY_STATUS.get(status)
    if description is None:
        description = "Client error" if status < 500 else "Unexpected server error"
    wrapped = envelope(status, description, detail=error.get("message", ""), error=error)
    response.set_data(orjson.dumps(wrapped))
    return response
