"""The throughput scenario of `autodep bench` (the default): the in-process limit, `autodep
serve` and the FastAPI baseline at fixed concurrencies, one system at a time.

For each workload: the in-process limit (bench.inprocess), then `autodep serve` and the FastAPI
baseline (bench.systems), each started, warmed up, loaded with wrk at every concurrency
(bench.wrk) and stopped before the next, so no two systems share the CPU. bench.cli calls plan()
(the ETA), run() and print_tables(); ratios and tables come from bench.report. Imports torch
only when measuring the limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any

from autodep_celery import processes
from autodep_celery.bench import batches, cpu, report, systems, workloads, wrk
from autodep_celery.bench.progress import Progress


def plan(args: argparse.Namespace) -> dict[str, float]:
    """Estimated seconds of each step of the throughput scenario, for the ETA."""
    point = args.warmup_s + args.duration_s + 1.5  # + the check between warm-up and measure
    steps = {"models": 10.0}
    for name in args.workloads:
        if "limit" in args.systems:
            from autodep_celery.bench.inprocess import (  # torch: only when measured
                BATCH_SIZES,
                SETTINGS,
            )

            limit = len(BATCH_SIZES) * (args.duration_s + args.warmup_s / 2) + 3
            steps.update({f"limit:{name}:{p}x{t}": limit for p, t in SETTINGS})
        for system in ("served", "baseline"):
            if system not in args.systems:
                continue
            steps[f"start:{system}:{name}"] = 20.0
            steps.update({f"point:{system}:{name}:{c}": point for c in args.concurrency})
            if system == "served":
                steps[f"floor:{name}"] = min(5.0, args.duration_s) + 3
            steps[f"stop:{system}:{name}"] = 5.0
            if system == "served" and "limit" in args.systems:
                steps[f"limit-again:{name}"] = args.duration_s + args.warmup_s / 2 + 3
    return steps


def run(
    args: argparse.Namespace,
    workdir: Path,
    children: list[processes.Child],
    progress: Progress,
    results: dict[str, Any],
) -> dict[str, Any]:
    """Fill `results` point by point (so a failure part-way keeps what was measured)."""
    results.update(
        {
            "machine": report.machine_info(),
            "options": {
                "workloads": args.workloads,
                "concurrency": args.concurrency,
                "duration_s": args.duration_s,
                "warmup_s": args.warmup_s,
                "systems": args.systems,
                "quick": args.quick,
                "wrk": _wrk_version(),
            },
            "workloads": {},
        }
    )
    models_dir = args.models or workdir / "models"
    progress.step(
        f"models: taking or building {', '.join(args.workloads)} in {models_dir}", "models"
    )
    models = workloads.build_models(models_dir, args.workloads)
    progress.done("ready")
    script = wrk.write_script(workdir)
    for name in args.workloads:
        spec = workloads.WORKLOADS[name]
        image = workloads.jpeg(spec.size)
        body = workloads.request_body(name, image)
        body_path = workdir / f"{name}.json"
        body_path.write_bytes(body)
        wl: dict[str, Any] = {
            "what": spec.what,
            "image_bytes": len(image),
            "body_bytes": len(body),
            "systems": {},
        }
        results["workloads"][name] = wl
        if "limit" in args.systems:
            wl["limit"] = _limit(name, models[name], image, args, progress)
        for system in ("served", "baseline"):
            if system in args.systems:
                floor: dict[str, Any] = {}
                _served(
                    system,
                    name,
                    models[name],
                    body,
                    body_path,
                    script,
                    args,
                    workdir,
                    children,
                    progress,
                    floor,
                    wl["systems"].setdefault(system, []),
                )
                if floor:
                    wl["floor"] = floor
                if system == "served" and "limit" in wl:
                    # This machine drifts by 10-20% over minutes: measure the best limit setting
                    # again right after the served points; ratios use the mean of both.
                    wl["limit"]["after_served"] = _limit_again(
                        name, models[name], image, args, progress, wl["limit"]["best"]
                    )
    results["machine"]["loadavg_at_end"] = list(os.getloadavg())
    results["ratios"] = report.ratios(results)
    return results


def _limit(
    name: str, model: Path, image: bytes, args: argparse.Namespace, progress: Progress
) -> dict[str, Any]:
    from autodep_celery.bench import (
        inprocess,  # torch and the worker's code: only when measuring the limit
    )

    points = []
    for procs, threads in inprocess.SETTINGS:
        sizes = ",".join(map(str, inprocess.BATCH_SIZES))
        progress.step(
            f"limit {name}: {procs} proc x {threads} thr, batch {sizes}, "
            f"{args.duration_s:g} s each",
            f"limit:{name}:{procs}x{threads}",
        )
        got = inprocess.measure_setting(
            str(model), image, workloads.TOP_N, procs, threads, args.duration_s, args.warmup_s / 2
        )
        points.extend(got)
        progress.done(", ".join(f"b{p.batch_size} {p.img_per_s:.1f}" for p in got) + " img/s")
    return {"best": _point(inprocess.best(points)), "points": [_point(p) for p in points]}


def _point(p: Any) -> dict[str, Any]:
    """An inprocess.LimitPoint as stored in the JSON (its fields plus img/s)."""
    return {**dataclasses.asdict(p), "img_per_s": p.img_per_s}


def _limit_again(
    name: str,
    model: Path,
    image: bytes,
    args: argparse.Namespace,
    progress: Progress,
    best: dict[str, Any],
) -> dict[str, Any]:
    from autodep_celery.bench import inprocess

    procs, threads, size = best["processes"], best["threads"], best["batch_size"]
    progress.step(
        f"limit {name} again: {procs} proc x {threads} thr, batch {size}", f"limit-again:{name}"
    )
    (point,) = inprocess.measure_setting(
        str(model),
        image,
        workloads.TOP_N,
        procs,
        threads,
        args.duration_s,
        args.warmup_s / 2,
        batch_sizes=(size,),
    )
    progress.done(
        f"{point.img_per_s:.1f} img/s (before the served points: {best['img_per_s']:.1f})"
    )
    return _point(point)


def _served(
    system: str,
    name: str,
    model: Path,
    body: bytes,
    body_path: Path,
    script: Path,
    args: argparse.Namespace,
    workdir: Path,
    children: list[processes.Child],
    progress: Progress,
    floor_out: dict[str, Any] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Start `system`, measure every concurrency (each row appended to `rows` as it is
    measured), stop it."""
    port = processes.free_port()
    start = systems.start_served if system == "served" else systems.start_baseline
    progress.step(f"{system} {name}: starting on port {port}", f"start:{system}:{name}")
    child = start(model, port, workdir, children)
    url = f"http://127.0.0.1:{port}/inference"
    systems.check_inference(url, body, workloads.TOP_N)
    progress.done("ready, answers correctly")
    rows = [] if rows is None else rows
    for c in args.concurrency:
        progress.step(
            f"{system} {name} c={c}: warm-up {args.warmup_s:g} s, then {args.duration_s:g} s",
            f"point:{system}:{name}:{c}",
        )
        wrk.run(url, script, body_path, c, args.warmup_s)
        # wrk drops its in-flight requests when it stops, but the server still computes them:
        # one request answered after them means the backlog is gone before measuring.
        systems.check_inference(url, body, workloads.TOP_N)
        base = url.removesuffix("/inference")
        formed = batches.snapshot(base) if system == "served" else None
        before = cpu.snapshot(child.proc.pid)
        r = wrk.run(url, script, body_path, c, args.duration_s)
        used = cpu.split(before, cpu.snapshot(child.proc.pid), r.duration_s, r.requests)
        if system == "served":
            formed = batches.diff(formed, batches.snapshot(base))
        rows.append(
            {
                "concurrency": c,
                "req_per_s": r.req_per_s,
                "p50_ms": r.p50_ms,
                "p90_ms": r.p90_ms,
                "p99_ms": r.p99_ms,
                "mean_ms": r.mean_ms,
                "max_ms": r.max_ms,
                "requests": r.requests,
                "duration_s": r.duration_s,
                "errors": r.error_count,
                "error_kinds": r.errors,
                "non2xx": r.non2xx,
                "wrk_threads": wrk.threads_for(c),
                "wrk_cpu_s": r.cpu_s,
                "loadavg_1m": os.getloadavg()[0],
                "cpu": used,
                "batches": formed,
            }
        )
        progress.done(
            f"{r.req_per_s:.1f} req/s, p50 {_ms(r.p50_ms)}, p99 {_ms(r.p99_ms)}, "
            f"{r.error_count} errors, wrk cpu {r.cpu_s:.2f} s"
        )
    if system == "served":
        from autodep_celery.bench import floor

        progress.step(
            f"served {name}: latency floor at c=1 (GET /health, empty Celery batch)",
            f"floor:{name}",
        )
        broker = floor.broker_url_from_log(workdir / "served.log")
        base = f"http://127.0.0.1:{port}"
        found = floor.measure(base, broker, name, workdir, min(5.0, args.duration_s))
        found["worker_rss"] = _worker_rss(base)
        if floor_out is not None:
            floor_out.update(found)
        celery = found.get("celery_empty_batch", {}).get("p50_ms")
        progress.done(
            f"/health p50 {_ms(found['http_health_p50_ms'])}, empty Celery batch p50 {_ms(celery)}"
        )
    progress.step(f"{system} {name}: stopping", f"stop:{system}:{name}")
    systems.stop([child])
    children.remove(child)
    progress.done("stopped")
    return rows


def _worker_rss(base: str) -> list[dict[str, Any]]:
    """RSS of every worker process of the served system, from GET /workers/_info."""
    import json
    import urllib.request

    with urllib.request.urlopen(base + "/workers/_info", timeout=10) as resp:
        info = json.loads(resp.read())
    return [
        {
            "process": f"{i['worker']}/{i['pid']}",
            "rss_bytes": i["rss_bytes"],
            "requests_served": served,
        }
        for i, served in info
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def print_tables(args: argparse.Namespace, results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"\nautodep bench — {m['cores']} cores ({m['cpu_model']}), torch {m['torch']}, "
        f"Python {m['python']}, {m['date']}; load average at start "
        f"{m['loadavg_at_start'][0]:.2f}, at end {m['loadavg_at_end'][0]:.2f}"
    )
    print(
        f"{args.duration_s:g} s per point after {args.warmup_s:g} s warm-up; req/s counts 2xx "
        "responses; errors = non-2xx + socket errors\n"
    )
    print(report.format_table(results))
    if any("limit" in wl for wl in results["workloads"].values()):
        print("\nin-process limit (img/s, decode + preprocess + forward + top-5, no HTTP):")
        print(report.format_limit_table(results))
    print("\nratios (throughput):")
    print(report.format_ratios(results))
    used = report.format_cpu(results)
    if used:
        print("\nCPU by process role while measured (100% = one core; ms of CPU per request):")
        print(used)
    formed = report.format_batches(results)
    if formed:
        print("\nbatches formed while measured, and a batch's round trip by hop (mean ms):")
        print(formed)
    floor = report.format_floor(results)
    if floor:
        print(
            "\nlatency floor at c=1 (HTTP tier alone + one Celery round trip with no model work):"
        )
        print(floor)
    cpu = report.wrk_cpu_summary(results)
    if cpu:
        print("\n" + cpu)


def _wrk_version() -> str | None:
    try:
        out = subprocess.run([wrk.binary(), "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None
