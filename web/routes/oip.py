"""The Open Inference Protocol v2 (KServe / Triton HTTP): /v2 health, server and model metadata,
model readiness and inference, usable from ``tritonclient.http`` with its defaults (binary
tensor data; gzip/deflate bodies when asked).

An inference request becomes one ``Tensor`` item (forward(*args)) through web.run.run_item, so
/v2 requests batch with /serve and /inference requests of the same model. Errors use the
protocol's body, ``{"error": "<message>"}``, with our status codes. We serve one version of each
model, "1". Must not import torch.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

import orjson
from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import autodep_celery
from autodep_celery import contract, errors, input_limits, task_types, typed
from autodep_celery.config import ModelSettings
from autodep_celery.web import oip_codec, oip_schema, oip_signature, routes, run
from autodep_celery.web.openapi import operation
from autodep_celery.web.responses import JSON, json_response

log = logging.getLogger(__name__)
bp = Blueprint("oip", __name__)

VERSION = "1"
"""The one version of every model (a config entry names one file)."""
PLATFORM = "pytorch_torchscript"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"
COMPRESS_MIN_BYTES = 1024
"""Smaller responses go uncompressed even when the client accepts gzip or deflate."""
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""zlib window bits of each Content-Encoding (deflate is the zlib format, as HTTP means it)."""
_TENSOR = task_types.REGISTRY["Tensor"]
TAG = "open inference protocol"


def _errors(*codes: int) -> dict[int, Any]:
    return {code: oip_schema.ERRORS[code] for code in codes}


# ---- errors in the protocol's form ----------------------------------------------------------
def _error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


@bp.errorhandler(errors.AutodepError)
def _autodep_error(exc: errors.AutodepError) -> Response:
    level = logging.DEBUG if exc.http_status < 500 else logging.WARNING
    log.log(level, "%s %s -> %s: %s", request.method, request.path, exc.http_status, exc.message)
    retry_after = getattr(exc, "retry_after_s", None)
    headers = {"Retry-After": str(max(1, int(retry_after)))} if retry_after is not None else None
    return _error(exc.message, exc.http_status, headers)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        limit = routes.settings().web.max_body_bytes
        return _error(f"the body is larger than web.max_body_bytes ({limit} bytes)", 413)
    return _error(exc.description or exc.name, exc.code or 500)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return _error("internal server error; the web server log has the details", 500)


@bp.after_app_request
def _unrouted(response: Response) -> Response:
    """A /v2 path that matched no route (404, 405) was answered by the app's handlers, which
    never see this blueprint: give the protocol's error body there too."""
    if (
        request.url_rule is not None
        or response.status_code < 400
        or response.mimetype != JSON
        or not (request.path == "/v2" or request.path.startswith("/v2/"))
    ):
        return response
    try:
        error = orjson.loads(response.get_data()).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return response
    if isinstance(error, dict) and "message" in error:
        response.set_data(orjson.dumps({"error": error["message"]}))
    return response


# ---- health and metadata --------------------------------------------------------------------
@bp.get("/v2")
@operation("Server metadata (OIP)", {200: oip_schema.SERVER_METADATA, **_errors(500)}, tag=TAG)
def server_metadata() -> Response:
    return json_response(
        {"name": "autodep-celery", "version": autodep_celery.__version__, "extensions": EXTENSIONS}
    )


@bp.get("/v2/health/live")
@operation("The server is live (OIP)", {200: oip_schema.LIVE, **_errors(500)}, tag=TAG)
def live() -> Response:
    return json_response({"live": True})


@bp.get("/v2/health/ready")
@operation(
    "Every model has a ready worker, as GET /ready (OIP)",
    {200: oip_schema.READY, **_errors(503, 500)},
    tag=TAG,
)
def ready() -> Response:
    state = routes.dispatcher().ready()
    if state.ok:
        return json_response({"ready": True})
    if state.error:
        why = state.error
    elif not state.workers:
        why = "no model is configured; add a [[models]] entry"
    else:
        missing = sorted(m for m, n in state.workers.items() if n == 0 and m not in state.startable)
        why = f"no ready worker for model(s) {', '.join(missing)}"
    return json_response({"error": f"not ready: {why}", "ready": False}, 503)


def _model(name: str, version: str | None) -> ModelSettings:
    settings = routes.settings()
    model = settings.model(name)
    if model is None:
        served = ", ".join(m.name for m in settings.models) or "none"
        raise errors.UnknownModel(f"unknown model {name!r}; served models: {served}")
    if version is not None and version != VERSION:
        raise errors.UnknownModel(
            f"model {name} has no version {version!r}; it has version {VERSION} (or leave the "
            "version out)",
            code="unknown_version",
        )
    return model


@bp.get("/v2/models/<model>")
@bp.get("/v2/models/<model>/versions/<version>", endpoint="model_version_metadata")
@operation(
    "Model metadata: inputs and outputs from forward()'s signature (OIP)",
    {200: oip_schema.MODEL_METADATA, **_errors(404, 503, 500)},
    tag=TAG,
)
def model_metadata(model: str, version: str | None = None) -> Response:
    name = _model(model, version).name
    body: dict[str, Any] = {"name": name, "versions": [VERSION], "platform": PLATFORM}
    schema = routes.status().model_schema(name)
    if schema is None:
        body.update(
            inputs=[],
            outputs=[],
            parameters={
                "note": "no worker has loaded this model yet, so its inputs and outputs are "
                "unknown; ask again once GET /v2/models/<model>/ready answers 200"
            },
        )
    else:
        body.update(
            inputs=oip_signature.metadata_inputs(schema),
            outputs=oip_signature.metadata_outputs(schema),
            parameters={"signature": oip_signature.signature_text(schema)},
        )
    return json_response(body)


@bp.get("/v2/models/<model>/ready")
@bp.get("/v2/models/<model>/versions/<version>/ready", endpoint="model_version_ready")
@operation(
    "The model has a ready worker (OIP)",
    {200: oip_schema.MODEL_READY, **_errors(404, 503, 500)},
    tag=TAG,
)
def model_ready(model: str, version: str | None = None) -> Response:
    name = _model(model, version).name
    if routes.dispatcher().has_worker(name):
        return json_response({"name": name, "ready": True})
    message = f"model {name} is not ready: no worker serves it yet"
    return json_response({"error": message, "name": name, "ready": False}, 503)


# ---- inference ------------------------------------------------------------------------------
@bp.post("/v2/models/<model>/infer")
@bp.post("/v2/models/<model>/versions/<version>/infer", endpoint="version_infer")
@operation(
    "Run forward() on tensors (OIP; binary tensor data extension)",
    {200: oip_schema.INFER_RESPONSE, **_errors(400, 404, 413, 422, 429, 503, 504, 500)},
    request=oip_schema.INFER_REQUEST,
    tag=TAG,
)
def infer(model: str, version: str | None = None) -> Response:
    served = _model(model, version)
    name = served.name
    body = _decompressed(request.get_data(cache=False))
    parsed = oip_codec.decode_request(body, request.headers.get(HEADER_LENGTH))
    deadline = run.deadline()
    if parsed.timeout_us is not None:
        deadline = min(deadline, time.time() + parsed.timeout_us / 1e6)
    schema = routes.status().model_schema(name)
    args = oip_signature.arguments(parsed.inputs, schema)
    input_limits.check_tensor_args(args, served)
    result = run.run_item(name, contract.make_item(_TENSOR, args, deadline), deadline)
    if not result.get("ok"):
        error = result.get("error")
        raise errors.from_dict(error if isinstance(error, dict) else {})
    output = result.get("output")
    if not isinstance(output, dict) or _TENSOR.name not in output:
        raise errors.AutodepError("the worker returned a result without a Tensor output")
    try:
        tensors = oip_signature.outputs(output[_TENSOR.name], schema)
    except typed.TypedValueError as exc:
        raise errors.ModelError(f"model {name} returned what OIP cannot carry: {exc}") from None
    chosen = oip_codec.select(tensors, parsed)
    payload, json_length = oip_codec.encode_response(name, VERSION, parsed.id, chosen)
    headers = {} if json_length is None else {HEADER_LENGTH: str(json_length)}
    mimetype = JSON if json_length is None else "application/octet-stream"
    return _compressed(Response(payload, mimetype=mimetype, headers=headers))


def _decompressed(body: bytes) -> bytes:
    """The body without its Content-Encoding (tritonclient's request_compression_algorithm),
    refused past web.max_body_bytes once inflated."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise errors.ClientError(
            f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none",
            code="unsupported_encoding",
            http_status=415,
        )
    limit = routes.settings().web.max_body_bytes
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise oip_codec.bad(f"the body is not valid {encoding} data: {exc}") from None
    if len(data) > limit:
        raise RequestEntityTooLarge()
    if not inflater.eof:
        raise oip_codec.bad(f"the body ends inside its {encoding} data")
    return data


def _compressed(response: Response) -> Response:
    """gzip or deflate the response when the client accepts it (tritonclient's
    response_compression_algorithm)."""
    body = response.get_data()
    if len(body) < COMPRESS_MIN_BYTES:
        return response
    encoding = request.accept_encodings.best_match(list(_WBITS))
    if encoding is None:
        return response
    packer = zlib.compressobj(1, zlib.DEFLATED, _WBITS[encoding])
    response.set_data(packer.compress(body) + packer.flush())
    response.headers["Content-Encoding"] = encoding
    response.vary.add("Accept-Encoding")
    return response
