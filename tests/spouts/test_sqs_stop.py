"""A stop of ``squall run`` while the ``sqs`` spout long-polls ends the run at once (moto's server).

A receive waits up to ``wait_time`` (20 s at most) for messages; ``docker stop`` sends SIGTERM,
then SIGKILL 10 s later. The run went on waiting for the poll, then processed what it had
received, killed part-way by a service manager. Now the receive is given up (the spout is
``read_interruptible``): no batch is in flight, and the messages received into the unfinished
batch are not deleted — they come back after their visibility timeout.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.moto_standin import aws_env, moto_server, unique  # noqa: F401 - fixtures

TOPOLOGY = """
name: sqs-stop
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: sqs, queue: "{url}", endpoint_url: "{endpoint}", wait_time: 20, stop_when_empty: false, visibility_timeout: 600}}
settings: {{batch_size: 2}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
"""


def rows(db: Path) -> list[int]:
    try:
        return [n for (n,) in sqlite3.connect(db).execute("select n from events order by n")]
    except sqlite3.OperationalError:  # not created yet
        return []


def queue_state(sqs, url: str) -> tuple[int, int]:
    a = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_during_a_long_poll_ends_the_run_without_waiting_for_the_poll(
    moto_server,  # noqa: F811 - the imported fixture
    tmp_path: Path,
    sig: signal.Signals,
):
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("stop"))["QueueUrl"]
    for n in (1, 2, 3):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}))
    db = tmp_path / "w.db"
    t = tmp_path / "t.yaml"
    t.write_text(TOPOLOGY.format(db=db, url=url, endpoint=moto_server.endpoint))
    proc = subprocess.Popen(
        [sys.executable, "-m", "squall.cli", "run", str(t)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The first batch (1, 2) committed and deleted; 3 received into the second batch, whose
        # next receive waits up to 20 s for a message that never comes.
        wait_until(lambda: rows(db) == [1, 2], "the first batch")
        wait_until(lambda: queue_state(sqs, url) == (0, 1), "the third message to be received")
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the run did not end after the stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    # Without the fix: "finishing the batch in flight", then the poll's end, then 3 processed.
    assert "no batch in flight" in err, err
    assert "1 message(s) received into the unfinished batch come back" in err, err
    assert "Traceback" not in err, err
    assert rows(db) == [1, 2]
    assert queue_state(sqs, url) == (0, 1)  # 3 is not deleted: it comes back, nothing is lost
