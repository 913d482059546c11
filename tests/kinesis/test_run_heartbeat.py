"""``squall run --metrics-port`` on a Kinesis stream: the heartbeat moves while the stream is
idle, and stops while a sink call hangs (``SquallHung`` reads it; lag and failures cannot).

No sleep-then-assert: each step waits for a condition — the endpoint's values, and the hanging
sink's own account of how long it has waited (``tests/observability/hanging.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kinesis.test_kcl_daemon import put
from tests.observability.test_prometheus_endpoint import scrape, total
from tests.ports import free_port

pytestmark = pytest.mark.e2e

HEARTBEAT = "squall_last_progress_timestamp_seconds"


def wait_for(what: str, check: Callable[[], object], proc: subprocess.Popen, log: Path) -> object:
    """``check()``'s first true answer within 60 s; the run must stay up meanwhile."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        answer = check()
        if answer:
            return answer
        time.sleep(0.05)
    pytest.fail(f"never: {what}\n{log.read_text()[-3000:]}")


def test_a_hung_sink_stops_the_heartbeat_of_squall_run_and_idle_polls_move_it(
    tmp_path: Path, kinesis, kinesis_mock, make_stream
):
    stream = make_stream(1, prefix="hb")
    marker = tmp_path / "hanging"
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        f"""
name: heartbeat
spout: {{type: kinesis, stream: {stream}, endpoint_url: "{kinesis_mock.endpoint}", poll_interval: 0.05}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: rows, type: 'tests.observability.hanging:HangingSink', marker: "{marker}"}}]
"""
    )
    port = free_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    log_path = tmp_path / "run.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "squall.cli",
            "run",
            str(topology),
            "--metrics-port",
            f"127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )

    def beat() -> float | None:
        return scrape(port).get((HEARTBEAT, (("shard", ""), ("topology", "heartbeat"))))

    try:
        put(kinesis, stream, [{"n": 1}, {"n": 2}])
        wait_for(
            "the first batch",
            lambda: total(scrape(port), "squall_batches_total", status="ok") == 1,
            proc,
            log_path,
        )
        after_batch = beat()
        assert after_batch is not None
        # the stream is idle now: its polls move the heartbeat, no batch runs
        wait_for("an idle poll's heartbeat", lambda: (beat() or 0) > after_batch, proc, log_path)
        assert total(scrape(port), "squall_batches_total") == 1

        put(kinesis, stream, [{"n": 3, "hang": True}])
        waited = marker.with_name("hanging.waited")
        wait_for("the sink to hang", waited.exists, proc, log_path)
        hung_at = float(marker.read_text())
        # the run's own clock: 2 s in the hung call, some forty poll intervals
        wait_for("2 s of hanging", lambda: float(waited.read_text() or 0) >= 2.0, proc, log_path)
        stale = beat()
        assert stale is not None and stale <= hung_at, (stale, hung_at)

        marker.with_name("hanging.release").touch()  # the call returns: the heartbeat moves again
        wait_for("the heartbeat after the hang", lambda: (beat() or 0) > hung_at, proc, log_path)
        assert total(scrape(port), "squall_batches_total", status="ok") == 2
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    assert proc.returncode == 130, log_path.read_text()[-3000:]  # stopped by SIGTERM, in order
    assert "committed 3" in log_path.read_text(), log_path.read_text()[-3000:]
