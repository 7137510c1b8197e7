"""mypy --strict over the code as installed: autodep_celery with web/, worker/, cli/, bench/ in it.

setup.cfg maps those folders into the autodep_celery namespace (package_dir), which mypy cannot
follow through the editable install's import hook. This builds the installed layout from
symlinks in a temporary folder, runs mypy on it with pyproject.toml's settings, and prints the
findings with the repository's own paths. Exit status: mypy's. Used by `make lint` and CI.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"web": "web", "worker": "worker", "cli": "cli", "bench": "bench"}
"""Subpackage name inside autodep_celery -> folder at the top of the repository."""


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="autodep-mypy-") as tmp:
        package = Path(tmp) / "autodep_celery"
        package.mkdir()
        for entry in (ROOT / "autodep_celery").iterdir():
            if entry.name != "__pycache__":
                (package / entry.name).symlink_to(entry)
        for name, folder in MAPPED.items():
            (package / name).symlink_to(ROOT / folder)
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
            + ["autodep_celery"],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        back = {f"autodep_celery/{name}/": f"{folder}/" for name, folder in MAPPED.items()}
        for line in (result.stdout + result.stderr).splitlines():
            for installed, source in back.items():
                if line.startswith(installed):
                    line = source + line[len(installed) :]
            print(line)
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
