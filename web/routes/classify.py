"""POST /classify: one image (raw body or a multipart file), the top-1 class, answered as the
Drogon + libtorch server (SABER-labs/Drogon-torch-serve) does: ``{"status": "success",
"prediction": {"label": ..., "confidence": ...}}``.

The model is ``?model=<name>``, else the only model served, else the only one configured
``task = "ImageClassification"``. The request runs as an ImageClassification item (top_n 5,
like /predictions) through :func:`web.run.run_item`, so it is batched with /inference and
/predictions. Errors keep our ``{"error": {...}}`` shape with Drogon's ``"status": "failed"``
and ``"message"`` beside it. Must not import torch.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, request

from autodep_celery import contract, errors
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.web import routes, run, schema, uploads
from autodep_celery.web.openapi import error_responses, operation
from autodep_celery.web.responses import JSON, json_response
from autodep_celery.web.routes.torchserve import CLASSIFICATION, TOP_K
from autodep_celery.web.spec import Number, Object, String

bp = Blueprint("classify", __name__)

CLASSIFIER = CLASSIFICATION.name
RESULT = Object(
    {
        "status": String(enum=("success",)),
        "prediction": Object(
            {"label": String(), "confidence": Number(minimum=0, maximum=1)},
            required=("label", "confidence"),
        ),
    },
    required=("status", "prediction"),
    example={"status": "success", "prediction": {"label": "tabby", "confidence": 0.93}},
)
FAILED = Object(
    {
        "status": String(enum=("failed",)),
        "message": String(description="What is wrong and how to fix it."),
        "error": schema.ERROR.fields["error"],
    },
    required=("status", "message", "error"),
)
"""An error: Drogon's status and message beside our error object (`_drogon_error`)."""


@bp.post("/classify")
@operation(
    "Classify one image: the top class (the Drogon + libtorch server's API)",
    {200: RESULT, **error_responses(FAILED, 400, 404, 413, 415, 422, 429, 500, 503, 504)},
    request=uploads.IMAGE,
    description='Errors add Drogon\'s "status": "failed" and "message" beside "error".',
    tag="classify",
    query={
        "model": "The model; may be left out when one model is served or one is configured "
        'task = "ImageClassification".'
    },
)
def classify() -> Response:
    settings = routes.settings()
    model = choose_model(request.args.get("model"), settings)
    image = uploads.image(request, settings.web.max_image_pixels, model)
    deadline = run.deadline()
    item = contract.make_item(CLASSIFICATION, image, deadline, {"top_n": TOP_K})
    result = run.run_item(model.name, item, deadline)
    if not result.get("ok"):
        error = result.get("error")
        raise errors.from_dict(error if isinstance(error, dict) else {})
    try:
        top = result["output"]["Classification"][0]
        prediction = {"label": top["label"], "confidence": top["probability"]}
    except (KeyError, IndexError, TypeError):
        raise errors.AutodepError("the worker returned no classification") from None
    return json_response({"status": "success", "prediction": prediction})


def choose_model(name: str | None, settings: Settings) -> ModelSettings:
    models = settings.models
    if not models:
        raise errors.NoWorker("no model is configured; add a [[models]] entry to config.toml")
    candidates = [m for m in models if m.task in (None, CLASSIFIER)]
    choices = ", ".join(m.name for m in candidates) or "none"
    if name is not None:
        model = settings.model(name)
        if model is None:
            raise errors.UnknownModel(f"unknown model {name!r}; classifiers: {choices}")
    elif len(models) == 1:
        model = models[0]
    else:
        configured = [m for m in models if m.task == CLASSIFIER]
        if len(configured) != 1:
            raise errors.ClientError(
                f"several models are served; choose one with ?model=<name>: {choices}",
                code="model_required",
            )
        model = configured[0]
    if model.task not in (None, CLASSIFIER):
        raise errors.InvalidInput(
            f"model {model.name} is configured for {model.task}; /classify runs image "
            f"classifiers: {choices}",
            code="task_mismatch",
        )
    return model


@bp.after_request
def _drogon_error(response: Response) -> Response:
    """Add Drogon's ``"status": "failed"`` and ``"message"`` to this blueprint's errors."""
    if response.status_code < 400 or response.mimetype != JSON:
        return response
    body = orjson.loads(response.get_data())
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        response.set_data(
            orjson.dumps({"status": "failed", "message": error.get("message"), **body})
        )
    return response
