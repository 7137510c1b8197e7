"""Query-string values (TorchServe's management parameters): strict parsers, and the OpenAPI
spec of exactly what each accepts, declared side by side so GET /openapi.json cannot promise
more or less than the parser takes (tests/integration/test_fuzz_openapi.py fuzzes both).

A value may also come from a JSON body (POST /management/models takes either), so the parsers
accept JSON numbers and booleans too. An empty string means "not given", as TorchServe reads it.
Called by :mod:`web.management`. Must not import torch or Flask.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from autodep_celery import errors
from autodep_celery.web.spec import String

TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no", "")
"""Words a boolean parameter takes, in any case ("True" is what Python clients send)."""
MAX_DIGITS = 18
"""Longer numbers are refused: every count here fits in 64 bits."""
MAX_DECIMAL_CHARS = 30
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
"""Plain ASCII decimals: not int()'s and float()'s " 5", "+5", "1_0", "٥", "inf" or "1e3"."""


def _bad(message: str) -> errors.ClientError:
    return errors.ClientError(message, code="invalid_parameter", http_status=400)


def whole_spec(minimum: int, description: str) -> String:
    """A whole-number parameter's spec: ASCII digits (or empty), >= `minimum` (0 or 1)."""
    if minimum not in (0, 1):
        raise ValueError(f"whole_spec supports minimum 0 or 1, not {minimum}")
    digits = "[0-9]*" if minimum == 0 else "(0*[1-9][0-9]*)?"
    return String(pattern=f"^{digits}$", max_length=MAX_DIGITS, description=description)


def whole(params: Mapping[str, Any], key: str, minimum: int) -> int | None:
    """The whole number `key` holds, or None when it is absent or empty."""
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value) and len(value) <= MAX_DIGITS:
        number = int(value)
    else:
        raise _bad(f"{key} must be a whole number >= {minimum}, not {value!r}"[:300])
    if number < minimum:
        raise _bad(f"{key} must be >= {minimum}, not {number}")
    if number >= 10**MAX_DIGITS:
        raise _bad(f"{key} must have at most {MAX_DIGITS} digits, not {number}"[:300])
    return number


def decimal_spec(description: str) -> String:
    """A parameter of a number >= 0 (or empty), written as plain decimals."""
    return String(
        pattern=rf"^({_DECIMAL.pattern})?$", max_length=MAX_DECIMAL_CHARS, description=description
    )


def decimal(params: Mapping[str, Any], key: str, maximum: float = math.inf) -> float | None:
    """The finite number in [0, maximum] `key` holds, or None when it is absent or empty."""
    value = params.get(key)
    if value is None or value == "":
        return None
    number = -1.0
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _DECIMAL.fullmatch(value):
            if len(value) <= MAX_DECIMAL_CHARS:
                number = float(value)
    except OverflowError:  # an integer past any float: refused below
        pass
    if not (math.isfinite(number) and number >= 0):
        raise _bad(f"{key} must be a number >= 0, not {value!r}"[:300])
    if number > maximum:
        raise _bad(f"{key} must be at most {maximum:g}, not {value!r}"[:300])
    return number


def _any_case(word: str) -> str:
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in word)


def boolean_spec(description: str) -> String:
    """A boolean parameter's spec: the words of TRUE and FALSE, in any case."""
    words = "|".join(_any_case(w) for w in TRUE + FALSE)
    return String(pattern=f"^({words})$", description=description)


def boolean(params: Mapping[str, Any], key: str) -> bool:
    value = params.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise _bad(f"{key} must be true or false, not {value!r}"[:300])
