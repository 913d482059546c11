"""Components for the heartbeat tests: a sink that hangs, a spout that moves a clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from squall.sinks.base import Prepared, WriteContext
from squall.testing import ListSpout, ListSpoutConfig, MemorySink, MemorySinkConfig


class HangingSinkConfig(MemorySinkConfig):
    marker: str = Field(description="Path: written when a write hangs; `<marker>.release` ends it.")


class HangingSink(MemorySink):
    """A write of an event ``{"hang": true}`` never returns (as a stuck database call) until the
    file ``<marker>.release`` appears. On hanging it writes ``<marker>`` with the UNIX time it
    started, and ``<marker>.waited`` with the seconds it has waited so far (every 50 ms)."""

    Config = HangingSinkConfig
    summary = "A memory sink whose write hangs on an event {hang: true} (tests)."

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        if any(isinstance(ev.value, dict) and ev.value.get("hang") for ev in prepared.events):
            marker = Path(self.config.marker)
            release = marker.with_name(marker.name + ".release")
            waited = marker.with_name(marker.name + ".waited")
            marker.write_text(repr(time.time()))
            started = time.monotonic()
            pause = threading.Event()
            while not release.exists():
                pause.wait(0.05)
                waited.write_text(repr(time.monotonic() - started))
        super().write_batch(prepared, ctx)


#: The tests' clock (UNIX seconds), moved by ``TickingSpout``; the recorder reads it.
CLOCK = [1_000.0]
#: What ``TickingSpout`` read from ``PROBE`` after each step of its input.
SEEN: list[float] = []
PROBE: list = []


class TickingSpout(ListSpout):
    """Its records as one batch, then two idle polls (empty batches, when the runner asks for
    them: ``idle_batches``), then its records again; the clock moves 10 s before each step, and
    ``PROBE[0]()`` (the heartbeat) is read after each."""

    Config = ListSpoutConfig

    def read(self, max_records: int) -> Iterator[list]:
        for step in (self.records, [], [], self.records):
            CLOCK[0] += 10.0
            if step or self.idle_batches:
                yield step
            SEEN.append(PROBE[0]())


class WaitingSpoutConfig(ListSpoutConfig):
    marker: str = Field(description="Path: `<marker>.more` lets the read go on after the first.")


class WaitingSpout(ListSpout):
    """A spout waiting for input as an idle pipe does (``read_interruptible``: stdin, a FIFO):
    its first batch, then a read that waits (``<marker>.waiting`` written: the first batch has
    ended) until ``<marker>.more`` appears, then the rest."""

    Config = WaitingSpoutConfig
    summary = "Waits for input between its first and its other records (tests)."
    read_interruptible = True
    finite = True

    def read(self, max_records: int) -> Iterator[list]:
        more = Path(self.config.marker + ".more")
        yield self.records[:1]
        Path(self.config.marker + ".waiting").touch()
        pause = threading.Event()
        while not more.exists() and not self.stopping:
            pause.wait(0.02)
        yield self.records[1:]
