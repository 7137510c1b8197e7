"""`autodep bench`: build the models, then measure each system in turn and report.

For each workload: the in-process limit (bench.inprocess), then `autodep serve` and the FastAPI
baseline (bench.systems), each started, warmed up, loaded with wrk at every concurrency
(bench.wrk) and stopped before the next, so no two systems share the CPU. Prints the tables and
ratios (bench.report), writes JSON and PNGs (bench.plot). Every process started is stopped on
the way out, also on Ctrl-C, SIGTERM or an error. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autodep_celery import processes
from bench import cpu, report, systems, workloads, wrk

RESULTS_DIR = Path(__file__).parent / "results"
SYSTEMS = ("limit", "served", "baseline")
QUICK_DURATION_S = 2.0
QUICK_WARMUP_S = 1.0


class Progress:
    """One line per step on stderr, with the time since the run started."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.step_started = self.started

    def step(self, text: str) -> None:
        self.step_started = time.monotonic()
        print(f"[{self.step_started - self.started:6.1f} s] {text}", file=sys.stderr, flush=True)

    def done(self, text: str) -> None:
        took = time.monotonic() - self.step_started
        print(f"           -> {text} ({took:.1f} s)", file=sys.stderr, flush=True)


def _csv(kind: str, choices: tuple[str, ...] | None = None):  # type: ignore[no-untyped-def]
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if choices is None:
            try:
                values = [int(t) for t in items]
            except ValueError:
                raise argparse.ArgumentTypeError(f"{kind}: whole numbers, e.g. 1,16,64") from None
            if not values or min(values) < 1:
                raise argparse.ArgumentTypeError(f"{kind}: numbers >= 1, e.g. 1,16,64")
            return values
        unknown = [t for t in items if t not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {', '.join(unknown) or '(none)'}; choose from {','.join(choices)}"
            )
        return items

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autodep bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--workloads",
        type=_csv("workload", tuple(workloads.WORKLOADS)),
        default=list(workloads.WORKLOADS),
        help="default: resnet18,tiny",
    )
    p.add_argument(
        "--concurrency",
        type=_csv("concurrency"),
        default=[1, 16, 64],
        help="connections for wrk, default: 1,16,64",
    )
    p.add_argument(
        "--duration-s",
        type=float,
        default=10.0,
        help="seconds measured per point (wrk: whole seconds), default 10",
    )
    p.add_argument(
        "--warmup-s", type=float, default=2.0, help="warm-up before each point, default 2"
    )
    p.add_argument(
        "--systems",
        type=_csv("system", SYSTEMS),
        default=list(SYSTEMS),
        help="default: limit,served,baseline",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"default: {RESULTS_DIR}")
    p.add_argument(
        "--models",
        type=Path,
        metavar="DIR",
        help="take the example models from DIR (built there if missing); "
        "default: built in a temporary directory",
    )
    p.add_argument(
        "--name",
        help="file stem of the outputs (default: a timestamp; also copied "
        "to latest.*; 'quick' for --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_DURATION_S:.0f} s per point, {QUICK_WARMUP_S:.0f} s warm-up",
    )
    return p


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # same clean-up path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.duration_s, args.warmup_s = QUICK_DURATION_S, QUICK_WARMUP_S
    if {"served", "baseline"} & set(args.systems):
        try:
            wrk.binary()
        except RuntimeError as exc:
            print(f"autodep bench: {exc}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started in the background by a shell, which leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="autodep-bench-"))
    children: list[processes.Child] = []
    progress = Progress()
    try:
        results = run(args, workdir, children, progress)
    except KeyboardInterrupt:
        print("\nautodep bench: interrupted; stopping what it started", file=sys.stderr)
        systems.stop(children)
        shutil.rmtree(workdir, ignore_errors=True)
        return 130
    except (RuntimeError, TimeoutError, ValueError, OSError) as exc:
        print(f"autodep bench: error: {exc}", file=sys.stderr)
        _show_logs(workdir)
        print(f"autodep bench: logs kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        systems.stop(children)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    shutil.rmtree(workdir, ignore_errors=True)
    _write(args, results, progress)
    return 0


def run(
    args: argparse.Namespace, workdir: Path, children: list[processes.Child], progress: Progress
) -> dict[str, Any]:
    results: dict[str, Any] = {
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
    models_dir = args.models or workdir / "models"
    progress.step(f"models: taking or building {', '.join(args.workloads)} in {models_dir}")
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
                wl["systems"][system] = _served(
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
    from bench import inprocess  # torch and the worker's code: only when measuring the limit

    points = []
    for procs, threads in inprocess.SETTINGS:
        sizes = ",".join(map(str, inprocess.BATCH_SIZES))
        progress.step(
            f"limit {name}: {procs} proc x {threads} thr, batch {sizes}, {args.duration_s:g} s each"
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
    from bench import inprocess

    procs, threads, size = best["processes"], best["threads"], best["batch_size"]
    progress.step(f"limit {name} again: {procs} proc x {threads} thr, batch {size}")
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
) -> list[dict[str, Any]]:
    port = processes.free_port()
    start = systems.start_served if system == "served" else systems.start_baseline
    progress.step(f"{system} {name}: starting on port {port}")
    child = start(model, port, workdir, children)
    url = f"http://127.0.0.1:{port}/inference"
    systems.check_inference(url, body, workloads.TOP_N)
    progress.done("ready, answers correctly")
    rows = []
    for c in args.concurrency:
        progress.step(
            f"{system} {name} c={c}: warm-up {args.warmup_s:g} s, then {args.duration_s:g} s"
        )
        wrk.run(url, script, body_path, c, args.warmup_s)
        # wrk drops its in-flight requests when it stops, but the server still computes them:
        # one request answered after them means the backlog is gone before measuring.
        systems.check_inference(url, body, workloads.TOP_N)
        before = cpu.snapshot(child.proc.pid)
        r = wrk.run(url, script, body_path, c, args.duration_s)
        used = cpu.split(before, cpu.snapshot(child.proc.pid), r.duration_s, r.requests)
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
            }
        )
        progress.done(
            f"{r.req_per_s:.1f} req/s, p50 {_ms(r.p50_ms)}, p99 {_ms(r.p99_ms)}, "
            f"{r.error_count} errors, wrk cpu {r.cpu_s:.2f} s"
        )
    if system == "served":
        from bench import floor

        progress.step(f"served {name}: latency floor at c=1 (GET /health, empty Celery batch)")
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
    progress.step(f"{system} {name}: stopping")
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


def _write(args: argparse.Namespace, results: dict[str, Any], progress: Progress) -> None:
    from bench import plot  # matplotlib: only once there is something to draw

    stem = args.name or ("quick" if args.quick else dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    out: Path = args.out
    progress.step(f"writing {out}/{stem}.json and plots")
    report.write_json(out / f"{stem}.json", results)
    pngs = plot.plot_all(results, out, stem)
    written = [out / f"{stem}.json", *pngs]
    if not args.name and not args.quick:
        for path in list(written):
            copy = path.with_name(path.name.replace(stem, "latest", 1))
            shutil.copyfile(path, copy)
            written.append(copy)
    progress.done("done")
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
    floor = report.format_floor(results)
    if floor:
        print(
            "\nlatency floor at c=1 (HTTP tier alone + one Celery round trip with no model work):"
        )
        print(floor)
    cpu = report.wrk_cpu_summary(results)
    if cpu:
        print("\n" + cpu)
    print("\nwritten: " + "  ".join(str(p) for p in written))


def _wrk_version() -> str | None:
    try:
        out = subprocess.run([wrk.binary(), "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _show_logs(workdir: Path) -> None:
    for log in sorted(workdir.glob("*.log")) + sorted(workdir.glob("served-logs/*.log")):
        tail = systems.log_tail(log, 15)
        if tail:
            print(f"--- {log.name} (last lines) ---\n{tail}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
