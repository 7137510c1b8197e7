"""PNG of a soak run over time: RSS per process role (total, and the change of the mean per
process, which a pool resize does not move), Redis memory, Redis clients and keys, and p50/p99
latency and errors per minute, one panel each.

Called through bench.output.save (after the JSON is written) with the results of bench.soak.
Grey: the warm-up; the band behind each panel is the second half of the load, where growth is
fitted. Legends carry each metric's growth per 10 min and verdict. matplotlib, Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use(): the backend is chosen first

from autodep_celery.bench import soak_report


def _label(name: str, g: dict[str, Any] | None, verdict: str | None = None) -> str:
    if not g or g.get("growth_per_10min") is None:
        return name
    return f"{name}: {g['growth_per_10min']:+.2f}/10 min, {verdict or g['verdict']}"


def plot(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    samples = results.get("samples", [])
    f = results.get("figures") or {}
    fig, axes = plt.subplots(5, 1, figsize=(10, 14), sharex=True, layout="constrained")
    ax_rss, ax_delta, ax_mem, ax_conn, ax_lat = axes
    for role, series in soak_report.role_series(samples).items():
        r = f.get("rss", {}).get(role, {})
        n = r.get("processes", {})
        name = f"{role} ({n.get('start', series[-1][2])} procs)"
        ts = [t / 60 for t, _, _ in series]
        (line,) = ax_rss.plot(
            ts, [v for _, v, _ in series], label=_label(name, r.get("total"), r.get("verdict"))
        )
        mean = [v / c for _, v, c in series]
        first = next((m for (t, _, _), m in zip(series, mean, strict=True) if t >= 0), mean[0])
        ax_delta.plot(ts, [m - first for m in mean], color=line.get_color(), label=role)
    redis = [s for s in samples if s.get("redis")]
    ts = [s["t_s"] / 60 for s in redis]
    rg = f.get("redis", {})
    ax_mem.plot(
        ts,
        [s["redis"]["used_memory_mb"] for s in redis],
        color="tab:red",
        label=_label("used_memory", rg.get("redis_memory_mb")),
    )
    ax_conn.plot(
        ts,
        [s["redis"]["clients"] for s in redis],
        color="tab:purple",
        label=_label("connected clients", rg.get("redis_clients")),
    )
    ax_keys = ax_conn.twinx()
    ax_keys.plot(
        ts,
        [s["redis"]["keys"] for s in redis],
        color="tab:brown",
        linestyle="--",
        label=_label("keys", rg.get("redis_keys")),
    )
    rows = f.get("minutes", [])
    mids = [(r["start_s"] + r["end_s"]) / 120 for r in rows]
    ax_lat.plot(mids, [r["p50_ms"] for r in rows], "o-", color="tab:blue", label="p50")
    ax_lat.plot(mids, [r["p99_ms"] for r in rows], "s-", color="tab:orange", label="p99")
    ax_err = ax_lat.twinx()
    ax_err.bar(
        mids,
        [r["error_count"] for r in rows],
        width=0.3,
        color="tab:red",
        alpha=0.4,
        label="errors",
    )
    duration = f.get("measured_s") or results.get("options", {}).get("minutes", 0) * 60
    for ax in axes:
        if f:
            ax.axvspan(0, f["warmup_s"] / 60, color="grey", alpha=0.15)
            ax.axvspan(f["fit_from_s"] / 60, duration / 60, color="tab:green", alpha=0.06)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    ax_keys.legend(fontsize=7, loc="upper right")
    ax_err.legend(fontsize=7, loc="upper right")
    ax_rss.set_ylabel("RSS per role, MB")
    ax_delta.set_ylabel("mean RSS per process,\nchange since the load started, MB")
    ax_mem.set_ylabel("Redis used_memory, MB")
    ax_conn.set_ylabel("Redis clients")
    ax_keys.set_ylabel("Redis keys")
    ax_lat.set_ylabel("latency per minute, ms (2xx)")
    ax_err.set_ylabel("errors per minute")
    ax_err.set_ylim(bottom=0, top=max([1, *(r["error_count"] for r in rows)]) * 1.2)
    ax_lat.set_ylim(bottom=0)
    ax_lat.set_xlabel(
        "minutes since the load started (grey: warm-up, green: second half, where growth is fitted)"
    )
    m, o = results.get("machine", {}), results.get("options", {})
    rate = o.get("rate_rps")
    fig.suptitle(
        f"soak: {o.get('workload')} via /inference at "
        f"{'-' if rate is None else f'{rate:.0f}'} req/s for {o.get('minutes', 0):g} min; "
        f"{m.get('cores')} cores, {m.get('cpu_model')}, {str(m.get('date', ''))[:10]}; "
        f"{'every metric bounded' if f.get('all_bounded') else 'NOT every metric bounded'}",
        fontsize=10,
    )
    path = directory / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
