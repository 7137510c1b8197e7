"""Inference task types, the core's part of their registry: each type's name and what its items
carry on the queue.

A task type is defined in three places, one per process that needs it, all under the name
registered here: this module (name, input kind, item fields), ``web/task_types.py`` (how a
request asks for it, its options, its data and output specs, response encoding) and
``worker/task_types.py`` (decode, batching key, collate, postprocess, warm-up). Adding a type
adds an entry to each (docs/architecture.md §2.13); tests/unit/test_task_types.py checks
that the three agree. Read by config (what ``models.task`` may name) and contract (what an item
may ask for). Imports the stdlib only: no torch, no Flask.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE = "image"
"""Input kind: the bytes of an image file (PNG, JPEG, ...) in the item's ``image`` field."""
TEXT = "text"
"""Input kind: a string in the item's ``text`` field."""
ARGS = "args"
"""Input kind: a list of wire values (autodep_celery.typed), one per ``forward()`` argument, in
the item's ``args`` field."""


@dataclass(frozen=True)
class TaskType:
    name: str
    """As a request's ``inference_type`` and config.toml's ``models.task`` spell it."""
    input: str | None
    """The item's ``kind``, also the name of the item field holding the input. None: the name
    is reserved (config accepts it) but no request can ask for it yet."""
    options: tuple[str, ...] = ()
    """Further item fields the type reads (ImageClassification: ``top_n``)."""
    raw: bool = False
    """The model is called as it is, without pre- or post-processing: any model takes it,
    whatever its configured ``task`` (Tensor)."""

    @property
    def served(self) -> bool:
        return self.input is not None


TYPES = (
    TaskType("ImageClassification", IMAGE, options=("top_n",)),
    TaskType("ImageToImage", IMAGE),
    TaskType("TextToText", TEXT),
    TaskType("Tensor", ARGS, raw=True),
)
REGISTRY = {t.name: t for t in TYPES}

NAMES = tuple(REGISTRY)
"""Every registered name: what config.toml accepts for ``models.task``."""
SERVED = tuple(t.name for t in TYPES if t.served)
"""The types a request may ask for and a worker runs."""
