"""Turn a POST /inference body (Autodep's format, DESIGN §5) into a model and a contract Item.

Called by :mod:`web.routes.inference`. Every bad input raises an AutodepError with its own code
and a message that says how to fix it; nothing here decodes a whole image (only its header, via
:mod:`web.images`). Field names, required fields, tags, task names, bounds and defaults come
from the declarations in :mod:`web.schema`, which also render the OpenAPI schema, so the two
cannot drift; the checks stay hand-written because they are the hot path (a generic JSON Schema
validator is slower and cannot say which fix each mistake needs). Must not import torch or Flask.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from autodep_celery.web import images, schema

from autodep_celery import contract, errors
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.contract import Item

BODY_KEYS = schema.INFERENCE_REQUEST.names
REQUIRED_KEYS = schema.INFERENCE_REQUEST.required
IMAGE_TYPES = schema.IMAGE_TASKS
_NAMED_TYPES = schema.NAMED_TYPES.enum
(_CLASSIFICATION,) = schema.TAGGED_TYPES.tags  # the one tagged type; its value holds options
_CLASSIFICATION_OPTIONS = schema.CLASSIFICATION_OPTIONS.names
_TOP_N_MIN = schema.TOP_N.minimum or 1
_DEFAULT_TOP_N = schema.TOP_N.default
_IMAGE_TAG = schema.IMAGE_TAG
_TEXT_TAGS = schema.TEXT_TAGS
_EXAMPLE = (
    '{"data": {"B64Image": {"image": "<base64>"}}, '
    '"inference_type": {"ImageClassification": {"top_n": 5}}}'
)


@dataclass(frozen=True)
class InferenceRequest:
    model: ModelSettings
    item: Item


def _invalid(code: str, message: str, status: int = 422) -> errors.InvalidInput:
    return errors.InvalidInput(message, code=code, http_status=status)


def parse_inference(body: Any, settings: Settings, deadline: float) -> InferenceRequest:
    if not isinstance(body, dict):
        raise _invalid(
            "invalid_body", f"the body must be a JSON object like {_EXAMPLE}", status=400
        )
    unknown = [k for k in body if k not in BODY_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), BODY_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(BODY_KEYS)}"
        raise _invalid("unknown_field", f"unknown field {unknown[0]!r} in the body{hint}")
    model = resolve_model(body.get("model"), settings)
    for key in REQUIRED_KEYS:
        if key not in body:
            raise _invalid("missing_field", f"the body needs a {key!r} field, e.g. {_EXAMPLE}")
    task, top_n = parse_inference_type(body["inference_type"])
    if model.task is not None and model.task != task:
        raise _invalid(
            "task_mismatch",
            f"model {model.name} is configured for {model.task}, not {task}; "
            f"send inference_type {model.task} or choose another model",
        )
    kind, value = parse_data(body["data"])
    if kind == "text":
        if task != "TextToText":
            raise _invalid(
                "data_type_mismatch",
                f"Text data needs inference_type TextToText, not {task}; send B64Image data for "
                f"{task}",
            )
        return InferenceRequest(model, contract.text_item(value, deadline))
    if task not in IMAGE_TYPES:
        raise _invalid(
            "data_type_mismatch",
            f"B64Image data needs inference_type ImageClassification or ImageToImage, not {task}; "
            'send {"Text": "..."} for TextToText',
        )
    raw = images.check_b64_image(value, settings.web.max_image_pixels)
    return InferenceRequest(model, contract.image_item(task, raw, deadline, top_n))


def resolve_model(name: Any, settings: Settings) -> ModelSettings:
    names = [m.name for m in settings.models]
    if not names:
        raise errors.NoWorker("no model is configured; add a [[models]] entry to config.toml")
    if name is None:
        if len(names) == 1:
            return settings.models[0]
        raise _invalid(
            "model_required",
            f'several models are served ({", ".join(names)}); say which with "model": "<name>"',
            status=400,
        )
    if not isinstance(name, str):
        raise _invalid("invalid_model", f"model must be a string, one of: {', '.join(names)}")
    model = settings.model(name)
    if model is None:
        raise errors.UnknownModel(f"unknown model {name!r}; served models: {', '.join(names)}")
    return model


def parse_inference_type(value: Any) -> tuple[str, int | None]:
    """Return (task, top_n); top_n only for ImageClassification."""
    allowed = '"ImageToImage", "TextToText" or {"ImageClassification": {"top_n": N}}'
    if value in _NAMED_TYPES:
        # lenient: the bare name ImageClassification means the default top_n
        return value, _DEFAULT_TOP_N if value == _CLASSIFICATION else None
    if isinstance(value, dict) and len(value) == 1 and _CLASSIFICATION in value:
        options = value[_CLASSIFICATION]
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise _invalid("invalid_inference_type", 'ImageClassification takes {"top_n": N}')
        extra = [k for k in options if k not in _CLASSIFICATION_OPTIONS]
        if extra:
            raise _invalid(
                "invalid_inference_type",
                f"unknown ImageClassification option {extra[0]!r}; only "
                f"{', '.join(_CLASSIFICATION_OPTIONS)} is allowed",
            )
        top_n = options.get("top_n")
        if top_n is None:
            return _CLASSIFICATION, _DEFAULT_TOP_N
        if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < _TOP_N_MIN:
            raise _invalid(
                "invalid_top_n",
                f"top_n must be a whole number >= {_TOP_N_MIN} (not {top_n!r}), e.g. 5",
            )
        return _CLASSIFICATION, top_n
    raise _invalid(
        "unknown_inference_type", f"inference_type {_short(value)} is not one of {allowed}"
    )


def parse_data(value: Any) -> tuple[str, Any]:
    """Return ("text", str) or ("image", the B64Image object)."""
    allowed = '{"B64Image": {"image": "<base64>", "height": h, "width": w}} or {"Text": "..."}'
    if not isinstance(value, dict) or len(value) != 1:
        raise _invalid("invalid_data", f"data must be an object with one key: {allowed}")
    tag, inner = next(iter(value.items()))
    if tag in _TEXT_TAGS:
        if not isinstance(inner, str):
            raise _invalid("invalid_text", f"{tag} must be a string, not {_short(inner)}")
        return "text", inner
    if tag == _IMAGE_TAG:
        return "image", inner
    raise _invalid("unknown_data_type", f"unknown data type {tag!r}; use {allowed}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
