"""Check a Tensor item's arguments against the model's ``forward()`` schema before calling it.

TorchScript's own complaint about a wrong argument names neither its position nor what was sent
("Expected a value of type 'Tensor' for argument 'b' but instead found type 'str'"), and some
mistakes pass it silently (true for an int). So the Tensor handler of :mod:`worker.task_types`
binds the arguments here first: the count (defaults included), then each argument's type,
recursively (Tensor, List[...], Tuple[...], Dict[str, ...], Optional, Union, int, float, bool,
str). A mismatch is a 422 ``invalid_arguments`` naming the argument (position and name), what
forward() expects and what was sent. Lists become tuples where forward() wants a Tuple (the wire
has one kind of list). Imports torch; knows nothing of Celery, Redis or HTTP.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

from autodep_celery import errors


@dataclass(frozen=True)
class Parameter:
    name: str
    type: Any
    """A torch._C JIT type (TensorType, ListType, ...)."""
    required: bool

    def __str__(self) -> str:
        return f"{self.name}: {self.type}" + ("" if self.required else " = ...")


@dataclass(frozen=True)
class Signature:
    parameters: tuple[Parameter, ...]

    @property
    def required(self) -> int:
        return sum(1 for p in self.parameters if p.required)

    def __str__(self) -> str:
        return f"forward({', '.join(map(str, self.parameters))})"


_CACHE: weakref.WeakKeyDictionary[Any, Signature | None] = weakref.WeakKeyDictionary()


def signature_of(module: Any) -> Signature | None:
    """forward()'s positional parameters (without self), read once per module; None when the
    module has no TorchScript schema (then nothing is checked)."""
    try:
        return _CACHE[module]
    except (KeyError, TypeError):
        pass
    try:
        arguments = module.forward.schema.arguments
    except (AttributeError, RuntimeError):
        signature = None
    else:
        signature = Signature(
            tuple(
                Parameter(a.name, a.type, not a.has_default_value())
                for a in arguments[1:]
                if not a.kwarg_only
            )
        )
    try:
        _CACHE[module] = signature
    except TypeError:  # not weak-referenceable: read it again next time
        pass
    return signature


class _Mismatch(Exception):
    def __init__(self, path: str, expected: Any, got: Any) -> None:
        super().__init__(path)
        self.path = path
        self.expected = str(expected)
        self.got = describe(got)


def bind(module: Any, model: str, args: list[Any]) -> list[Any]:
    """`args` checked against `module`'s forward(), with lists made tuples where it wants
    Tuples; an InvalidInput (422 invalid_arguments) names the first mismatch."""
    signature = signature_of(module)
    if signature is None:
        return args
    params = signature.parameters
    low, high = signature.required, len(params)
    if not low <= len(args) <= high:
        takes = f"{high}" if low == high else f"{low} to {high}"
        raise _invalid(
            f"model {model} takes {takes} argument{'' if high == 1 else 's'} but "
            f"{len(args)} {'was' if len(args) == 1 else 'were'} sent; its signature is "
            f"{signature}"
        )
    bound = []
    for position, (param, value) in enumerate(zip(params, args, strict=False), start=1):
        try:
            bound.append(conform(param.type, value, ""))
        except _Mismatch as m:
            sent = (
                f"its item {m.path} is {m.got} where {m.expected} is expected"
                if m.path
                else f"{m.got} was sent"
            )
            raise _invalid(
                f"argument {position} ({param.name}) of model {model} must be {param.type}, "
                f"but {sent}; its signature is {signature}"
            ) from None
    return bound


def _invalid(message: str) -> errors.InvalidInput:
    return errors.InvalidInput(message, code="invalid_arguments")


def conform(jit_type: Any, value: Any, path: str) -> Any:
    """`value` as `jit_type` wants it (a list as a tuple, an int as a float), or _Mismatch."""
    kind = jit_type.kind()
    if kind == "TensorType":
        if isinstance(value, torch.Tensor):
            return value
    elif kind == "IntType":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "FloatType":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "BoolType":
        if isinstance(value, bool):
            return value
    elif kind == "NumberType":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    elif kind == "StringType":
        if isinstance(value, str):
            return value
    elif kind == "NoneType":
        if value is None:
            return value
    elif kind == "AnyType":
        return value
    elif kind == "OptionalType":
        return None if value is None else conform(jit_type.getElementType(), value, path)
    elif kind == "UnionType":
        for option in jit_type.containedTypes():
            try:
                return conform(option, value, path)
            except _Mismatch:
                continue
    elif kind == "ListType":
        if isinstance(value, list | tuple):
            element = jit_type.getElementType()
            return [conform(element, v, f"{path}[{i}]") for i, v in enumerate(value)]
    elif kind == "TupleType":
        elements = jit_type.elements()
        if isinstance(value, list | tuple) and len(value) == len(elements):
            return tuple(
                conform(t, v, f"{path}[{i}]")
                for i, (t, v) in enumerate(zip(elements, value, strict=True))
            )
    elif kind == "DictType":
        if isinstance(value, dict):
            key_type, value_type = jit_type.getKeyType(), jit_type.getValueType()
            out = {}
            for k, v in value.items():
                where = f"{path}[{k!r}]"
                out[conform(key_type, k, f"{where} (its key)")] = conform(value_type, v, where)
            return out
    else:  # a type the wire cannot carry (a class, a device, a future): TorchScript decides
        return value
    raise _Mismatch(path, jit_type, value)


def describe(value: Any) -> str:
    """What was sent, in the signature's terms: ``a Tensor (float32, shape [1, 2])``, ``a str``,
    ``a List[Tensor] of 2``, ``a list of (Tensor, str)``, ``None``."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return f"a Tensor ({dtype}, shape {list(value.shape)})"
    if isinstance(value, list | tuple):
        names = [type_name(v) for v in value]
        if not names:
            return "an empty list"
        if len(set(names)) == 1:
            return f"a List[{names[0]}] of {len(names)}"
        return f"a list of ({', '.join(names)})"
    if isinstance(value, dict) and not value:
        return "an empty dict"
    name = type_name(value)
    return name if value is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def type_name(value: Any) -> str:
    """`value`'s type as a TorchScript signature spells it (List[Tensor], Dict[str, int])."""
    if isinstance(value, torch.Tensor):
        return "Tensor"
    if value is None:
        return "None"
    if isinstance(value, list | tuple):
        names = {type_name(v) for v in value}
        return f"List[{names.pop()}]" if len(names) == 1 else "list"
    if isinstance(value, dict):
        keys = {type_name(k) for k in value}
        values = {type_name(v) for v in value.values()}
        if len(keys) == 1 and len(values) == 1:
            return f"Dict[{keys.pop()}, {values.pop()}]"
        return "dict"
    return type(value).__name__
