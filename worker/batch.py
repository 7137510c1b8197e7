"""Run one batch message: decode, group, forward, postprocess; one result per item, in order.

`run_batch` is the body of the ``autodep.infer`` task without Celery or Redis (worker.tasks adds
attempt counting, status and the reply push), so unit tests call it directly. Known failures
become per-item or per-batch error dicts (DESIGN §2.9); anything else propagates to the task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from autodep_celery.worker import processing
from autodep_celery.worker.registry import TEXT_LIST, LoadedModel, Registry

from autodep_celery import contract, errors
from autodep_celery.config import Settings

IMAGE_TASKS = ("ImageClassification", "ImageToImage")

Result = dict[str, Any]
Member = tuple[int, Any]
"""(index of the item in the batch, its decoded tensor or text)."""


def run_batch(
    registry: Registry,
    settings: Settings,
    batch: dict[str, Any],
    worker: str = "",
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """The reply for `batch` (contract.make_reply, or batch_error_reply when no item can run)."""
    batch_id = str(batch.get("batch_id", ""))
    items = batch.get("items")
    if not isinstance(items, list):
        bad = errors.InvalidInput("the batch has no list of items")
        return contract.batch_error_reply(batch_id, worker, bad.to_dict())
    try:
        loaded = registry.get(str(batch.get("model", "")))
    except errors.AutodepError as exc:
        return contract.batch_error_reply(batch_id, worker, exc.to_dict())

    results: list[Result | None] = [None] * len(items)
    deadlines = [_deadline(item) for item in items]
    image_groups: dict[tuple[str, tuple[int, ...]], list[Member]] = {}
    texts: list[Member] = []
    now = clock()
    for index, item in enumerate(items):
        try:
            if deadlines[index] < now:
                raise _expired()
            task = _check_task(loaded, item)
            if task == "TextToText":
                text = item.get("text")
                if not isinstance(text, str):
                    raise errors.InvalidInput("a TextToText item needs a text string")
                texts.append((index, text))
                continue
            image = item.get("image")
            if not isinstance(image, bytes | bytearray):
                raise errors.InvalidInput(f"an {task} item needs image bytes")
            tensor = processing.decode_image(
                bytes(image), settings.web.max_image_pixels, loaded.settings.resize
            )
            image_groups.setdefault((task, tuple(tensor.shape)), []).append((index, tensor))
        except errors.AutodepError as exc:
            results[index] = contract.error_result(exc.to_dict())

    for (task, _shape), members in image_groups.items():
        live = _drop_expired(members, deadlines, results, clock())
        if live:
            _run_images(loaded, task, live, items, results)
    live_texts = _drop_expired(texts, deadlines, results, clock())
    if live_texts:
        _run_texts(loaded, live_texts, results)
    lost = contract.error_result(errors.AutodepError("the item was not processed").to_dict())
    return contract.make_reply(batch_id, worker, [r if r is not None else lost for r in results])


def _deadline(item: Any) -> float:
    deadline = item.get("deadline") if isinstance(item, dict) else None
    return float(deadline) if isinstance(deadline, int | float) else float("inf")


def _expired() -> errors.DeadlineExceeded:
    return errors.DeadlineExceeded(
        "the request passed its deadline while queued and was not computed; "
        "retry later or raise web.request_timeout_s"
    )


def _drop_expired(
    members: list[Member], deadlines: list[float], results: list[Result | None], now: float
) -> list[Member]:
    # Earlier groups of a batch take time; a request whose client has given up is not computed.
    live = []
    for member in members:
        if deadlines[member[0]] < now:
            results[member[0]] = contract.error_result(_expired().to_dict())
        else:
            live.append(member)
    return live


def _check_task(loaded: LoadedModel, item: Any) -> str:
    if not isinstance(item, dict):
        raise errors.InvalidInput("a batch item must be a map")
    task = item.get("task")
    if task not in contract.INFERENCE_TYPES:
        raise errors.InvalidInput(
            f"inference_type {task!r} is not one of {', '.join(contract.INFERENCE_TYPES)}"
        )
    kind = item.get("kind")
    if (kind == "text") != (task == "TextToText") or kind not in ("image", "text"):
        raise errors.InvalidInput(f"a {kind!r} input cannot be used for {task}")
    configured = loaded.settings.task
    if configured is not None and configured != task:
        raise errors.InvalidInput(
            f"model {loaded.name} is configured for {configured}; this request asks for {task}",
            code="wrong_inference_type",
        )
    return str(task)


def _rejected(loaded: LoadedModel, what: str, exc: BaseException) -> Result:
    error = errors.InvalidInput(
        f"model {loaded.name} rejected {what}: {processing.torch_error_line(exc)}",
        code="model_rejected_input",
    )
    return contract.error_result(error.to_dict())


def _forward(loaded: LoadedModel, inputs: Any) -> tuple[Any, int]:
    started = time.perf_counter_ns()
    with torch.inference_mode():
        output = loaded.module(inputs)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)  # kernels are async: time the real work
    return output, time.perf_counter_ns() - started


def _run_images(
    loaded: LoadedModel,
    task: str,
    members: list[Member],
    items: list[Any],
    results: list[Result | None],
) -> None:
    try:
        batch = torch.stack([tensor for _, tensor in members]).to(loaded.device, loaded.dtype)
        if task == "ImageClassification":
            batch = processing.normalise(batch, loaded.settings.mean, loaded.settings.std)
        output, compute_ns = _forward(loaded, batch)
    except Exception as exc:
        if len(members) > 1:
            # One bad input must not fail the requests batched with it: run each alone.
            for member in members:
                _run_images(loaded, task, [member], items, results)
            return
        shape = list(members[0][1].shape)
        results[members[0][0]] = _rejected(
            loaded, f"input of shape [1, {', '.join(map(str, shape))}]", exc
        )
        return
    try:
        outputs: list[Any]
        if task == "ImageClassification":
            top_ns = [_top_n(items[index]) for index, _ in members]
            logits = processing.main_output(output)
            if not isinstance(logits, torch.Tensor):
                raise errors.InvalidInput(
                    f"model {loaded.name} does not return a tensor of class scores"
                )
            loaded.num_classes = int(logits.shape[1]) if logits.dim() >= 2 else None
            outputs = processing.classify(logits, top_ns, loaded.labels)
        else:
            outputs = processing.image_outputs(output)
        if len(outputs) != len(members):
            raise errors.ModelError(
                f"model {loaded.name} returned {len(outputs)} outputs for {len(members)} inputs"
            )
    except errors.AutodepError as exc:
        for index, _ in members:
            results[index] = contract.error_result(exc.to_dict())
        return
    for (index, _), out in zip(members, outputs, strict=True):
        if isinstance(out, errors.AutodepError):
            results[index] = contract.error_result(out.to_dict())
        else:
            results[index] = contract.ok_result(out, compute_ns)


def _top_n(item: dict[str, Any]) -> int:
    top_n = item.get("top_n", contract.DEFAULT_TOP_N)
    if not isinstance(top_n, int) or isinstance(top_n, bool):
        return 0  # classify() reports it as out of range
    return top_n


def _run_texts(loaded: LoadedModel, members: list[Member], results: list[Result | None]) -> None:
    if loaded.text_kind == TEXT_LIST:
        texts = [text for _, text in members]
        try:
            output, compute_ns = _forward(loaded, texts)
        except Exception as exc:
            if len(members) > 1:  # find the string that fails; the others are answered
                for member in members:
                    _run_texts(loaded, [member], results)
                return
            results[members[0][0]] = _rejected(
                loaded, f"a string of {len(texts[0])} characters", exc
            )
            return
        if not isinstance(output, list) or len(output) != len(texts):
            bad = errors.ModelError(
                f"model {loaded.name} must return one string per input string "
                f"({len(texts)}), got {type(output).__name__}"
            )
            for index, _ in members:
                results[index] = contract.error_result(bad.to_dict())
            return
        for (index, _), text in zip(members, output, strict=True):
            results[index] = _text_result(loaded, text, compute_ns)
        return
    for index, text in members:  # forward takes one str (or an unknown signature)
        try:
            output, compute_ns = _forward(loaded, text)
        except Exception as exc:
            results[index] = _rejected(loaded, f"a string of {len(text)} characters", exc)
            continue
        results[index] = _text_result(loaded, output, compute_ns)


def _text_result(loaded: LoadedModel, output: Any, compute_ns: int) -> Result:
    if not isinstance(output, str):
        bad = errors.ModelError(
            f"model {loaded.name} returned {type(output).__name__}, not a string"
        )
        return contract.error_result(bad.to_dict())
    return contract.ok_result({"Text": output}, compute_ns)
