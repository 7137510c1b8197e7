"""Typed values: how TorchScript arguments and results of any signature cross the queue.

Every tensor protocol (torch-serving's typed JSON on /serve, the Open Inference Protocol on /v2,
``inference_type: "Tensor"`` on /inference and /jobs) turns its request into a list of *wire
values*, one per ``forward()`` argument, and turns the worker's wire value back into its own
JSON. The worker (worker.tensor_values) converts wire values to and from torch objects. Wire
values are what msgpack carries natively, so a tensor travels as its raw bytes, never as a JSON
list of numbers, and int64 values stay exact::

    tensor   {"$": "tensor", "dtype": "int64", "shape": [2, 3], "data": b"<little-endian, C order>"}
    dict     {"$": "dict", "items": [[key, value], ...]}     (keys str or int, as TorchScript's)
    list     [value, ...]                                    (lists and tuples alike)
    scalar   int | float | bool
    string   str
    none     None

A plain msgpack map never appears on its own, so a value's kind is always unambiguous. Imports
the stdlib only: no torch, no numpy, no Flask.
"""

from __future__ import annotations

import array
import math
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KIND = "$"
TENSOR = "tensor"
DICT = "dict"


@dataclass(frozen=True)
class DType:
    name: str
    """torch-serving's name (``float32``); torch's is the same (``torch.float32``)."""
    oip: str
    """The Open Inference Protocol's name (``FP32``)."""
    code: str
    """struct/array format character."""
    size: int
    kind: str
    """``"int"``, ``"float"`` or ``"bool"``: which JSON values it takes."""

    @property
    def bounds(self) -> tuple[int, int] | None:
        if self.kind != "int":
            return None
        bits = self.size * 8
        if self.name.startswith("uint"):
            return 0, (1 << bits) - 1
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


DTYPES = {
    d.name: d
    for d in (
        DType("uint8", "UINT8", "B", 1, "int"),
        DType("int8", "INT8", "b", 1, "int"),
        DType("int16", "INT16", "h", 2, "int"),
        DType("int32", "INT32", "i", 4, "int"),
        DType("int64", "INT64", "q", 8, "int"),
        DType("float16", "FP16", "e", 2, "float"),
        DType("float32", "FP32", "f", 4, "float"),
        DType("float64", "FP64", "d", 8, "float"),
        DType("bool", "BOOL", "?", 1, "bool"),
    )
}
"""The nine dtypes every tensor protocol supports, by torch-serving's name."""
BY_OIP = {d.oip: d for d in DTYPES.values()}
DEFAULT_DTYPE = "float32"
_ARRAY_CODES = frozenset("BbhiqfdB")
"""Formats the array module packs and validates quickly; e (half) and ? (bool) go through struct."""
_LITTLE = sys.byteorder == "little"
_INF = math.inf
_FLOAT32_MAX = 3.4028234663852886e38


class TypedValueError(ValueError):
    """A value that cannot be a tensor of its dtype and shape; the message says which and why."""


def dtype(name: str) -> DType:
    found = DTYPES.get(name)
    if found is None:
        raise TypedValueError(f"unknown data_type {name!r}; use one of {', '.join(DTYPES)}")
    return found


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def count_elements(value: Any) -> int:
    """Tensor elements in a wire value and everything nested in it (lists, dicts), read from
    the shapes; no recursion, so a deeply nested value sent past the web cannot overflow."""
    count, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list | tuple):
            stack.extend(v)
        elif is_tensor(v):
            shape = v.get("shape")
            if isinstance(shape, list | tuple) and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                count += numel(shape)
        elif is_dict(v) and isinstance(v.get("items"), list):
            stack.extend(v["items"])
    return count


def check_shape(shape: Any, where: str = "shape") -> list[int]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise TypedValueError(f"{where} must be a list of whole numbers >= 0, not {shape!r:.80}")
    return shape


def tensor(dt: DType | str, shape: Sequence[int], data: bytes) -> dict[str, Any]:
    """A wire tensor; `data` must hold exactly numel(shape) elements of `dt`."""
    d = dtype(dt) if isinstance(dt, str) else dt
    shape = list(shape)
    if len(data) != numel(shape) * d.size:
        raise TypedValueError(
            f"a {d.name} tensor of shape {shape} holds {numel(shape) * d.size} bytes, "
            f"not {len(data)}"
        )
    return {KIND: TENSOR, "dtype": d.name, "shape": shape, "data": bytes(data)}


def make_dict(items: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    return {KIND: DICT, "items": [[k, v] for k, v in items]}


def is_tensor(value: Any) -> bool:
    return isinstance(value, dict) and value.get(KIND) == TENSOR


def is_dict(value: Any) -> bool:
    return isinstance(value, dict) and value.get(KIND) == DICT


def pack(dt: DType, values: Sequence[Any]) -> bytes:
    """`values` (a flat JSON list) as `dt`'s little-endian bytes; refuses a value that the dtype
    cannot hold exactly (a float for an int dtype, 300 for uint8, 2 for bool)."""
    if dt.kind == "bool":
        for v in values:
            if not isinstance(v, bool) and v not in (0, 1):
                raise TypedValueError(f"a bool tensor takes true/false (or 0/1), not {v!r:.40}")
        return bytes(bool(v) for v in values)
    if dt.kind == "int":
        low, high = dt.bounds or (0, 0)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypedValueError(f"an {dt.name} tensor takes whole numbers, not {v!r:.40}")
            if not low <= v <= high:
                raise TypedValueError(f"{v} is out of range for {dt.name} ({low}..{high})")
    else:
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypedValueError(f"a {dt.name} tensor takes numbers, not {v!r:.40}")
    try:
        if dt.code in _ARRAY_CODES:
            packed = array.array(dt.code, values)
            if dt.code == "f" and (_INF in packed or -_INF in packed):
                _refuse_overflow(dt, values, packed)
            if not _LITTLE:
                packed.byteswap()
            return packed.tobytes()
        return struct.pack(f"<{len(values)}{dt.code}", *values)
    except (struct.error, OverflowError) as exc:  # float16 overflow; an int past any float
        raise TypedValueError(f"a value does not fit {dt.name}: {exc}") from None


def _refuse_overflow(dt: DType, values: Sequence[Any], packed: array.array[Any]) -> None:
    """array("f") turns a finite value beyond float32's range into inf without a word."""
    for v, p in zip(values, packed, strict=True):
        if math.isinf(p) and not (isinstance(v, float) and math.isinf(v)):
            raise TypedValueError(
                f"{v!r:.40} does not fit {dt.name} (largest magnitude {_FLOAT32_MAX:.7g})"
            )


def unpack(dt: DType, data: bytes) -> list[Any]:
    """The flat list of values of a wire tensor's bytes (ints stay ints, exactly)."""
    if dt.kind == "bool":
        return [b != 0 for b in data]
    if dt.code in _ARRAY_CODES:
        values = array.array(dt.code)
        values.frombytes(data)
        if not _LITTLE:
            values.byteswap()
        return values.tolist()
    return list(struct.unpack(f"<{len(data) // dt.size}{dt.code}", data))


def tensor_from_values(dt: DType | str, shape: Any, values: Any) -> dict[str, Any]:
    """A wire tensor from a shape and a flat list of values (torch-serving's ``value``, the
    Open Inference Protocol's flattened ``data``)."""
    d = dtype(dt) if isinstance(dt, str) else dt
    shape = check_shape(shape)
    if not isinstance(values, list):
        raise TypedValueError(f"a tensor's values must be a flat list, not {values!r:.40}")
    if len(values) != numel(shape):
        raise TypedValueError(
            f"shape {shape} holds {numel(shape)} values, but {len(values)} were given"
        )
    return tensor(d, shape, pack(d, values))


def values_of(value: dict[str, Any]) -> list[Any]:
    """The flat list of a wire tensor's values."""
    return unpack(dtype(value["dtype"]), value["data"])


def flatten(nested: Any) -> list[Any]:
    """A nested JSON list as a flat one in row-major order (the OIP allows either form)."""
    if not isinstance(nested, list):
        return [nested]
    if not any(isinstance(v, list) for v in nested):
        return nested
    out: list[Any] = []
    stack = [iter(nested)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out
