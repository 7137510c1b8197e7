"""The compose test's reporting: the tail of every service's log on a failing test, and the
time each phase took (image builds, start, checks, tear-down) at the end of the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

TIMINGS: dict[str, float] = {}
"""Phase name -> seconds, filled by test_compose.py in the order the phases ran."""
LOGS: list[Callable[[], str]] = []
"""Set while a stack runs: returns the tail of its services' logs."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and LOGS:
        report.sections.append(("docker compose logs (tail)", LOGS[-1]()))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("docker compose timings")
        for phase, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{phase:<44} {seconds:7.1f} s")
