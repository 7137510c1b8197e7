"""web.oip_codec: Open Inference Protocol bodies, JSON and binary, every datatype, and every
malformed body a 400 ClientError that says what is wrong."""

from __future__ import annotations

import struct

import orjson
import pytest

from autodep_celery import errors, typed
from autodep_celery.web import oip_codec
from autodep_celery.web.oip_codec import OipTensor, decode_request, encode_response, select

pytestmark = pytest.mark.unit

SAMPLES = {
    "BOOL": [True, False, True, True],
    "UINT8": [0, 1, 200, 255],
    "INT8": [-128, -1, 0, 127],
    "INT16": [-32768, 7, 300, 32767],
    "INT32": [-(2**31), 0, 5, 2**31 - 1],
    "INT64": [-(2**63), 2**53 + 1, 0, 2**63 - 1],  # must stay exact: no float on the way
    "FP16": [0.5, -2.0, 1024.0, 0.25],
    "FP32": [0.1, -1.5, 3.25, 1e10],
    "FP64": [0.1, -1.5, 1e300, 2**-30],
    "BYTES": ["a", "", "héllo", "x y"],
}


def body(*inputs: dict, **extra: object) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def framed(request: dict, *blobs: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(request)
    return head + b"".join(blobs), str(len(head))


def raw(datatype: str, values: list) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    return typed.pack(typed.BY_OIP[datatype], values)


def refused(data: bytes, header: str | None = None) -> str:
    with pytest.raises(errors.ClientError) as info:
        decode_request(data, header)
    assert info.value.http_status == 400
    return info.value.message


@pytest.mark.parametrize("datatype", SAMPLES)
def test_json_input_every_datatype(datatype: str) -> None:
    values = SAMPLES[datatype]
    req = decode_request(
        body({"name": "x", "shape": [2, 2], "datatype": datatype, "data": values}), None
    )
    (tensor,) = req.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, [2, 2])
    got = tensor.values()
    if datatype in ("FP32", "FP16"):
        assert got == pytest.approx(values, rel=1e-3)
    else:
        assert got == values


@pytest.mark.parametrize("datatype", SAMPLES)
def test_binary_input_every_datatype(datatype: str) -> None:
    values = SAMPLES[datatype]
    data = raw(datatype, values)
    spec = {
        "name": "x",
        "shape": [4],
        "datatype": datatype,
        "parameters": {"binary_data_size": len(data)},
    }
    req = decode_request(*framed({"inputs": [spec]}, data))
    got = req.inputs[0].values()
    assert got == (values if datatype not in ("FP32", "FP16") else pytest.approx(values, rel=1e-3))


@pytest.mark.parametrize("datatype", SAMPLES)
@pytest.mark.parametrize("binary", [False, True])
def test_output_every_datatype_json_and_binary(datatype: str, binary: bool) -> None:
    values = SAMPLES[datatype]
    data = values if datatype == "BYTES" else raw(datatype, values)
    tensor = OipTensor("OUTPUT__0", datatype, [4], data)
    payload, length = encode_response("m", "1", "req-1", [(tensor, binary)])
    head = orjson.loads(payload[: length or len(payload)])
    assert head["model_name"] == "m" and head["model_version"] == "1" and head["id"] == "req-1"
    (out,) = head["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("OUTPUT__0", datatype, [4])
    if binary:
        assert payload[length:] == raw(datatype, values)
        assert out["parameters"] == {"binary_data_size": len(payload) - length}
        assert "data" not in out
    else:
        assert length is None
        assert out["data"] == (
            values if datatype not in ("FP32", "FP16") else pytest.approx(values, rel=1e-3)
        )


def test_nested_data_is_row_major() -> None:
    spec = {"name": "x", "shape": [2, 3], "datatype": "INT32", "data": [[1, 2, 3], [4, 5, 6]]}
    assert decode_request(body(spec), None).inputs[0].values() == [1, 2, 3, 4, 5, 6]


def test_binary_inputs_take_their_bytes_in_order_between_json_ones() -> None:
    a, c = raw("FP32", [1.0, 2.0]), raw("BYTES", ["hi", "there"])
    request = {
        "id": "7",
        "parameters": {"binary_data_output": True, "timeout": 5000},
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "b", "shape": [1], "datatype": "INT64", "data": [3]},
            {
                "name": "c",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(c)},
            },
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }
    req = decode_request(*framed(request, a, c))
    assert [t.values() for t in req.inputs] == [[1.0, 2.0], [3], ["hi", "there"]]
    assert req.id == "7" and req.binary_output and req.timeout_us == 5000
    assert [(o.name, o.binary) for o in req.outputs or []] == [("y", False), ("z", None)]


def test_binary_bool_bytes_are_normalised() -> None:
    spec = {"name": "x", "shape": [3], "datatype": "BOOL", "parameters": {"binary_data_size": 3}}
    req = decode_request(*framed({"inputs": [spec]}, b"\x00\x07\x01"))
    assert req.inputs[0].data == b"\x00\x01\x01"


def test_select_follows_the_request() -> None:
    y = OipTensor("y", "INT64", [1], raw("INT64", [1]))
    z = OipTensor("z", "BYTES", [1], ["s"])
    spec = {"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}
    everything = decode_request(body(spec, parameters={"binary_data_output": True}), None)
    assert select([y, z], everything) == [(y, True), (z, True)]
    req = decode_request(
        body(
            spec,
            parameters={"binary_data_output": True},
            outputs=[{"name": "z"}, {"name": "y", "parameters": {"binary_data": False}}],
        ),
        None,
    )
    assert select([y, z], req) == [(z, True), (y, False)]
    unknown = decode_request(body(spec, outputs=[{"name": "nope"}]), None)
    with pytest.raises(errors.ClientError, match="unknown output 'nope'.*y, z"):
        select([y, z], unknown)


def test_binary_bytes_output_is_length_prefixed() -> None:
    payload, length = encode_response(
        "m", "1", None, [(OipTensor("s", "BYTES", [2], ["ab", ""]), True)]
    )
    assert "id" not in orjson.loads(payload[:length])
    assert payload[length:] == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


X = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}
BIN = {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}


@pytest.mark.parametrize(
    ("data", "header", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "must be a JSON object"),
        (body(), None, "non-empty list"),
        (orjson.dumps({"inputs": [X]}) + b"\x00" * 8, "nine", "Inference-Header-Content-Length"),
        (orjson.dumps({"inputs": [BIN]}) + b"\x00" * 8, "0", "Inference-Header-Content-Length"),
        (orjson.dumps({"inputs": [BIN]}) + b"\x00" * 8, "9999", "between 1 and the body's"),
        (
            orjson.dumps({"inputs": [BIN]}) + b"\x00" * 4,
            str(len(orjson.dumps({"inputs": [BIN]}))),
            "binary_data_size is 8 but only 4 bytes",
        ),
        (
            orjson.dumps({"inputs": [BIN]}) + b"\x00" * 12,
            str(len(orjson.dumps({"inputs": [BIN]}))),
            "4 bytes after the JSON",
        ),
        (body(BIN), None, "no Inference-Header-Content-Length"),
        (body({**X, "data": [1, 2, 3]}), None, "shape [2] (2 values) but 3 values"),
        (body({**X, "shape": [2, -1]}), None, "whole numbers >= 0"),
        (body({**X, "datatype": "UINT32"}), None, "datatype 'UINT32'; this server takes UINT8"),
        (body({**X, "datatype": "BF16"}), None, "BF16"),
        (body({**X, "datatype": "INT8", "data": [1, 300]}), None, "out of range for int8"),
        (body({**X, "datatype": "INT32", "data": [1, 2.5]}), None, "whole numbers"),
        (body({**X, "datatype": "BYTES", "data": [1, 2]}), None, "must be strings"),
        (body({"name": "x", "shape": [2], "datatype": "FP32"}), None, 'needs "data"'),
        (body({**BIN, "data": [1, 2]}), None, "both"),
        (body({**X, "parameters": {"shared_memory_region": "r"}}), None, "shared memory"),
        (body(X, X), None, "distinct"),
        (body({"shape": [1]}), None, '"name" string'),
        (body(X, parameters={"sequence_id": 3}), None, "sequence"),
        (body(X, parameters={"binary_data_output": "yes"}), None, "true or false"),
        (body(X, outputs={"name": "y"}), None, '"outputs" must be a list'),
        (
            body(X, outputs=[{"name": "y", "parameters": {"classification": 3}}]),
            None,
            "classification",
        ),
        (body(X, id=5), None, "id must be a string"),
    ],
)
def test_malformed_bodies_are_400_with_a_reason(
    data: bytes, header: str | None, message: str
) -> None:
    assert message in refused(data, header)


def test_binary_size_must_fit_the_shape() -> None:
    spec = {**BIN, "parameters": {"binary_data_size": 4}}
    assert "needs 8 bytes of binary data, but its binary_data_size is 4" in refused(
        *framed({"inputs": [spec]}, b"\x00" * 4)
    )


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x02\x00", "ends inside an element's 4-byte length"),
        (b"\x09\x00\x00\x00ab", "longer than its data"),
        (b"\x01\x00\x00\x00\xff", "not UTF-8"),
        (b"\x01\x00\x00\x00a", "1 BYTES elements but its shape holds 2"),
    ],
)
def test_malformed_binary_bytes(blob: bytes, message: str) -> None:
    spec = {
        "name": "s",
        "shape": [2],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(blob)},
    }
    assert message in refused(*framed({"inputs": [spec]}, blob))


def test_datatypes_match_the_typed_table() -> None:
    assert set(oip_codec.DATATYPES) == {d.oip for d in typed.DTYPES.values()} | {"BYTES"}
