"""When a Lambda invocation stops starting slices: before its timeout, not killed by it.

Lambda kills an invocation at its timeout, and the event source mapping then retries the whole
batch — the slices already committed too — and, if it always times out, forever: the shard (or
the queue's messages) stall. So before each slice but the first the consumer compares the time
left (``context.get_remaining_time_in_millis()``) with what a slice needs: the longest slice of
this invocation so far, times ``SAFETY_FACTOR``, plus ``settings.lambda_deadline_margin``. When
it does not fit, the invocation answers what it has not started as failures (Kinesis: each
shard's first unprocessed sequence number; SQS: every unprocessed message id), so Lambda retries
from there and the committed slices are not done again. S3 events (direct, SNS, EventBridge)
have no partial answer: they are not stopped between slices, though their S3 reads, as every
read of an S3-delivered object, fit in the time left (``squall.deploy.lambda_sources``).

The first slice always runs: an invocation that gives up without trying makes no progress, and
on a function whose timeout fits one slice every invocation still commits one (its stop's log
line then says to lower ``lambda_batch_size`` or raise the timeout). A slice that can never fit
is not something the handler can see before it runs: Lambda kills it and the batch comes again,
as before; the function's timeout errors and the iterator age show it. Inside a slice, a
component's retry (a dependency down) is made only while its backoff fits in the time left less
the margin (``seconds_left``, the engine's ``time_left``): past that the slice fails and is
answered, the slices before it kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("squall.lambda")

#: A slice's time varies between slices (a retry's backoff, a cache gone cold, a slower answer
#: from a dependency): stopping one slice early costs one more invocation from the reported
#: record; stopping too late costs the whole batch again. So the longest slice seen counts twice.
SAFETY_FACTOR = 2.0


class Deadline:
    """One invocation's time budget, asked once per slice (never per record).

    ``remaining_ms`` is the context's ``get_remaining_time_in_millis`` (None: no deadline, as in
    a local call with no context); ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        remaining_ms: Callable[[], float] | None,
        margin: float,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self._remaining = remaining_ms
        self._clock = clock
        self.margin = margin
        self.longest = 0.0  # seconds: the longest slice of this invocation so far
        self.slices = 0  # slices started
        self.left_ms: float | None = None  # the time left when it stopped
        self.stopped = False
        self._last = 0.0
        self._unreadable = False  # the context's remaining time raised (logged once)

    @classmethod
    def of(cls, context: Any, margin: float) -> Deadline:
        """The deadline of a Lambda context (none for a context without one, or no context)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return cls(remaining if callable(remaining) else None, margin)

    def _remaining_ms(self) -> float | None:
        """The context's remaining time (None: no deadline — no context, or a stand-in whose
        answer is not a number or that raises; the engine's and sinks' time checks then never
        see the error, which inside a sink's write would fail every record as its own fault)."""
        if self._remaining is None:
            return None
        try:
            left = self._remaining()
        except Exception as exc:  # noqa: BLE001 - a context's clock must not fail the records
            if not self._unreadable:
                self._unreadable = True
                log.warning(
                    "the context's remaining time cannot be read (%s: %s): no deadline",
                    type(exc).__name__,
                    exc,
                )
            return None
        # A test's stand-in context (a MagicMock) may answer anything: no deadline then.
        if not isinstance(left, int | float) or isinstance(left, bool):
            return None
        return left

    def seconds_left(self) -> float | None:
        """Seconds left less the margin (None: no deadline): the engine's ``time_left``, asked
        only when a component's retry is considered — a retry whose backoff would outlast it
        is not made, and the slice fails with what it has not committed."""
        left = self._remaining_ms()
        return None if left is None else left / 1000.0 - self.margin

    def next_slice(self) -> bool:
        """Whether the next slice may start; the first always may. Call it before each slice."""
        now = self._clock()
        if self.slices:
            self.longest = max(self.longest, now - self._last)
            left = self._remaining_ms()
            if left is not None:
                if left / 1000.0 < SAFETY_FACTOR * self.longest + self.margin:
                    self.left_ms, self.stopped = left, True
                    return False
        self.slices += 1
        self._last = now
        return True

    def report(self, unstarted: int, what: str) -> None:
        """The log line of a stop: what is left for Lambda's retry, and why."""
        advice = (
            "; only one slice fits in the function's timeout: lower settings.lambda_batch_size "
            "or raise the timeout"
            if self.slices == 1
            else ""
        )
        log.warning(
            "invocation stopped before its deadline: %d %s not started, reported for retry "
            "(%d ms left; a slice took up to %d ms, x%g plus a margin of %d ms needed)%s",
            unstarted,
            what,
            self.left_ms or 0,
            round(self.longest * 1000),
            SAFETY_FACTOR,
            round(self.margin * 1000),
            advice,
        )
