"""PNG of an autoscale run over time: offered load, backlog, worker processes and p50/p99
latency, one panel each, the autoscaled and the fixed pool overlaid.

Called through bench.output.save (after the JSON is written) with the results of
bench.autoscale_report.summarize. matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use(): the backend is chosen first
from matplotlib import ticker

from autodep_celery.bench import timeline
from autodep_celery.bench.traces import Trace

SMOOTH_S = 2.0
STYLE = {"autoscaled": ("autoscaled", "tab:blue"), "fixed": ("fixed pool at max", "tab:orange")}


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [math.nan if r.get(key) is None else float(r[key]) for r in rows]


def _mean(values: list[float], n: int) -> list[float]:
    """Trailing mean over `n` windows (answers come in bursts of a batch)."""
    return [
        sum(values[max(0, i + 1 - n) : i + 1]) / len(values[max(0, i + 1 - n) : i + 1])
        for i in range(len(values))
    ]


def plot(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    t = results["trace"]
    trace = Trace(t["shape"], t["duration_s"], t["peak_rps"], t["base_rps"])
    summary = results.get("summary", {})
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True, layout="constrained")
    ax_load, ax_backlog, ax_procs, ax_lat = axes
    for system, (label, colour) in STYLE.items():
        rows = results["systems"].get(system, {}).get("windows", [])
        if not rows:
            continue
        ts = [r["t_s"] for r in rows]
        n = max(1, round(SMOOTH_S / (ts[1] - ts[0]))) if len(ts) > 1 else 1
        done = _mean(_series(rows, "completed_rps"), n)
        ax_load.plot(ts, done, color=colour, label=f"{label}: 2xx/s ({SMOOTH_S:g} s mean)")
        ax_backlog.plot(
            ts, _series(rows, "outstanding"), color=colour, label=f"{label}: in flight (client)"
        )
        if any(r.get("backlog") is not None for r in rows):
            ax_backlog.plot(
                ts,
                _series(rows, "backlog"),
                color=colour,
                linestyle=":",
                label=f"{label}: backlog (GET /autoscaler)",
            )
        ax_procs.step(ts, _series(rows, "processes"), where="post", color=colour, label=label)
        if any(r.get("desired") is not None for r in rows):
            ax_procs.step(
                ts,
                _series(rows, "desired"),
                where="post",
                color=colour,
                linestyle=":",
                label=f"{label}: desired",
            )
        ax_lat.plot(ts, _series(rows, "p50_ms"), color=colour, label=f"{label}: p50")
        ax_lat.plot(ts, _series(rows, "p99_ms"), color=colour, linestyle="--", label="p99")
    grid = [i * 0.1 for i in range(int(trace.duration_s * 10))]
    ax_load.plot(grid, [trace.rate(x) for x in grid], color="black", lw=1, label="offered")
    per_process = summary.get("per_process_rps")
    high = results.get("options", {}).get("max_workers", 1)
    if per_process:
        ax_procs.step(
            grid,
            [timeline.oracle_processes(trace.rate(x), per_process, 0, high) for x in grid],
            where="post",
            color="tab:green",
            linestyle="--",
            label="oracle",
        )
    for a, b in trace.peak_phases():
        for ax in axes:
            ax.axvspan(a, b, color="grey", alpha=0.08)
    ax_load.set_ylabel("requests / s")
    ax_backlog.set_ylabel("requests waiting")
    ax_procs.set_ylabel("pool processes")
    ax_procs.set_ylim(bottom=0, top=high + 0.5)
    ax_lat.set_ylabel("latency, ms (2 s window)")
    ax_lat.set_yscale("log")
    ax_lat.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax_lat.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax_lat.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax_lat.set_xlabel("seconds since the trace started (grey: peak phases)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    m, o = results.get("machine", {}), results.get("options", {})
    ratio = summary.get("throughput_ratio")
    fig.suptitle(
        f"{o.get('model')}: {trace.shape} trace, {m.get('cores')} cores, "
        f"{m.get('cpu_model')}, {str(m.get('date', ''))[:10]}; saturated throughput "
        f"autoscaled/fixed {'-' if ratio is None else f'{ratio:.3f}'}",
        fontsize=10,
    )
    path = directory / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
