"""Turn a POST /inference body (Autodep's format, README, HTTP API) into a model and a contract
Item.

Called by :mod:`web.routes.inference`. Every bad input raises an AutodepError with its own code
and a message that says how to fix it; nothing here decodes a whole image (only its header, via
:mod:`web.images`). Field names and required fields come from the declarations in
:mod:`web.schema`, task names, options, data tags and their checks from the registry in
:mod:`web.task_types`; both also render the OpenAPI schema, so the two cannot drift. The checks
stay hand-written because they are the hot path (a generic JSON Schema validator is slower and
cannot say which fix each mistake needs). Nothing here names a task type. Must not import torch
or Flask.
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

from autodep_celery import contract, errors
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.contract import Item
from autodep_celery.web import schema, task_types
from autodep_celery.web.task_types import DataInput, Options, WebTask, short

BODY_KEYS = schema.INFERENCE_REQUEST.names
REQUIRED_KEYS = schema.INFERENCE_REQUEST.required
_BODY_KEY_SET = frozenset(BODY_KEYS)
_TASKS = task_types.TASKS
_WITH_OPTIONS = task_types.WITH_OPTIONS
_DATA_TAGS = task_types.DATA_TAGS
_EXAMPLE = (
    '{"data": {"B64Image": {"image": "<base64>"}}, '
    '"inference_type": {"ImageClassification": {"top_n": 5}}}'
)


class InferenceRequest(NamedTuple):  # a NamedTuple: built per request, 3x cheaper than a dataclass
    model: ModelSettings
    item: Item
    task: WebTask
    """The item's task type, which also encodes its answer."""


def _one_of(forms: list[str]) -> str:
    return " or ".join(forms) if len(forms) < 3 else f"{', '.join(forms[:-1])} or {forms[-1]}"


_ALLOWED_TYPES = _one_of(
    [f'"{name}"' for name, task in _TASKS.items() if task.options is None]
    + [f'{{"{name}": {task.options_example}}}' for name, task in _WITH_OPTIONS.items()]
)
_ALLOWED_DATA = _one_of([data.example for data in task_types.INPUTS])


def _invalid(code: str, message: str, status: int = 422) -> errors.InvalidInput:
    return errors.InvalidInput(message, code=code, http_status=status)


def parse_inference(body: Any, settings: Settings, deadline: float) -> InferenceRequest:
    if not isinstance(body, dict):
        raise _invalid(
            "invalid_body", f"the body must be a JSON object like {_EXAMPLE}", status=400
        )
    if not body.keys() <= _BODY_KEY_SET:  # a set test; the list only on the error path
        unknown = [k for k in body if k not in _BODY_KEY_SET]
        close = difflib.get_close_matches(str(unknown[0]), BODY_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(BODY_KEYS)}"
        raise _invalid("unknown_field", f"unknown field {unknown[0]!r} in the body{hint}")
    model = resolve_model(body.get("model"), settings)
    for key in REQUIRED_KEYS:
        if key not in body:
            raise _invalid("missing_field", f"the body needs a {key!r} field, e.g. {_EXAMPLE}")
    task, options = parse_inference_type(body["inference_type"])
    if model.task is not None and model.task != task.name and not task.type.raw:
        raise _invalid(
            "task_mismatch",
            f"model {model.name} is configured for {model.task}, not {task.name}; "
            f"send inference_type {model.task} or choose another model",
        )
    data, value = parse_data(body["data"])
    if data is not task.data:
        raise _invalid("data_type_mismatch", _mismatch(data, task))
    item = contract.make_item(task.type, data.decode(value, settings, model), deadline, options)
    return InferenceRequest(model, item, task)


def _mismatch(data: DataInput, task: WebTask) -> str:
    takers = _one_of([name for name, t in _TASKS.items() if t.data is data])
    return (
        f"{data.tags[0]} data needs inference_type {takers}, not {task.name}; "
        f"send {task.data.hint} for {task.name}"
    )


def resolve_model(name: Any, settings: Settings) -> ModelSettings:
    models = settings.models
    if not models:
        raise errors.NoWorker("no model is configured; add a [[models]] entry to config.toml")
    if name is None:
        if len(models) == 1:
            return models[0]
        raise _invalid(
            "model_required",
            f'several models are served ({_names(models)}); say which with "model": "<name>"',
            status=400,
        )
    if not isinstance(name, str):
        raise _invalid("invalid_model", f"model must be a string, one of: {_names(models)}")
    model = settings.model(name)
    if model is None:
        raise errors.UnknownModel(f"unknown model {name!r}; served models: {_names(models)}")
    return model


def _names(models: tuple[ModelSettings, ...]) -> str:
    return ", ".join(m.name for m in models)


def parse_inference_type(value: Any) -> tuple[WebTask, Options]:
    """The task type asked for, by name or as ``{name: options}``, and its item options (a type
    named without options gets its defaults: the bare "ImageClassification" means top_n 5)."""
    if isinstance(value, str):
        task = _TASKS.get(value)
        if task is not None:
            return task, task.defaults
    elif isinstance(value, dict) and len(value) == 1:
        name, options = next(iter(value.items()))
        task = _WITH_OPTIONS.get(name)
        if task is not None:
            return task, task.read_options(options)
    raise _invalid(
        "unknown_inference_type", f"inference_type {short(value)} is not one of {_ALLOWED_TYPES}"
    )


def parse_data(value: Any) -> tuple[DataInput, Any]:
    """The kind of ``data`` (``{tag: value}``) and its value, shape-checked."""
    if not isinstance(value, dict) or len(value) != 1:
        raise _invalid("invalid_data", f"data must be an object with one key: {_ALLOWED_DATA}")
    tag, inner = next(iter(value.items()))
    data = _DATA_TAGS.get(tag)
    if data is None:
        raise _invalid("unknown_data_type", f"unknown data type {tag!r}; use {_ALLOWED_DATA}")
    return data, data.check(tag, inner)
