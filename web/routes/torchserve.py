"""TorchServe's inference API: GET /ping and POST (or PUT, as ``curl -T`` sends) /predictions/
{model}[/{version}], so a TorchServe client changes only its base URL.

The input is the raw body or one multipart file (:mod:`web.uploads`), as TorchServe reads it;
the answer is what TorchServe's default handlers give for one request: the image_classifier's
top-5 ``{label: probability}`` object (most probable first), a PNG, or text. Each request goes
through :func:`web.run.run_item` as one item, so it is batched with /inference's requests for
the same model. Errors keep our ``{"error": {...}}`` shape. Must not import torch.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request

from autodep_celery import contract, errors, model_registry, task_types
from autodep_celery.config import ModelSettings
from autodep_celery.web import routes, run, uploads
from autodep_celery.web.openapi import Media, operation
from autodep_celery.web.responses import json_response
from autodep_celery.web.spec import MapOf, Number, Object, String

bp = Blueprint("torchserve", __name__)

MODEL_VERSIONS = model_registry.VERSION_NAMES
"""What /predictions/{model}/{version} accepts: we serve one version of each model, which
TorchServe clients address as the model archiver's usual "1.0"."""
TOP_K = 5
"""Classes in an answer: TorchServe's ImageClassifier.topk."""
CLASSIFICATION = task_types.REGISTRY["ImageClassification"]
IMAGE_TO_IMAGE = task_types.REGISTRY["ImageToImage"]
TEXT_TO_TEXT = task_types.REGISTRY["TextToText"]
PNG = "image/png"

UPLOAD = Media(
    {
        **uploads.IMAGE.content,
        "text/plain": {"type": "string", "minLength": 1, "description": "TextToText."},
    },
    description=f"{uploads.IMAGE.description} A TextToText model takes text/plain.",
)
PREDICTION = Media(
    {
        "application/json": MapOf(
            Number(minimum=0, maximum=1), example={"tabby": 0.42, "tiger_cat": 0.31}
        ),
        PNG: uploads.BINARY,
        "text/plain": String(),
    },
    description="ImageClassification: the top-5 {label: probability}, most probable first; "
    "ImageToImage: the PNG; TextToText: the text.",
)
STATUS = Object({"status": String(enum=("Healthy", "Unhealthy"))}, required=("status",))


@bp.get("/ping")
@operation(
    "TorchServe's health check",
    {200: STATUS, 500: Media({"application/json": STATUS}, "Unhealthy: a model has no worker")},
    description='"Healthy" when every model has a ready worker (or is started on demand), else '
    '500 "Unhealthy", as TorchServe answers; GET /ready says which model is missing.',
    tag="torchserve",
)
def ping() -> Response:
    state = routes.dispatcher().ready()
    healthy = state.error is None and all(
        n > 0 or m in state.startable for m, n in state.workers.items()
    )
    return json_response({"status": "Healthy" if healthy else "Unhealthy"}, 200 if healthy else 500)


@operation(
    "Run a model on one file (TorchServe's predictions API)",
    {200: PREDICTION},
    request=UPLOAD,
    description="An ImageClassification model (or one without a task, given an image) answers "
    "TorchServe's image_classifier output; ImageToImage the PNG; TextToText (or a model without "
    "a task, given text/plain) the text. {version}: 1.0 (we serve one version).",
    tag="torchserve",
    errors=(400, 404, 413, 415, 422, 429, 503, 504),
)
def predictions(model: str, version: str | None = None) -> Response:
    served = _model(model, version)
    upload = uploads.read(request)
    task = _task(served, upload)
    settings = routes.settings()
    deadline = run.deadline()
    if task is TEXT_TO_TEXT:
        value: Any = uploads.check_text(upload)
        options: dict[str, Any] = {}
    else:
        value = uploads.check_image(upload, settings.web.max_image_pixels, served)
        options = {"top_n": TOP_K} if task is CLASSIFICATION else {}
    item = contract.make_item(task, value, deadline, options)
    return _answer(run.run_item(served.name, item, deadline))


@operation(
    "The same as POST, for clients that PUT the file (curl -T cat.jpg URL)",
    {200: PREDICTION},
    request=UPLOAD,
    tag="torchserve",
    errors=(400, 404, 413, 415, 422, 429, 503, 504),
)
def predictions_put(model: str, version: str | None = None) -> Response:
    return predictions(model, version)


for _rule, _suffix in (
    ("/predictions/<model>", ""),
    ("/predictions/<model>/<version>", "_version"),
):
    bp.add_url_rule(_rule, "predictions" + _suffix, predictions, methods=("POST",))
    bp.add_url_rule(_rule, "predictions_put" + _suffix, predictions_put, methods=("PUT",))


def _model(name: str, version: str | None) -> ModelSettings:
    settings = routes.settings()
    served = settings.model(name)
    if served is None:
        names = ", ".join(m.name for m in settings.models) or "none"
        raise errors.UnknownModel(f"model not found: {name!r}; served models: {names}")
    if version is not None and version not in MODEL_VERSIONS:
        raise errors.ClientError(
            f"model {name} has no version {version!r}; one version is served: use "
            f"/predictions/{name} or /predictions/{name}/{MODEL_VERSIONS[0]}",
            code="unknown_model_version",
            http_status=404,
        )
    return served


def _task(model: ModelSettings, upload: uploads.Upload) -> task_types.TaskType:
    """The model's configured task type; without one, text runs TextToText and an image the
    image classifier (TorchServe's default for images)."""
    if model.task is None:
        return TEXT_TO_TEXT if upload.is_text else CLASSIFICATION
    task = task_types.REGISTRY[model.task]
    if task not in (CLASSIFICATION, IMAGE_TO_IMAGE, TEXT_TO_TEXT):
        raise errors.InvalidInput(
            f"model {model.name} is configured for {model.task}, which /predictions does not "
            "serve; send it typed tensors through POST /serve or the /v2 API",
            code="task_mismatch",
        )
    return task


def _answer(result: dict[str, Any]) -> Response:
    if not result.get("ok"):
        error = result.get("error")
        raise errors.from_dict(error if isinstance(error, dict) else {})
    output = result.get("output")
    if isinstance(output, dict):
        if isinstance(output.get("Classification"), list):
            top = {c["label"]: c["probability"] for c in output["Classification"]}
            # TorchServe sends json.dumps(..., indent=2); the same bytes for its clients
            body = orjson.dumps(top, option=orjson.OPT_INDENT_2)
            return Response(body, mimetype="application/json")
        image = output.get("B64Image")
        if isinstance(image, dict) and isinstance(image.get("image"), bytes | bytearray):
            return Response(bytes(image["image"]), mimetype=PNG)
        if isinstance(output.get("Text"), str):
            return Response(output["Text"], mimetype="text/plain")
    raise errors.AutodepError("the worker returned an output /predictions cannot encode")
