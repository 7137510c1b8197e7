"""The wheel installs under one import name: next to another distribution's top-level `web`
module (web.py ships one), both import, and neither shadows the other."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        timeout=300,
    )


def test_wheel_installs_beside_a_package_named_web(tmp_path: Path) -> None:
    # build from a copy: setuptools writes build/ and *.egg-info/ next to the sources
    src = tmp_path / "src"
    skip = (".*", "build", "*.egg-info", "__pycache__", "results", "models", "docker", "tests")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*skip))
    dist = tmp_path / "dist"
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src))
    (ours,) = dist.glob("autodep_celery-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(ours).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"autodep_celery"}

    other = tmp_path / "web-dist"
    (other / "web").mkdir(parents=True)
    (other / "web" / "__init__.py").write_text("WHO = 'the other web'\n")
    (other / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "web"\nversion = "0.1"\n[tool.setuptools]\npackages = ["web"]\n'
    )
    site = tmp_path / "site"
    pip(
        "install", "--no-deps", "--no-build-isolation", "--target", str(site), str(ours), str(other)
    )

    # the target first, then this venv's packages for the dependencies only: with -S no .pth
    # file runs, so the editable install of the checkout is not on the path
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    code = (
        "import sys; sys.path[:0] = sys.argv[1:3]\n"
        "import web, autodep_celery.web, autodep_celery.worker, autodep_celery.bench\n"
        "import autodep_celery.cli, autodep_celery.config\n"
        "print(web.WHO)\n"
        "print(autodep_celery.web.__file__.startswith(sys.argv[1]))\n"
        "print(autodep_celery.config.queue_name('m'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code, str(site), deps],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the checkout: nothing may come from the source folders
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["the other web", "True", "autodep.m"]
