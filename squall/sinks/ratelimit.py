"""A thread-safe token bucket for the http and push sinks (requests per second, with a burst).

Small enough to own: the sinks need one blocking ``acquire`` shared by their worker threads, with
an injectable clock and sleep for tests, and nothing of the async or distributed limiters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """At most ``rate`` acquisitions per second on average, ``burst`` at once."""

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, int(rate)))
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self, max_wait: float | None = None) -> float | None:
        """Take one token; when none is left, reserve the next one and wait until it is due.
        None: taken.

        ``max_wait`` (seconds; None: no limit): when the token would come that late or later
        (a Lambda's time left before its deadline), take nothing, do not wait, and return the wait
        it would have taken."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1  # negative: a debt later callers queue behind
            if self._tokens >= 0:
                return None
            wait = -self._tokens / self.rate
            if max_wait is not None and wait >= max_wait:
                self._tokens += 1  # not taken: the callers queued behind are not delayed by it
                return wait
            self.waited += wait
        self._sleep(wait)
        return None
