"""gunicorn entry point: ``gunicorn -c python:autodep_celery.web.gunicorn_conf
autodep_celery.web.wsgi:app``.

Reads settings from config.toml and the environment (a process entry point may). Importing this
module in the gunicorn master is harmless: nothing connects until the first request in a worker.
"""

from __future__ import annotations

import logging

from autodep_celery import config, logs
from autodep_celery.web.app import create_app

settings = config.load()
if not logging.getLogger().handlers:  # under gunicorn its master configured logging already
    logs.setup(settings.log, "web")

app = create_app(settings)
