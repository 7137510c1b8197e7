"""The ETA of a bench run: planned steps times how finished steps compared with their plan."""

from __future__ import annotations

import io

import pytest

from autodep_celery.bench.progress import Progress, eta_s, format_duration


def test_eta_before_anything_finished_is_the_plan() -> None:
    assert eta_s({"a": 10, "b": 20}, {}) == 30


def test_eta_scales_the_rest_by_how_finished_steps_went() -> None:
    plan = {"a": 20.0, "b": 20.0, "c": 20.0}
    assert eta_s(plan, {"a": 40.0}) == pytest.approx(2 * 40)
    assert eta_s(plan, {"a": 10.0}) == pytest.approx(0.5 * 40)
    assert eta_s(plan, {"a": 10.0, "b": 20.0, "c": 30.0}) == 0


def test_eta_scale_is_clamped_and_unplanned_steps_do_not_count() -> None:
    plan = {"a": 10.0, "b": 10.0}
    assert eta_s(plan, {"a": 1000.0}) == pytest.approx(3.0 * 10)
    assert eta_s(plan, {"a": 0.0}) == pytest.approx(0.5 * 10)
    assert eta_s(plan, {"write": 99.0}) == 20


def test_format_duration() -> None:
    assert format_duration(42.4) == "42 s"
    assert format_duration(125) == "2 min 05 s"
    assert format_duration(3 * 3600 + 60) == "3 h 01 min"


def test_progress_prints_an_eta_that_follows_finished_steps() -> None:
    now = [0.0]
    out = io.StringIO()
    p = Progress(stream=out, clock=lambda: now[0])
    p.set_plan({"one": 10.0, "two": 10.0})
    p.step("first", "one")
    now[0] = 30.0  # took 3x its estimate
    p.done("ok")
    p.step("second", "two")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("plan: 2 steps, about 20 s")
    assert "~20 s left" in lines[1]
    assert "(30.0 s)" in lines[2]
    assert "~30 s left" in lines[3]  # the step left, scaled by 3
    assert p.finished == {"one": 30.0}


def test_plans_name_every_measured_step() -> None:
    from autodep_celery.bench import autoscale, cli, throughput

    args = cli._parser().parse_args(["--systems", "served,baseline", "--concurrency", "1,64"])
    plan = throughput.plan(args)
    assert {"start:served:tiny", "point:served:resnet18:64", "floor:tiny"} <= set(plan)
    assert "point:baseline:tiny:1" in plan and not any(k.startswith("limit") for k in plan)
    assert plan["point:served:tiny:1"] == pytest.approx(10 + 2 + 1.5)
    args = cli._parser().parse_args(["--scenario", "autoscale", "--trace-s", "60"])
    plan = autoscale.plan(args)
    assert plan["trace:fixed"] == pytest.approx(70)
    assert set(plan) >= {"start:fixed", "calibrate", "trace:autoscaled", "stop:autoscaled"}


def test_a_short_first_step_does_not_shrink_the_estimate() -> None:
    plan = {"models": 60.0, "fixed": 300.0, "autoscaled": 300.0}
    assert eta_s(plan, {"models": 1.3}) == 600  # 60 of 660 s planned: under SCALE_AFTER
    assert eta_s(plan, {"models": 1.3, "fixed": 360.0}) == pytest.approx(300 * 361.3 / 360)
