"""PNG plots of a results dict (bench.report's shape): one figure per workload, throughput and
p99 latency against concurrency, one line per system, the in-process limit as a horizontal line.

Called by bench.cli after a run. matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

STYLE = {"served": ("autodep serve", "tab:blue", "o"),
         "baseline": ("FastAPI + uvicorn, 2 workers", "tab:orange", "s")}


def plot_workload(name: str, wl: dict[str, Any], machine: dict[str, Any], path: Path) -> Path:
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    concurrencies: set[int] = set()
    for system, (label, colour, marker) in STYLE.items():
        rows = wl.get("systems", {}).get(system, [])
        if not rows:
            continue
        cs = [r["concurrency"] for r in rows]
        concurrencies.update(cs)
        ax_rps.plot(cs, [r["req_per_s"] for r in rows], marker=marker, color=colour, label=label)
        ax_p99.plot(cs, [r["p99_ms"] for r in rows], marker=marker, color=colour, label=label)
    best = (wl.get("limit") or {}).get("best")
    if best:
        ax_rps.axhline(best["img_per_s"], color="tab:green", linestyle="--",
                       label=f"in-process limit ({best['processes']}x{best['threads']} thr, "
                             f"batch {best['batch_size']})")
    for ax, ylabel in ((ax_rps, "requests / s (2xx)"), (ax_p99, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ticks = sorted(concurrencies) or [1]
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    ax_rps.legend(fontsize=8, loc="lower right")
    ax_p99.set_yscale("symlog", linthresh=10)
    ax_p99.set_ylim(bottom=0)
    fig.suptitle(f"{wl.get('what', name)} — {machine.get('cores')} cores, "
                 f"{machine.get('cpu_model')}, {str(machine.get('date', ''))[:10]}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    machine = results.get("machine", {})
    return [plot_workload(name, wl, machine, directory / f"{stem}-{name}.png")
            for name, wl in results.get("workloads", {}).items()]
