"""torch-serving's typed JSON <-> wire values (autodep_celery.typed): the body of POST /serve and
the ``data.Tensor`` of POST /inference, and the answers of both.

Input, one typed value or an array of them, one per ``forward()`` argument::

    {"type": "tensor", "shape": [1, 2], "value": [10, 1], "data_type": "float32"}
    {"type": "tensor_list", "value": [<tensor>, ...]}
    {"type": "tensor_dict", "value": {"x": <tensor>, ...}}
    {"type": "scalar", "data_type": "int64", "value": 3}
    {"type": "string", "value": "Hello!"}

``value`` is flat, in row-major order; ``data_type`` defaults to float32 for a tensor and is
required for a scalar. Beyond torch-serving, what its answers use is accepted too: an array
inside the argument array is a list argument (List[str], Tuple[int, int]), ``generic_dict`` a
dict of typed values, ``null`` None. Output: the same tags, ``scalar`` as int64, float64 or
bool, dicts as ``generic_dict``, lists and tuples as plain arrays, None as null.

orjson parses every integer of int64's range exactly, and nothing here goes through a float, so
int64 values round-trip exactly. Each mistake raises `TypedJSONError` (400) naming the argument,
the field and what was expected. Called by :mod:`web.routes.torchserving` and the Tensor type of
:mod:`web.task_types`; must not import torch or Flask.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from autodep_celery import errors, typed
from autodep_celery.web.spec import (
    AnyValue,
    ArrayOf,
    Boolean,
    Integer,
    MapOf,
    Null,
    Number,
    Object,
    OneOf,
    Spec,
    String,
)

MAX_DEPTH = 32
"""Deepest nesting of arrays and dicts in one argument (the parser recurses)."""
INPUT_TAGS = ("tensor", "tensor_list", "tensor_dict", "scalar", "string", "generic_dict")
_EXAMPLE = '{"type": "tensor", "shape": [1, 2], "value": [10, 1]}'
_DTYPES = ", ".join(typed.DTYPES)
_ALIASES = {"dtype": "data_type", "datatype": "data_type", "values": "value", "data": "value"}
"""Field names other formats use (numpy, the Open Inference Protocol) -> torch-serving's."""


class TypedJSONError(errors.ClientError):
    """A body that is not torch-serving's typed JSON; the message says where and how to fix."""

    http_status = 400
    code = "invalid_typed_value"


def _error(where: str, message: str, code: str = TypedJSONError.code) -> TypedJSONError:
    return TypedJSONError(f"{where}: {message}", code=code)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- input ----------------------------------------------------------------------------------
def parse_body(body: Any) -> list[Any]:
    """The wire arguments of a typed body: an array gives one per element, a typed value one."""
    if isinstance(body, list):
        return [parse_value(v, f"argument {i}") for i, v in enumerate(body, start=1)]
    if isinstance(body, dict):
        return [parse_value(body, "argument 1 (the body)")]
    raise TypedJSONError(
        f"the body must be a typed value like {_EXAMPLE}, or an array of them (one per "
        f"forward() argument), not {short(body)}"
    )


def parse_value(value: Any, where: str, depth: int = 0) -> Any:
    """One typed value (or an array of them, or null) as a wire value."""
    if depth > MAX_DEPTH:
        raise _error(where, f"nested deeper than {MAX_DEPTH} levels")
    if value is None:
        return None
    if isinstance(value, list):
        return [parse_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        raise _error(
            where,
            f"must be a typed value like {_EXAMPLE} (or an array of them), not {short(value)}",
        )
    tag = value.get("type")
    if tag is None:
        raise _error(where, f'has no "type"; give one of {", ".join(INPUT_TAGS)}')
    parser = _PARSERS.get(tag) if isinstance(tag, str) else None
    if parser is None:
        raise _error(where, f"unknown type {short(tag)}; use one of {', '.join(INPUT_TAGS)}")
    fields = _FIELDS[tag]
    if not value.keys() <= fields:
        raise _unknown_field(where, tag, value, fields)
    if "value" not in value:
        raise _error(where, f'a {tag} needs a "value"')
    return parser(value, where, depth)


def _unknown_field(
    where: str, tag: str, value: dict[str, Any], fields: frozenset[str]
) -> TypedJSONError:
    extra = sorted(str(k) for k in value if k not in fields)[0]
    alias = _ALIASES.get(extra)
    close = alias if alias in fields else None
    close = close or next(iter(difflib.get_close_matches(extra, fields, n=1)), None)
    hint = f"; did you mean {close!r}?" if close else ""
    return _error(
        where, f"unknown field {extra!r} in a {tag}; it takes {', '.join(sorted(fields))}{hint}"
    )


def parse_tensor(value: dict[str, Any], where: str, depth: int = 0) -> dict[str, Any]:
    tag = value.get("type", "tensor")
    if tag != "tensor":
        raise _error(where, f"must be a tensor ({_EXAMPLE}), not a {short(tag)}")
    name = value.get("data_type", typed.DEFAULT_DTYPE)
    dt = typed.DTYPES.get(name) if isinstance(name, str) else None
    if dt is None:
        raise _error(
            where, f"unknown data_type {short(name)}; use one of {_DTYPES}", "unknown_dtype"
        )
    if "shape" not in value:
        raise _error(where, 'a tensor needs a "shape", e.g. [2, 3]')
    flat = value.get("value")
    if not isinstance(flat, list):
        raise _error(where, f"a tensor's value must be an array of numbers, not {short(flat)}")
    if any(isinstance(v, list) for v in flat):
        raise _error(
            where,
            "a tensor's value must be flat, in row-major order (shape [2, 3] takes 6 numbers)",
        )
    try:
        shape = typed.check_shape(value["shape"])
    except typed.TypedValueError as exc:
        raise _error(where, str(exc)) from None
    if len(flat) != typed.numel(shape):
        raise _error(
            where,
            f"shape {shape} holds {typed.numel(shape)} values, but value has {len(flat)}",
            "shape_mismatch",
        )
    try:
        return typed.tensor(dt, shape, typed.pack(dt, flat))
    except typed.TypedValueError as exc:
        raise _error(where, str(exc), "invalid_tensor_value") from None


def _tensor_list(value: dict[str, Any], where: str, depth: int) -> list[Any]:
    items = value["value"]
    if not isinstance(items, list):
        raise _error(
            where, f"a tensor_list's value must be an array of tensors, not {short(items)}"
        )
    return [_element(v, f"{where} value[{i}]") for i, v in enumerate(items)]


def _tensor_dict(value: dict[str, Any], where: str, depth: int) -> dict[str, Any]:
    items = value["value"]
    if not isinstance(items, dict):
        raise _error(
            where, f"a tensor_dict's value must be an object of tensors, not {short(items)}"
        )
    return typed.make_dict([(k, _element(v, f"{where} value[{k!r}]")) for k, v in items.items()])


def _element(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _error(where, f"must be a tensor like {_EXAMPLE}, not {short(value)}")
    if not value.keys() <= _FIELDS["tensor"]:
        raise _unknown_field(where, "tensor", value, _FIELDS["tensor"])
    return parse_tensor(value, where)


def _generic_dict(value: dict[str, Any], where: str, depth: int) -> dict[str, Any]:
    items = value["value"]
    if not isinstance(items, dict):
        raise _error(where, f"a generic_dict's value must be an object, not {short(items)}")
    return typed.make_dict(
        [(k, parse_value(v, f"{where} value[{k!r}]", depth + 1)) for k, v in items.items()]
    )


def _scalar(value: dict[str, Any], where: str, depth: int) -> int | float | bool:
    name = value.get("data_type")
    if name is None:
        raise _error(where, f'a scalar needs a "data_type": one of {_DTYPES}', "unknown_dtype")
    dt = typed.DTYPES.get(name) if isinstance(name, str) else None
    if dt is None:
        raise _error(
            where, f"unknown data_type {short(name)}; use one of {_DTYPES}", "unknown_dtype"
        )
    number = value["value"]
    if dt.kind == "bool":
        if isinstance(number, bool) or (isinstance(number, int) and number in (0, 1)):
            return bool(number)
        raise _error(where, f"a bool scalar takes true or false, not {short(number)}")
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise _error(where, f"a {dt.name} scalar takes a number, not {short(number)}")
    if dt.kind == "float":
        try:
            return float(number)
        except OverflowError:  # an integer past any float
            raise _error(where, f"{short(number)} does not fit {dt.name}") from None
    low, high = dt.bounds or (0, 0)
    if not isinstance(number, int):
        raise _error(where, f"an {dt.name} scalar takes a whole number, not {short(number)}")
    if not low <= number <= high:
        raise _error(where, f"{number} is out of range for {dt.name} ({low}..{high})")
    return number


def _string(value: dict[str, Any], where: str, depth: int) -> str:
    text = value["value"]
    if not isinstance(text, str):
        raise _error(where, f"a string's value must be a JSON string, not {short(text)}")
    return text


_PARSERS: dict[str, Callable[[dict[str, Any], str, int], Any]] = {
    "tensor": parse_tensor,
    "tensor_list": _tensor_list,
    "tensor_dict": _tensor_dict,
    "scalar": _scalar,
    "string": _string,
    "generic_dict": _generic_dict,
}
_FIELDS = {
    "tensor": frozenset({"type", "shape", "value", "data_type"}),
    "tensor_list": frozenset({"type", "value"}),
    "tensor_dict": frozenset({"type", "value"}),
    "scalar": frozenset({"type", "value", "data_type"}),
    "string": frozenset({"type", "value"}),
    "generic_dict": frozenset({"type", "value"}),
}


# ---- output ---------------------------------------------------------------------------------
def to_json(value: Any) -> Any:
    """A wire value (forward()'s result) as torch-serving's typed JSON."""
    if isinstance(value, bool):
        return {"type": "scalar", "data_type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "scalar", "data_type": "int64", "value": value}
    if isinstance(value, float):
        return {"type": "scalar", "data_type": "float64", "value": value}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if typed.is_tensor(value):
        return {
            "type": "tensor",
            "data_type": value["dtype"],
            "shape": value["shape"],
            "value": typed.values_of(value),
        }
    if typed.is_dict(value):
        return {
            "type": "generic_dict",
            "value": {str(k): to_json(v) for k, v in value["items"]},
        }
    raise errors.AutodepError(f"the worker returned a {type(value).__name__}, not a wire value")


# ---- OpenAPI --------------------------------------------------------------------------------
_DATA_TYPE = String(enum=tuple(typed.DTYPES))
_SHAPE = ArrayOf(Integer(minimum=0), description="Dimensions; [] is a 0-d tensor.")
_FLAT = ArrayOf(
    OneOf((Number(), Boolean())), description="Every element, flat, in row-major order."
)
TENSOR = Object(
    {
        "type": String(enum=("tensor",)),
        "shape": _SHAPE,
        "value": _FLAT,
        "data_type": String(enum=tuple(typed.DTYPES), description="Default float32."),
    },
    required=("type", "shape", "value"),
    example={"type": "tensor", "shape": [1, 2], "value": [10, 1], "data_type": "float32"},
)
_LIST_ITEM = Object(
    {"type": String(enum=("tensor",)), "shape": _SHAPE, "value": _FLAT, "data_type": _DATA_TYPE},
    required=("shape", "value"),
)
_TYPED = (
    TENSOR,
    Object(
        {"type": String(enum=("tensor_list",)), "value": ArrayOf(_LIST_ITEM)},
        required=("type", "value"),
    ),
    Object(
        {"type": String(enum=("tensor_dict",)), "value": MapOf(_LIST_ITEM)},
        required=("type", "value"),
    ),
    Object(
        {
            "type": String(enum=("scalar",)),
            "data_type": _DATA_TYPE,
            "value": OneOf((Number(), Boolean())),
        },
        required=("type", "data_type", "value"),
        example={"type": "scalar", "data_type": "int64", "value": 3},
    ),
    Object(
        {"type": String(enum=("string",)), "value": String()},
        required=("type", "value"),
        example={"type": "string", "value": "Hello!"},
    ),
    Object(
        {
            "type": String(enum=("generic_dict",)),
            "value": MapOf(
                AnyValue(description="A typed value, or an array of them (checked: 400 if not).")
            ),
        },
        required=("type", "value"),
    ),
)
ARGUMENT = OneOf(
    (
        *_TYPED,
        ArrayOf(
            AnyValue(),
            description="A list argument: an array of typed values (checked: 400 if not).",
        ),
        Null(description="None (parse_value)."),
    ),
    description="One forward() argument (null: None).",
)
BODY: Spec = OneOf(
    (
        OneOf(_TYPED, description="The only forward() argument."),
        ArrayOf(ARGUMENT, description="One typed value per forward() argument."),
    ),
    description="torch-serving's typed JSON: one typed value, or one per forward() argument.",
)
OUTPUT: Spec = OneOf(
    (
        TENSOR,
        Object(
            {
                "type": String(enum=("scalar",)),
                "data_type": String(enum=("int64", "float64", "bool")),
                "value": OneOf((Number(), Boolean())),
            },
            required=("type", "data_type", "value"),
        ),
        Object({"type": String(enum=("string",)), "value": String()}, required=("type", "value")),
        Object(
            {"type": String(enum=("generic_dict",)), "value": MapOf(AnyValue())},
            required=("type", "value"),
        ),
        ArrayOf(AnyValue(), description="A list or tuple of typed values."),
        Null(description="None."),
    ),
    description="forward()'s result in torch-serving's typed JSON (None: null).",
)
