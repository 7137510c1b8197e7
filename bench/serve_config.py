"""The config.toml files the autoscale scenario serves with: autoscaled, and a fixed pool at max.

bench.autoscale calls for_system() twice with the same base, so the two systems differ only in
`[autoscaler] enabled` and the model's pool bounds. A user's --config is the base: its sections
(e.g. `[autoscaler] interval_s`, `scale_up_delay_s`, ...) are passed through untouched; only the
measured model is served (other [[models]] would share the CPU). Relative paths of the base are
resolved against its directory, since the written file lives elsewhere. The small TOML writer
covers what config.toml holds (tables of scalars and lists, arrays of tables). Pure apart from
reading the base; imports nothing of the project.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any


def read_base(path: Path | None) -> dict[str, Any]:
    """The base config as a dict, model paths made absolute; {} without one."""
    if path is None:
        return {}
    with open(path, "rb") as f:
        data = tomllib.load(f)
    for m in data.get("models", []):
        for key in ("path", "labels"):
            if isinstance(m.get(key), str) and not Path(m[key]).is_absolute():
                m[key] = str((path.resolve().parent / m[key]).resolve())
    return data


def model_entry(base: dict[str, Any], name: str, default_path: Path) -> dict[str, Any]:
    """The base's [[models]] entry called `name`, else one serving `default_path`."""
    for m in base.get("models", []):
        if m.get("name") == name:
            return dict(m)
    return {"name": name, "path": str(default_path)}


def for_system(
    base: dict[str, Any], model: dict[str, Any], autoscaled: bool, low: int, high: int
) -> dict[str, Any]:
    """The config of one system: autoscaled within [low, high], or fixed at `high`."""
    out = copy.deepcopy({k: v for k, v in base.items() if k != "models"})
    out.setdefault("autoscaler", {})["enabled"] = autoscaled
    entry = dict(model, min_workers=low if autoscaled else high, max_workers=high)
    out["models"] = [entry]
    return out


def dumps(data: dict[str, Any]) -> str:
    """TOML for a dict of tables (dicts of scalars or lists) and arrays of tables."""
    lines = ["# written by autodep bench --scenario autoscale"]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict | list) or _plain(v)}
    lines += [f"{k} = {_value(v)}" for k, v in scalars.items()]
    for key, value in data.items():
        if key in scalars:
            continue
        if isinstance(value, dict):
            lines += ["", f"[{key}]", *(f"{k} = {_value(v)}" for k, v in value.items())]
        else:
            for table in value:
                lines += ["", f"[[{key}]]", *(f"{k} = {_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> bool:
    """A list of scalars (a TOML array), as opposed to an array of tables."""
    return isinstance(value, list) and not any(isinstance(v, dict) for v in value)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"config values must be finite, not {v}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"cannot write {type(v).__name__} {v!r} to TOML")
