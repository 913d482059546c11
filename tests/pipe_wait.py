"""Wait until a child process waits in a read of a pipe or FIFO (Linux: ``/proc/<pid>/wchan``).

A test that signals a child "while it waits for input" must send the signal then, not when a
row it wrote appears (the child may still be finishing that batch)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_in_pipe_read(proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """True once the child's main thread waits in a pipe's read; False if it exited, the kernel
    tells no wait channel, or ``timeout`` passed (the caller signals all the same)."""
    wchan = Path(f"/proc/{proc.pid}/wchan")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "pipe_read" in wchan.read_text() or "pipe_wait" in wchan.read_text():
                return True
        except OSError:
            return False
        time.sleep(0.01)
    return False
