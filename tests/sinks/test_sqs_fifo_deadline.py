"""A FIFO sqs sink's write is one attempt at every message, in calls of 10 made in turn (one
``send`` of ``send_all``): with the runner's time spent after a call, the next calls are not
made — their messages fail ``not sent: …`` (what SQS took stays taken), as a PutRecords of
several calls does. Before, every call of the round was made with no time left (each with a
0.1 s read timeout but the 5 s connect timeout), past the deadline."""

from __future__ import annotations

import json

from squall import aws
from squall.sinks.base import WriteContext
from tests.moto_standin import FlakyClient, client_error
from tests.sinks.test_sqs_sink import _events, _sink, drain, make_queue


def test_a_fifo_round_makes_no_call_once_the_time_left_is_spent(moto_server):
    sqs = moto_server.client("sqs")
    url = make_queue(sqs, fifo=True)
    flaky = FlakyClient(moto_server.client("sqs"), send_message_batch=lambda kw, call: call(**kw))
    sink = _sink(flaky, url, message_group="g")
    payloads = [{"g": f"k{n % 4}", "n": n} for n in range(25)]  # three calls: 10, 10, 5
    result = sink.write_batch(
        sink.prepare(_events(payloads)),
        WriteContext(time_left=lambda: 0.0 if flaky.calls else 5.0),  # spent after a call
    )
    assert flaky.calls == {"send_message_batch": 1}
    assert sorted(json.loads(m["Body"])["n"] for m in drain(sqs, url)) == list(range(10))
    assert result is not None and not result.rejected
    assert [ev.value["n"] for ev in result.failed] == list(range(10, 25))
    assert {ev.failure.reason for ev in result.failed} == {aws.NOT_SENT}


def test_with_time_left_or_no_deadline_every_call_of_the_round_is_made(moto_server):
    sqs = moto_server.client("sqs")
    for time_left in (lambda: 5.0, None):
        url = make_queue(sqs, fifo=True)
        flaky = FlakyClient(
            moto_server.client("sqs"), send_message_batch=lambda kw, call: call(**kw)
        )
        sink = _sink(flaky, url, message_group="g")
        payloads = [{"g": f"k{n % 4}", "n": n} for n in range(25)]
        result = sink.write_batch(
            sink.prepare(_events(payloads)), WriteContext(time_left=time_left)
        )
        assert result is None and flaky.calls == {"send_message_batch": 3}
        assert len(drain(sqs, url)) == 25


def test_a_split_calls_halves_are_not_sent_once_the_time_left_is_spent(moto_server):
    """A standard queue's call SQS refuses whole for a message's fault is sent again in halves,
    down to the message at fault: with the time spent after the refused call, no half is sent
    (before: every half, with no time left)."""
    sqs = moto_server.client("sqs")
    url = make_queue(sqs)

    def refuse_whole(kw, call):
        raise client_error("InvalidMessageContents", "a message has invalid characters")

    flaky = FlakyClient(moto_server.client("sqs"), send_message_batch=refuse_whole)
    sink = _sink(flaky, url)
    result = sink.write_batch(
        sink.prepare(_events([{"n": n} for n in range(10)])),
        WriteContext(time_left=lambda: 0.0 if flaky.calls else 5.0),
    )
    assert flaky.calls == {"send_message_batch": 1}
    assert result is not None and not result.rejected
    assert {ev.failure.reason for ev in result.failed} == {aws.NOT_SENT}
    assert len(result.failed) == 10
