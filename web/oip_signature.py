"""Open Inference Protocol tensors <-> a TorchScript model's forward() arguments and result.

The signature is what a worker published (worker.schemas: argument names and TorchScript type
strings). Inputs map to arguments by name (or Triton's ``INPUT__<i>``), else in request order.
A tensor is a ``Tensor`` argument; a one-element tensor an ``int``/``float``/``bool``/``str``; a
tensor's values a ``List[int|float|bool|str]``. Arguments that hold several tensors take one
input per element, named with dots: ``tensor_list.0``, ``tensor_list.1`` for a List[Tensor],
``tensor_dict.<key>`` for a Dict, ``pair.0`` for a Tuple. Results are named the same way: a
single value is ``OUTPUT__0``, a tuple's elements ``OUTPUT__<i>``, a dict's values their keys,
nested values ``<name>.<i>`` or ``<name>.<key>``; None is left out. Without a signature (no
worker has loaded the model yet) inputs go in order and results are named from their shape.

Called by web.routes.oip; bodies are web.oip_codec's. The worker checks the arguments' types
(worker.tensor_signature), so a mismatch is its 422. Must not import torch or Flask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from autodep_celery import typed
from autodep_celery.web.oip_codec import BYTES, OipTensor, bad


@dataclass(frozen=True)
class JitType:
    """A parsed TorchScript type string: ``Dict[str, Tensor]`` is head Dict, two args."""

    head: str
    args: tuple[JitType, ...] = ()

    def unwrap(self) -> JitType:
        """Optional[T] (and Union[T, NoneType]) as T."""
        if self.head == "Optional" and self.args:
            return self.args[0].unwrap()
        if self.head == "Union":
            rest = [a for a in self.args if a.head != "NoneType"]
            if len(rest) == 1:
                return rest[0].unwrap()
        return self


def parse(text: str) -> JitType:
    head, _, rest = text.strip().partition("[")
    if not rest:
        return JitType(head.strip())
    parts, depth, start = [], 0, 0
    inner = rest[: rest.rfind("]")]
    for i, ch in enumerate(inner):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    return JitType(head.strip(), tuple(parse(p) for p in parts if p.strip()))


SCALARS = {"int": "INT64", "float": "FP64", "bool": "BOOL", "number": "FP64", "str": BYTES}
"""Scalar TorchScript types and the datatype their values travel as."""
SEQUENCES = ("List", "Tuple", "Dict")
_INPUT_N = re.compile(r"^input__(\d+)$", re.IGNORECASE)
TOP = "OUTPUT__"
DEFAULT_DATATYPE = "FP32"
"""What metadata says of a Tensor argument: TorchScript does not record dtypes (nor ranks)."""


def _is_scalar_list(t: JitType) -> bool:
    return t.head == "List" and len(t.args) == 1 and t.args[0].unwrap().head in SCALARS


# ---- metadata -------------------------------------------------------------------------------
def _entries(name: str, t: JitType) -> list[dict[str, Any]]:
    t = t.unwrap()
    if t.head in SCALARS:
        return [{"name": name, "datatype": SCALARS[t.head], "shape": [1]}]
    if _is_scalar_list(t):
        return [{"name": name, "datatype": SCALARS[t.args[0].unwrap().head], "shape": [-1]}]
    if t.head == "List" and t.args:
        return _entries(f"{name}.<i>", t.args[0])
    if t.head == "Tuple":
        return [e for i, a in enumerate(t.args) for e in _entries(f"{name}.{i}", a)]
    if t.head == "Dict" and len(t.args) == 2:
        return _entries(f"{name}.<key>", t.args[1])
    return [{"name": name, "datatype": DEFAULT_DATATYPE, "shape": [-1]}]


def metadata_inputs(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for p in schema["inputs"] for e in _entries(p["name"], parse(p["type"]))]


def metadata_outputs(schema: dict[str, Any]) -> list[dict[str, Any]]:
    t = parse(schema["output"]).unwrap()
    if t.head == "Tuple":
        return [e for i, a in enumerate(t.args) for e in _entries(f"{TOP}{i}", a)]
    if t.head == "Dict" and len(t.args) == 2:
        return _entries("<key>", t.args[1])
    if t.head == "List" and t.args and not _is_scalar_list(t):
        return _entries(f"{TOP}<i>", t.args[0])
    if t.head == "NoneType":
        return []
    return _entries(f"{TOP}0", t)


def signature_text(schema: dict[str, Any]) -> str:
    params = ", ".join(
        f"{p['name']}: {p['type']}" + (" = ..." if p.get("default") else "")
        for p in schema["inputs"]
    )
    return f"forward({params}) -> {schema['output']}"


# ---- inputs -> forward() arguments ----------------------------------------------------------
def arguments(inputs: list[OipTensor], schema: dict[str, Any] | None) -> list[Any]:
    """forward()'s arguments as wire values (autodep_celery.typed), in order."""
    if schema is None:
        return _in_order(inputs)
    params = schema["inputs"]
    names = [p["name"] for p in params]
    bases = {t.name.split(".", 1)[0] for t in inputs}
    if bases <= set(names):
        by_base = {b: b for b in bases}
    elif all(_INPUT_N.match(b) for b in bases):
        by_base = {b: _param_name(b, names, schema) for b in bases}
    elif not any("." in t.name for t in inputs) and not bases & set(names):
        if len(inputs) > len(names):
            raise bad(
                f"{len(inputs)} inputs were sent, but {signature_text(schema)} takes {len(names)}"
            )
        by_base = {t.name: names[i] for i, t in enumerate(inputs)}
    else:
        raise bad(
            f"input names {', '.join(sorted(bases))} are not all argument names of "
            f"{signature_text(schema)}; name inputs after its arguments or INPUT__<i>"
        )
    given: dict[str, OipTensor] = {}
    for t in inputs:
        base, dot, rest = t.name.partition(".")
        key = by_base[base] + dot + rest
        if key in given:
            raise bad(f"inputs {given[key].name!r} and {t.name!r} name the same argument")
        given[key] = t
    args: list[Any] = []
    missing: list[str] = []
    for p in params:
        if not any(n == p["name"] or n.startswith(p["name"] + ".") for n in given):
            missing.append(p["name"])
            continue
        if missing:
            raise bad(
                f"input {missing[0]!r} is missing: an argument before a given one cannot be "
                f"left out; the signature is {signature_text(schema)}"
            )
        args.append(_value(p["name"], parse(p["type"]), given))
    required = [n for n in missing if not _default(params, n)]
    if required:
        raise bad(f"input {required[0]!r} is missing; the signature is {signature_text(schema)}")
    if given:
        raise bad(f"input {next(iter(given))!r} is not used by {signature_text(schema)}")
    return args


def _default(params: list[dict[str, Any]], name: str) -> bool:
    return any(p["name"] == name and p.get("default") for p in params)


def _param_name(base: str, names: list[str], schema: dict[str, Any]) -> str:
    match = _INPUT_N.match(base)
    index = int(match.group(1)) if match else len(names)
    if index >= len(names):
        raise bad(f"input {base!r} names no argument of {signature_text(schema)}")
    return names[index]


def _in_order(inputs: list[OipTensor]) -> list[Any]:
    if any("." in t.name for t in inputs):
        raise bad(
            "no worker has loaded this model yet, so its argument names are unknown; send one "
            "input per forward() argument, in order, without dotted names"
        )
    numbers = [int(m.group(1)) for t in inputs if (m := _INPUT_N.match(t.name))]
    if len(numbers) == len(inputs):  # INPUT__<i> names: their numbers give the order
        inputs = [t for _, t in sorted(zip(numbers, inputs, strict=True), key=lambda p: p[0])]
    return [_leaf(t, None) for t in inputs]


def _value(name: str, t: JitType, given: dict[str, OipTensor]) -> Any:
    """The wire value of argument (or element) `name` of type `t`, taking its inputs from
    `given`."""
    exact = given.pop(name, None)
    if exact is not None:
        return _leaf(exact, t.unwrap())
    u = t.unwrap()
    prefix = name + "."
    keys = sorted({n[len(prefix) :].split(".", 1)[0] for n in given if n.startswith(prefix)})
    if u.head in ("List", "Tuple"):
        if sorted(_int(k) for k in keys) != list(range(len(keys))):
            raise bad(f"the elements of {name!r} must be named {name}.0, {name}.1, ... in turn")
        out = []
        for i in range(len(keys)):
            element = u.args[i] if u.head == "Tuple" and i < len(u.args) else _first(u)
            out.append(_value(f"{prefix}{i}", element, given))
        return out
    if u.head == "Dict":
        key_type = u.args[0].unwrap().head if u.args else "str"
        value_type = u.args[1] if len(u.args) == 2 else JitType("Any")
        items = []
        for k in keys:
            key: str | int = _int(k) if key_type == "int" else k
            items.append((key, _value(f"{prefix}{k}", value_type, given)))
        return typed.make_dict(items)
    raise bad(f"argument {name.split('.')[0]!r} is {t.head}: send it as one input named {name!r}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise bad(f"{text!r} is not an element number") from None


def _first(t: JitType) -> JitType:
    return t.args[0] if t.args else JitType("Any")


def _leaf(tensor: OipTensor, t: JitType | None) -> Any:
    """One input as the wire value an argument of type `t` takes (None: unknown type)."""
    head = t.head if t is not None else None
    if head in SCALARS:
        values = tensor.values()
        if len(values) != 1:
            raise bad(f"input {tensor.name!r} is a {head}: send one element, not {len(values)}")
        return values[0]
    if t is not None and _is_scalar_list(t):
        return tensor.values()
    if head in SEQUENCES:
        raise bad(
            f"input {tensor.name!r} is a {head}: send one input per element, named "
            f"{tensor.name}.0, {tensor.name}.1, ... (a Dict: {tensor.name}.<key>)"
        )
    if isinstance(tensor.data, list):  # BYTES
        return tensor.data[0] if len(tensor.data) == 1 and head != "Tensor" else tensor.data
    return typed.tensor(typed.BY_OIP[tensor.datatype], tensor.shape, tensor.data)


# ---- forward()'s result -> output tensors ---------------------------------------------------
def outputs(value: Any, schema: dict[str, Any] | None) -> list[OipTensor]:
    """The named output tensors of forward()'s result (a wire value)."""
    t = parse(schema["output"]).unwrap() if schema is not None else None
    out: list[OipTensor] = []
    if typed.is_dict(value):
        value_type = t.args[1] if t is not None and t.head == "Dict" and len(t.args) == 2 else None
        for k, v in value["items"]:
            _flatten(str(k), v, value_type, out)
    elif isinstance(value, list) and not _as_leaf(value, t):
        for i, v in enumerate(value):
            _flatten(f"{TOP}{i}", v, _element_type(t, i), out)
    else:
        _flatten(f"{TOP}0", value, t, out)
    return out


def _element_type(t: JitType | None, i: int) -> JitType | None:
    if t is None:
        return None
    if t.head == "Tuple":
        return t.args[i].unwrap() if i < len(t.args) else None
    return t.args[0].unwrap() if t.head == "List" and t.args else None


def _as_leaf(value: list[Any], t: JitType | None) -> bool:
    """Whether a list result is one tensor of values (List[int], not a tuple or List[Tensor])."""
    if t is not None and t.head in ("Tuple", "List"):
        return _is_scalar_list(t)
    kinds = {type(v) for v in value}
    return len(kinds) == 1 and kinds.pop() in (bool, int, float, str)


def _flatten(name: str, value: Any, t: JitType | None, out: list[OipTensor]) -> None:
    if value is None:
        return
    if typed.is_dict(value):
        sub = (
            t.args[1].unwrap() if t is not None and t.head == "Dict" and len(t.args) == 2 else None
        )
        for k, v in value["items"]:
            _flatten(f"{name}.{k}", v, sub, out)
    elif isinstance(value, list) and not _as_leaf(value, t):
        for i, v in enumerate(value):
            _flatten(f"{name}.{i}", v, _element_type(t, i), out)
    else:
        out.append(_tensor_of(name, value, t))


def _tensor_of(name: str, value: Any, t: JitType | None) -> OipTensor:
    if typed.is_tensor(value):
        dt = typed.dtype(value["dtype"])
        return OipTensor(name, dt.oip, list(value["shape"]), value["data"])
    values = value if isinstance(value, list) else [value]
    shape = [len(values)]
    if not values:  # an empty list: its type says what it would hold
        element = t.args[0].unwrap().head if t is not None and _is_scalar_list(t) else "float"
        datatype = SCALARS.get(element, DEFAULT_DATATYPE)
        return OipTensor(name, datatype, shape, [] if datatype == BYTES else b"")
    if all(isinstance(v, str) for v in values):
        return OipTensor(name, BYTES, shape, list(values))
    if all(isinstance(v, bool) for v in values):
        datatype = "BOOL"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        datatype = "INT64"
    else:
        datatype = "FP64"
    return OipTensor(name, datatype, shape, typed.pack(typed.BY_OIP[datatype], values))
