"""bench's pre-flight check (bench.deps) and its use by `autodep bench`: a run that lacks an
optional dependency exits 2 naming the install command, before anything is measured."""

from __future__ import annotations

import pytest

from autodep_celery.bench import autoscale, cli, deps, throughput


def names(needs: list[deps.Need]) -> list[str]:
    return [n.name for n in needs]


def test_needed_follows_the_scenario_and_systems() -> None:
    assert names(deps.needed("throughput", ["limit"], plot=True)) == ["matplotlib"]
    assert names(deps.needed("throughput", ["limit"], plot=False)) == []
    assert names(deps.needed("throughput", ["served"], plot=False)) == ["wrk"]
    assert names(deps.needed("throughput", ["limit", "served", "baseline"], plot=True)) == [
        "matplotlib",
        "wrk",
        "fastapi",
        "uvicorn",
    ]
    # the autoscale scenario has its own load generator: no wrk, no FastAPI
    assert names(deps.needed("autoscale", ["limit", "served", "baseline"], plot=True)) == [
        "matplotlib"
    ]


def test_missing_uses_the_lookups_given() -> None:
    needs = deps.needed("throughput", ["served", "baseline"], plot=True)
    absent = deps.missing(
        needs, has_module=lambda name: name != "matplotlib", has_binary=lambda name: False
    )
    assert names(absent) == ["matplotlib", "wrk"]
    assert deps.missing(needs, has_module=lambda n: True, has_binary=lambda n: True) == []


def test_real_lookups_see_the_stdlib_and_not_a_made_up_module() -> None:
    made_up = deps.Need("no_such_module_autodep_xyz", "module", "test", "nothing")
    present = deps.Need("json", "module", "test", "nothing")
    assert deps.missing([made_up, present]) == [made_up]


def test_message_names_each_need_and_each_install_command_once() -> None:
    text = deps.message([deps.MATPLOTLIB, deps.FASTAPI, deps.UVICORN, deps.WRK])
    assert "nothing was measured" in text
    assert "matplotlib" in text and "fastapi" in text and "uvicorn" in text and "wrk" in text
    assert text.count(deps.PIP_BENCH) == 1
    assert "apt-get install wrk" in text
    assert "--no-plot" in text


@pytest.mark.parametrize("scenario", ["throughput", "autoscale"])
def test_bench_exits_2_before_measuring_when_matplotlib_is_missing(
    scenario: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def must_not_run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("measured although a dependency is missing")

    monkeypatch.setattr(deps, "_has_module", lambda name: name != "matplotlib")
    monkeypatch.setattr(deps, "_has_binary", lambda name: True)
    monkeypatch.setattr(throughput, "run", must_not_run)
    monkeypatch.setattr(autoscale, "run", must_not_run)
    assert cli.main(["--scenario", scenario, "--systems", "limit"]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install -e '.[bench]'" in err


def test_no_plot_needs_no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deps, "_has_module", lambda name: name != "matplotlib")
    assert deps.missing(deps.needed("autoscale", [], plot=False)) == []


def test_a_missing_wrk_names_apt_get(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(deps, "_has_module", lambda name: True)
    monkeypatch.setattr(deps, "_has_binary", lambda name: False)
    assert cli.main(["--systems", "served", "--no-plot"]) == 2
    assert "apt-get install wrk" in capsys.readouterr().err
