"""Imports point one way: web -> core <- worker, and the command line composes them.

Read from the source (every import statement, lazy ones inside functions included), so a
forbidden import fails here even on a path no other test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("autodep_celery.web", "autodep_celery.worker", "autodep_celery.bench")
FORBIDDEN = {
    # the core: config, contract, status, the autoscaler... no service, no torch, no Flask
    "autodep_celery": (*SERVICES, "autodep_celery.cli", "torch", "flask"),
    # the web tier starts fast and its image has no torch
    "web": ("autodep_celery.worker", "autodep_celery.bench", "autodep_celery.cli", "torch"),
    # the worker never needs the HTTP tier
    "worker": ("autodep_celery.web", "autodep_celery.bench", "autodep_celery.cli", "flask"),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_point_one_way(folder: str) -> None:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imported(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[folder]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_no_module_uses_the_old_top_level_names() -> None:
    """web, worker, bench and cli install as autodep_celery.*; a bare `import web` would pick up
    whatever other distribution owns that name."""
    old = ("web", "worker", "bench", "cli")
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in ("autodep_celery", "web", "worker", "bench", "cli", "tests")
        for path in (ROOT / folder).rglob("*.py")
        for name in imported(path)
        if name.split(".")[0] in old
    ]
    assert not bad, "\n".join(bad)
