"""Property tests of the config loader (autodep_celery.config): TOML-ish mappings with the real
sections, keys and [[models]] fields holding any TOML value (big integers, inf and nan, dates,
strings with NUL, arrays, tables), config files of such lines, ``AUTODEP_<SECTION>__<KEY>``
overrides of any text, and the settings JSON a parent hands its children. Only ConfigError may
come out; whatever loads passes the checks it names (a finite, positive timeout, ...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autodep_celery import config
from autodep_celery.config import ConfigError, ModelSettings, Settings

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SECTIONS = {
    name: [f.name for f in dataclasses.fields(cls)] for name, cls in config._SECTIONS.items()
}
SECTIONS.update({"http_server": ["port", "host"], "manager": ["num_init_workers", "auto_scale"]})
MODEL_KEYS = [f.name for f in dataclasses.fields(ModelSettings)]
SCALARS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2**63, 10**400]),
    st.floats(),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["", "a\x00b", "cpu", "cuda:0", "json", "gevent", "redis://h:1/0", "amqp://h"]),
    st.datetimes(),
    st.dates(),
    st.times(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


def tables(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), VALUES, max_size=4)


MODELS = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["m", "m", "n", "x y", "", "a" * 70]) | VALUES,
            "path": st.sampled_from(["m.pt", "/m.pt", "../m.pt", "a\x00b", ""]) | VALUES,
        },
        optional={k: VALUES for k in MODEL_KEYS if k not in ("name", "path")},
    )
    | VALUES,
    max_size=3,
)
RAW = st.fixed_dictionaries(
    {},
    optional={
        **{name: tables(keys) | VALUES for name, keys in SECTIONS.items()},
        "models": MODELS | VALUES,
        "extra": VALUES,
    },
)


def loads_or_refuses(call: Any, *args: Any, **kwargs: Any) -> Settings | None:
    try:
        loaded = call(*args, **kwargs)
    except ConfigError as exc:
        assert str(exc)
        return None
    assert isinstance(loaded, Settings)
    return loaded


def sound(s: Settings) -> None:
    """What the checks promise of loaded settings."""
    for section in (s.web, s.broker, s.worker, s.autoscaler, s.jobs):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float):
                assert math.isfinite(value), (f.name, value)
    assert 0 < s.web.port <= 65535 and s.web.request_timeout_s > 0
    for m in s.models:
        assert config.is_model_name(m.name) and "\x00" not in m.path
        assert m.max_batch_delay_ms >= 0 and math.isfinite(m.max_batch_delay_ms)


@FUZZ
@given(RAW, st.booleans())
def test_mappings_load_or_are_refused(raw: dict[str, Any], relative: bool) -> None:
    base = Path(tempfile.gettempdir()) if relative else None
    loaded = loads_or_refuses(config.from_dict, raw, base)
    if loaded is not None:
        sound(loaded)


ENV_TEXT = st.one_of(
    st.text(max_size=16),
    st.sampled_from(
        [
            "1",
            "-3",
            "inf",
            "nan",
            "-inf",
            "1e400",
            "99999999999999999999999",
            "0x10",
            "true",
            '"x"',
            "[1, 2]",
            "{a = 1}",
            "1979-05-27T07:32:00Z",
            "'a\\x00'",
            "gthread",
        ]
    ),
)
ENV_NAMES = st.one_of(
    st.sampled_from([(s, k) for s, keys in SECTIONS.items() for k in keys]),
    st.tuples(st.text("abcz_", max_size=6), st.text("abcz_", max_size=6)),
).map(lambda sk: f"AUTODEP_{sk[0].upper()}__{sk[1].upper()}")


@FUZZ
@given(st.dictionaries(ENV_NAMES, ENV_TEXT, max_size=4))
def test_environment_overrides_load_or_are_refused(environ: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "config.toml"
        empty.write_text("")
        loaded = loads_or_refuses(config.load, empty, environ=environ)
    if loaded is not None:
        sound(loaded)


def toml_lines(raw: dict[str, Any]) -> str:
    """`raw`'s TOML-expressible sections as config.toml text (JSON strings are TOML strings)."""
    lines = []
    for section, table in raw.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            for key, value in table.items():
                if isinstance(value, bool):
                    lines.append(f"{json.dumps(key)} = {'true' if value else 'false'}")
                elif isinstance(value, int | str):
                    lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
                elif isinstance(value, float):
                    text = {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
                    lines.append(f"{json.dumps(key)} = {'nan' if value != value else text}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(RAW, st.text(max_size=30))
def test_config_files_load_or_are_refused(raw: dict[str, Any], junk: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(toml_lines(raw) + junk, encoding="utf-8", errors="surrogatepass")
        loaded = loads_or_refuses(config.load, path, environ={})
    if loaded is not None:
        sound(loaded)


@FUZZ
@given(st.one_of(st.text(max_size=30), VALUES.map(lambda v: json.dumps(v, default=str))))
def test_settings_json_from_a_parent_loads_or_is_refused(text: str) -> None:
    loads_or_refuses(config.load, environ={config.SETTINGS_ENV: text or "{}"})


# ---- what the properties found -------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # an alias ([http_server] port) onto a section that is not a table: TypeError, ValueError
        ({"web": 5, "http_server": {"port": 80}}, r"\[web\] must be a table"),
        ({"web": "ab", "http_server": {"port": 80}}, r"\[web\] must be a table"),
        # inf and nan passed the "> 0" checks (nan <= 0 is false); an int past any float raised
        # OverflowError
        ({"web": {"request_timeout_s": math.inf}}, "request_timeout_s must be a finite number"),
        ({"jobs": {"timeout_s": math.nan}}, "timeout_s must be a finite number"),
        ({"autoscaler": {"interval_s": 10**400}}, "interval_s must be a finite number"),
        ({"models": [{"name": "m", "path": "m.pt", "mean": [10**400, 0, 0]}]}, "finite numbers"),
        ({"models": [{"name": "m", "path": "m.pt", "max_batch_delay_ms": math.inf}]}, "finite"),
        # a NUL in a path raised ValueError (embedded null byte) when resolved against the file
        ({"models": [{"name": "m", "path": "a\x00b"}]}, "without NUL characters"),
        ({"management": {"model_store": "s\x00"}}, "without NUL characters"),
    ],
)
def test_what_the_properties_found_is_a_config_error(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.from_dict(raw, Path(tempfile.gettempdir()))


@pytest.mark.parametrize("text", ["{", "[]", '"x"', "1"])
def test_a_broken_settings_json_is_a_config_error(text: str) -> None:
    # autodep serve hands children their settings as JSON; json.loads' errors escaped
    with pytest.raises(ConfigError, match=config.SETTINGS_ENV):
        config.load(environ={config.SETTINGS_ENV: text})
