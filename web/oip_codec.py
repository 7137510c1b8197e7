"""The Open Inference Protocol's (KServe v2 / Triton) inference bodies, bytes in and bytes out:
the JSON request and response objects and the binary tensor data extension.

A request body is a JSON object, optionally followed by the raw data of the inputs that carry
``parameters.binary_data_size`` (in input order; ``Inference-Header-Content-Length`` gives the
JSON's length). A response is JSON, followed by the raw data of the outputs asked for as binary
(``binary_data`` on a requested output, else the request's ``binary_data_output``). Raw data is
little-endian, row-major; a BYTES element is a 4-byte little-endian length and its bytes.

Called by web.routes.oip; web.oip_signature maps these tensors to forward() arguments and back.
Every malformed body is a 400 ClientError saying what is wrong. Must not import torch or Flask.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import orjson

from autodep_celery import errors, typed

BYTES = "BYTES"
DATATYPES = (*typed.BY_OIP, BYTES)
"""The datatypes this server takes and returns (Triton's UINT16/32/64 and BF16 are not torch
dtypes the wire carries)."""
_LENGTH = struct.Struct("<I")
_TO_BOOL = bytes([0] + [1] * 255)
"""bytes.translate table: any non-zero byte of a binary BOOL tensor is true."""


@dataclass(frozen=True)
class OipTensor:
    name: str
    datatype: str
    """One of DATATYPES."""
    shape: list[int]
    data: bytes | list[str]
    """Little-endian raw values; for BYTES, the elements as strings."""

    def values(self) -> list[Any]:
        """The flat list of element values."""
        if isinstance(self.data, list):
            return self.data
        return typed.unpack(typed.BY_OIP[self.datatype], self.data)


@dataclass(frozen=True)
class Requested:
    name: str
    binary: bool | None
    """The output's ``binary_data`` parameter, None when not given."""


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[OipTensor]
    outputs: list[Requested] | None
    """None: every output the model returns."""
    binary_output: bool
    """The request's ``binary_data_output`` parameter (default for outputs)."""
    timeout_us: int | None
    """The request's ``timeout`` parameter (microseconds, as tritonclient sends it)."""


def bad(message: str, code: str = "bad_request") -> errors.ClientError:
    return errors.ClientError(message, code=code, http_status=400)


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """The inference request in `body`; `header_length` is the Inference-Header-Content-Length
    header (None when absent: the whole body is JSON)."""
    json_end = len(body) if header_length is None else _json_length(header_length, len(body))
    try:
        request = orjson.loads(body[:json_end])
    except orjson.JSONDecodeError as exc:
        where = "" if header_length is None else f" (its first {json_end} bytes)"
        raise bad(f"the body{where} is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(request, dict):
        raise bad('the body must be a JSON object like {"inputs": [{"name", "shape", ...}]}')
    params = _object(request.get("parameters"), "parameters")
    if params.get("sequence_id") not in (None, 0, ""):
        raise bad("sequence batching (parameters.sequence_id) is not supported by this server")
    binary_output = _flag(params.get("binary_data_output"), "parameters.binary_data_output")
    timeout = params.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise bad(f"parameters.timeout must be a whole number of microseconds > 0, not {timeout}")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad(f"id must be a string, not {orjson.dumps(request_id).decode():.40}")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad('"inputs" must be a non-empty list of {"name", "shape", "datatype", "data"}')
    offset, decoded = json_end, []
    for index, spec in enumerate(inputs):
        tensor, offset = _input(spec, index, body, offset, header_length is not None)
        decoded.append(tensor)
    if offset != len(body):
        raise bad(
            f"the body has {len(body) - offset} bytes after the JSON and the binary data of the "
            "inputs; give each binary input its exact parameters.binary_data_size"
        )
    names = [t.name for t in decoded]
    if len(set(names)) != len(names):
        raise bad(f"input names must be distinct: {', '.join(names)}")
    return InferRequest(
        request_id, decoded, _outputs(request.get("outputs")), binary_output, timeout
    )


def _json_length(header: str, body_length: int) -> int:
    try:
        length = int(header)
    except ValueError:
        length = -1
    if not 0 < length <= body_length:
        raise bad(
            f"Inference-Header-Content-Length is {header!r:.40} but must be the length of the "
            f"JSON part of the body, between 1 and the body's {body_length} bytes"
        )
    return length


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"{where} must be a JSON object")
    return value


def _flag(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"{where} must be true or false")
    return value


def _input(spec: Any, index: int, body: bytes, offset: int, framed: bool) -> tuple[OipTensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise bad(f'inputs[{index}] must be an object with a "name" string')
    name = spec["name"]
    where = f"input {name!r}"
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise bad(
            f"{where} has datatype {str(datatype)!r:.40}; this server takes {', '.join(DATATYPES)}",
            "unsupported_datatype",
        )
    try:
        shape = typed.check_shape(spec.get("shape"), f"{where}'s shape")
    except typed.TypedValueError as exc:
        raise bad(str(exc)) from None
    params = _object(spec.get("parameters"), f"{where}'s parameters")
    if "shared_memory_region" in params:
        raise bad(f"{where} uses shared memory, which this server does not support; send its data")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in spec:
            raise bad(f'{where} needs "data" (or parameters.binary_data_size and binary data)')
        return _from_json(name, datatype, shape, spec["data"]), offset
    if "data" in spec:
        raise bad(f'{where} has both "data" and parameters.binary_data_size; send one')
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad(f"{where}'s parameters.binary_data_size must be a whole number >= 0")
    if not framed:
        raise bad(
            f"{where} has binary data but the request has no Inference-Header-Content-Length "
            "header giving the length of its JSON part"
        )
    if offset + size > len(body):
        raise bad(
            f"{where}'s binary_data_size is {size} but only {len(body) - offset} bytes of the "
            "body are left after the JSON and the inputs before it"
        )
    return _from_binary(name, datatype, shape, body[offset : offset + size]), offset + size


def _from_json(name: str, datatype: str, shape: list[int], data: Any) -> OipTensor:
    values = typed.flatten(data)
    count = typed.numel(shape)
    if len(values) != count:
        raise bad(f"input {name!r} has shape {shape} ({count} values) but {len(values)} values")
    if datatype == BYTES:
        if not all(isinstance(v, str) for v in values):
            raise bad(f"input {name!r} is BYTES: its data must be strings")
        return OipTensor(name, datatype, shape, values)
    try:
        return OipTensor(name, datatype, shape, typed.pack(typed.BY_OIP[datatype], values))
    except typed.TypedValueError as exc:
        raise bad(f"input {name!r} ({datatype}): {exc}") from None


def _from_binary(name: str, datatype: str, shape: list[int], raw: bytes) -> OipTensor:
    count = typed.numel(shape)
    if datatype == BYTES:
        return OipTensor(name, datatype, shape, _bytes_elements(name, raw, count))
    expected = count * typed.BY_OIP[datatype].size
    if len(raw) != expected:
        raise bad(
            f"input {name!r} ({datatype}, shape {shape}) needs {expected} bytes of binary data, "
            f"but its binary_data_size is {len(raw)}"
        )
    return OipTensor(name, datatype, shape, raw.translate(_TO_BOOL) if datatype == "BOOL" else raw)


def _bytes_elements(name: str, raw: bytes, count: int) -> list[str]:
    out: list[str] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise bad(f"input {name!r}: its BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise bad(f"input {name!r}: BYTES element {len(out)} is longer than its data")
        try:
            out.append(raw[offset : offset + length].decode())
        except UnicodeDecodeError:
            raise bad(
                f"input {name!r}: BYTES element {len(out)} is not UTF-8 text; this server passes "
                "BYTES to models as str"
            ) from None
        offset += length
    if len(out) != count:
        raise bad(f"input {name!r} has {len(out)} BYTES elements but its shape holds {count}")
    return out


def _outputs(value: Any) -> list[Requested] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad('"outputs" must be a list of {"name", "parameters"}')
    out = []
    for index, spec in enumerate(value):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise bad(f'outputs[{index}] must be an object with a "name" string')
        params = _object(spec.get("parameters"), f"output {spec['name']!r}'s parameters")
        for unsupported in ("shared_memory_region", "classification"):
            if unsupported in params:
                raise bad(f"output parameter {unsupported} is not supported by this server")
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise bad(f"output {spec['name']!r}'s parameters.binary_data must be true or false")
        out.append(Requested(spec["name"], binary))
    return out


def select(outputs: list[OipTensor], request: InferRequest) -> list[tuple[OipTensor, bool]]:
    """The outputs to answer with, in the order asked for, each with whether it goes binary."""
    if request.outputs is None:
        return [(t, request.binary_output) for t in outputs]
    by_name = {t.name: t for t in outputs}
    chosen = []
    for wanted in request.outputs:
        tensor = by_name.get(wanted.name)
        if tensor is None:
            have = ", ".join(by_name) or "none"
            raise bad(f"unknown output {wanted.name!r}; the model returned: {have}")
        binary = request.binary_output if wanted.binary is None else wanted.binary
        chosen.append((tensor, binary))
    return chosen


def encode_response(
    model: str, version: str, request_id: str | None, outputs: list[tuple[OipTensor, bool]]
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary data, the length of its JSON part."""
    described, blobs = [], []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if binary:
            raw = _raw(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor.values()
        described.append(entry)
    head: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        head["id"] = request_id
    head["outputs"] = described
    header = orjson.dumps(head)
    if not blobs:
        return header, None
    return b"".join((header, *blobs)), len(header)


def _raw(tensor: OipTensor) -> bytes:
    if isinstance(tensor.data, bytes):
        return tensor.data
    encoded = [s.encode() for s in tensor.data]
    return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
