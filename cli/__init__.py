"""The `autodep` command line: composes the core (autodep_celery) and the services (web, worker,
bench) into commands. It sits outside the core on purpose: it may import every part, while the
core imports none of them. Installed as ``autodep_celery.cli``; the console script calls
:func:`main`.
"""

from __future__ import annotations

from autodep_celery.cli.main import main

__all__ = ["main"]
