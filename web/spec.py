"""Declarative descriptions of JSON values: what the HTTP API accepts and returns.

A spec states facts (field names, which are required, tags, enums, bounds, defaults) once;
:mod:`web.validation` and :mod:`web.images` check request bodies against those facts with
hand-written code (fast, with a specific error code and fix per mistake), and :meth:`Spec.schema`
renders the same facts as an OpenAPI 3.0 schema for :mod:`web.openapi`. Declarations live in
:mod:`web.schema`. Imports the stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Spec:
    description: str = field(default="", kw_only=True)
    nullable: bool = field(default=False, kw_only=True)
    example: Any = field(default=None, kw_only=True)

    def _schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        out = self._schema()
        if self.description:
            out["description"] = self.description
        if self.nullable:
            out["nullable"] = True
        if self.example is not None:
            out["example"] = self.example
        return out


@dataclass(frozen=True)
class String(Spec):
    enum: tuple[str, ...] = ()
    format: str = ""
    pattern: str = ""
    """An ECMA 262 regular expression the whole value matches (anchor it with ^ and $)."""
    min_length: int | None = None
    max_length: int | None = None

    def _schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.enum:
            out["enum"] = list(self.enum)
        if self.format:
            out["format"] = self.format
        if self.pattern:
            out["pattern"] = self.pattern
        if self.min_length is not None:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return out


@dataclass(frozen=True)
class Boolean(Spec):
    def _schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Integer(Spec):
    minimum: int | None = None
    default: int | None = None
    format: str = ""

    def _schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.format:
            out["format"] = self.format
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class Number(Spec):
    minimum: float | None = None
    maximum: float | None = None

    def _schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclass(frozen=True)
class Object(Spec):
    """A JSON object with known fields; `closed` refuses any other key."""

    fields: dict[str, Spec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    closed: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.fields)

    def _schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        if self.fields:
            out["properties"] = {k: v.schema() for k, v in self.fields.items()}
        if self.required:
            out["required"] = list(self.required)
        if self.closed:
            out["additionalProperties"] = False
        return out


@dataclass(frozen=True)
class MapOf(Spec):
    """A JSON object whose keys are names and whose values all follow `values`."""

    values: Spec = field(default_factory=lambda: String())

    def _schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.values.schema()}


@dataclass(frozen=True)
class ArrayOf(Spec):
    items: Spec = field(default_factory=lambda: String())
    min_items: int | None = None
    max_items: int | None = None

    def _schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.items.schema()}
        if self.min_items is not None:
            out["minItems"] = self.min_items
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        return out


@dataclass(frozen=True)
class Tagged(Spec):
    """Serde's externally tagged enum, as Autodep sends it: an object with exactly one key, the
    tag, whose value follows that tag's spec (``{"Text": "hi"}``)."""

    tags: dict[str, Spec] = field(default_factory=dict)

    def _schema(self) -> dict[str, Any]:
        return {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {tag: spec.schema()},
                    "required": [tag],
                    "additionalProperties": False,
                }
                for tag, spec in self.tags.items()
            ]
        }


@dataclass(frozen=True)
class OneOf(Spec):
    options: tuple[Spec, ...] = ()

    def _schema(self) -> dict[str, Any]:
        return {"oneOf": [o.schema() for o in self.options]}


@dataclass(frozen=True)
class Null(Spec):
    """JSON null, as one option of a OneOf. OpenAPI 3.0 has no null type and its ``nullable``
    counts only beside a ``type``, so this is an object whose only value is null."""

    def _schema(self) -> dict[str, Any]:
        return {"type": "object", "nullable": True, "enum": [None]}


@dataclass(frozen=True)
class AnyValue(Spec):
    def _schema(self) -> dict[str, Any]:
        return {}
