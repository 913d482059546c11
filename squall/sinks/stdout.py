"""``stdout`` sink: print events as JSON lines (development; never under the KCL, whose protocol is stdout)."""

from __future__ import annotations

import logging
import sys

from pydantic import Field

from squall import exact_json
from squall.component import Capabilities, ComponentConfig
from squall.sinks.base import Prepared, Sink, WriteContext

log = logging.getLogger("squall.sinks.stdout")


class StdoutConfig(ComponentConfig):
    with_meta: bool = Field(False, description="Wrap each payload as {event_id, meta, payload}.")


class StdoutSink(Sink):
    """Write each event's payload to standard output, one JSON document per line."""

    Config = StdoutConfig
    summary = "Print events as JSON lines on standard output."

    @classmethod
    def capabilities(cls, config: StdoutConfig) -> Capabilities:
        return Capabilities(needs_stdout=True)

    #: Told once that the events reach it undecoded (spout → sink, no ``json`` bolt): each
    #: prints as ``null``, which looked like a working topology printing nothing useful.
    _told_undecoded = False

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        if (
            not self._told_undecoded
            and prepared.events
            and all(ev.value is None for ev in prepared.events)
        ):
            self._told_undecoded = True
            log.warning(
                "%s: none of the %d event(s) of a batch has a decoded payload, so each prints "
                "as null: add a decode bolt (type: json) before this sink (warned once)",
                self.id,
                len(prepared.events),
            )
        out = sys.stdout.buffer
        for ev in prepared.events:
            doc = (
                {"event_id": ev.event_id, "meta": ev.meta.as_dict(), "payload": ev.value}
                if self.config.with_meta
                else ev.value
            )
            out.write(
                exact_json.dumps(doc, default=exact_json.text_default) + b"\n"
            )  # big integers as digits
        out.flush()
