"""The Open Inference Protocol's (/v2) bodies for GET /openapi.json: declared here, beside
web.schema's, so the OIP routes document themselves with the same :func:`web.openapi.operation`.
Parsing is web.oip_codec's (the binary tensor data extension is not JSON Schema). Must not
import torch or Flask.
"""

from __future__ import annotations

from autodep_celery.web.oip_codec import DATATYPES
from autodep_celery.web.spec import (
    AnyValue,
    ArrayOf,
    Boolean,
    Integer,
    MapOf,
    Object,
    String,
)

SHAPE = ArrayOf(Integer(), description="Row-major dimensions; -1 in metadata: not fixed.")
DATATYPE = String(enum=DATATYPES)
PARAMETERS = MapOf(
    AnyValue(),
    description="binary_data_size (an input's or output's byte count "
    "after the JSON), binary_data (a requested output), binary_data_output.",
)
TENSOR_DATA = AnyValue(
    description="Values, flat or nested row-major; BYTES as strings. Left out "
    "when parameters.binary_data_size is given."
)

INFER_REQUEST = Object(
    {
        "id": String(),
        "parameters": PARAMETERS,
        "inputs": ArrayOf(
            Object(
                {
                    "name": String(
                        description="A forward() argument's name, INPUT__<i>, or any name "
                        "(then inputs go in order); <arg>.<i> / <arg>.<key> for the elements "
                        "of a List, Tuple or Dict argument."
                    ),
                    "shape": SHAPE,
                    "datatype": DATATYPE,
                    "parameters": PARAMETERS,
                    "data": TENSOR_DATA,
                },
                required=("name", "shape", "datatype"),
            ),
            min_items=1,
        ),
        "outputs": ArrayOf(
            Object({"name": String(), "parameters": PARAMETERS}, required=("name",))
        ),
    },
    required=("inputs",),
    description="The JSON part of the body; with Inference-Header-Content-Length, the raw data "
    "of binary inputs follows it in input order.",
    example={
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}]
    },
)
OUTPUT = Object(
    {
        "name": String(),
        "shape": SHAPE,
        "datatype": DATATYPE,
        "parameters": PARAMETERS,
        "data": TENSOR_DATA,
    },
    required=("name", "shape", "datatype"),
)
INFER_RESPONSE = Object(
    {
        "model_name": String(),
        "model_version": String(),
        "id": String(),
        "outputs": ArrayOf(OUTPUT),
    },
    required=("model_name", "outputs"),
    description="JSON; outputs asked for as binary data follow it (Inference-Header-Content-"
    "Length gives the JSON's length).",
)
METADATA_TENSOR = Object(
    {"name": String(), "datatype": DATATYPE, "shape": SHAPE}, required=("name", "datatype", "shape")
)
MODEL_METADATA = Object(
    {
        "name": String(),
        "versions": ArrayOf(String()),
        "platform": String(),
        "inputs": ArrayOf(METADATA_TENSOR),
        "outputs": ArrayOf(METADATA_TENSOR),
        "parameters": MapOf(AnyValue()),
    },
    required=("name", "platform", "inputs", "outputs"),
    description="Inputs and outputs from the forward() signature a worker published; empty, "
    "with parameters.note saying so, before any worker has loaded the model.",
)
SERVER_METADATA = Object(
    {"name": String(), "version": String(), "extensions": ArrayOf(String())},
    required=("name", "version", "extensions"),
)
LIVE = Object({"live": Boolean()}, required=("live",))
READY = Object({"ready": Boolean()}, required=("ready",))
MODEL_READY = Object({"name": String(), "ready": Boolean()}, required=("name", "ready"))


def error(description: str) -> Object:
    """The protocol's error body, ``{"error": "<message>"}`` (not web.schema.ERROR)."""
    return Object({"error": String()}, required=("error",), closed=False, description=description)


ERRORS = {
    400: error("Malformed request: the message says what is wrong"),
    404: error("Unknown model or version"),
    413: error("Body larger than web.max_body_bytes"),
    422: error("The model rejected the arguments (type or count)"),
    429: error("Too many requests waiting for this model (Retry-After)"),
    500: error("Model or server fault"),
    503: error("No worker for the model, or Redis/broker unreachable"),
    504: error("The request's deadline passed"),
}
