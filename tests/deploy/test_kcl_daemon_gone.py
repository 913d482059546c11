"""A KCL shard process whose daemon dies (kill -9 of the worker) while the process is blocked in a
batch — a sink call waiting on a locked table — exits at once, before the lease's failover gives
the shard to another worker; it does not live on to commit the batch under the next owner's
lease (measured before the fix: an orphan committed 292 rows 16 s after its worker was killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from squall.deploy.kcl import EXIT_DAEMON_GONE

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux's"
)

# The shard process: the watchdog main() starts, then a call that blocks for a minute (a sink's
# COPY waiting on a lock). It says when it is in that call.
SHARD = textwrap.dedent(
    """
    import sys, time
    from squall.deploy.kcl import watch_daemon
    watch_daemon(interval=0.05)
    print("blocked", flush=True)
    time.sleep(60)
    sys.exit(0)  # the call returned: the batch would be committed now
    """
)

# The "daemon": starts the shard process (the command its JSON argument names), says its PID, and
# waits to be killed.
DAEMON = textwrap.dedent(
    """
    import json, subprocess, sys, time
    shard = subprocess.Popen([sys.executable, *json.loads(sys.argv[1])])
    print(shard.pid, flush=True)
    time.sleep(120)
    """
)

# A subreaper (so the orphaned shard process is reparented to it and its exit status can be read):
# starts the daemon, waits for the shard to block, kills the daemon (-9), reports how the shard
# ended. The shard says it is blocked, or, given a FIFO (its topology file), it is blocked once it
# has opened the FIFO to read it: the reaper's open to write it returns then (and writes nothing).
REAPER = textwrap.dedent(
    """
    import ctypes, os, signal, subprocess, sys
    ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    daemon = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True
    )
    shard = int(daemon.stdout.readline())
    if len(sys.argv) > 3:
        fifo = os.open(sys.argv[3], os.O_WRONLY)  # held open: the shard's read waits
    else:
        assert daemon.stdout.readline().strip() == "blocked"
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    _, status = os.waitpid(shard, 0)
    print("shard exit", os.waitstatus_to_exitcode(status), flush=True)
    """
)


def test_shard_process_exits_when_its_daemon_is_killed_mid_batch():
    assert run_killed(["-c", SHARD]) == EXIT_DAEMON_GONE


def test_the_shard_processs_entry_point_watches_its_daemon_from_its_start(tmp_path: Path):
    """What the daemon runs, ``python -m squall.deploy.kcl TOPOLOGY``, watches its daemon before
    anything can block: its topology a FIFO nobody writes, its daemon killed while it reads it."""
    fifo = tmp_path / "topology.yaml"
    os.mkfifo(fifo)
    assert run_killed(["-m", "squall.deploy.kcl", str(fifo)], fifo) == EXIT_DAEMON_GONE


def run_killed(shard: list[str], fifo: Path | None = None) -> int:
    """The exit code of the shard process ``python *shard`` whose daemon is killed (-9) while it
    is blocked (it says so, or it reads ``fifo``)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    reaper = subprocess.Popen(
        [sys.executable, "-c", REAPER, DAEMON, json.dumps(shard), *([str(fifo)] if fifo else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        # Bound for a failure only: without the watchdog the shard blocks 60 s, the daemon gone.
        out, err = reaper.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(reaper.pid, signal.SIGKILL)
        reaper.communicate()
        pytest.fail("the shard process lived on after its daemon was killed")
    assert "the KCL daemon is gone; exiting at once" in err
    assert out.startswith("shard exit "), err
    return int(out.split()[-1])
