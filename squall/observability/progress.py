"""Running totals of a run, and the periodic progress log line (no terminal, or under the KCL)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from squall.observability.metrics import RECORD_OUTCOMES, BatchSample

progress_log = logging.getLogger("squall.progress")


class Totals:
    """Cumulative counts of the batches seen so far (a backend; cheap: a few additions per batch)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started = clock()
        self.last_batch_end: float | None = None
        self.batches = 0
        self.failed_batches = 0
        self.records = 0
        self.busy_seconds = 0.0
        self.outcomes = dict.fromkeys(RECORD_OUTCOMES, 0)
        self.written: dict[str, int] = {}
        self.present: dict[str, int] = {}
        self.millis_behind: dict[str, int] = {}
        self.iterator_age_ms: dict[str, float] = {}
        self.first_failed: dict[str, Any] | None = None
        self.error: str | None = None

    def record(self, s: BatchSample) -> None:
        if s.release:  # not a batch: only the rows its sinks wrote
            self._rows(s)
            return
        self.batches += 1
        self.last_batch_end = self.clock()
        if (
            self.batches == 1
        ):  # the rate counts from the first batch: start-up (opening resources) is not in it
            self.started = self.last_batch_end - s.seconds
        self.busy_seconds += s.seconds
        if s.status == "failed":
            self.failed_batches += 1
            self.error = s.error
            return
        self.records += sum(s.outcomes.values())
        for k, n in s.outcomes.items():
            self.outcomes[k] = self.outcomes.get(k, 0) + n
        self._rows(s)
        if s.millis_behind:  # every shard being read: a shard read to its end is no longer behind
            self.millis_behind = dict(s.millis_behind)
        if s.iterator_age_ms:  # the last batch's: per shard it saw (an SQS message is a shard)
            self.iterator_age_ms = dict(s.iterator_age_ms)
        if s.first_failed and self.first_failed is None:
            self.first_failed = s.first_failed

    def _rows(self, s: BatchSample) -> None:
        for c in s.components:
            if c.written is not None:
                self.written[c.id] = self.written.get(c.id, 0) + c.written
            if c.present is not None:
                self.present[c.id] = self.present.get(c.id, 0) + c.present

    def record_lag(self, topology: str, millis_behind: dict[str, int]) -> None:
        if millis_behind:
            self.millis_behind = dict(millis_behind)

    @property
    def active_seconds(self) -> float:
        """From the first batch's start to the last one's end: no start-up, no idle wait for more records."""
        end = self.last_batch_end if self.last_batch_end is not None else self.clock()
        return max(end - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.records / self.active_seconds if self.records else 0.0

    @property
    def lag_ms(self) -> float | None:
        """The largest MillisBehindLatest, else the largest iterator age; None when unknown."""
        if self.millis_behind:
            return float(max(self.millis_behind.values()))
        if self.iterator_age_ms:
            return max(self.iterator_age_ms.values())
        return None


def format_lag(ms: float | None) -> str:
    if ms is None:
        return "n/a"
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f}s"
    return f"{ms / 60_000:.0f}min"


def summary_fields(t: Totals) -> dict[str, Any]:
    out: dict[str, Any] = {
        "batches": t.batches,
        "records": t.records,
        **t.outcomes,
        "rate_per_s": round(t.rate, 1),
    }
    if t.lag_ms is not None:
        out["lag_ms"] = round(t.lag_ms)
    if t.failed_batches:
        out["failed_batches"] = t.failed_batches
    return out


class PeriodicLog:
    """One INFO line on ``squall.progress`` every ``every`` seconds (checked when a batch ends)."""

    def __init__(
        self,
        totals: Totals,
        every: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = progress_log,
    ):
        self.totals, self.every, self.clock, self.logger = totals, every, clock, logger
        self._next = clock() + every

    def record(self, s: BatchSample) -> None:
        self._tick()

    def record_lag(self, topology: str, millis_behind: dict[str, int]) -> None:
        """An idle poll (no batch) logs on time too: an idle consumer is not a silent one."""
        self._tick()

    def _tick(self) -> None:
        now = self.clock()
        if now >= self._next:
            self._next = now + self.every
            self.emit()

    def emit(self, message: str = "progress") -> None:
        f = summary_fields(self.totals)
        text = " ".join(f"{k}={v}" for k, v in f.items())
        self.logger.info("%s: %s", message, text, extra={"fields": f})
