"""bench's pure parts: wrk's JSON line, wrk's command line, ratios and the printed tables. The
Lua script that prints the JSON line runs under the real wrk in tests/integration/test_bench_wrk.py.
"""

from __future__ import annotations

import copy
import http.server
import os
import threading
from pathlib import Path

import pytest

from autodep_celery.bench import batches, cpu, report, wrk
from autodep_celery.web.metrics import Metrics
from tests.unit.conftest import make_settings

pytestmark = pytest.mark.unit

WRK_STDOUT = """Running 10s test @ http://127.0.0.1:8000/inference
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   30.12ms    5.01ms  80.00ms   70.00%
  4800 requests in 10.00s, 1.20MB read
  Non-2xx or 3xx responses: 12
Requests/sec:    480.00
Transfer/sec:    123.00KB
BENCH_JSON {"requests": 4800, "duration_us": 10000000, "bytes": 1258291, "latency_us": \
{"p50": 29500.0, "p90": 36000.5, "p99": 61000.0, "mean": 30120.0, "max": 80000.0}, \
"errors": {"connect": 0, "read": 2, "write": 0, "status": 12, "timeout": 1}, "non2xx": 20}
"""


def test_parse_wrk_json_line() -> None:
    r = wrk.parse_output(WRK_STDOUT, cpu_s=0.4)
    assert r.requests == 4800
    assert r.duration_s == pytest.approx(10.0)
    assert (r.p50_ms, r.p90_ms, r.p99_ms) == pytest.approx((29.5, 36.0005, 61.0))
    assert r.mean_ms == pytest.approx(30.12) and r.max_ms == pytest.approx(80.0)
    assert r.errors == {"connect": 0, "read": 2, "write": 0, "status": 12, "timeout": 1}
    assert r.non2xx == 20
    assert r.cpu_s == 0.4
    # only 2xx responses count as throughput; status errors are inside non2xx, not added twice
    assert r.req_per_s == pytest.approx((4800 - 20) / 10.0)
    assert r.error_count == 20 + 2 + 1


def test_parse_takes_the_last_json_line() -> None:
    first = WRK_STDOUT.replace('"requests": 4800', '"requests": 1')
    assert wrk.parse_output(first + WRK_STDOUT).requests == 4800


def test_parse_without_json_line_says_what_wrk_printed() -> None:
    with pytest.raises(ValueError, match="(?s)no BENCH_JSON line.*unable to connect"):
        wrk.parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_argv_threads_and_duration() -> None:
    argv = wrk.argv("wrk", "http://h/i", Path("s.lua"), Path("b.json"), 1, 10.4)
    assert argv[:7] == ["wrk", "-t", "1", "-c", "1", "-d", "10s"]
    assert argv[-3:] == ["http://h/i", "--", "b.json"]
    assert wrk.argv("wrk", "u", Path("s"), Path("b"), 64, 0.2)[1:7] == [
        "-t",
        "2",
        "-c",
        "64",
        "-d",
        "1s",
    ]
    assert [wrk.threads_for(c) for c in (1, 2, 16, 64)] == [1, 2, 2, 2]


def _row(c: int, rps: float, p50: float = 10.0, p99: float = 20.0, errors: int = 0) -> dict:
    return {"concurrency": c, "req_per_s": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


RESULTS = {
    "machine": {"cores": 2},
    "workloads": {
        "resnet18": {
            "limit": {
                "best": {"processes": 2, "threads": 1, "batch_size": 4, "img_per_s": 50.0},
                "points": [
                    {"processes": 1, "threads": 2, "batch_size": 1, "img_per_s": 40.0},
                    {"processes": 2, "threads": 1, "batch_size": 4, "img_per_s": 50.0},
                ],
            },
            "systems": {
                "served": [_row(1, 25.0), _row(64, 45.0, 1200.0, 1500.5, 3)],
                "baseline": [_row(1, 40.0), _row(64, 30.0)],
            },
        },
        "tiny": {"systems": {"served": [_row(1, 500.0)]}},
    },
}


def test_ratios_against_limit_and_baseline() -> None:
    r = report.ratios(RESULTS)
    assert r["resnet18"]["served/limit"] == {1: 0.5, 64: 0.9}
    assert r["resnet18"]["served/baseline"] == {1: 0.625, 64: 1.5}
    # nothing to compare with: None, not a crash or a division by zero
    assert r["tiny"] == {"served/limit": {1: None}, "served/baseline": {1: None}}
    assert report.ratio(1.0, 0.0) is None and report.ratio(None, 2.0) is None


def test_table_has_one_row_per_point_and_the_best_limit() -> None:
    lines = report.format_table(RESULTS).splitlines()
    assert lines[0].split() == [
        "system",
        "workload",
        "concurrency",
        "req/s",
        "p50",
        "ms",
        "p99",
        "ms",
        "errors",
    ]
    assert len(lines) == 2 + 1 + 4 + 1  # header, rule, limit, 4 resnet rows, 1 tiny row
    assert lines[2].startswith("limit (2x1 thr, batch 4)") and "50.0" in lines[2]
    assert lines[4].split() == ["served", "resnet18", "64", "45.0", "1,200.0", "1,500.5", "3"]
    assert lines[-1].split()[:4] == ["served", "tiny", "1", "500.0"]
    widths = {len(line) for line in lines}
    assert len(widths) == 1  # columns line up


def test_limit_table_and_ratio_text() -> None:
    table = report.format_limit_table(RESULTS).splitlines()
    assert table[0].split() == ["workload", "setting", "batch", "1", "batch", "4"]
    assert table[2].split() == ["resnet18", "1", "proc", "x", "2", "thr", "40.0", "-"]
    text = report.format_ratios(RESULTS)
    assert "resnet18   served/limit     c=1: 0.50  c=64: 0.90" in text
    assert "tiny" not in text  # no ratio to show


def test_empty_results_format_without_errors() -> None:
    assert report.format_table({}) == "(nothing measured)"
    assert "no in-process limit" in report.format_limit_table({})
    assert report.wrk_cpu_summary({}) == ""


def test_wrk_cpu_share() -> None:
    results = {
        "machine": {"cores": 2},
        "workloads": {
            "w": {
                "systems": {
                    "served": [
                        {**_row(1, 1.0), "wrk_cpu_s": 0.5, "duration_s": 10.0},
                        {**_row(16, 1.0), "wrk_cpu_s": 1.5, "duration_s": 10.0},
                    ]
                }
            }
        },
    }
    assert report.wrk_cpu_summary(results) == (
        "wrk's own CPU: mean 10.0% of one core, max 15.0% (of 200% on 2 cores)"
    )


def test_no_completed_request_has_no_latency() -> None:
    line = (
        'BENCH_JSON {"requests": 0, "duration_us": 2000000, "bytes": 0, "latency_us": {"p50": '
        '0, "p90": 0, "p99": 0, "mean": 0, "max": 0}, "errors": {"connect": 0, "read": 0, '
        '"write": 0, "status": 0, "timeout": 0}, "non2xx": 0}'
    )
    r = wrk.parse_output(line)
    assert (r.req_per_s, r.p50_ms, r.p99_ms) == (0.0, None, None)
    results = {
        "workloads": {
            "w": {
                "systems": {
                    "served": [
                        {
                            "concurrency": 64,
                            "req_per_s": 0.0,
                            "p50_ms": None,
                            "p99_ms": None,
                            "errors": 0,
                        }
                    ]
                }
            }
        }
    }
    assert report.format_table(results).splitlines()[2].split() == [
        "served",
        "w",
        "64",
        "0.0",
        "-",
        "-",
        "0",
    ]


def test_floor_is_printed_next_to_the_served_p50() -> None:
    results = {
        "workloads": {
            "tiny": {
                "floor": {
                    "http_health_p50_ms": 0.8,
                    "celery_empty_batch": {"p50_ms": 3.1},
                    "worker_rss": [{"process": "tiny@h/7", "rss_bytes": 200 * 2**20}],
                },
                "systems": {"served": [{"concurrency": 1, "p50_ms": 5.0}]},
            }
        }
    }
    line = report.format_floor(results)
    assert "GET /health p50 0.8" in line and "3.1" in line and "floor 3.9" in line
    assert "served c=1 p50 5.0" in line
    assert "tiny@h/7 200 MiB" in line
    assert report.format_floor({"workloads": {"tiny": {"systems": {}}}}) == ""


def test_limit_measured_again_after_served_is_averaged_in() -> None:
    again = {**RESULTS["workloads"]["resnet18"]["limit"]["best"], "img_per_s": 40.0}
    results = copy.deepcopy(RESULTS)
    results["workloads"]["resnet18"]["limit"]["after_served"] = again
    assert report.limit_img_per_s(results["workloads"]["resnet18"]) == 45.0
    assert report.ratios(results)["resnet18"]["served/limit"][64] == 1.0
    assert "limit again, after served" in report.format_table(results)


def test_cpu_split_by_role_per_request() -> None:
    before = cpu.Snapshot({1: 0.0, 2: 1.0, 3: 5.0}, {1: "supervisor", 2: "web", 3: "redis"})
    after = cpu.Snapshot(
        {1: 0.001, 2: 3.0, 3: 5.5, 4: 2.0},
        {1: "supervisor", 2: "web", 3: "redis", 4: "web"},  # 4 started in between
    )
    used = cpu.split(before, after, seconds=10.0, requests=1000)
    assert set(used) == {"web", "redis"}  # an idle supervisor is left out
    assert used["web"] == {"cores": pytest.approx(0.4), "ms_per_request": pytest.approx(4.0)}
    assert used["redis"]["ms_per_request"] == pytest.approx(0.5)
    results = copy.deepcopy(RESULTS)
    results["workloads"]["resnet18"]["systems"]["served"][0]["cpu"] = used
    assert "web 40% (4.000 ms/req)" in report.format_cpu(results)


def test_batches_formed_and_hops_between_two_scrapes() -> None:
    before = {"autodep_batch_size_items_count": 10.0, "autodep_batch_size_items_sum": 30.0}
    after = {
        "autodep_batch_size_items_count": 14.0,
        "autodep_batch_size_items_sum": 50.0,
        "autodep_batch_phase_seconds_count:to_worker": 4.0,
        "autodep_batch_phase_seconds_sum:to_worker": 0.004,
        "autodep_batch_phase_seconds_count:in_worker": 4.0,
        "autodep_batch_phase_seconds_sum:in_worker": 0.2,
    }
    formed = batches.diff(before, after)
    assert formed == {
        "batches": 4,
        "mean_items": 5.0,
        "phases_ms": {"to_worker": pytest.approx(1.0), "in_worker": pytest.approx(50.0)},
    }
    assert batches.diff(before, None) is None
    assert batches.diff(before, before) is None, "no batch formed: nothing to average"
    results = copy.deepcopy(RESULTS)
    results["workloads"]["resnet18"]["systems"]["served"][0]["batches"] = formed
    line = report.format_batches(results)
    assert "4 batches of 5.0 items; to worker 1.00, in worker 50.00" in line


def test_batches_snapshot_reads_a_real_metrics_page() -> None:
    stats = Metrics(make_settings(("m",)))
    stats.batch_sent("m", 3, [0.0, 0.0, 0.0])
    stats.batch_phases("m", (0.001, 0.002, 0.003))
    page = stats.render()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = batches.snapshot(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert got is not None
    assert got["autodep_batch_size_items_sum"] == 3
    assert got["autodep_batch_phase_seconds_sum:in_worker"] == pytest.approx(0.002)
    assert batches.snapshot("http://127.0.0.1:1", timeout_s=0.5) is None


def test_cpu_snapshot_of_a_real_process_tree() -> None:
    snap = cpu.snapshot(os.getpid())
    assert snap.roles[os.getpid()] == "supervisor" and snap.cpu_s[os.getpid()] > 0
    assert cpu.snapshot(2**22 + 7).cpu_s == {}  # no such process: empty, no error
