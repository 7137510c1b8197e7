"""The autoscale scenario's pure parts: configs of the two systems, reading the pool from the
HTTP API, the open-loop generator (with a fake connection) and the summary figures."""

from __future__ import annotations

import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from autodep_celery import config
from autodep_celery.bench import autoscale_report, openloop, serve_config
from autodep_celery.bench.timeline import PoolSample, Request
from autodep_celery.bench.traces import Trace


def test_configs_differ_only_in_autoscaling_and_pool_bounds(tmp_path: Path) -> None:
    base_file = tmp_path / "base.toml"
    base_file.write_text(
        "[autoscaler]\ninterval_s = 1.5\n\n[web]\nprocesses = 2\n\n"
        '[[models]]\nname = "other"\npath = "other.pt"\n'
    )
    base = serve_config.read_base(base_file)
    entry = serve_config.model_entry(base, "resnet18", tmp_path / "resnet18.pt")
    auto = serve_config.for_system(base, entry, True, 1, 2)
    fixed = serve_config.for_system(base, entry, False, 1, 2)
    assert auto["autoscaler"] == {"interval_s": 1.5, "enabled": True}
    assert fixed["autoscaler"] == {"interval_s": 1.5, "enabled": False}
    assert auto["models"] == [
        {
            "name": "resnet18",
            "path": str(tmp_path / "resnet18.pt"),
            "min_workers": 1,
            "max_workers": 2,
        }
    ]
    assert fixed["models"][0]["min_workers"] == fixed["models"][0]["max_workers"] == 2
    assert base["autoscaler"] == {"interval_s": 1.5}  # the base is not changed
    assert tomllib.loads(serve_config.dumps(fixed)) == fixed


def test_written_config_is_valid_for_autodep(tmp_path: Path) -> None:
    model = tmp_path / "resnet18.pt"
    model.write_bytes(b"")
    text = serve_config.dumps(
        serve_config.for_system(
            {"web": {"processes": 2}}, {"name": "resnet18", "path": str(model)}, False, 1, 2
        )
    )
    path = tmp_path / "c.toml"
    path.write_text(text)
    settings = config.load(str(path), environ={})
    (m,) = settings.models
    assert (m.name, m.min_workers, m.max_workers) == ("resnet18", 2, 2)
    assert settings.autoscaler.enabled is False


def test_model_entry_of_the_base_keeps_its_keys_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    base_file = tmp_path / "cfg" / "base.toml"
    base_file.write_text('[[models]]\nname = "resnet18"\npath = "m/r.pt"\nmax_workers = 3\n')
    entry = serve_config.model_entry(serve_config.read_base(base_file), "resnet18", Path("x"))
    assert entry == {"name": "resnet18", "path": str(tmp_path / "cfg/m/r.pt"), "max_workers": 3}


def test_toml_values() -> None:
    text = serve_config.dumps({"a": {"s": 'q"uote', "l": [1, 2.5], "b": False}})
    assert tomllib.loads(text) == {"a": {"s": 'q"uote', "l": [1, 2.5], "b": False}}
    with pytest.raises(ValueError):
        serve_config.dumps({"a": {"x": float("nan")}})


def test_pool_from_the_autoscaler_and_from_workers_status() -> None:
    s = openloop.from_autoscaler(
        3.0,
        {"current": 2, "ready": 1, "desired": 3, "backlog": 12.5, "queue_wait_s": 0.4},
        outstanding=7,
    )
    assert (s.processes, s.ready, s.desired, s.backlog, s.queue_wait_s) == (2, 1, 3, 12.5, 0.4)
    assert s.outstanding == 7
    assert openloop.from_autoscaler(0, {"current": None}, 0).processes is None
    status = {"a@h/1": "Working", "a@h/2": "Idle", "b@h/3": "Idle", "a@h/4": "Idle"}
    info = [
        [{"worker": "a@h", "pid": 1, "models": ["resnet18"]}, 10],
        [{"worker": "a@h", "pid": 2, "models": ["resnet18"]}, 3],
        [{"worker": "b@h", "pid": 3, "models": ["tiny"]}, 0],
        [{"worker": "a@h", "pid": 4, "models": []}, 0],  # still loading: counts
    ]
    assert openloop.count_processes(status, info, "resnet18") == 3
    assert openloop.count_processes(status, None, "resnet18") == 4
    assert openloop.count_processes(None, info, "resnet18") is None


class FakeResponse:
    status = 200

    def read(self) -> bytes:
        return b"[]"


class FakeConnection:
    """http.client.HTTPConnection stand-in: every request takes `delay_s`."""

    delay_s = 0.05
    active = 0
    peak = 0
    lock = threading.Lock()

    def __init__(self, host: str, port: int, timeout: float) -> None:
        assert host == "127.0.0.1"

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        with FakeConnection.lock:
            FakeConnection.active += 1
            FakeConnection.peak = max(FakeConnection.peak, FakeConnection.active)

    def getresponse(self) -> FakeResponse:
        time.sleep(self.delay_s)
        with FakeConnection.lock:
            FakeConnection.active -= 1
        return FakeResponse()

    def close(self) -> None:
        pass


def test_open_loop_sheds_above_its_in_flight_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openloop.http.client, "HTTPConnection", FakeConnection)
    loop = openloop.OpenLoop(1, "/inference", b"{}", max_in_flight=2, timeout_s=5)
    arrivals = [0.0, 0.001, 0.002, 0.003, 0.2]  # four at once: two are shed
    got = loop.run(arrivals, time.monotonic())
    assert [r.intended_s for r in got] == arrivals
    assert sum(1 for r in got if r.error == "shed") == 2
    assert sum(1 for r in got if r.ok) == 3
    assert FakeConnection.peak <= 2 and loop.in_flight == 0
    for r in got:
        if r.ok:
            assert r.latency_s is not None and r.latency_s >= 0.04


def _run_of(processes: list[int], ok_per_s: float, trace: Trace) -> dict[str, Any]:
    """Figures of a synthetic run: 2xx answers at `ok_per_s`, pool sampled every 0.5 s."""
    n = int(trace.duration_s * ok_per_s)
    requests = [Request(i / ok_per_s, i / ok_per_s + 0.1, 200) for i in range(n)]
    samples = [PoolSample(i * 0.5, p) for i, p in enumerate(processes)]
    return autoscale_report.system_figures(requests, samples, trace, 1, 0.5)


def test_summary_compares_worker_seconds_and_saturated_throughput() -> None:
    trace = Trace("step", 20, peak_rps=24, base_rps=4)  # peak phase 3 s .. 12 s
    # autoscaled: 1 process, 2 from 4 s to 14 s; fixed: always 2 (40 samples = 20 s)
    auto = [1] * 8 + [2] * 20 + [1] * 12
    results: dict[str, Any] = {
        "trace": trace.to_dict(),
        "options": {"min_workers": 1, "max_workers": 2, "sample_s": 0.5, "model": "resnet18"},
        "capacity": {"req_per_s": 19.0},
        "machine": {"cores": 2, "cpu_model": "x", "date": "d", "loadavg_at_start": [0.1]},
        "systems": {
            "fixed": {"pool_source": "workers", **_run_of([2] * 40, 20, trace)},
            "autoscaled": {"pool_source": "autoscaler", **_run_of(auto, 19.5, trace)},
        },
    }
    s = autoscale_report.summarize(results)["summary"]
    assert s["worker_s"]["fixed"] == pytest.approx(40)
    assert s["worker_s"]["autoscaled"] == pytest.approx(1 * 4 + 2 * 10 + 1 * 6)
    assert s["capacity_rps"] == pytest.approx(20, rel=0.05)  # the fixed pool's, saturated
    assert s["capacity_from"] == "fixed pool at peak"
    assert s["per_process_rps"] == pytest.approx(10, rel=0.05)
    # oracle: 4 req/s -> 1 process for 11 s, 24 req/s -> 2 (the max) for 9 s
    assert s["worker_s"]["oracle"] == pytest.approx(11 + 18, abs=0.2)
    assert s["throughput_ratio"] == pytest.approx(19.5 / 20, rel=0.02)
    assert s["target_met"] is True
    auto_res = results["systems"]["autoscaled"]
    assert auto_res["reaction_s"] == pytest.approx(1.0)  # rise at 3 s, 2 processes at 4 s
    assert auto_res["back_to_min_s"] == pytest.approx(2.0)  # load ends 12 s, back at 14 s
    assert auto_res["actions"] == 2
    text = autoscale_report.format_summary(results)
    assert "worker-seconds" in text and "target >= 0.95: met" in text
    assert "reaction to the rise (a process more): 1.0 s" in text


def test_throughput_target_is_not_judged_when_the_fixed_pool_was_not_saturated() -> None:
    trace = Trace("step", 20, peak_rps=20, base_rps=4)
    results: dict[str, Any] = {
        "trace": trace.to_dict(),
        "options": {"min_workers": 1, "max_workers": 2, "sample_s": 0.5, "model": "resnet18"},
        "capacity": {"req_per_s": 30.0},
        "machine": {"cores": 2, "cpu_model": "x", "date": "d", "loadavg_at_start": [0.1]},
        "systems": {
            "fixed": _run_of([2] * 40, 20, trace),  # kept up with the peak: not saturated
            "autoscaled": _run_of([2] * 40, 15, trace),
        },
    }
    s = autoscale_report.summarize(results)["summary"]
    assert s["fixed_saturated"] is False and s["target_met"] is None
    assert s["capacity_from"] == "closed-loop calibration" and s["capacity_rps"] == 30
    text = autoscale_report.format_summary(results)
    assert "the peak did not saturate the fixed pool" in text
    assert "base load already held 2 processes" in text


def test_plot_over_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plt = pytest.importorskip("matplotlib.pyplot")
    from autodep_celery.bench import autoscale_plot

    trace = Trace("step", 20, peak_rps=24, base_rps=4)
    results: dict[str, Any] = {
        "trace": trace.to_dict(),
        "options": {"min_workers": 1, "max_workers": 2, "sample_s": 0.5, "model": "resnet18"},
        "capacity": {"req_per_s": 19.0},
        "machine": {"cores": 2, "cpu_model": "x", "date": "d", "loadavg_at_start": [0.1]},
        "systems": {
            "fixed": _run_of([2] * 40, 20, trace),
            "autoscaled": _run_of([1] * 8 + [2] * 20 + [1] * 12, 19.5, trace),
        },
    }
    autoscale_report.summarize(results)
    close, figures = plt.close, []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at
    (png,) = autoscale_plot.plot(results, tmp_path, "run")
    with Image.open(png) as img:
        assert (img.format, img.size) == ("PNG", (1000, 1000))  # 10 x 10 in at 100 dpi
    (fig,) = figures
    try:
        load, backlog, procs, latency = fig.axes
        assert [ax.get_ylabel() for ax in (load, backlog, procs, latency)] == [
            "requests / s",
            "requests waiting",
            "pool processes",
            "latency, ms (2 s window)",
        ]

        def line(ax: Any, label: str) -> tuple[list[float], list[float]]:
            (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
            return list(found.get_xdata()), list(found.get_ydata())

        windows = results["systems"]["autoscaled"]["windows"]
        xs, ys = line(procs, "autoscaled")
        assert xs == [w["t_s"] for w in windows] and ys == [w["processes"] for w in windows]
        assert set(line(procs, "fixed pool at max")[1]) == {2}
        assert set(line(procs, "oracle")[1]) == {1, 2}  # 4 req/s needs 1 process, 24 needs 2
        xs, ys = line(load, "offered")
        assert ys == [trace.rate(x) for x in xs] and set(ys) == {4, 24}
        assert "autoscaled/fixed 0.975" in fig.get_suptitle()
    finally:
        close(fig)
