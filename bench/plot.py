"""PNG plots of a results dict (bench.report's shape): one figure per workload, throughput and
p99 latency against concurrency, one line per system, the in-process limit as a horizontal line.

Called by bench.cli after a run. matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use(): the backend is chosen first
from matplotlib import ticker

from autodep_celery.bench import report

LOG_SCALE_ABOVE = 4.0
"""Throughput axis goes logarithmic when the limit is this many times the best served rate."""
STYLE = {
    "served": ("autodep serve", "tab:blue", "o"),
    "baseline": ("FastAPI + uvicorn, 2 workers", "tab:orange", "s"),
}


def plot_workload(name: str, wl: dict[str, Any], machine: dict[str, Any], path: Path) -> Path:
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    concurrencies: set[int] = set()
    for system, (label, colour, marker) in STYLE.items():
        rows = wl.get("systems", {}).get(system, [])
        if not rows:
            continue
        cs = [r["concurrency"] for r in rows]
        concurrencies.update(cs)
        ax_rps.plot(cs, [r["req_per_s"] for r in rows], marker=marker, color=colour, label=label)
        p99 = [float("nan") if r["p99_ms"] is None else r["p99_ms"] for r in rows]
        ax_p99.plot(cs, p99, marker=marker, color=colour, label=label)
    best = (wl.get("limit") or {}).get("best")
    served_max = max(
        (r["req_per_s"] for rows in wl.get("systems", {}).values() for r in rows), default=0.0
    )
    limit = report.limit_img_per_s(wl)
    if best and limit:
        again = ", mean of 2 readings" if (wl.get("limit") or {}).get("after_served") else ""
        ax_rps.axhline(
            limit,
            color="tab:green",
            linestyle="--",
            label=f"in-process limit ({best['processes']}x{best['threads']} thr, "
            f"batch {best['batch_size']}{again})",
        )
    for ax in (ax_rps, ax_p99):
        ax.set_xscale("log", base=2)
        ticks = sorted(concurrencies) or [1]
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.set_xlabel("concurrent connections")
        ax.grid(True, which="both", alpha=0.3)
    if limit and served_max and limit > LOG_SCALE_ABOVE * served_max:
        ax_rps.set_yscale("log")  # the limit is far above: a linear axis would flatten the rest
        ax_rps.set_ylabel("requests / s (2xx, log scale)")
    else:
        ax_rps.set_ylim(bottom=0)
        ax_rps.set_ylabel("requests / s (2xx)")
    ax_p99.set_yscale("log")
    ax_p99.set_ylabel("p99 latency (ms, log scale)")
    plain = ticker.FuncFormatter(lambda value, _pos: f"{value:g}")
    for ax in (ax_rps, ax_p99):
        if ax.get_yscale() == "log":  # 1, 2, 5, 10, 20, 50 ... written as 200, not 2x10^2
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    fig.legend(
        *ax_rps.get_legend_handles_labels(),
        loc="outside lower center",
        ncols=3,
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(
        f"{wl.get('what', name)} — {machine.get('cores')} cores, "
        f"{machine.get('cpu_model')}, {str(machine.get('date', ''))[:10]}",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    machine = results.get("machine", {})
    return [
        plot_workload(name, wl, machine, directory / f"{stem}-{name}.png")
        for name, wl in results.get("workloads", {}).items()
    ]
