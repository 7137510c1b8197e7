"""Writing a run's results: the JSON first, then the plots, which may fail without losing it.

bench.cli calls save() for every scenario. The JSON is written (atomically: a temporary file
renamed into place) before matplotlib is even imported, so a missing or broken matplotlib, or a
bug in a plot, costs the picture and never a measurement: save() logs the error and returns it,
and the caller exits non-zero after saying where the JSON is. Imports nothing heavy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Plotter = Callable[[dict[str, Any], Path, str], list[Path]]
"""(results, directory, stem) -> PNG files written."""


@dataclass
class Saved:
    json_path: Path
    written: list[Path] = field(default_factory=list)
    plot_error: str | None = None


def write_json(path: Path, results: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def save(
    results: dict[str, Any],
    directory: Path,
    stem: str,
    plotter: Callable[[], Plotter] | None,
    latest: str | None = None,
) -> Saved:
    """Write `stem`.json, then call `plotter()` (which imports matplotlib and returns the
    plotting function) for the PNGs; with `latest`, copy each file under that stem too."""
    saved = Saved(write_json(directory / f"{stem}.json", results))
    saved.written.append(saved.json_path)
    if plotter is not None:
        try:
            saved.written += plotter()(results, directory, stem)
        except Exception as exc:  # any plotting failure must leave the JSON
            log.error("plotting failed; the results are in %s", saved.json_path, exc_info=True)
            saved.plot_error = f"{type(exc).__name__}: {exc}"
    if latest:
        for path in list(saved.written):
            copy = path.with_name(path.name.replace(stem, latest, 1))
            shutil.copyfile(path, copy)
            saved.written.append(copy)
    return saved
