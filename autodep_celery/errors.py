"""Errors that carry their HTTP mapping, shared by the web tier and the workers.

A worker turns a known failure into ``error.to_dict()`` (data, never a pickled exception) and the
web tier turns that dict back into the same error with :func:`from_dict`, so one handler renders
every error as ``{"error": {"code": ..., "message": ...}}``. Imports nothing heavy.
"""

from __future__ import annotations

from typing import Any


class AutodepError(Exception):
    """Base of every error the product reports to a client."""

    http_status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "status": self.http_status}


class ClientError(AutodepError):
    http_status = 400
    code = "bad_request"


class InvalidJSON(ClientError):
    http_status = 400
    code = "invalid_json"


class InvalidInput(ClientError):
    http_status = 422
    code = "invalid_input"


class InvalidImage(ClientError):
    http_status = 422
    code = "invalid_image"


class ImageTooLarge(ClientError):
    http_status = 413
    code = "image_too_large"


class InputTooLarge(ClientError):
    """An input over the model's own size bound (models.max_input_pixels, max_input_elements):
    it would hold a pool process too long (autodep_celery.input_limits)."""

    http_status = 413
    code = "input_too_large"


class SlowClient(ClientError):
    """The client sent its request too slowly (a read timed out, or the whole request outlived
    request_timeout_s + read_timeout_s): the connection is closed so it cannot hold a slot."""

    http_status = 408
    code = "request_timeout"


class UnknownModel(ClientError):
    http_status = 404
    code = "unknown_model"


class Overloaded(AutodepError):
    http_status = 429
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoWorker(AutodepError):
    http_status = 503
    code = "no_worker"


class BrokerUnavailable(AutodepError):
    http_status = 503
    code = "broker_unavailable"


class DeadlineExceeded(AutodepError):
    http_status = 504
    code = "deadline_exceeded"


class ModelError(AutodepError):
    """The model itself failed on a valid request (shape mismatch, runtime error)."""

    http_status = 500
    code = "model_error"


class WorkerLost(AutodepError):
    http_status = 500
    code = "worker_lost"


def from_dict(data: dict[str, Any]) -> AutodepError:
    """Rebuild an error sent across the queue as data."""
    try:
        status = int(data.get("status", 500))
    except (TypeError, ValueError):
        status = 500
    if not 400 <= status <= 599:
        status = 500
    return AutodepError(
        str(data.get("message", "unknown error")),
        code=str(data.get("code", "internal_error")),
        http_status=status,
    )
