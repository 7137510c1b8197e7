"""gunicorn entry point: ``gunicorn -c python:web.gunicorn_conf web.wsgi:app``.

Reads settings from config.toml and the environment (a process entry point may). Importing this
module in the gunicorn master is harmless: nothing connects until the first request in a worker.
"""

from __future__ import annotations

import logging
import os

from web.app import create_app

logging.basicConfig(
    level=os.environ.get("AUTODEP_LOG_LEVEL", "INFO").upper(),
    format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
)

app = create_app()
