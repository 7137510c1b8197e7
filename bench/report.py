"""Results: the machine they came from, the ratios, the printed tables, the JSON file.

Pure functions of the results dict that bench.cli builds (unit-tested), plus machine_info(),
which reads /proc and the installed versions. The results dict:
``{"machine": {...}, "options": {...}, "workloads": {name: {"limit": {"best": point,
"points": [point, ...]}, "systems": {"served": [row, ...], "baseline": [row, ...]}}}}``
where a point has processes, threads, batch_size, img_per_s and a row has concurrency,
req_per_s, p50_ms, p99_ms, errors. Imports nothing of torch or matplotlib at module level.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SYSTEM_ORDER = ("limit", "served", "baseline")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(results: dict[str, Any]) -> dict[str, dict[str, dict[int, float | None]]]:
    """Per workload, per concurrency: served/limit and served/baseline throughput."""
    out: dict[str, dict[str, dict[int, float | None]]] = {}
    for name, wl in results.get("workloads", {}).items():
        systems = wl.get("systems", {})
        limit_rate = limit_img_per_s(wl)
        baseline = {row["concurrency"]: row["req_per_s"] for row in systems.get("baseline", [])}
        per: dict[str, dict[int, float | None]] = {"served/limit": {}, "served/baseline": {}}
        for row in systems.get("served", []):
            c = row["concurrency"]
            per["served/limit"][c] = ratio(row["req_per_s"], limit_rate)
            per["served/baseline"][c] = ratio(row["req_per_s"], baseline.get(c))
        out[name] = per
    return out


def limit_img_per_s(wl: dict[str, Any]) -> float | None:
    """The limit served is compared with: its best point, averaged with the same setting
    measured again after the served points when that was done (the machine drifts)."""
    limit = wl.get("limit") or {}
    best = limit.get("best")
    if not best:
        return None
    again = limit.get("after_served")
    if not again:
        return float(best["img_per_s"])
    return (float(best["img_per_s"]) + float(again["img_per_s"])) / 2


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def format_table(results: dict[str, Any]) -> str:
    """system | workload | concurrency | req/s | p50 ms | p99 ms | errors; the limit's row is
    its best setting (img/s, no latency)."""
    header = ("system", "workload", "concurrency", "req/s", "p50 ms", "p99 ms", "errors")
    rows: list[tuple[str, ...]] = []
    for name, wl in results.get("workloads", {}).items():
        best = (wl.get("limit") or {}).get("best")
        if best:
            label = f"limit ({best['processes']}x{best['threads']} thr, batch {best['batch_size']})"
            rows.append((label, name, "-", _fmt(best["img_per_s"]), "-", "-", "-"))
            again = wl["limit"].get("after_served")
            if again:
                rows.append(
                    (
                        "limit again, after served",
                        name,
                        "-",
                        _fmt(again["img_per_s"]),
                        "-",
                        "-",
                        "-",
                    )
                )
        for system in SYSTEM_ORDER[1:]:
            for row in wl.get("systems", {}).get(system, []):
                rows.append(
                    (
                        system,
                        name,
                        str(row["concurrency"]),
                        _fmt(row["req_per_s"]),
                        _fmt(row["p50_ms"]),
                        _fmt(row["p99_ms"]),
                        str(row["errors"]),
                    )
                )
    return _table(header, rows) if rows else "(nothing measured)"


def format_limit_table(results: dict[str, Any]) -> str:
    """The in-process limit, img/s: one row per workload and setting, one column per batch."""
    rows: list[tuple[str, ...]] = []
    sizes: list[int] = []
    for wl in results.get("workloads", {}).values():
        for p in (wl.get("limit") or {}).get("points", []):
            if p["batch_size"] not in sizes:
                sizes.append(p["batch_size"])
    sizes.sort()
    for name, wl in results.get("workloads", {}).items():
        by_setting: dict[str, dict[int, float]] = {}
        for p in (wl.get("limit") or {}).get("points", []):
            key = f"{p['processes']} proc x {p['threads']} thr"
            by_setting.setdefault(key, {})[p["batch_size"]] = p["img_per_s"]
        for key, per in by_setting.items():
            rows.append((name, key, *(_fmt(per.get(b)) for b in sizes)))
    if not rows:
        return "(no in-process limit measured)"
    return _table(("workload", "setting", *(f"batch {b}" for b in sizes)), rows)


def format_ratios(results: dict[str, Any]) -> str:
    lines = []
    for name, per in ratios(results).items():
        for kind, by_c in per.items():
            if any(v is not None for v in by_c.values()):
                text = "  ".join(f"c={c}: {_fmt(v, 2)}" for c, v in by_c.items())
                lines.append(f"{name:<10} {kind:<16} {text}")
    return "\n".join(lines) if lines else "(no ratios: measure served with limit or baseline)"


def format_cpu(results: dict[str, Any]) -> str:
    """Per system and concurrency: share of a core and CPU ms per request, by role."""
    lines = []
    for name, wl in results.get("workloads", {}).items():
        for system, rows in wl.get("systems", {}).items():
            for row in rows:
                used = row.get("cpu") or {}
                if not used:
                    continue
                parts = [
                    f"{role} {100 * v['cores']:.0f}% ({_fmt(v['ms_per_request'], 3)} ms/req)"
                    for role, v in used.items()
                ]
                total = sum(v["cores"] for v in used.values())
                lines.append(
                    f"{name:<10} {system:<8} c={row['concurrency']:<3} total {100 * total:.0f}%: "
                    + ", ".join(parts)
                )
    return "\n".join(lines)


def format_batches(results: dict[str, Any]) -> str:
    """Per served point: batches formed, items per batch, and the mean ms of each hop."""
    lines = []
    for name, wl in results.get("workloads", {}).items():
        for row in wl.get("systems", {}).get("served", []):
            formed = row.get("batches")
            if not formed:
                continue
            hops = ", ".join(
                f"{phase.replace('_', ' ')} {_fmt(ms, 2)}"
                for phase, ms in formed.get("phases_ms", {}).items()
            )
            lines.append(
                f"{name:<10} c={row['concurrency']:<3} {formed['batches']} batches of "
                f"{formed['mean_items']:.1f} items; {hops or 'no hop times'}"
            )
    return "\n".join(lines)


def wrk_cpu_summary(results: dict[str, Any]) -> str:
    """How much of the machine wrk took: its CPU seconds over the measured wall time."""
    shares = [
        row["wrk_cpu_s"] / row["duration_s"]
        for wl in results.get("workloads", {}).values()
        for rows in wl.get("systems", {}).values()
        for row in rows
        if row.get("duration_s")
    ]
    if not shares:
        return ""
    cores = results.get("machine", {}).get("cores") or 1
    return (
        f"wrk's own CPU: mean {100 * sum(shares) / len(shares):.1f}% of one core, "
        f"max {100 * max(shares):.1f}% (of {cores * 100}% on {cores} cores)"
    )


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": list(os.getloadavg()),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        info["torch"] = None
    info["git_commit"] = _git_commit()
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def format_floor(results: dict[str, Any]) -> str:
    """The c=1 latency floor next to the served p50: what the architecture costs per request."""
    lines = []
    for name, wl in results.get("workloads", {}).items():
        floor = wl.get("floor")
        served = {r["concurrency"]: r for r in wl.get("systems", {}).get("served", [])}
        if not floor or 1 not in served:
            continue
        http = floor.get("http_health_p50_ms")
        celery = (floor.get("celery_empty_batch") or {}).get("p50_ms")
        total = http + celery if http is not None and celery is not None else None
        lines.append(
            f"{name:<10} GET /health p50 {_fmt(http)} ms + empty Celery batch p50 {_fmt(celery)} ms"
            f" = floor {_fmt(total)} ms; served c=1 p50 {_fmt(served[1]['p50_ms'])} ms"
        )
        rss = floor.get("worker_rss") or []
        if rss:
            per = ", ".join(f"{r['process']} {r['rss_bytes'] / 2**20:.0f} MiB" for r in rss)
            lines.append(f"{'':<10} worker RSS after the run: {per}")
    return "\n".join(lines)
