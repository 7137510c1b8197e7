"""POST /inference (Autodep's API): validate, hand one item to the dispatcher, wait for its
result until the request's deadline. Must not import torch.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, request

from autodep_celery import errors
from autodep_celery.config import Settings
from autodep_celery.web import routes, run, schema
from autodep_celery.web.openapi import operation
from autodep_celery.web.responses import inference_body, json_response
from autodep_celery.web.validation import InferenceRequest, parse_inference

bp = Blueprint("inference", __name__)

JSON_TYPES = ("", "application/json", "text/plain")


def read_request(settings: Settings, deadline: float) -> InferenceRequest:
    """The model, item and task type of an Autodep-format JSON body (POST /inference, and
    POST /jobs, which takes the same body)."""
    mimetype = request.mimetype
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise errors.ClientError(
            f"Content-Type {mimetype} is not supported; send the body as JSON with "
            "Content-Type: application/json (images base64-encoded in data.B64Image.image)",
            code="unsupported_media_type",
            http_status=415,
        )
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidJSON(f"the body is not valid JSON: {exc}") from None
    return parse_inference(body, settings, deadline)


@bp.post("/inference")
@operation(
    "Run a model on one input (Autodep's API)",
    {200: schema.INFERENCE_RESPONSE},
    request=schema.INFERENCE_BODY,
    description=schema.INFERENCE_DESCRIPTION,
    tag="inference",
    errors=(400, 404, 413, 415, 422, 429, 503, 504),
)
def inference() -> Response:
    parsed = read_request(routes.settings(), run.deadline())
    result = run.run_item(parsed.model.name, parsed.item, parsed.item["deadline"])
    return json_response(inference_body(result, parsed.task))
