"""What the young collections between a Lambda invocation's slices find: the events a slice let
go must be gone before the next collection (shared by the Kinesis, S3 and SQS slice tests)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from squall.event import Event

#: The young threshold the census sets: a collection is due right after every slice.
YOUNG = 50


@contextmanager
def young_collections_between_slices() -> Iterator[list[int]]:
    """Make a young collection due right after every slice (``gc.set_threshold(50, 10, 10)``)
    and yield the list of the events each finds in generation 0 when it starts with those
    thresholds — between slices (the runner sets its own during a slice); the process's
    thresholds are restored after."""
    seen: list[int] = []

    def census(phase: str, info: dict) -> None:
        if phase == "start" and gc.get_threshold()[0] == YOUNG:  # the process's own: between slices
            seen.append(sum(1 for o in gc.get_objects(generation=0) if isinstance(o, Event)))

    saved = gc.get_threshold()
    gc.set_threshold(YOUNG, 10, 10)
    gc.callbacks.append(census)
    try:
        yield seen
    finally:
        gc.callbacks.remove(census)
        gc.set_threshold(*saved)
