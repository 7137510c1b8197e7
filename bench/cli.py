"""`autodep bench`: parse the options, check what the run needs, run a scenario, write results.

Scenarios: `throughput` (the default; bench.throughput: the in-process limit, `autodep serve`
and a FastAPI baseline at fixed concurrencies), `autoscale` (bench.autoscale: a load trace
against the autoscaled pool and a fixed pool at max) and `soak` (bench.soak: minutes of steady
load at a fraction of capacity, watching memory, Redis and latency for growth). Before anything
is measured, what the run needs beyond the core install is checked (bench.deps: exit 2 naming
the install command). The JSON is written before any plot (bench.output): a plot that fails
costs the PNG and exit code 1, never a measurement, and a run that fails part-way writes what it
measured to <stem>-partial.json. Every process started is stopped on the way out, also on
Ctrl-C, SIGTERM or an error. Progress (one line per step, with an ETA for the whole run) goes to
stderr, results to stdout. Imported by autodep_celery.cli only for `autodep bench`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from autodep_celery import processes
from autodep_celery.bench import (
    autoscale,
    autoscale_report,
    deps,
    output,
    soak,
    soak_summary,
    systems,
    throughput,
    workloads,
)
from autodep_celery.bench.progress import Progress

RESULTS_DIR = Path(__file__).parent / "results"
SYSTEMS = ("limit", "served", "baseline")
SCENARIOS = ("throughput", "autoscale", "soak")
DEFAULT_WORKLOADS = list(workloads.WORKLOADS)
"""The default of --workloads (compared by identity: soak takes `tiny` unless one is named)."""
QUICK_DURATION_S = 2.0
QUICK_WARMUP_S = 1.0


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
        "--scenario",
        choices=SCENARIOS,
        default="throughput",
        help="throughput (default): limit vs served vs FastAPI at fixed concurrency; "
        "autoscale: a load trace against the autoscaled pool and a fixed pool at max; "
        "soak: minutes of steady load, reporting memory, Redis and latency growth",
    )
    p.add_argument(
        "--workloads",
        type=_csv("workload", tuple(workloads.WORKLOADS)),
        default=DEFAULT_WORKLOADS,
        help="default: resnet18,tiny (soak: one workload, default tiny)",
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
        help="file stem of the outputs (default: a timestamp, autoscale-<timestamp> for the "
        "autoscale scenario; also copied to latest.* / autoscale-latest.*; 'quick' for --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_DURATION_S:.0f} s per point, {QUICK_WARMUP_S:.0f} s warm-up",
    )
    p.add_argument(
        "--no-plot", action="store_true", help="write the JSON only (no matplotlib needed)"
    )
    autoscale.add_arguments(p)
    soak.add_arguments(p)
    return p


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # same clean-up path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.scenario == "soak":
        if args.workloads is DEFAULT_WORKLOADS:
            args.workloads = [soak.DEFAULT_WORKLOAD]
        if len(args.workloads) != 1:
            parser.error("--scenario soak takes one workload, e.g. --workloads tiny")
    if args.quick:
        args.duration_s, args.warmup_s = QUICK_DURATION_S, QUICK_WARMUP_S
    absent = deps.missing(deps.needed(args.scenario, args.systems, plot=not args.no_plot))
    if absent:
        print(deps.message(absent), file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started in the background by a shell, which leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="autodep-bench-"))
    children: list[processes.Child] = []
    progress = Progress()
    results: dict[str, Any] = {}
    scenario = {"autoscale": autoscale, "soak": soak}.get(args.scenario, throughput)
    progress.set_plan(scenario.plan(args))
    try:
        results = scenario.run(args, workdir, children, progress, results)
    except KeyboardInterrupt:
        print("\nautodep bench: interrupted; stopping what it started", file=sys.stderr)
        systems.stop(children)
        _save_partial(args, results)
        shutil.rmtree(workdir, ignore_errors=True)
        return 130
    except (RuntimeError, TimeoutError, ValueError, OSError) as exc:
        print(f"autodep bench: error: {exc}", file=sys.stderr)
        _show_logs(workdir)
        print(f"autodep bench: logs kept in {workdir}", file=sys.stderr)
        _save_partial(args, results)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        systems.stop(children)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    shutil.rmtree(workdir, ignore_errors=True)
    return _write(args, results, progress)


def _stem(args: argparse.Namespace) -> str:
    if args.name or args.quick:
        return str(args.name or "quick")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return stamp if args.scenario == "throughput" else f"{args.scenario}-{stamp}"


def _plot_throughput() -> output.Plotter:
    from autodep_celery.bench import plot  # matplotlib: only once the JSON is written

    return plot.plot_all


def _plot_autoscale() -> output.Plotter:
    from autodep_celery.bench import autoscale_plot

    return autoscale_plot.plot


def _plot_soak() -> output.Plotter:
    from autodep_celery.bench import soak_plot

    return soak_plot.plot


def _write(args: argparse.Namespace, results: dict[str, Any], progress: Progress) -> int:
    """JSON, then plots, then the printed summary; 1 when plotting failed (the JSON is kept)."""
    scenario = args.scenario
    stem, out = _stem(args), args.out
    latest = None
    if not (args.name or args.quick):
        latest = "latest" if scenario == "throughput" else f"{scenario}-latest"
    plotters = {"autoscale": _plot_autoscale, "soak": _plot_soak}
    plotter = None if args.no_plot else plotters.get(scenario, _plot_throughput)
    progress.step(f"writing {out}/{stem}.json" + ("" if args.no_plot else " and plots"), "write")
    saved = output.save(results, out, stem, plotter, latest)
    progress.done("plotting FAILED, JSON written" if saved.plot_error else "done")
    if scenario == "autoscale":
        print("\n" + autoscale_report.format_summary(results))
    elif scenario == "soak":
        print("\n" + soak_summary.format_summary(results))
    else:
        throughput.print_tables(args, results)
    print("\nwritten: " + "  ".join(str(p) for p in saved.written))
    if saved.plot_error:
        print(
            f"autodep bench: plotting failed ({saved.plot_error}); every measurement is in "
            f"{saved.json_path}. Fix matplotlib ({deps.PIP_BENCH}) or use --no-plot.",
            file=sys.stderr,
        )
        return 1
    return 0


def _save_partial(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """What a failed or interrupted run measured, in <stem>-partial.json."""
    measured = results.get("systems") or results.get("capacity") or results.get("samples")
    for wl in results.get("workloads", {}).values():
        measured = measured or wl.get("limit") or any(wl.get("systems", {}).values())
    if not measured:
        return
    try:
        path = output.write_json(args.out / f"{_stem(args)}-partial.json", results)
    except (OSError, TypeError, ValueError) as exc:
        print(f"autodep bench: could not write the partial results: {exc}", file=sys.stderr)
        return
    print(f"autodep bench: what was measured before it stopped is in {path}", file=sys.stderr)


def _show_logs(workdir: Path) -> None:
    for log in sorted(workdir.glob("*.log")) + sorted(workdir.glob("*-logs/*.log")):
        tail = systems.log_tail(log, 15)
        if tail:
            print(f"--- {log.name} (last lines) ---\n{tail}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
