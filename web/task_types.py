"""The web half of each inference task type: how a request asks for it (``inference_type``, by
name or with options), which ``data`` it takes, its output's spec, and how its output is
written back as JSON.

Each type is a `WebTask` registered in `TASKS` under its name in
:mod:`autodep_celery.task_types` (a test checks that every served type has exactly one entry
here). :mod:`web.validation` parses requests through these objects, :mod:`web.schema` composes
their specs into the /inference request and response (so the OpenAPI document lists exactly the
registered types), and :mod:`web.responses` encodes outputs with them. Must not import torch or
Flask.
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from autodep_celery import contract, errors, input_limits, task_types
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.web import images, torchserving_json
from autodep_celery.web.spec import ArrayOf, Integer, Number, Object, Spec, String

Options = dict[str, Any]
"""A task type's item fields besides its input, e.g. ``{"top_n": 5}``."""
Output = dict[str, Any]


def short(value: Any) -> str:
    """`value`'s repr, cut to 80 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---- data: the forms of a request's "data" --------------------------------------------------
class DataInput:
    """One kind of ``data`` (``{"B64Image": ...}``, ``{"Text": ...}``) and the item input it
    becomes."""

    def __init__(self, kind: str, tags: tuple[str, ...], spec: Spec, example: str, hint: str):
        self.kind = kind
        """Its input kind in autodep_celery.task_types (the item's ``kind``)."""
        self.tags = tags
        """The ``data`` keys it comes under; messages name it by the first."""
        self.spec = spec
        self.example = example
        """How the list of allowed ``data`` forms shows it."""
        self.hint = hint
        """How a data_type_mismatch message asks for it."""

    def check(self, tag: str, value: Any) -> Any:
        """A cheap check while ``data`` is read, before the task is matched against it."""
        return value

    def decode(self, value: Any, settings: Settings, model: ModelSettings) -> Any:
        """The item's input for `model`, once the task is known to take this data; an input
        larger than the model takes is refused here (autodep_celery.input_limits)."""
        return value


class ImageData(DataInput):
    def decode(self, value: Any, settings: Settings, model: ModelSettings) -> bytes:
        return images.check_b64_image(value, settings.web.max_image_pixels, model)


class TextData(DataInput):
    def check(self, tag: str, value: Any) -> str:
        if not isinstance(value, str):
            raise errors.InvalidInput(
                f"{tag} must be a string, not {short(value)}", code="invalid_text"
            )
        return value


TEXT = String(description="The input text.")
IMAGE_DATA = ImageData(
    task_types.IMAGE,
    (images.TAG,),
    images.B64_IMAGE,
    example='{"B64Image": {"image": "<base64>", "height": h, "width": w}}',
    hint="B64Image data",
)
TEXT_DATA = TextData(
    task_types.TEXT,
    ("Text", "text"),  # Autodep sends "Text"; "text" is accepted too
    TEXT,
    example='{"Text": "..."}',
    hint='{"Text": "..."}',
)


class ArgsData(DataInput):
    """torch-serving's typed JSON (web.torchserving_json): one typed value per argument."""

    def check(self, tag: str, value: Any) -> Any:
        if not isinstance(value, list | dict):
            raise errors.InvalidInput(
                f"{tag} must be an array of typed values, one per forward() argument, like "
                f"{self.example}; not {short(value)}",
                code="invalid_typed_value",
            )
        return value

    def decode(self, value: Any, settings: Settings, model: ModelSettings) -> list[Any]:
        try:
            args = torchserving_json.parse_body(value)
        except torchserving_json.TypedJSONError as exc:  # 400 on /serve; 422 here, as data
            raise errors.InvalidInput(f"data.Tensor {exc.message}", code=exc.code) from None
        input_limits.check_tensor_args(args, model)
        return args


ARGS_DATA = ArgsData(
    task_types.ARGS,
    ("Tensor",),
    torchserving_json.BODY,
    example='{"Tensor": [{"type": "tensor", "shape": [1, 2], "value": [10, 1]}, ...]}',
    hint='{"Tensor": [<typed value>, ...]} (one per forward() argument)',
)
INPUTS = (IMAGE_DATA, TEXT_DATA, ARGS_DATA)
DATA_TAGS = {tag: data for data in INPUTS for tag in data.tags}


# ---- task types -----------------------------------------------------------------------------
class WebTask:
    """The web half of one task type; subclasses set the class attributes and override hooks."""

    name: ClassVar[str]
    data: ClassVar[DataInput]
    output: ClassVar[dict[str, Spec]]
    """Output tag -> its spec, for the OpenAPI document."""
    description: ClassVar[str]
    """What the type computes, for the /inference operation's description."""
    options: ClassVar[Object | None] = None
    """Its options when it may be asked for as ``{name: options}``; None: by name only."""
    options_example: ClassVar[str] = ""
    defaults: ClassVar[Options] = {}
    """The options of a request that names the type without any."""

    def __init__(self) -> None:
        self.type = task_types.REGISTRY[self.name]
        self.option_names = self.options.names if self.options is not None else ()
        self._option_set = frozenset(self.option_names)

    def read_options(self, value: Any) -> Options:
        """The item fields of ``{name: value}``: unknown keys refused, then `parse_options`."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise _invalid_type(f"{self.name} takes {self.options_example}")
        if not value.keys() <= self._option_set:
            extra = [k for k in value if k not in self._option_set]
            raise _invalid_type(
                f"unknown {self.name} option {extra[0]!r}; only "
                f"{', '.join(self.option_names)} is allowed"
            )
        return self.parse_options(value)

    def parse_options(self, options: dict[str, Any]) -> Options:
        """Check the values of `options`, whose keys are all declared; fill in defaults."""
        return self.defaults

    def encode(self, output: Output) -> Output:
        """The worker's output as JSON for the HTTP answer."""
        return output


def _invalid_type(message: str) -> errors.InvalidInput:
    return errors.InvalidInput(message, code="invalid_inference_type")


TOP_N = Integer(
    minimum=1,
    default=contract.DEFAULT_TOP_N,
    description="How many classes to return, most probable first.",
)
_TOP_N_MIN = TOP_N.minimum or 1
CLASSIFICATION = ArrayOf(
    Object(
        {"probability": Number(minimum=0, maximum=1), "label": String()},
        required=("probability", "label"),
    ),
    description="top_n classes, most probable first.",
)


class ImageClassification(WebTask):
    name = "ImageClassification"
    data = IMAGE_DATA
    output = {"Classification": CLASSIFICATION}
    description = "ImageClassification normalises with the model's mean/std and applies softmax"
    options = Object(
        {"top_n": TOP_N}, nullable=True, description="null or {} means the default top_n."
    )
    options_example = '{"top_n": N}'
    defaults = {"top_n": TOP_N.default}

    def parse_options(self, options: dict[str, Any]) -> Options:
        top_n = options.get("top_n")
        if top_n is None:
            return self.defaults
        if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < _TOP_N_MIN:
            raise errors.InvalidInput(
                f"top_n must be a whole number >= {_TOP_N_MIN} (not {top_n!r}), e.g. 5",
                code="invalid_top_n",
            )
        return {"top_n": top_n}


OUTPUT_IMAGE = Object(
    {
        "image": String(format="byte", description="Base64 PNG."),
        "height": Integer(minimum=1),
        "width": Integer(minimum=1),
    },
    required=("image", "height", "width"),
)


class ImageToImage(WebTask):
    name = "ImageToImage"
    data = IMAGE_DATA
    output = {"B64Image": OUTPUT_IMAGE}
    description = (
        "ImageToImage scales to 0..1 and returns a 3-channel output as a PNG, a segmentation "
        "output as a colour-coded map"
    )

    def encode(self, output: Output) -> Output:
        # the queue carries raw PNG bytes (msgpack); JSON carries them as base64
        image = output.get("B64Image")
        if isinstance(image, dict) and isinstance(image.get("image"), bytes | bytearray):
            return {
                "B64Image": {**image, "image": base64.b64encode(image["image"]).decode("ascii")}
            }
        return output


class TextToText(WebTask):
    name = "TextToText"
    data = TEXT_DATA
    output = {"Text": TEXT}
    description = "TextToText returns the model's string"


class Tensor(WebTask):
    name = "Tensor"
    data = ARGS_DATA
    output = {"Tensor": torchserving_json.OUTPUT}
    description = (
        "Tensor calls forward() on any model with torch-serving's typed values, one per "
        "argument, and returns its result as typed values"
    )

    def encode(self, output: Output) -> Output:
        return {"Tensor": torchserving_json.to_json(output.get("Tensor"))}


TASKS: dict[str, WebTask] = {
    t.name: t for t in (ImageClassification(), ImageToImage(), TextToText(), Tensor())
}
"""The registry: every type a request may ask for, by name."""
WITH_OPTIONS = {name: t for name, t in TASKS.items() if t.options is not None}
"""The types that may also be asked for as ``{name: options}``."""
