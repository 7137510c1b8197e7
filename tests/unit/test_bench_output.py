"""bench writes its JSON before plotting: a plot that raises (matplotlib missing or broken)
never loses a measurement, and `autodep bench` then exits non-zero saying where the JSON is."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from autodep_celery.bench import cli, output, throughput
from autodep_celery.bench.progress import Progress

RESULTS = {"machine": {"cores": 2}, "workloads": {"tiny": {"systems": {"served": [{"c": 1}]}}}}


def test_json_is_written_before_the_plotter_is_even_imported(tmp_path: Path) -> None:
    seen: list[bool] = []

    def plotter() -> output.Plotter:
        seen.append((tmp_path / "run.json").is_file())  # the JSON exists at import time
        raise ModuleNotFoundError("No module named 'matplotlib'")

    saved = output.save(RESULTS, tmp_path, "run", plotter)
    assert seen == [True]
    assert json.loads((tmp_path / "run.json").read_text()) == RESULTS
    assert saved.plot_error is not None and "matplotlib" in saved.plot_error
    assert saved.written == [tmp_path / "run.json"]


def test_a_plot_that_raises_keeps_the_json_and_the_latest_copy(tmp_path: Path) -> None:
    def broken(_results: dict[str, Any], _directory: Path, _stem: str) -> list[Path]:
        raise ValueError("bad axis")

    saved = output.save(RESULTS, tmp_path, "run", lambda: broken, latest="latest")
    assert saved.plot_error == "ValueError: bad axis"
    assert json.loads((tmp_path / "latest.json").read_text()) == RESULTS
    assert not list(tmp_path.glob("*.tmp"))


def test_plots_written_are_listed_and_copied(tmp_path: Path) -> None:
    def fine(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
        path = directory / f"{stem}-x.png"
        path.write_bytes(b"png")
        return [path]

    saved = output.save(RESULTS, tmp_path, "run", lambda: fine, latest="latest")
    assert saved.plot_error is None
    assert [p.name for p in saved.written] == [
        "run.json",
        "run-x.png",
        "latest.json",
        "latest-x.png",
    ]


def test_no_plotter_writes_the_json_only(tmp_path: Path) -> None:
    saved = output.save(RESULTS, tmp_path, "run", None)
    assert saved.written == [tmp_path / "run.json"] and saved.plot_error is None


def _args(tmp_path: Path, **kw: Any) -> argparse.Namespace:
    base = {"scenario": "throughput", "name": "t", "quick": False, "out": tmp_path}
    return argparse.Namespace(**{**base, "no_plot": False, **kw})


def test_cli_write_exits_1_after_writing_the_json_when_plotting_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_matplotlib() -> output.Plotter:
        raise ModuleNotFoundError("No module named 'matplotlib'")

    monkeypatch.setattr(cli, "_plot_throughput", no_matplotlib)
    monkeypatch.setattr(throughput, "print_tables", lambda args, results: print("TABLES"))
    code = cli._write(_args(tmp_path), RESULTS, Progress())
    assert code == 1
    assert json.loads((tmp_path / "t.json").read_text()) == RESULTS
    out, err = capsys.readouterr()
    assert "TABLES" in out  # the measurements are still printed
    assert "plotting failed" in err and str(tmp_path / "t.json") in err


def test_cli_write_with_no_plot_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def must_not_plot() -> output.Plotter:
        raise AssertionError("plotted with --no-plot")

    monkeypatch.setattr(cli, "_plot_throughput", must_not_plot)
    monkeypatch.setattr(throughput, "print_tables", lambda args, results: None)
    assert cli._write(_args(tmp_path, no_plot=True), RESULTS, Progress()) == 0
    assert json.loads((tmp_path / "t.json").read_text()) == RESULTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]  # and no plot


def test_partial_results_are_saved_only_when_something_was_measured(tmp_path: Path) -> None:
    cli._save_partial(_args(tmp_path), {"machine": {}, "workloads": {"tiny": {"systems": {}}}})
    assert not (tmp_path / "t-partial.json").exists()
    cli._save_partial(_args(tmp_path), RESULTS)
    assert json.loads((tmp_path / "t-partial.json").read_text()) == RESULTS
