"""A stop of ``squall run`` while the ``sqs`` spout long-polls ends the run at once (moto's server).

A receive waits up to ``wait_time`` (20 s at most) for messages; ``docker stop`` sends SIGTERM,
then SIGKILL 10 s later. The run went on waiting for the poll, then processed what it had
received, killed part-way by a service manager. Now the receive is given up (the spout is
``read_interruptible``): no batch is in flight, and the messages received into the unfinished
batch are not deleted but made visible again at once (ChangeMessageVisibilityBatch, timeout 0) —
they stayed hidden for their whole visibility timeout, and a FIFO group was blocked until then.
A batch's follow-up receives long-poll 1 s (``FOLLOW_UP_WAIT``): SQS goes on with a poll given
up, and would take the messages given back, so the give-back first waits for its end. The
give-back tests run the spout in the test process on moto's server, the stop raised from the
receive as ``squall run``'s signal handler raises it.
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
from botocore.exceptions import ConnectionClosedError

from squall.component import ComponentContext
from squall.deploy.local import _ReadInterrupted
from squall.spouts.sqs import (
    FILL_SECONDS,
    FOLLOW_UP_WAIT,
    GIVE_BACK_SECONDS,
    IDLE_PAUSE,
    SqsSpout,
    SqsSpoutConfig,
    queue_arn,
)
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


@pytest.mark.parametrize(
    ("sig", "wait_time"),
    [(signal.SIGTERM, 20), (signal.SIGINT, 20), (signal.SIGTERM, 0)],
    ids=["SIGTERM", "SIGINT", "SIGTERM-short-polls"],
)
def test_a_stop_during_a_long_poll_ends_the_run_without_waiting_for_the_poll(
    moto_server,
    tmp_path: Path,
    sig: signal.Signals,
    wait_time: int,
):
    """(``wait_time: 0``: the signal comes during a short poll or the idle pause between them,
    whose wait a ``stop()`` ends: the handler's ``stop()`` in the thread it interrupted.)

    The signal is sent once the messages are deleted; rarely the run is then still closing that
    batch ("finishing the batch in flight": it stops after it, which says nothing of a poll),
    so the scenario is run again, up to three times, until the signal finds the run waiting."""
    for attempt in range(3):
        err = _stop_while_waiting(moto_server, tmp_path / str(attempt), sig, wait_time)
        if "finishing the batch in flight" not in err:
            break
    # Without the fix: "finishing the batch in flight", then the poll's end.
    assert "no batch in flight" in err, err


def _stop_while_waiting(moto_server, tmp_path: Path, sig: signal.Signals, wait_time: int) -> str:
    """Run the topology on three messages, send ``sig`` once they are committed and deleted;
    the run's stderr (after checking its exit, its rows and that it printed no traceback)."""
    tmp_path.mkdir()
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("stop"))["QueueUrl"]
    for n in (1, 2, 3):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}))
    db = tmp_path / "w.db"
    t = tmp_path / "t.yaml"
    topology = TOPOLOGY.format(db=db, url=url, endpoint=moto_server.endpoint)
    t.write_text(topology.replace("wait_time: 20", f"wait_time: {wait_time}"))
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
    assert "Traceback" not in err, err
    assert rows(db) == [1, 2, 3]
    return err


class StopDuringReceive:
    """``receive_message`` hook: the ``at``-th receive is sent to SQS (in a thread, as a request
    whose client is gone: SQS goes on with it) and given up, as a stop of ``squall run`` gives
    it up. The thread is waited for 10 s at most: a follow-up's 1 s poll has ended by then (the
    give-back's wait for it is checked with a ``FakeClock``). ``started`` is the spout's clock
    when the given-up receive was called, ``clock`` that clock if not the real one."""

    def __init__(self, at: int, clock: FakeClock | None = None):
        self.at, self.calls, self.waits, self.clock = at, 0, [], clock
        self.started: float | None = None

    def __call__(self, kwargs: dict, call):
        self.calls += 1
        self.waits.append(kwargs["WaitTimeSeconds"])
        if self.clock is not None:
            self.clock.now += 0.25  # each receive's time goes by
        if self.calls < self.at:
            return call(**kwargs)
        self.started = self.clock.now if self.clock is not None else None
        abandoned = threading.Thread(target=call, kwargs=kwargs, daemon=True)
        abandoned.start()
        abandoned.join(10)
        raise _ReadInterrupted


class FakeClock:
    """The spout's ``clock`` and ``sleep``: time goes by only when the test moves it or the spout
    sleeps (``slept`` lists the sleeps, ``events`` the sleeps and the give-back calls in order)."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []
        self.events: list[tuple[str, float]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.events.append(("sleep", seconds))
        self.now += seconds


def spout_on(
    moto_server,
    url: str,
    *,
    wait_time: int = 20,
    visibility_timeout: int = 600,
    clock: FakeClock | None = None,
    **hooks,
) -> SqsSpout:
    cfg = SqsSpoutConfig(
        id="in",
        type="sqs",
        queue=url,
        endpoint_url=moto_server.endpoint,
        wait_time=wait_time,
        visibility_timeout=visibility_timeout,
        stop_when_empty=False,
    )
    timing = {"clock": clock, "sleep": clock.sleep} if clock is not None else {}
    spout = SqsSpout(cfg, ComponentContext("t"), **timing)
    spout.open()
    spout.client = FlakyClient(spout.client, **hooks)
    return spout


def receive_now(sqs, url: str) -> list[str]:
    """The bodies receivable at once (a short poll; moto's answers every visible message)."""
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return sorted(m["Body"] for m in got.get("Messages", []))


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_the_messages_of_a_receive_given_up_are_receivable_again_at_once(
    moto_server,
    caplog: pytest.LogCaptureFixture,
    fifo: bool,
):
    """Without the fix they stayed hidden for their visibility timeout (600 s here), and a FIFO
    group blocked; with the give-back not waiting for the end of the follow-up's long poll given
    up, that poll could take them (see ``test_the_give_back_waits_for_the_end_of_the_poll_given_up``)."""
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
    assert stop.waits == [20, 0 if fifo else FOLLOW_UP_WAIT]  # (a FIFO queue's: a short poll)
    assert receive_now(sqs, url) == ["1", "2", "3"]
    assert "3 message(s) received into the unfinished batch given back" in caplog.text
    assert spout._handles == {}  # nothing kept of them


def test_a_message_a_held_batch_still_holds_is_not_given_back(
    moto_server,
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
    assert stop.waits == [20, FOLLOW_UP_WAIT, 20, FOLLOW_UP_WAIT]
    assert receive_now(sqs, url) == ["other"]
    assert "1 message(s) received into the unfinished batch given back" in caplog.text
    assert "1 held by an earlier batch kept" in caplog.text
    spout.commit({held.meta.shard_id: held.meta.position})  # the newest handle: deleted
    assert spout.deleted == 1
    assert receive_now(sqs, url) == []  # "other" is hidden again by the receive above
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert a["Attributes"]["ApproximateNumberOfMessages"] == "0"


@pytest.mark.parametrize(
    ("wait_time", "waits"),
    [(20, [20, FOLLOW_UP_WAIT, FOLLOW_UP_WAIT]), (0, [0, 0, 0])],
    ids=["wait_time 20", "wait_time 0"],
)
def test_a_batchs_follow_up_receives_long_poll_one_second(
    moto_server,
    wait_time: int,
    waits: list[int],
):
    """With messages in hand a receive was a short poll (WaitTimeSeconds 0): SQS answers one from
    some of its servers, so with fewer than ~1,000 messages waiting it often answers none while
    messages wait and batches ended far below ``batch_size``. The follow-ups now long-poll 1 s
    (all of SQS's servers; an answer as soon as a message is there); ``wait_time: 0`` keeps every
    receive a short poll. What botocore sends is captured (moto's short poll answers every
    message: the batch's size would show nothing)."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("followup"))["QueueUrl"]
    for n in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    spout = spout_on(moto_server, url, wait_time=wait_time)
    sent: list[int] = []
    spout.client.meta.events.register(
        "provide-client-params.sqs.ReceiveMessage",
        lambda params, **_: sent.append(params["WaitTimeSeconds"]),
    )
    batch = next(spout.read(20))
    assert len(batch) == 12
    assert sent == waits  # 10 messages, then 2, then none: the batch ends


def test_a_fifo_queues_follow_up_receives_stay_short_polls(
    moto_server,
):
    """SQS gives no more of a FIFO message group while messages of it are in flight: with one or
    a few groups a long-polled follow-up waits its whole second for nothing, every batch (on
    moto's server, 50 messages of one group in batches of 10 took 5.3 s instead of 0.4 s). A
    FIFO queue's follow-ups stay short polls."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(
        QueueName=unique("followup") + ".fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    for n in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=str(n), MessageGroupId=f"g{n}")
    spout = spout_on(moto_server, url, wait_time=20)
    sent: list[int] = []
    spout.client.meta.events.register(
        "provide-client-params.sqs.ReceiveMessage",
        lambda params, **_: sent.append(params["WaitTimeSeconds"]),
    )
    batch = next(spout.read(20))
    assert len(batch) == 12
    assert sent == [20, 0, 0]


@pytest.mark.parametrize(
    ("visibility_timeout", "received"),
    [(600, 30), (4, 20)],  # FILL_SECONDS (5 s), and half of a 4 s visibility timeout (2 s)
    ids=["visibility 600 s", "visibility 4 s"],
)
def test_a_batch_receives_no_more_fill_seconds_after_its_first_messages(
    moto_server,
    visibility_timeout: int,
    received: int,
):
    """A long-polled follow-up answers as soon as a message comes, so a trickle of a message at
    least every second kept a batch receiving until ``batch_size``: on moto's server, with a
    message sent every 0.3 s and a 4 s visibility timeout, the first batch of 40 came after 8 s,
    14 of the 40 messages it received being its own messages received again past their
    visibility timeout (their receive count raised towards a redrive policy's maxReceiveCount),
    nothing processed meanwhile. Now a batch receives no more ``FILL_SECONDS`` (at most half the
    visibility timeout) after its first messages came. A fake clock: each receive takes 3 s, so
    the receives after the first (its 10 messages came at 3 s) start at 3 s, 6 s, 9 s."""
    assert FILL_SECONDS == 5
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("fill"))["QueueUrl"]
    for n in range(40):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    clock = FakeClock()

    def slow(kwargs, call):
        clock.now += 3
        return call(**kwargs)

    spout = spout_on(
        moto_server, url, visibility_timeout=visibility_timeout, clock=clock, receive_message=slow
    )
    batch = next(spout.read(40))
    assert len(batch) == received  # 10 a receive: those started before 3 s + the fill time
    assert spout.client.calls["receive_message"] == received // 10


@pytest.mark.parametrize(
    ("readable", "received"),
    [(True, 20), (False, 30)],  # half the queue's 4 s (2 s); unknown: FILL_SECONDS (5 s)
    ids=["the queue's visibility read", "not readable"],
)
def test_with_visibility_timeout_unset_a_batch_fills_half_the_queues(
    moto_server,
    readable: bool,
    received: int,
):
    """With ``visibility_timeout`` unset the messages get the queue's own visibility timeout,
    which the spout did not know: a batch filled 5 s whatever it was — on moto's server, a queue
    whose visibility timeout is 2 s and a message every 0.3 s, the first batch received 24
    messages, 15 distinct: its own messages again, their receive count raised. The spout reads
    it at start (GetQueueAttributes) and fills half of it; when it cannot (the identity lacks
    ``sqs:GetQueueAttributes``) 5 s, as before. The timeline of
    ``test_a_batch_receives_no_more_fill_seconds_after_its_first_messages``."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("queuevis"), Attributes={"VisibilityTimeout": "4"})[
        "QueueUrl"
    ]
    for n in range(40):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    clock = FakeClock()

    def slow(kwargs, call):
        clock.now += 3
        return call(**kwargs)

    def denied(kwargs, call):
        raise client_error("AccessDenied", status=403)

    cfg = SqsSpoutConfig(
        id="in", type="sqs", queue=url, endpoint_url=moto_server.endpoint, wait_time=20
    )
    assert cfg.visibility_timeout is None
    spout = SqsSpout(cfg, ComponentContext("t"), clock=clock, sleep=clock.sleep)
    hooks = {"receive_message": slow} | ({} if readable else {"get_queue_attributes": denied})
    spout.client = FlakyClient(moto_server.client("sqs"), **hooks)
    spout.open()
    batch = next(spout.read(40))
    assert len(batch) == received


def recorded_give_back(clock: FakeClock):
    """A ``change_message_visibility_batch`` hook noting the clock when the give-back is sent."""

    def give_back(kwargs, call):
        clock.events.append(("give back", clock.now))
        return call(**kwargs)

    return give_back


def test_the_give_back_waits_for_the_end_of_the_poll_given_up(
    moto_server,
):
    """SQS goes on with a long poll whose client is gone and takes a message made visible before
    the poll's end: given back at once, the messages would be taken by the follow-up's poll given
    up (1 s) and hidden for their visibility timeout (600 s here). The give-back now sleeps first
    until the poll's start + its WaitTimeSeconds + a margin, inside its 3 s. A fake clock: no time
    is measured."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("pollend"))["QueueUrl"]
    for n in (1, 2, 3):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    clock = FakeClock()
    stop = StopDuringReceive(at=2, clock=clock)
    spout = spout_on(
        moto_server,
        url,
        clock=clock,
        receive_message=stop,
        change_message_visibility_batch=recorded_give_back(clock),
    )
    with pytest.raises(_ReadInterrupted):
        next(spout.read(10))
    assert stop.waits == [20, FOLLOW_UP_WAIT]
    ((slept, _), (sent, at)) = clock.events
    assert (slept, sent) == ("sleep", "give back")
    assert at >= stop.started + FOLLOW_UP_WAIT  # the poll given up has ended at SQS
    assert sum(clock.slept) < GIVE_BACK_SECONDS  # time left for the give-back's calls
    assert receive_now(sqs, url) == ["1", "2", "3"]


def test_the_give_back_waits_for_the_poll_of_a_receives_last_attempt(
    moto_server,
):
    """botocore retries a receive whose connection broke (standard mode): the retry polls anew,
    later than the call was made, and the give-back waits for that poll's end (each attempt's
    start is taken as it is sent)."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("pollretry"))["QueueUrl"]
    for n in (1, 2, 3):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    clock = FakeClock()
    stop = StopDuringReceive(at=2, clock=clock)
    spout = spout_on(
        moto_server,
        url,
        clock=clock,
        receive_message=stop,
        change_message_visibility_batch=recorded_give_back(clock),
    )
    broken: list[float] = []

    def connection_breaks_once(request, **_):
        if stop.calls == 2 and not broken:  # the follow-up's first attempt
            broken.append(clock.now)
            clock.now += 5  # it broke after 5 s; botocore retries
            raise ConnectionClosedError(endpoint_url=request.url)

    spout.client.meta.events.register("before-send.sqs.ReceiveMessage", connection_breaks_once)
    with pytest.raises(_ReadInterrupted):
        next(spout.read(10))
    assert broken  # the first attempt broke, the second was sent
    ((slept, _), (sent, at)) = clock.events
    assert (slept, sent) == ("sleep", "give back")
    assert at >= stop.started + 5 + FOLLOW_UP_WAIT  # the retry's poll has ended
    assert receive_now(sqs, url) == ["1", "2", "3"]


def test_a_second_stop_during_the_wait_for_the_poll_aborts_the_give_back(
    moto_server,
    caplog: pytest.LogCaptureFixture,
):
    """A second Ctrl-C or SIGTERM while the give-back waits for the poll given up to end aborts
    the run at once (not swallowed), nothing is given back, and the warning says so."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("pollstop"))["QueueUrl"]
    for n in (1, 2, 3):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    clock = FakeClock()

    def second_stop(seconds: float) -> None:
        raise KeyboardInterrupt

    clock.sleep = second_stop  # type: ignore[method-assign]
    spout = spout_on(
        moto_server,
        url,
        clock=clock,
        receive_message=StopDuringReceive(at=2, clock=clock),
        change_message_visibility_batch=recorded_give_back(clock),
    )
    with pytest.raises(KeyboardInterrupt):
        next(spout.read(10))
    assert clock.events == []  # no give-back sent
    assert receive_now(sqs, url) == []
    assert (
        "0 message(s) received into the unfinished batch given back (visible again); 3 come "
        "back after their visibility timeout (a stop interrupted the give-back)" in caplog.text
    )


def test_a_failed_give_back_is_logged_not_raised(
    moto_server,
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
    moto_server,
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
    [
        ("AccessDenied", 403, "SquallError"),
        ("ServiceUnavailable", 503, "TransientError"),
        # the queue's 120,000 messages in flight: a state of the queue, not a misconfiguration
        ("OverLimit", 403, "TransientError"),
    ],
)
def test_a_receive_that_fails_gives_its_messages_back_and_ends_the_run_in_one_line(
    moto_server,
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
    moto_server,
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


@pytest.mark.parametrize(
    ("visibility_timeout", "received"),
    [(600, 7), (2, 2)],  # FILL_SECONDS (5 s); half of a 2 s visibility timeout (1 s)
    ids=["visibility 600 s", "visibility 2 s"],
)
def test_a_batchs_last_follow_up_ends_within_the_fill_time(
    moto_server,
    visibility_timeout: int,
    received: int,
):
    """A trickle, a message every 0.7 s (a fake clock; a long poll answers at a message's
    arrival, or empty after its wait). A follow-up started before the fill time's end
    long-polled past it: the batch was held up to ``FOLLOW_UP_WAIT`` longer than the fill time —
    with a 2 s visibility timeout, 1 s of fill + up to 1 s of poll, the first messages visible
    again (received by another consumer, or again by this one) before the batch was processed
    (here 1.4 s; 5.6 s for the 5 s bound). A follow-up that would end past the fill time is a
    short poll, which answers at once."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("filltail"))["QueueUrl"]
    for n in range(40):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    clock = FakeClock()
    start = clock.now
    taken = 0  # messages of the trickle received: the next one arrives at start + 0.7 * taken

    def trickle(kwargs, call):
        nonlocal taken
        arrives = start + 0.7 * taken
        if arrives > clock.now + kwargs["WaitTimeSeconds"]:
            clock.now += kwargs["WaitTimeSeconds"]
            return {"Messages": []}
        clock.now = max(clock.now, arrives)
        taken += 1
        return call(**{**kwargs, "MaxNumberOfMessages": 1})

    spout = spout_on(
        moto_server,
        url,
        visibility_timeout=visibility_timeout,
        clock=clock,
        receive_message=trickle,
    )
    batch = next(spout.read(40))
    assert clock.now - start <= min(FILL_SECONDS, visibility_timeout / 2)  # the first came at 0
    assert len(batch) == received  # those that came while a follow-up could still end in time


def test_a_queue_url_with_a_trailing_slash_is_read(moto_server):
    """``queue_name`` and the deploy template's ARN take a URL ending in '/' (its name, a FIFO
    queue's '.fifo', found), but the spout sent it as it was: SQS (moto's server) answered every
    call NonExistentQueue — the run failed at its first receive. The URL is used without it."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("slash"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="1")
    cfg = SqsSpoutConfig(
        id="in", type="sqs", queue=url + "/", endpoint_url=moto_server.endpoint, wait_time=0
    )
    spout = SqsSpout(cfg, ComponentContext("t"))
    spout.open()
    (rec,) = next(spout.read(10))
    spout.commit({rec.meta.shard_id: rec.meta.position})
    assert spout.deleted == 1


def test_short_polls_until_stopped_pause_between_empty_receives(
    moto_server,
):
    """``wait_time: 0`` with ``stop_when_empty: false``: an empty receive was followed by the next
    at once — an idle queue polled ~200 times a second (each a billed request). The spout now
    pauses ``IDLE_PAUSE`` after an empty batch when every receive is a short poll."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("idle"))["QueueUrl"]
    clock = FakeClock()
    spout = spout_on(moto_server, url, wait_time=0, clock=clock)
    paused = clock.sleep

    def sleep_then_stop(seconds: float) -> None:
        paused(seconds)
        if len(clock.slept) == 3:
            spout.stop()

    spout._sleep = sleep_then_stop
    sent: list[int] = []

    def receiving(params: dict, **_: object) -> None:
        sent.append(params["WaitTimeSeconds"])
        if len(sent) > 3:  # (without the pause no sleep stops it: it would poll for ever)
            spout.stop()

    spout.client.meta.events.register("provide-client-params.sqs.ReceiveMessage", receiving)
    assert list(spout.read(10)) == []
    assert clock.slept == [IDLE_PAUSE] * 3
    assert sent == [0, 0, 0]  # one receive before each pause


def test_a_stop_from_another_thread_ends_the_idle_pause(moto_server, monkeypatch):
    """``stop()`` called from code (an embedding application's thread; a signal raises in the
    read instead) during the idle pause: the pause, a plain sleep, went on to its end before
    ``read`` ended. It now waits on the stop. The pause is made 600 s here, so without the fix
    the reading thread is still asleep when the test stops waiting for it."""
    monkeypatch.setattr("squall.spouts.sqs.IDLE_PAUSE", 600.0)
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("idle-stop"))["QueueUrl"]
    spout = spout_on(moto_server, url, wait_time=0)  # the real sleep: no clock given
    received = threading.Event()
    spout.client.meta.events.register("after-call.sqs.ReceiveMessage", lambda **_: received.set())
    batches: list[list] = []
    reader = threading.Thread(target=lambda: batches.extend(spout.read(10)), daemon=True)
    reader.start()
    assert received.wait(60), "no receive"
    spout.stop()  # during the pause, or just before it: either way read() ends now
    reader.join(60)
    assert not reader.is_alive(), "read() still in its idle pause after stop()"
    assert batches == []


def test_a_stop_from_a_signal_handler_that_interrupted_the_pause_returns():
    """``squall run``'s signal handler calls ``stop()`` in the thread it interrupted; in the idle
    pause that thread may hold the pause's lock (entering or leaving the wait): ``stop()`` must
    not wait for it (``threading.Event``'s lock is not re-entrant: it would block for ever)."""
    spout = SqsSpout(
        SqsSpoutConfig(id="in", type="sqs", queue="q", wait_time=0, stop_when_empty=False),
        ComponentContext("t"),
    )
    done = threading.Event()

    def interrupted_in_the_pause() -> None:
        with spout._stopped._cond:  # as the wait holds it, when the handler runs
            spout.stop()
        done.set()

    threading.Thread(target=interrupted_in_the_pause, daemon=True).start()
    assert done.wait(60), "stop() blocked on the pause's lock"
    spout._idle_pause(600)  # ended: returns at once
    assert spout.stopping


def test_a_stop_during_the_last_receive_skips_the_idle_pause(moto_server):
    """A stop that comes while the empty receive is in flight: ``read`` ends without pausing."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("idle-stop"))["QueueUrl"]
    clock = FakeClock()
    spout = spout_on(moto_server, url, wait_time=0, clock=clock)
    spout.client.meta.events.register(
        "provide-client-params.sqs.ReceiveMessage", lambda **_: spout.stop()
    )
    assert list(spout.read(10)) == []
    assert clock.slept == []


def test_a_queue_given_by_arn_is_read(
    moto_server,
):
    """The Lambda trigger's template takes the queue's ARN; the local runner's spout failed at
    open with NonExistentQueue (it asked GetQueueUrl for the ARN as a name). An ARN is now the
    queue of that name in that account (and region, unless ``region`` says otherwise)."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("by-arn"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    cfg = SqsSpoutConfig(
        id="in", type="sqs", queue=arn, endpoint_url=moto_server.endpoint, wait_time=0
    )
    spout = SqsSpout(cfg, ComponentContext("t"))
    spout.open()
    assert spout.queue_url == url
    assert [r.data for r in next(spout.read(10))] == [b"hello"]
    assert queue_arn(arn)[2] == spout.name == url.rsplit("/", 1)[1]
    assert queue_arn("orders") is None and queue_arn("https://sqs/1/q") is None
