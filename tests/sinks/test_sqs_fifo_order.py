"""The sqs sink keeps each FIFO message group in order when SendMessageBatch fails in part.

SQS answers per message and enqueues a call's messages in the order sent; a message it did not
take may sit before later messages of its group that it took. moto's server never fails one
entry of a call, so — as tests/sinks/test_sqs_sink.py does — a ``FlakyClient`` sends the other
entries to moto's real FIFO queue and answers the chosen ones in ``Failed``, as SQS shapes it.
The queue's contents are then read back in SQS's order.
"""

from __future__ import annotations

import json

import pytest

from squall.errors import TransientError
from tests.moto_standin import FlakyClient, client_error
from tests.sinks.test_sqs_sink import _events, _sink, drain, make_queue


def failing(fail: dict[int, int], calls: list[list[int]]):
    """A SendMessageBatch hook: the message carrying ``n`` is answered ``InternalError`` (a
    service fault, retried) on its first ``fail[n]`` sends; the rest go to moto. ``calls`` gets
    the ``n`` of each call's entries."""
    tries: dict[int, int] = {}

    def hook(kw, call):
        keep, failed = [], []
        calls.append([json.loads(e["MessageBody"])["n"] for e in kw["Entries"]])
        for e in kw["Entries"]:
            n = json.loads(e["MessageBody"])["n"]
            tries[n] = tries.get(n, 0) + 1
            if tries[n] <= fail.get(n, 0):
                failed.append(
                    {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "x"}
                )
            else:
                keep.append(e)
        resp = call(QueueUrl=kw["QueueUrl"], Entries=keep) if keep else {"Successful": []}
        resp["Failed"] = failed
        return resp

    return hook


def by_group(msgs: list[dict]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for m in msgs:
        body = json.loads(m["Body"])
        groups.setdefault(body["g"], []).append(body["n"])
    return groups


def test_a_message_failed_while_a_later_one_of_its_group_was_taken_is_not_sent_after_it(
    moto_server,
):
    """One call, group k1 (n 0-5): SQS fails n=2 and takes 3-5. Sending n=2 again put it after
    5 (the queue read 0, 1, 3, 4, 5, 2); now it is refused — the dead letter, with the reason —
    and never sent behind them. A message of another group in the call is not affected."""
    sqs = moto_server.client("sqs")
    url = make_queue(sqs, fifo=True)
    calls: list[list[int]] = []
    flaky = FlakyClient(moto_server.client("sqs"), send_message_batch=failing({2: 1, 6: 1}, calls))
    sink = _sink(flaky, url, message_group="g")
    payloads = [{"g": "k1", "n": n} for n in range(6)] + [{"g": "k2", "n": 6}]
    result = sink.write_batch(sink.prepare(_events(payloads)), None)
    assert by_group(drain(sqs, url)) == {"k1": [0, 1, 3, 4, 5], "k2": [6]}
    assert [ev.value["n"] for ev in result.rejected] == [2] and result.failed == []
    reason = result.rejected[0].failure.reason
    assert reason.startswith("SendMessageBatch: InternalError: x; not sent again: SQS took a later")
    assert "group 'k1'" in reason
    assert calls == [[0, 1, 2, 3, 4, 5, 6], [6]]  # k2's n=6, alone in its group, is sent again


def test_a_groups_later_messages_wait_for_its_failed_one_and_go_again_after_it_in_order(
    moto_server,
):
    """Two calls (10 + 4). n=9 (k1), the last of its group in the first call, fails once: k1's
    later messages in the second call (11, 13) are held back; the retry sends 9 first, then 11
    and 13, in order; k2's messages are not held."""
    sqs = moto_server.client("sqs")
    url = make_queue(sqs, fifo=True)
    calls: list[list[int]] = []
    flaky = FlakyClient(moto_server.client("sqs"), send_message_batch=failing({9: 1}, calls))
    sink = _sink(flaky, url, message_group="g")
    payloads = [{"g": "k1" if n % 2 else "k2", "n": n} for n in range(14)]
    assert sink.write_batch(sink.prepare(_events(payloads)), None) is None
    assert calls == [list(range(10)), [10, 12], [9], [11, 13]]
    assert by_group(drain(sqs, url)) == {"k1": [1, 3, 5, 7, 9, 11, 13], "k2": list(range(0, 14, 2))}


def test_when_a_message_keeps_failing_its_groups_later_messages_fail_with_it(moto_server):
    """n=9 (k1) fails every attempt: it fails the batch, and so do k1's later messages (11, 13),
    unsent, so the source delivers them again in order. Sending them ahead of it put 9 behind
    them when the source delivered it again (the queue read …, 7, 11, 13, 9)."""
    sqs = moto_server.client("sqs")
    url = make_queue(sqs, fifo=True)
    calls: list[list[int]] = []
    flaky = FlakyClient(moto_server.client("sqs"), send_message_batch=failing({9: 2}, calls))
    sink = _sink(flaky, url, message_group="g", max_attempts=2)
    payloads = [{"g": "k1" if n % 2 else "k2", "n": n} for n in range(14)]
    result = sink.write_batch(sink.prepare(_events(payloads)), None)
    # The source delivers the batch again from its first failed record; SQS now takes n=9.
    again = _events(payloads)[9:]
    assert sink.write_batch(sink.prepare(again), None) is None
    assert by_group(drain(sqs, url)) == {"k1": [1, 3, 5, 7, 9, 11, 13], "k2": list(range(0, 14, 2))}
    assert [ev.value["n"] for ev in result.failed] == [9, 11, 13]
    assert calls[:3] == [list(range(10)), [10, 12], [9]]  # 11 and 13 never sent ahead of 9
    assert result.failed[0].failure.reason == "SendMessageBatch: InternalError: x"
    assert result.failed[1].failure.reason == (
        "held back behind an earlier message of group 'k1' that SQS did not take "
        "(SendMessageBatch: InternalError: x)"
    )


def test_a_call_split_for_a_refused_message_holds_the_group_behind_a_failed_half(moto_server):
    """A call SQS refuses whole for one message is split in halves; a message of the first half
    not taken holds back its group's messages in the second half too (sent after it: the halves
    sent 6 before 3 was sent again)."""
    sqs = moto_server.client("sqs")
    url = make_queue(sqs, fifo=True)
    calls: list[list[int]] = []
    partly = failing({3: 1}, calls)

    def refuse_big(kw, call):
        if any("note" in e["MessageBody"] for e in kw["Entries"]):
            calls.append([json.loads(e["MessageBody"])["n"] for e in kw["Entries"]])
            raise client_error("InvalidParameterValue", "Message must be shorter than 1024 bytes.")
        return partly(kw, call)

    flaky = FlakyClient(moto_server.client("sqs"), send_message_batch=refuse_big)
    sink = _sink(flaky, url, message_group="g")
    payloads = [{"g": "k1" if n in (3, 6) else "k2", "n": n} for n in range(8)]
    payloads[7]["note"] = "big"
    result = sink.write_batch(sink.prepare(_events(payloads)), None)
    assert by_group(drain(sqs, url)) == {"k1": [3, 6], "k2": [0, 1, 2, 4, 5]}
    assert calls[:3] == [list(range(8)), [0, 1, 2, 3], [4, 5, 7]]  # 6 waits for 3
    assert [ev.value["n"] for ev in result.rejected] == [7] and result.failed == []


def test_after_a_throttled_call_the_engines_retry_still_sends_the_failed_message_first(
    moto_server,
):
    """n=9 (k1) is not taken, then the next call is throttled (the batch raises, the engine
    retries it). The retry sends 9 before k1's later messages, not in one call with them: when
    9 fails again they wait for it instead of overtaking it (which would refuse it)."""
    sqs = moto_server.client("sqs")
    url = make_queue(sqs, fifo=True)
    calls: list[list[int]] = []
    partly = failing({9: 2}, calls)

    def throttle_second(kw, call):
        if len(calls) == 1:
            calls.append([])
            raise client_error("RequestThrottled", "slow down", 403)
        return partly(kw, call)

    flaky = FlakyClient(moto_server.client("sqs"), send_message_batch=throttle_second)
    sink = _sink(flaky, url, message_group="g")
    payloads = [{"g": "k1" if n % 2 else "k2", "n": n} for n in range(14)]
    prepared = sink.prepare(_events(payloads))
    with pytest.raises(TransientError, match="RequestThrottled"):
        sink.write_batch(prepared, None)
    assert sink.write_batch(prepared, None) is None  # the engine's retry, same prepared batch
    assert by_group(drain(sqs, url)) == {"k1": [1, 3, 5, 7, 9, 11, 13], "k2": list(range(0, 14, 2))}
    assert calls == [list(range(10)), [], [9, 10], [12], [9], [11, 13]]
