"""web.torchserving_json: torch-serving's typed JSON to wire values and back, every dtype exact
(int64 at its limits, float16, bool), and a precise error for each mistake."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest

from autodep_celery import typed
from autodep_celery.web import torchserving_json as tj
from autodep_celery.web.torchserving_json import TypedJSONError, parse_body, parse_value, to_json

pytestmark = pytest.mark.unit

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
VALUES = {
    "uint8": [0, 1, 254, 255],
    "int8": [-128, -1, 0, 127],
    "int16": [-32768, -2, 3, 32767],
    "int32": [-(2**31), -5, 7, 2**31 - 1],
    "int64": [INT64_MIN, -(2**53) - 1, 2**53 + 1, INT64_MAX],
    "float16": [0.5, -2.0, 65504.0, 2.0**-24],
    "float32": [0.1, -1.5, 3.4028234663852886e38, 1e-45],
    "float64": [0.1, -1e308, 5e-324, 1 / 3],
    "bool": [True, False, False, True],
}


def tensor(dtype: str, shape: list[int], value: list[Any]) -> dict[str, Any]:
    return {"type": "tensor", "shape": shape, "value": value, "data_type": dtype}


def through_json(body: Any) -> Any:
    """As it arrives: orjson-encoded and parsed again (exact ints, doubles)."""
    return orjson.loads(orjson.dumps(body))


def float32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


@pytest.mark.parametrize("dtype", list(typed.DTYPES))
def test_every_dtype_round_trips(dtype: str) -> None:
    sent = tensor(dtype, [2, 2], VALUES[dtype])
    [wire] = parse_body(through_json(sent))
    assert wire["dtype"] == dtype and wire["shape"] == [2, 2]
    assert len(wire["data"]) == 4 * typed.DTYPES[dtype].size
    back = through_json(to_json(wire))
    expected = [float32(v) for v in VALUES[dtype]] if dtype == "float32" else VALUES[dtype]
    assert back == {"type": "tensor", "data_type": dtype, "shape": [2, 2], "value": expected}
    assert [type(v) for v in back["value"]] == [type(v) for v in expected]


def test_int64_limits_are_exact_through_the_bytes() -> None:
    [wire] = parse_body(through_json(tensor("int64", [2], [INT64_MIN, INT64_MAX])))
    assert wire["data"] == struct.pack("<qq", INT64_MIN, INT64_MAX)
    text = orjson.dumps(to_json(wire))
    assert b"[-9223372036854775808,9223372036854775807]" in text
    scalar = parse_value({"type": "scalar", "data_type": "int64", "value": INT64_MAX}, "a")
    assert scalar == INT64_MAX and isinstance(scalar, int)
    assert to_json(INT64_MIN) == {"type": "scalar", "data_type": "int64", "value": INT64_MIN}


def test_float16_rounds_to_the_nearest_half_and_data_type_defaults_to_float32() -> None:
    [wire] = parse_body(tensor("float16", [1], [0.1]))
    assert to_json(wire)["value"] == [0.0999755859375]
    [default] = parse_body({"type": "tensor", "shape": [], "value": [1]})
    assert default["dtype"] == "float32" and default["shape"] == []
    [empty] = parse_body({"type": "tensor", "shape": [0, 3], "value": []})
    assert empty["data"] == b"" and to_json(empty)["value"] == []


def test_the_multi_signature_parses_to_one_wire_value_per_argument() -> None:
    x = tensor("float32", [1, 2], [10, 1])
    body = [
        {"type": "tensor_list", "value": [x, {"shape": [1, 3], "value": [10, 1, 1]}]},
        {"type": "tensor", "shape": [1, 3], "value": [10, 1, 1]},
        {"type": "tensor_dict", "value": {"x": x, "y": tensor("int64", [1], [7])}},
        {"type": "scalar", "data_type": "int64", "value": 30},
        {"type": "string", "value": "Hello!"},
    ]
    args = parse_body(body)
    assert len(args) == 5
    assert [a["shape"] for a in args[0]] == [[1, 2], [1, 3]]
    assert typed.is_tensor(args[1])
    assert typed.is_dict(args[2]) and [k for k, _ in args[2]["items"]] == ["x", "y"]
    assert args[3:] == [30, "Hello!"]
    # one typed value is the single argument
    assert parse_body({"type": "string", "value": "hi"}) == ["hi"]
    assert parse_body([]) == []


def test_extensions_mirror_the_output_forms() -> None:
    body = [
        [{"type": "string", "value": "a"}, {"type": "string", "value": "b"}],
        None,
        {
            "type": "generic_dict",
            "value": {"n": {"type": "scalar", "data_type": "bool", "value": 1}},
        },
        {"type": "scalar", "data_type": "float32", "value": 2},
    ]
    assert parse_body(body) == [["a", "b"], None, typed.make_dict([("n", True)]), 2.0]


def test_output_tags() -> None:
    wire = typed.make_dict(
        [
            ("out", [[typed.tensor_from_values("int32", [1], [3])], "s", 30]),
            (1, None),
            ("f", 0.5),
            ("b", False),
        ]
    )
    assert to_json(wire) == {
        "type": "generic_dict",
        "value": {
            "out": [
                [{"type": "tensor", "data_type": "int32", "shape": [1], "value": [3]}],
                {"type": "string", "value": "s"},
                {"type": "scalar", "data_type": "int64", "value": 30},
            ],
            "1": None,
            "f": {"type": "scalar", "data_type": "float64", "value": 0.5},
            "b": {"type": "scalar", "data_type": "bool", "value": False},
        },
    }


def nest(depth: int) -> list[Any]:
    return [] if depth == 0 else [nest(depth - 1)]


T = {"type": "tensor", "shape": [2], "value": [1, 2]}
ERRORS = [
    ("x", "invalid_typed_value", "the body must be a typed value like"),
    (3, "invalid_typed_value", "the body must be a typed value like"),
    ([T, 5], "invalid_typed_value", "argument 2: must be a typed value like"),
    ({"shape": [1], "value": [1]}, "invalid_typed_value", 'argument 1 (the body): has no "type"'),
    ([{"type": "tensr", "value": 1}], "invalid_typed_value", "argument 1: unknown type 'tensr'"),
    ([{"type": 1, "value": 1}], "invalid_typed_value", "argument 1: unknown type 1"),
    (
        [{**T, "dtype": "int64"}],
        "invalid_typed_value",
        "argument 1: unknown field 'dtype' in a tensor; it takes data_type, shape, type, value; "
        "did you mean 'data_type'?",
    ),
    ([{"type": "string"}], "invalid_typed_value", 'argument 1: a string needs a "value"'),
    ([{**T, "data_type": "float128"}], "unknown_dtype", "unknown data_type 'float128'"),
    ([{**T, "data_type": None}], "unknown_dtype", "unknown data_type None"),
    ([{"type": "tensor", "value": [1]}], "invalid_typed_value", 'a tensor needs a "shape"'),
    ([{**T, "shape": [-1]}], "invalid_typed_value", "shape must be a list of whole numbers >= 0"),
    ([{**T, "shape": "2"}], "invalid_typed_value", "shape must be a list of whole numbers >= 0"),
    ([{**T, "value": 1}], "invalid_typed_value", "a tensor's value must be an array of numbers"),
    ([{**T, "value": [[1], [2]]}], "invalid_typed_value", "a tensor's value must be flat"),
    (
        [{**T, "shape": [2, 2]}],
        "shape_mismatch",
        "argument 1: shape [2, 2] holds 4 values, but value has 2",
    ),
    ([{**T, "data_type": "uint8", "value": [1, 256]}], "invalid_tensor_value", "256 is out of"),
    ([{**T, "data_type": "int64", "value": [1, 2.0]}], "invalid_tensor_value", "whole numbers"),
    ([{**T, "data_type": "int64", "value": [1, 2**63]}], "invalid_tensor_value", "out of range"),
    ([{**T, "data_type": "int64", "value": [1, 1e19]}], "invalid_tensor_value", "whole numbers"),
    ([{**T, "data_type": "bool", "value": [1, 2]}], "invalid_tensor_value", "true/false"),
    ([{**T, "value": [1, "2"]}], "invalid_tensor_value", "takes numbers, not '2'"),
    ([{**T, "value": [1, True]}], "invalid_tensor_value", "takes numbers, not True"),
    ([{**T, "data_type": "float16", "value": [1, 1e6]}], "invalid_tensor_value", "float16"),
    ([{"type": "scalar", "value": 3}], "unknown_dtype", 'a scalar needs a "data_type"'),
    (
        [{"type": "scalar", "data_type": "int64", "value": 2.5}],
        "invalid_typed_value",
        "an int64 scalar takes a whole number, not 2.5",
    ),
    (
        [{"type": "scalar", "data_type": "int8", "value": 300}],
        "invalid_typed_value",
        "300 is out of range for int8 (-128..127)",
    ),
    ([{"type": "scalar", "data_type": "float32", "value": "1"}], "invalid_typed_value", "number"),
    ([{"type": "scalar", "data_type": "int32", "value": True}], "invalid_typed_value", "number"),
    ([{"type": "scalar", "data_type": "bool", "value": 2}], "invalid_typed_value", "true or"),
    ([{"type": "string", "value": 5}], "invalid_typed_value", "must be a JSON string, not 5"),
    ([{"type": "tensor_list", "value": T}], "invalid_typed_value", "an array of tensors"),
    (
        [T, {"type": "tensor_list", "value": [T, {**T, "type": "string"}]}],
        "invalid_typed_value",
        "argument 2 value[1]: must be a tensor",
    ),
    (
        [{"type": "tensor_list", "value": [T, {**T, "shape": [3]}]}],
        "shape_mismatch",
        "argument 1 value[1]: shape [3] holds 3 values",
    ),
    ([{"type": "tensor_list", "value": [3]}], "invalid_typed_value", "value[0]: must be a tensor"),
    ([{"type": "tensor_dict", "value": [T]}], "invalid_typed_value", "an object of tensors"),
    (
        [{"type": "tensor_dict", "value": {"x": {**T, "data_type": "int3"}}}],
        "unknown_dtype",
        "argument 1 value['x']: unknown data_type 'int3'",
    ),
    (
        [{"type": "tensor_dict", "value": {"x": {**T, "dtype": "int32"}}}],
        "invalid_typed_value",
        "unknown field 'dtype' in a tensor",
    ),
    ([{"type": "generic_dict", "value": 1}], "invalid_typed_value", "must be an object"),
    ([[[1]]], "invalid_typed_value", "argument 1[0][0]: must be a typed value"),
    ([nest(tj.MAX_DEPTH + 2)], "invalid_typed_value", "nested deeper than 32 levels"),
]


@pytest.mark.parametrize(("body", "code", "message"), ERRORS, ids=range(len(ERRORS)))
def test_each_mistake_is_a_400_saying_where_and_what(body: Any, code: str, message: str) -> None:
    with pytest.raises(TypedJSONError) as caught:
        parse_body(body)
    assert caught.value.http_status == 400
    assert caught.value.code == code
    assert message in caught.value.message, caught.value.message
