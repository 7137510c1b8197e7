"""POST /jobs, GET /jobs/<id>, DELETE /jobs/<id>: asynchronous inference.

POST takes every body POST /inference takes, parsed by the same code, and answers 202 only once
the job's item is in the broker, so a web process that dies right after answering loses nothing.
The job's state lives in Redis (autodep_celery.jobs): this process writes it queued before the
item leaves; the worker that runs the item's batch writes it running, then stores the result,
so every web process answers GET for every job, whether or not the one that accepted it lives.
The item goes through this process's dispatcher like any other and shares batches with
synchronous requests. Must not import torch.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Blueprint, Response, g

from autodep_celery import errors, jobs
from autodep_celery.config import Settings
from autodep_celery.contract import Item
from autodep_celery.jobs import Job
from autodep_celery.web import observe, routes, run, schema, task_types
from autodep_celery.web.interfaces import JobStore
from autodep_celery.web.openapi import operation
from autodep_celery.web.responses import inference_body, json_response
from autodep_celery.web.routes import inference
from autodep_celery.web.validation import InferenceRequest

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__)

SEND_GRACE_S = 5.0
"""How long to wait for a batch the dispatcher is sending at the moment the wait ran out (a
publish is bounded by the broker's 2 s socket timeout)."""
UNKNOWN = "Unknown, expired or malformed job id"
DESCRIPTION = (
    "Takes the body POST /inference takes and answers 202 once the job is in the broker; "
    "GET its status_url until status is done (result: what /inference answers) or failed "
    "(error: the error /inference would have answered). Finished jobs are kept "
    "jobs.result_ttl_s; a job not finished within jobs.timeout_s fails with deadline_exceeded."
)


def read_request(settings: Settings, deadline: float) -> InferenceRequest:
    """The job's model, item and task type: the one place that reads a POST /jobs body (other
    body forms plug in here); today exactly POST /inference's."""
    return inference.read_request(settings, deadline)


@bp.post("/jobs")
@operation(
    "Submit an asynchronous inference job",
    {202: schema.JOB_ACCEPTED},
    request=schema.INFERENCE_BODY,
    description=DESCRIPTION,
    tag="jobs",
    errors=(400, 404, 413, 415, 422, 429, 503),
)
def submit() -> Response:
    settings = routes.settings()
    now = time.time()
    parsed = read_request(settings, now + settings.jobs.timeout_s)
    name = parsed.model.name
    g.model = name
    run.check_worker(name)
    job = jobs.new(name, parsed.task.name, now, parsed.item["deadline"])
    item = parsed.item
    item["job"] = job.id
    item["request_id"] = observe.request_id()
    store = routes.job_store()
    store.create(job, settings.jobs.result_ttl_s)  # before the item leaves: workers move it on
    try:
        _publish(name, item, settings.web.request_timeout_s)
    except BaseException:
        _discard(store, job.id)
        raise
    url = f"/jobs/{job.id}"
    return json_response({"job_id": job.id, "status_url": url}, 202, {"Location": url})


@bp.get("/jobs/<job_id>")
@operation(
    "An asynchronous job's state, and its result once done",
    {200: schema.JOB, 404: UNKNOWN},
    tag="jobs",
    errors=(503,),
)
def state(job_id: str) -> Response:
    job = routes.job_store().get(job_id) if jobs.valid_id(job_id) else None
    if job is None:
        raise _unknown(job_id)
    return json_response(view(job))


@bp.delete("/jobs/<job_id>")
@operation(
    "Forget a job: a queued one is not computed, a finished one's result is dropped",
    {204: "Forgotten", 404: UNKNOWN},
    description="A job already running still computes, but its result is not kept.",
    tag="jobs",
    errors=(503,),
)
def forget(job_id: str) -> Response:
    if not (jobs.valid_id(job_id) and routes.job_store().delete(job_id)):
        raise _unknown(job_id)
    return Response(status=204)


def view(job: Job) -> dict[str, Any]:
    """GET /jobs/<id>'s body: the result encoded as POST /inference encodes it."""
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status,
        "model": job.model,
        "created": job.created,
        "updated": job.updated,
        "deadline": job.deadline,
    }
    if job.status == jobs.DONE and job.result is not None:
        task = task_types.TASKS.get(job.task)
        if task is None:  # written by a newer web process, with a task type this one lacks
            raise errors.AutodepError(
                f"job {job.id} is a {job.task} job, which this web process cannot encode; "
                "ask a web process of the same version as the one that accepted it"
            )
        body["result"] = inference_body(job.result, task)
    elif job.status == jobs.FAILED:
        error = job.error or {}
        body["error"] = {
            "code": str(error.get("code") or errors.AutodepError.code),
            "message": str(error.get("message") or "the job failed"),
        }
    return body


def _publish(name: str, item: Item, wait_s: float) -> None:
    """Hand `item` to this process's dispatcher and return once its batch is in the broker. An
    item still held after `wait_s` (every batch slot of the model taken) is withdrawn: 429."""
    published: Future[None] = Future()

    def ended(future: Future[dict[str, Any]]) -> None:
        # Failed before it was sent (broker down, deadline passed): it never will be. A failure
        # that comes after the send (a batch error reply) finds `published` already set.
        if not future.cancelled() and future.exception() is not None:
            _settle(published, future.exception())

    future = routes.dispatcher().submit(name, item, on_sent=lambda: _settle(published, None))
    future.add_done_callback(ended)
    try:
        published.result(timeout=wait_s)
        return
    except FutureTimeout:
        if future.cancel():  # still unsent: it never will be
            raise errors.Overloaded(
                f"model {name} is busy: its batches did not take this job within {wait_s:g} s "
                "(web.request_timeout_s); retry later or add workers",
                retry_after_s=1,
            ) from None
    try:
        published.result(timeout=SEND_GRACE_S)  # being sent at this very moment
    except FutureTimeout:
        raise errors.BrokerUnavailable(
            "the broker did not confirm the job in time; check that it is running"
        ) from None


def _settle(published: Future[None], exc: BaseException | None) -> None:
    try:
        if exc is None:
            published.set_result(None)
        else:
            published.set_exception(exc)
    except InvalidStateError:  # the other of sent / failed came first
        pass


def _discard(store: JobStore, job_id: str) -> None:
    """Drop the record of a job that was refused after it was written."""
    try:
        store.delete(job_id)
    except errors.AutodepError as exc:  # its TTL removes it anyway
        log.warning("could not delete refused job %s: %s", job_id, exc)


def _unknown(job_id: str) -> errors.AutodepError:
    if not jobs.valid_id(job_id):
        message = "malformed job id; job ids are the 32 hex digits that POST /jobs answered"
    else:
        ttl_s = routes.settings().jobs.result_ttl_s
        message = (
            f"no job {job_id}: unknown, deleted, or finished more than {ttl_s:g} s ago "
            "(jobs.result_ttl_s)"
        )
    return errors.ClientError(message, code="unknown_job", http_status=404)
