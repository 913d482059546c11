"""Ctrl-C and a stop reach the main thread, also while it waits in a read.

The kernel delivers a signal sent to a process (Ctrl-C, ``kill``, a service manager's stop) to
any one of its threads that does not block it. Python runs its handler in the main thread, but
only once that thread runs again: delivered to another thread — a progress bar's refresh
thread — while the main thread waits in a read that only a signal interrupts (a FIFO, a pipe,
stdin, a slow network file), the handler waits for that read to end, which may be never.
Threads started inside ``signals_to_main_thread()`` block SIGINT and SIGTERM, so the kernel
chooses the main thread, whose read is then interrupted and the handler runs at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: The signals a command stops on (its handlers run in the main thread).
STOPPING = frozenset({signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def signals_to_main_thread() -> Iterator[None]:
    """Threads started inside this block inherit a signal mask blocking ``STOPPING``; the
    calling thread's own mask is restored on leaving it (a signal that came meanwhile is
    delivered then). Off the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
