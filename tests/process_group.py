"""Stopping a process a test started in a session of its own (``start_new_session=True``), such as
the KCL MultiLangDaemon with the record processors it starts: the whole group is sent SIGTERM,
then SIGKILL if it has not exited after ``grace`` seconds."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """Stop ``proc``'s process group (its PID is the group's), unless ``proc`` has exited."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
