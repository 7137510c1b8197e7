"""Print the requirements the images install before the project itself, one per line.

Read from setup.cfg (install_requires and the `ops` extra: Flower, prometheus-client), so the
dependency list is written once. torch is left out: the worker image installs it first from its
own index (TORCH_INDEX_URL), and the web image must never contain it.

    python docker/requirements.py setup.cfg > requirements.txt
"""

from __future__ import annotations

import configparser
import re
import sys


def requirements(setup_cfg: str) -> list[str]:
    cfg = configparser.ConfigParser()
    if not cfg.read(setup_cfg):
        raise SystemExit(f"requirements.py: cannot read {setup_cfg}")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += cfg["options.extras_require"]["ops"].splitlines()
    reqs = [line.strip() for line in lines if line.strip()]
    return [r for r in reqs if re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower() != "torch"]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1] if len(sys.argv) > 1 else "setup.cfg")))
