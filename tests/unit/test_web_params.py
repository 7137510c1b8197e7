"""web.params: each query-parameter parser takes exactly the strings its OpenAPI spec's pattern
allows (a property test over arbitrary text and near-numbers), and the inputs that the old
int()/float() parsing let through are refused: " 5", "+5", "1_0", Unicode digits, 30-digit
counts, and "inf" (a registration with max_batch_delay=inf made GET /management/models/<name>
answer 500: round(inf) in its description).
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from autodep_celery import errors
from autodep_celery.web import management, params
from autodep_celery.web.spec import String

FUZZ = settings(max_examples=400, deadline=None, database=None, derandomize=True)
NEAR_NUMBERS = st.one_of(
    st.text(max_size=25),
    st.text("0123456789.+-_ eE", max_size=22),
    st.from_regex(r"[0-9]{0,25}", fullmatch=True),
    st.sampled_from(["inf", "nan", "Infinity", "1e3", "٥", "0x10", "TRUE", "Yes", " true"]),
)


def documented(spec: String, value: str) -> bool:
    """Whether `value` fits the spec as /openapi.json renders it."""
    schema = spec.schema()
    if len(value) > schema.get("maxLength", math.inf):
        return False
    return re.fullmatch(schema["pattern"], value) is not None


def accepted(parse: Any, value: str) -> bool:
    try:
        parse({"k": value}, "k")
    except errors.ClientError as exc:
        assert exc.http_status == 400 and exc.code == "invalid_parameter"
        return False
    return True


@FUZZ
@given(NEAR_NUMBERS, st.sampled_from([0, 1]))
@example(" 5", 0)
@example("+5", 0)
@example("1_0", 0)
@example("٥", 0)
@example("9" * 30, 0)
@example("0", 1)
def test_whole_numbers_are_what_the_document_says(value: str, minimum: int) -> None:
    spec = params.whole_spec(minimum, "")
    assert accepted(lambda p, k: params.whole(p, k, minimum), value) == documented(spec, value)


@FUZZ
@given(NEAR_NUMBERS)
@example("inf")
@example("nan")
@example("1e3")
@example(".5")
def test_decimals_are_what_the_document_says(value: str) -> None:
    assert accepted(params.decimal, value) == documented(params.decimal_spec(""), value)


@FUZZ
@given(NEAR_NUMBERS)
@example("True")
@example("")
def test_booleans_are_what_the_document_says(value: str) -> None:
    assert accepted(params.boolean, value) == documented(params.boolean_spec(""), value)


@pytest.mark.parametrize(
    "value", [math.inf, -1.0, math.nan, "inf", "Infinity", "1e400", True, [1]], ids=repr
)
def test_registration_refuses_a_batch_delay_that_is_not_a_finite_number(value: Any) -> None:
    with pytest.raises(errors.ClientError) as caught:
        management.parse_registration({"url": "tiny.pt", "max_batch_delay": value})
    assert caught.value.http_status == 400 and "max_batch_delay" in caught.value.message


def test_json_numbers_are_taken_and_bounded() -> None:
    reg = management.parse_registration(
        {"url": "m.pt", "batch_size": 8, "max_batch_delay": 2.5, "initial_workers": "0"}
    )
    assert (reg.batch_size, reg.max_batch_delay_ms, reg.initial_workers) == (8, 2.5, 0)
    for huge in (10**18, 10**30):
        with pytest.raises(errors.ClientError, match="at most 18 digits"):
            management.parse_scale({"min_worker": huge})
    with pytest.raises(errors.ClientError, match="whole number"):
        management.parse_scale({"min_worker": 2.5})
    assert management.parse_scale({"min_worker": "", "max_worker": "3"}) == (1, 3, False)


def test_an_integer_past_any_float_is_a_bad_decimal_not_a_crash() -> None:
    # float(10**400) raised OverflowError (a 500) for a JSON body's huge integer
    with pytest.raises(errors.AutodepError) as exc:
        params.decimal({"max_batch_delay": 10**400}, "max_batch_delay")
    assert exc.value.http_status == 400
