"""Markers from folders: everything under tests/unit is `unit`, under tests/integration is
`integration`, under tests/fault is `fault`, so `pytest -m unit` runs without any service."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(HERE).parts
        if parts and parts[0] in ("unit", "integration", "fault"):
            item.add_marker(getattr(pytest.mark, parts[0]))
