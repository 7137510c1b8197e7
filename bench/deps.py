"""What a bench run needs beyond the core install, checked before anything is measured.

bench.cli calls `needed()` for the scenario and systems chosen, then `missing()`, and exits 2
with `message()` when something is absent, so a run never measures for minutes and then dies on
an import (issue #12: a run lost two minutes of results to `ModuleNotFoundError: matplotlib`).
Modules are looked up with importlib.util.find_spec (no import, no side effects); a module that
is installed but broken is caught where it is used (bench.output never loses the JSON). Pure
apart from those look-ups, which tests replace. Imports nothing of the project.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PIP_BENCH = "pip install -e '.[bench]'"
WRK_INSTALL = "sudo apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)"


@dataclass(frozen=True)
class Need:
    name: str
    """A Python module (kind "module") or an executable on PATH (kind "binary")."""
    kind: str
    why: str
    install: str


MATPLOTLIB = Need("matplotlib", "module", "the PNG plots (or run with --no-plot)", PIP_BENCH)
FASTAPI = Need("fastapi", "module", "the FastAPI baseline (--systems baseline)", PIP_BENCH)
UVICORN = Need("uvicorn", "module", "the FastAPI baseline (--systems baseline)", PIP_BENCH)
WRK = Need("wrk", "binary", "the load generator of --systems served,baseline", WRK_INSTALL)


def needed(scenario: str, systems: Iterable[str], plot: bool) -> list[Need]:
    """What a run of `scenario` over `systems` uses that the core install does not bring."""
    out: list[Need] = [MATPLOTLIB] if plot else []
    if scenario in ("autoscale", "soak"):
        return out  # their own open-loop generator (stdlib) and `autodep serve`
    chosen = set(systems)
    if chosen & {"served", "baseline"}:
        out.append(WRK)
    if "baseline" in chosen:
        out += [FASTAPI, UVICORN]
    return out


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _has_binary(name: str) -> bool:
    return shutil.which(name) is not None


def missing(
    needs: Iterable[Need],
    has_module: Callable[[str], bool] | None = None,
    has_binary: Callable[[str], bool] | None = None,
) -> list[Need]:
    """The needs not met; the look-ups default to find_spec and PATH."""
    module, binary = has_module or _has_module, has_binary or _has_binary
    return [n for n in needs if not (module if n.kind == "module" else binary)(n.name)]


def message(absent: list[Need]) -> str:
    """What is missing, what for, and the commands that install it (each once)."""
    lines = ["autodep bench: missing what this run needs (nothing was measured):"]
    for n in absent:
        what = f"Python module {n.name}" if n.kind == "module" else f"{n.name} (executable)"
        lines.append(f"  - {what}: for {n.why}")
    lines.append("install with:")
    for command in dict.fromkeys(n.install for n in absent):
        lines.append(f"  {command}")
    return "\n".join(lines)
