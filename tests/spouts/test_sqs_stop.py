"""A stop of ``squall run`` while the ``sqs`` spout long-polls ends the run at once (moto's server).

A receive waits up to ``wait_time`` (20 s at most) for messages; ``docker stop`` sends SIGTERM,
then SIGKILL 10 s later. The run went on waiting for the poll, then processed what it had
received, killed part-way by a service manager. Now the receive is given up (the spout is
``read_interruptible``): no batch is in flight, and the messages received into the unfinished
batch are not deleted but made visible again at once (ChangeMessageVisibilityBatch, timeout 0) —
they stayed hidden for their whole visibility timeout, and a FIFO group was blocked until then.
Only a batch's first receive long-polls: SQS goes on with a long poll given up, and would take
the messages given back. The give-back tests run the spout in the test process on moto's server,
the stop raised from the receive as ``squall run``'s signal handler raises it.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from squall.component import ComponentContext
from squall.deploy.local import _ReadInterrupted
from squall.spouts.sqs import SqsSpout, SqsSpoutConfig
from tests.moto_standin import FlakyClient, client_error, unique

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
        # Both batches (1, 2) and (3) committed and deleted; the next receive waits up to 20 s
        # for a message that never comes.
        wait_until(lambda: rows(db) == [1, 2, 3], "the batches")
        wait_until(lambda: queue_state(sqs, url) == (0, 0), "the messages to be deleted")
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
    # Without the fix: "finishing the batch in flight", then the poll's end.
    assert "no batch in flight" in err, err
    assert "Traceback" not in err, err
    assert rows(db) == [1, 2, 3]


class StopDuringReceive:
    """``receive_message`` hook: the ``at``-th receive is sent to SQS (in a thread, as a request
    whose client is gone: SQS goes on with it) and given up, as a stop of ``squall run`` gives
    it up. The thread is waited for 10 s at most: a short poll has ended by then, a long poll
    given up still runs at SQS (moto's takes a message made visible within about a second, so
    ``waits`` is checked too)."""

    def __init__(self, at: int):
        self.at, self.calls, self.waits = at, 0, []

    def __call__(self, kwargs: dict, call):
        self.calls += 1
        self.waits.append(kwargs["WaitTimeSeconds"])
        if self.calls < self.at:
            return call(**kwargs)
        abandoned = threading.Thread(target=call, kwargs=kwargs, daemon=True)
        abandoned.start()
        abandoned.join(10)
        raise _ReadInterrupted


def spout_on(moto_server, url: str, **hooks) -> SqsSpout:  # noqa: F811 - the imported fixture
    cfg = SqsSpoutConfig(
        id="in",
        type="sqs",
        queue=url,
        endpoint_url=moto_server.endpoint,
        wait_time=20,
        visibility_timeout=600,
        stop_when_empty=False,
    )
    spout = SqsSpout(cfg, ComponentContext("t"))
    spout.open()
    spout.client = FlakyClient(spout.client, **hooks)
    return spout


def receive_now(sqs, url: str) -> list[str]:
    """The bodies receivable at once (a short poll; moto's answers every visible message)."""
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return sorted(m["Body"] for m in got.get("Messages", []))


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_the_messages_of_a_receive_given_up_are_receivable_again_at_once(
    moto_server,  # noqa: F811 - the imported fixture
    caplog: pytest.LogCaptureFixture,
    fifo: bool,
):
    """Without the fix they stayed hidden for their visibility timeout (600 s here), and a FIFO
    group blocked; with the batch's later receives long polls, the poll given up took them."""
    sqs = moto_server.client("sqs")
    name = unique("giveback") + (".fifo" if fifo else "")
    attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if fifo else {}
    url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    for n in (1, 2, 3):
        sqs.send_message(
            QueueUrl=url, MessageBody=str(n), **({"MessageGroupId": "g"} if fifo else {})
        )
    stop = StopDuringReceive(at=2)  # 1, 2, 3 received; the stop comes during the next receive
    spout = spout_on(moto_server, url, receive_message=stop)
    with pytest.raises(_ReadInterrupted):
        next(spout.read(10))
    assert stop.waits == [20, 0]  # with messages in hand, no long poll for SQS to go on with
    assert receive_now(sqs, url) == ["1", "2", "3"]
    assert "3 message(s) received into the unfinished batch given back" in caplog.text
    assert spout._handles == {}  # nothing kept of them


def test_a_message_a_held_batch_still_holds_is_not_given_back(
    moto_server,  # noqa: F811 - the imported fixture
    caplog: pytest.LogCaptureFixture,
):
    """A message of a batch a rolling sink holds comes again (its visibility timeout passed) into
    the batch given up: it stays hidden, and its newest receipt handle stays for the held batch's
    delete; the other message is given back."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("held"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="held")
    stop = StopDuringReceive(at=4)  # receives 1-2: the held batch; 3: both; 4: given up
    spout = spout_on(moto_server, url, receive_message=stop)
    batches = spout.read(10)
    (held,) = next(batches)  # a sink holds it: no commit covers it yet
    key = (held.meta.shard_id, held.meta.sequence_number)
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=spout._handles[key], VisibilityTimeout=0
    )  # its visibility timeout passed
    sqs.send_message(QueueUrl=url, MessageBody="other")
    with pytest.raises(_ReadInterrupted):
        next(batches)
    assert stop.waits == [20, 0, 20, 0]
    assert receive_now(sqs, url) == ["other"]
    assert "1 message(s) received into the unfinished batch given back" in caplog.text
    assert "1 held by an earlier batch kept" in caplog.text
    spout.commit({held.meta.shard_id: held.meta.position})  # the newest handle: deleted
    assert spout.deleted == 1
    assert receive_now(sqs, url) == []  # "other" is hidden again by the receive above
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert a["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_a_failed_give_back_is_logged_not_raised(
    moto_server,  # noqa: F811 - the imported fixture
    caplog: pytest.LogCaptureFixture,
):
    """The stop goes on (the receive's interruption is what is raised); the messages come back
    after their visibility timeout, as before."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("givefail"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="1")

    def unavailable(kwargs, call):
        raise client_error("ServiceUnavailable", status=503)

    spout = spout_on(
        moto_server,
        url,
        receive_message=StopDuringReceive(at=2),
        change_message_visibility_batch=unavailable,
    )
    with pytest.raises(_ReadInterrupted):
        next(spout.read(10))
    assert spout.client.calls["change_message_visibility_batch"] == 1  # one attempt
    assert receive_now(sqs, url) == []
    assert (
        "0 message(s) received into the unfinished batch given back (visible again); 1 come "
        "back after their visibility timeout (ServiceUnavailable)" in caplog.text
    )


def test_a_second_stop_during_the_give_back_aborts_it_and_says_so(
    moto_server,  # noqa: F811 - the imported fixture
    caplog: pytest.LogCaptureFixture,
):
    """A second Ctrl-C or SIGTERM while the messages are given back aborts the run at once
    (``squall run``'s handler raises KeyboardInterrupt in the give-back's call): it is not
    swallowed, and the warning still says how many were given back and that the others come back
    after their visibility timeout (it was never written: the run ended without a word of them)."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("givetwice"))["QueueUrl"]
    for n in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))

    def second_stop(kwargs, call):
        if spout.client.calls["change_message_visibility_batch"] > 1:
            raise KeyboardInterrupt
        return call(**kwargs)

    spout = spout_on(
        moto_server,
        url,
        receive_message=StopDuringReceive(at=3),  # 10 + 2 received: two calls to give them back
        change_message_visibility_batch=second_stop,
    )
    with pytest.raises(KeyboardInterrupt):
        next(spout.read(20))
    assert spout.client.calls["change_message_visibility_batch"] == 2
    assert len(receive_now(sqs, url)) == 10  # the first call's
    assert (
        "10 message(s) received into the unfinished batch given back (visible again); 2 come "
        "back after their visibility timeout (a stop interrupted the give-back)" in caplog.text
    )


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [("AccessDenied", 403, "SquallError"), ("ServiceUnavailable", 503, "TransientError")],
)
def test_a_receive_that_fails_gives_its_messages_back_and_ends_the_run_in_one_line(
    moto_server,  # noqa: F811 - the imported fixture
    code: str,
    status: int,
    error: str,
):
    """A receive failing (after botocore's retries) is the spout's located error, as the
    kinesis and s3 spouts' are — ``squall run`` reports it in one line (an input error; a
    transient one exits as failed) — where botocore's ClientError went up through the runner as
    a traceback; the messages received into the unfinished batch are given back first."""
    from squall import errors

    sqs = moto_server.client("sqs")
    name = unique("recvfail")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    for n in (1, 2):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))

    def fails_second(kwargs, call):
        if spout.client.calls["receive_message"] > 1:
            raise client_error(code, status=status)
        return call(**kwargs)

    spout = spout_on(moto_server, url, receive_message=fails_second)
    with pytest.raises(errors.SquallError) as raised:
        next(spout.read(10))
    assert type(raised.value).__name__ == error
    assert str(raised.value).startswith(f"in: receiving from queue '{name}' failed: ")
    assert code in str(raised.value)
    assert receive_now(sqs, url) == ["1", "2"]  # given back


def test_a_delete_that_fails_is_the_spouts_located_error(
    moto_server,  # noqa: F811 - the imported fixture
):
    """DeleteMessageBatch failing (the identity lacks sqs:DeleteMessage, SQS unreachable) after
    a batch was committed: one located line (``squall run``: an input error), as a delete's
    failed entries already were — botocore's ClientError went up as a traceback."""
    from squall.errors import SquallError

    sqs = moto_server.client("sqs")
    name = unique("delfail")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="1")

    def denied(kwargs, call):
        raise client_error("AccessDenied", status=403)

    spout = spout_on(moto_server, url, delete_message_batch=denied)
    (rec,) = next(spout.read(10))
    with pytest.raises(SquallError, match=f"^in: deleting 1 message\\(s\\) from queue '{name}'"):
        spout.commit({rec.meta.shard_id: rec.meta.position})
