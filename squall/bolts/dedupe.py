"""``dedupe`` bolt: keep the first event per key within a batch; later duplicates are filtered."""

from __future__ import annotations

from typing import Any

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

    @classmethod
    def payload_writes(cls, config: Any) -> tuple[str, ...]:
        """It changes no payload (load-time path checks look through it)."""
        return ()

    summary = "Drop duplicate events (same key) within a batch; the first one wins."

    def __init__(self, config: DedupeConfig, context):
        super().__init__(config, context)
        self._get = getter(config.key)
        #: The default key (``meta.event_id``) is read inline: no getter call, no property call.
        self._by_event_id = config.key == "meta.event_id"

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        seen: set = set()
        passed: list[Event] = []
        emit, get, by_event_id = passed.append, self._get, self._by_event_id
        for ev in batch:
            if by_event_id:
                k = ev._event_id  # Event.event_id, without the property's call
                if k is None:
                    k = ev.event_id
            else:
                k = get(ev)
            if k is MISSING or k is None:
                emit(ev)
                continue
            if k.__class__ is bool:  # JSON's true is not 1 (Python's True == 1 == 1.0)
                k = (bool, k)
            try:
                dup = k in seen
            except TypeError:  # an object or a list as the key: compare its canonical JSON
                import orjson

                from squall import exact_json

                # (a float subclass in it, NumPy's float64, as its number: the plain float's key;
                # an integer beyond 64 bits as its digits — orjson refused both: the event failed)
                k = exact_json.dumps(k, option=orjson.OPT_SORT_KEYS)
                dup = k in seen
            if dup:
                out.drop(ev)
            else:
                seen.add(k)
                emit(ev)
        out.emit_all(passed)
        return out
