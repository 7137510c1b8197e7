"""The README's examples, run as written against a real server: a shell block that follows an
``<!-- example -->`` comment is run by bash with ``localhost:8000`` pointed at the test web
process, in a directory holding ``cat.jpg``. ``curl`` there fails on an HTTP error status
(``--fail-with-body``), so an example that answers 4xx/5xx fails its test; each ``# {...}`` /
``# [...]`` comment right after a command is the shape of its answer: the same JSON type and,
for an object, the same top-level keys.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Web
from tests.integration.support import image_bytes

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- example -->"
BLOCK = re.compile(re.escape(MARKER) + r"\s*\n```(?:sh|bash)\n(.*?)\n```", re.S)
PRELUDE = 'set -euo pipefail\ncurl() { command curl --fail-with-body -sS "$@"; }\n'


def examples() -> list[str]:
    return BLOCK.findall(README.read_text())


def expectations(block: str) -> list[object]:
    """The JSON shapes given as ``# <json>`` comments, in order; '...' elisions are cut."""
    shapes: list[object] = []
    for line in block.splitlines():
        if line.startswith("# ") and line[2:3] in "[{":
            text = re.sub(r",?\s*\.\.\.\s*", "", line[2:])
            try:
                shapes.append(json.loads(text))
            except json.JSONDecodeError:
                shapes.append(json.loads(text[0] + text[-1]) if text else None)
    return shapes


def json_values(text: str) -> list[object]:
    """Every JSON object or array printed, whether or not newlines separate them (curl adds
    none)."""
    decoder = json.JSONDecoder()
    values, at = [], 0
    while (
        start := min((i for i in (text.find("{", at), text.find("[", at)) if i >= 0), default=-1)
    ) >= 0:
        try:
            value, at = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            at = start + 1
            continue
        values.append(value)
    return values


def same_shape(expected: object, got: object) -> bool:
    if isinstance(expected, dict):
        return isinstance(got, dict) and set(expected) <= set(got)
    return type(expected) is type(got)


def test_readme_has_examples() -> None:
    assert len(examples()) >= 1, f"no {MARKER} blocks in README.md"


@pytest.mark.parametrize("index", range(len(examples())))
def test_readme_example(index: int, web: Web, tmp_path: Path) -> None:
    block = examples()[index]
    (tmp_path / "cat.jpg").write_bytes(image_bytes(64, 48, fmt="JPEG"))
    port = web.url.rsplit(":", 1)[1]
    script = PRELUDE + block.replace("localhost:8000", f"127.0.0.1:{port}")
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"example failed:\n{block}\nstdout: {done.stdout}\n{done.stderr}"
    answers = json_values(done.stdout)
    shapes = expectations(block)
    assert len(answers) >= len(shapes), (block, done.stdout)
    for expected, got in zip(shapes, answers, strict=False):
        assert same_shape(expected, got), (expected, got)
