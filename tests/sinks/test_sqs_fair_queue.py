"""`message_group` on a standard SQS queue: sent as the message group id (a fair queue, as the SQS
developer guide has it since 2025), never taken for an order — the start says so. Against moto's
standalone server."""

from __future__ import annotations

import logging

from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.sinks.test_sqs_sink import drain, make_queue, sink_yaml


def test_message_group_on_a_standard_queue_is_sent_as_a_fair_queue_group_and_warned(
    moto_server, caplog
):
    """It was dropped without a word: a user expecting each kiosk's orders in order got neither
    order nor the fair queue the group id gives a standard queue. Now each message carries its
    group (an event without one is sent without it, as SQS allows on a standard queue; one SQS
    would refuse is that record's failure), and the start warns that a standard queue keeps no
    order, naming the sink, the queue and the option."""
    sqs = moto_server.client("sqs")
    url = make_queue(sqs)
    payloads = [{"kiosk": "k1"}, {"kiosk": "k2"}, {"n": 1}, {"kiosk": None}, {"kiosk": "a b"}]
    caplog.set_level(logging.WARNING, logger="squall.sinks.sqs")
    result = run_topology(
        sink_yaml(moto_server.endpoint, url, ", message_group: kiosk"), records_from(payloads)
    )
    outcomes = [o.outcome for o in result.outcomes]
    assert outcomes == [Outcome.COMMITTED] * 4 + [Outcome.DEAD_LETTERED]
    [dead] = MemorySink.stores[f"{url.rsplit('/', 1)[-1]}-dlq"]
    assert dead.failure.reason == (
        "message group 'kiosk' 'a b' is not 1-128 letters, digits or punctuation"
    )
    groups = {m["Body"]: m["Attributes"].get("MessageGroupId") for m in drain(sqs, url)}
    assert groups == {
        '{"kiosk":"k1"}': "k1",
        '{"kiosk":"k2"}': "k2",
        '{"n":1}': None,
        '{"kiosk":null}': None,
    }
    [warning] = [r.getMessage() for r in caplog.records if r.name == "squall.sinks.sqs"]
    assert warning == (
        f"out: queue '{url}' is a standard queue: message_group 'kiosk' makes it a fair queue "
        "(each group's share of the consumers kept even), messages of a group are NOT delivered "
        "in order: for per-group order use a .fifo queue"
    )


def test_a_fifo_queue_or_no_message_group_is_not_warned(moto_server, caplog):
    sqs = moto_server.client("sqs")
    caplog.set_level(logging.WARNING, logger="squall.sinks.sqs")
    fifo, standard = make_queue(sqs, fifo=True), make_queue(sqs)
    run_topology(
        sink_yaml(moto_server.endpoint, fifo, ", message_group: kiosk"),
        records_from([{"kiosk": "k1"}]),
    )
    run_topology(sink_yaml(moto_server.endpoint, standard), records_from([{"kiosk": "k1"}]))
    assert not [r for r in caplog.records if r.name == "squall.sinks.sqs"]
    [plain] = drain(sqs, standard)
    assert "MessageGroupId" not in plain["Attributes"]
