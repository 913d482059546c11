"""``dedupe`` bolt: keep the first event per key within a batch; later duplicates are filtered."""

from __future__ import annotations

from pydantic import Field

from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig
from squall.event import Event
from squall.paths import MISSING, DottedPath, getter


class DedupeConfig(ComponentConfig):
    key: DottedPath = Field(
        "meta.event_id", description="Dotted path of the key; events without it pass through."
    )


class DedupeBolt(Bolt):
    """Drop events whose key was already seen earlier in the same batch (e.g. producer retries)."""

    Config = DedupeConfig
    summary = "Drop duplicate events (same key) within a batch; the first one wins."

    def __init__(self, config: DedupeConfig, context):
        super().__init__(config, context)
        self._get = getter(config.key)

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        seen: set = set()
        passed: list[Event] = []
        emit = passed.append
        for ev in batch:
            k = self._get(ev)
            if k is MISSING or k is None:
                emit(ev)
                continue
            if k.__class__ is bool:  # JSON's true is not 1 (Python's True == 1 == 1.0)
                k = (bool, k)
            try:
                dup = k in seen
            except TypeError:  # an object or a list as the key: compare its canonical JSON
                import orjson

                k = orjson.dumps(k, option=orjson.OPT_SORT_KEYS)
                dup = k in seen
            if dup:
                out.drop(ev)
            else:
                seen.add(k)
                emit(ev)
        out.emit_all(passed)
        return out
