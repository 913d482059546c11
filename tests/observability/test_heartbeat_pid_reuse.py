"""A KCL shard process's heartbeat across PID reuse: a new process never inherits an exited one's.

Under ``squall kcl --metrics-port`` each shard process writes its live gauges (the heartbeat
``squall_last_progress_timestamp_seconds``, the lag) to prometheus-client's multiprocess files,
named by the writer; the host's scrape server drops the files of writers that have exited. Named
by PID alone, an exited process's file came back to life when the system gave its PID to another
process: a new shard process opened the same file and went on in it (the dead shard's series
beside its own), and any other program with that PID kept the dead series exported, ageing
until ``SquallHung`` fired for a shard that nobody reads here. The files are now named by PID and
start time (Linux: ``/proc/PID/stat``), and a writer whose PID now names another process is dead.

Reuse is reproduced by renaming the exited process's files to carry the PID of the process that
takes its place (what the directory holds when that process got its PID), and, where this test
may choose the next PID (``/proc/sys/kernel/ns_last_pid``: root), by a real reuse.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.observability.test_heartbeat import CHILD, ROOT, SHARD_A, SHARD_B, _collect

#: Before the shard process of ``CHILD`` writes anything: the exited process's files (its PID
#: ``argv[4]``, in the directory ``argv[3]``) as if it had had this process's PID.
REUSING = (
    """
import os, re, sys
metrics, dead = sys.argv[3], sys.argv[4]
for name in os.listdir(metrics):
    if re.match(rf"gauge_live[a-z]+_{dead}(-|\\.db$)", name):
        mine = re.sub(rf"_{dead}(?=-|\\.db$)", f"_{os.getpid()}", name)
        os.rename(os.path.join(metrics, name), os.path.join(metrics, mine))
"""
    + CHILD
)


def _env(metrics: Path) -> dict[str, str]:
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics), "PYTHONPATH": str(ROOT)}


def _shard_process(tmp_path: Path, shard: str, *args: str, code: str = CHILD) -> subprocess.Popen:
    """A shard process that beat once for ``shard`` and waits (alive) until its stdin closes."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / f"{shard}.db"), shard, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path / "metrics"),
        cwd=tmp_path,
    )
    assert child.stdout.readline() == b"ready\n", child.communicate(timeout=30)[1].decode()
    return child


def _exit(child: subprocess.Popen) -> None:
    _, err = child.communicate(b"", timeout=30)
    assert child.returncode == 0, err.decode()


def _live_files(metrics: Path, pid: int) -> list[str]:
    return [n for n in os.listdir(metrics) if re.match(rf"gauge_live[a-z]+_{pid}(-|\.db$)", n)]


@pytest.fixture
def exited(tmp_path: Path) -> int:
    """The PID of a shard process of ``SHARD_A`` that beat and exited (its files left behind)."""
    (tmp_path / "metrics").mkdir()
    first = _shard_process(tmp_path, SHARD_A)
    assert set(_collect(tmp_path / "metrics")) == {SHARD_A}
    _exit(first)
    assert _live_files(tmp_path / "metrics", first.pid)
    return first.pid


def test_a_shard_process_given_an_exited_ones_pid_does_not_inherit_its_heartbeat(
    tmp_path: Path, exited: int
):
    """Before: the new process (shard B) opened the exited one's file and wrote its values beside
    shard A's; alive, it kept shard A's heartbeat exported (ageing) for as long as it ran."""
    reusing = _shard_process(
        tmp_path, SHARD_B, str(tmp_path / "metrics"), str(exited), code=REUSING
    )
    try:
        assert set(_collect(tmp_path / "metrics")) == {SHARD_B}
    finally:
        _exit(reusing)
    assert _collect(tmp_path / "metrics") == {}


def test_another_program_given_an_exited_shard_processs_pid_does_not_keep_its_heartbeat(
    tmp_path: Path, exited: int
):
    """Before: the scrape server asked only whether the PID was alive."""
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        for name in _live_files(tmp_path / "metrics", exited):
            mine = re.sub(rf"_{exited}(?=-|\.db$)", f"_{other.pid}", name)
            os.rename(tmp_path / "metrics" / name, tmp_path / "metrics" / mine)
        assert _collect(tmp_path / "metrics") == {}
        assert not _live_files(tmp_path / "metrics", other.pid)  # marked dead: removed
    finally:
        other.communicate(b"", timeout=30)


def _next_pid(pid: int) -> bool:
    """Ask the kernel to give ``pid`` next (root in this PID namespace); False if it cannot."""
    try:
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
    except OSError:
        return False
    return True


def test_a_real_pid_reuse_gives_the_new_shard_process_none_of_the_old_ones_series(
    tmp_path: Path, exited: int
):
    """The same, with the PID really given again (another process may take it first: tried a
    few times, skipped when this host does not let the test choose)."""
    for _ in range(10):
        if not _next_pid(exited):
            pytest.skip("cannot choose the next PID here (/proc/sys/kernel/ns_last_pid)")
        reusing = _shard_process(tmp_path, SHARD_B)
        if reusing.pid == exited:
            break
        _exit(reusing)
    else:
        pytest.skip(f"PID {exited} was taken by other processes each time")
    try:
        assert set(_collect(tmp_path / "metrics")) == {SHARD_B}
    finally:
        _exit(reusing)


#: A shard process on a system without ``/proc`` (not Linux): files named by PID alone.
NO_START_TIME = """
import squall.observability.prometheus as prometheus
prometheus.start_token = lambda pid="self": None
"""


def test_without_a_start_time_a_shard_process_given_an_exited_ones_pid_clears_its_heartbeat(
    tmp_path: Path,
):
    """Named by PID alone, a new shard process removes the live gauges that an exited process of
    its PID left before it writes its own (another program with that PID would keep them: the
    start time is what tells them apart)."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    first = _shard_process(tmp_path, SHARD_A, code=NO_START_TIME + CHILD)
    _exit(first)
    assert _live_files(metrics, first.pid) == [f"gauge_livemax_{first.pid}.db"]
    reusing = _shard_process(
        tmp_path, SHARD_B, str(metrics), str(first.pid), code=NO_START_TIME + REUSING
    )
    try:
        assert set(_collect(metrics)) == {SHARD_B}
    finally:
        _exit(reusing)


def test_a_process_that_prometheus_client_did_not_start_in_multiprocess_mode_keeps_its_values(
    tmp_path: Path, monkeypatch
):
    """The value class is replaced only where prometheus-client chose its multiprocess values at
    import (the directory set before the process started: a KCL shard process). A directory set
    later (a test, a tool) must leave an in-memory process in memory: replaced, its values would
    go to files wherever the variable pointed at the next metric, or fail once it was unset."""
    from prometheus_client import CollectorRegistry
    from prometheus_client import values as prometheus_values

    from squall.observability.prometheus import MULTIPROC_ENV, PrometheusBackend

    before = prometheus_values.ValueClass
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    PrometheusBackend(CollectorRegistry(), topology="t").record_idle("t", SHARD_A, 1.0)
    assert prometheus_values.ValueClass is before and not list(tmp_path.glob("*.db"))
