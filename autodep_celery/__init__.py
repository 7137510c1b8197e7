"""autodep-celery: TorchScript models served over REST by Celery workers.

`celery -A autodep_celery worker` finds the Celery app here as `app` (a lazy proxy, so that
importing the package costs nothing and never imports torch or Flask).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from celery import Celery

    app: Celery


def __getattr__(name: str) -> Any:
    # Celery's `-A autodep_celery` looks up `app` (then `celery`) on the package.
    if name in ("app", "celery"):
        from autodep_celery.celery_app import default_app

        return default_app()
    raise AttributeError(name)
