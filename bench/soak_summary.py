"""The printed summary and progress lines of a soak run (bench.soak_report's figures in, text
out). bench.cli prints format_summary(); bench.soak prints the progress lines. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autodep_celery.bench import timeline
from autodep_celery.bench.soak_report import error_count
from autodep_celery.bench.timeline import Request

REDIS_LABELS = {
    "redis_memory_mb": "Redis used_memory, MB",
    "redis_clients": "Redis clients",
    "redis_keys": "Redis keys",
}
TOP_PATTERNS = 8


def format_summary(results: dict[str, Any]) -> str:
    """The printed summary of a soak run."""
    m, o, f = results["machine"], results["options"], results.get("figures") or {}
    lines = [
        f"autodep bench --scenario soak: {o['workload']} via /inference, "
        f"{_f(o.get('rate_rps'))} req/s ({_f(o.get('load_fraction'), 2)} x capacity "
        f"{_f(results.get('capacity', {}).get('req_per_s'))} req/s) for {o['minutes']:g} min",
        f"{m['cores']} cores ({m['cpu_model']}), {m['date']}; load average at start "
        f"{m['loadavg_at_start'][0]:.2f}, at end {_f((m.get('loadavg_at_end') or [None])[0], 2)}",
    ]
    if not f:
        return "\n".join([*lines, "no figures: the load phase did not run"])
    lat = f["latency_ms"]
    pm = f["p99_per_minute_ms"]
    lines += [
        f"requests: {f['outcomes'].get('sent', 0)} sent, {f['outcomes'].get('ok', 0)} 2xx, "
        f"{f['errors']} errors ({_errors(f['outcomes'])}); p50 {_f(lat['p50'])} ms, "
        f"p99 {_f(lat['p99'])} ms, p99 per minute {_f(pm['min'])}..{_f(pm['max'])} ms",
        "p99 per minute, ms: " + " ".join(_f(r["p99_ms"], 0) for r in f["minutes"]),
        "errors per minute: " + " ".join(str(r["error_count"]) for r in f["minutes"]),
        "CPU over the load, cores: "
        + ", ".join(f"{role} {cores:.2f}" for role, cores in f.get("cpu_cores", {}).items()),
        "",
        f"{'metric':28}{'start':>10}{'end':>10}{'/10 min':>10}{'limit':>9}  verdict",
    ]
    for role, r in f["rss"].items():
        t = r["total"]
        n = r["processes"]
        label = f"RSS {role} ({n['start']}->{n['end']}), MB"
        lines.append(_row(label, t, r["verdict"], r["judged_on"]))
    for name, g in f["redis"].items():
        lines.append(_row(REDIS_LABELS[name], g, g["verdict"], ""))
    after = (results.get("redis_key_patterns") or {}).get("after")
    if f["redis"]["redis_keys"]["verdict"] == "growing" and after:
        top = list(after.items())[:TOP_PATTERNS]
        lines.append("keys at the end, by pattern: " + ", ".join(f"{k} {n}" for k, n in top))
    lines.append(
        f"\ngrowth: least-squares slope over the second half of the load (from "
        f"{f['fit_from_s']:g} s), per 10 min; start = first sample after {f['warmup_s']:g} s; "
        f"{'every metric bounded' if f['all_bounded'] else 'NOT every metric bounded'}"
        + (
            ""
            if f["fit_window_enough"]
            else f" (a fit over {f['fit_window_s']:g} s is too short to judge: run 4 minutes "
            "or more)"
        )
    )
    return "\n".join(lines)


def minute_line(requests: Sequence[Request]) -> str:
    """A progress line for some requests: sent, 2xx, errors, p99."""
    c = timeline.outcome_counts(requests)
    ok = sorted(r.latency_s for r in requests if r.ok and r.latency_s is not None)
    p99 = _ms(timeline.percentile(ok, 99))
    return f"{c['sent']} sent, {c['ok']} 2xx, {error_count(c)} errors, p99 {_f(p99)} ms"


def one_line(f: dict[str, Any] | None) -> str:
    """The progress line that ends the load: errors, p99 and the verdicts."""
    if not f:
        return "no requests ended"
    growing = [k for k, v in f["verdicts"].items() if v != "bounded"]
    pm = f["p99_per_minute_ms"]
    return (
        f"{f['outcomes']['ok']}/{f['outcomes']['sent']} 2xx, {f['errors']} errors; p99 per "
        f"minute {_f(pm['min'])}..{_f(pm['max'])} ms; "
        + (f"not bounded: {', '.join(growing)}" if growing else "every metric bounded")
    )


def _row(label: str, g: dict[str, Any], verdict: str, note: str) -> str:
    return (
        f"{label:28}{_f(g.get('start')):>10}{_f(g.get('end')):>10}"
        f"{_f(g.get('growth_per_10min'), 2):>10}{_f(g.get('threshold_per_10min')):>9}  {verdict}"
        + (f" ({note})" if note and note != "role total" else "")
    )


def _errors(outcomes: dict[str, int]) -> str:
    parts = [f"{k} {v}" for k, v in outcomes.items() if k not in ("sent", "ok")]
    return ", ".join(parts) or "none"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
