"""The kiosk example when one of its two queues is throttled or down (docs/sinks.md, "When a
queue is throttled or down"): what reaches each queue, what each order's outcome is, and what
the next delivery sends.

moto's SQS never throttles: a ``FlakyClient`` answers the chosen queue's SendMessageBatch calls
as SQS does when it throttles (each entry ``Failed`` with ``RequestThrottled``, or the whole
call refused), the other queue is moto's. The orders come from two Kinesis shards (by kiosk),
as ``squall run`` with a kinesis spout or the KCL hands them over.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from squall import aws
from squall.errors import BatchFailed
from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.conftest import EXAMPLES
from tests.moto_standin import FlakyClient, client_error, queue_counts
from tests.sinks.test_sqs_sink import KIOSK_SITES, drain, kiosk_example

HIGH = ("rush", "vip")
SHARD_OF = {"k1": "shardId-000000000000", "k2": "shardId-000000000000"}  # the rest: shard 1


def orders() -> list[dict]:
    lines = (EXAMPLES / "kiosk" / "orders.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def queued(order: dict) -> bool:
    """Sent to a queue when they are up (not invalid, nor of the unknown or the retired kiosk)."""
    return order.get("kiosk_id") in KIOSK_SITES


def by_shard() -> dict[str, list[dict]]:
    shards: dict[str, list[dict]] = {}
    for o in orders():
        shards.setdefault(SHARD_OF.get(o.get("kiosk_id"), "shardId-000000000001"), []).append(o)
    return shards


def shard_records(shards: dict[str, list[dict]]) -> list:
    records = []
    for shard, payloads in shards.items():
        records += records_from(payloads, stream="kiosk-orders", shard_id=shard)
    return records


def throttle(monkeypatch, queue_part: str, whole_call: bool) -> None:
    """Every SendMessageBatch to the queue whose URL holds ``queue_part`` is throttled."""

    def hook(kw, call):
        if queue_part not in kw["QueueUrl"]:
            return call(**kw)
        if whole_call:
            raise client_error("RequestThrottled", "Request is throttled.", 400)
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "RequestThrottled", "Message": "slow"}
            for e in kw["Entries"]
        ]
        return {"Successful": [], "Failed": failed}

    real = aws.client

    def client(service, **kwargs):
        made = real(service, **kwargs)
        return FlakyClient(made, send_message_batch=hook) if service == "sqs" else made

    monkeypatch.setattr(aws, "client", client)


@pytest.fixture
def example(moto_server, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("KIOSK_CACHE_URL", raising=False)
    sqs = moto_server.client("sqs")
    topo, _, high_url, low_url, _ = kiosk_example(
        moto_server, sqs, tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'kiosks.db'}"
    )
    return sqs, topo, high_url, low_url


def test_a_throttled_high_queue_holds_the_low_orders_after_it_in_their_shard(example, monkeypatch):
    """SQS throttles every message of the high queue, past the sink's attempts: the high orders
    fail, and every later order of the same shard is held — the low ones too, not sent to
    their queue — while the low orders before a shard's first high order are sent. The batch
    does not fail; its checkpoint stops at each shard's first high order."""
    sqs, topo, high_url, low_url = example
    throttle(monkeypatch, "kiosk-high", whole_call=False)
    shards = by_shard()
    run = run_topology(topo, shard_records(shards), batch_size=100)
    got = {o.event_id: o.outcome for o in run.outcomes}
    expected_low: list[str] = []
    for payloads in shards.values():
        high = [queued(o) and o["priority"] in HIGH for o in payloads]
        first_high = high.index(True)
        for i, o in enumerate(payloads):
            if high[i]:
                assert got[o["order_id"]] is Outcome.FAILED
            elif i > first_high:
                assert got[o["order_id"]] is Outcome.HELD
            else:
                assert got[o["order_id"]] in (Outcome.COMMITTED, Outcome.DEAD_LETTERED)
                if got[o["order_id"]] is Outcome.COMMITTED:
                    expected_low.append(o["order_id"])
    assert expected_low  # the shard of k1 and k2 starts with low orders
    assert drain(sqs, high_url) == []
    assert sorted(json.loads(m["Body"])["order_id"] for m in drain(sqs, low_url)) == sorted(
        expected_low
    )
    # a group's first message throttled; its later ones held back behind it (the FIFO order)
    reasons = [o.reason for o in run.outcomes if o.outcome is Outcome.FAILED]
    assert all(
        r.endswith("SendMessageBatch: RequestThrottled: slow)")
        or r == "SendMessageBatch: RequestThrottled: slow"
        for r in reasons
    )


def test_a_low_queue_refusing_every_call_fails_the_batch_after_the_high_queue_was_written(
    example, monkeypatch
):
    """The low queue refuses every call (throttled) past the engine's retries: the batch fails,
    nothing is checkpointed. The high queue, listed first, was written before: its orders are
    there; the next delivery, with the low queue back, sends them again and SQS's FIFO
    deduplication (the order id) keeps each once."""
    sqs, topo, high_url, low_url = example
    records = shard_records(by_shard())
    with monkeypatch.context() as patch:
        throttle(patch, "kiosk-low", whole_call=True)
        with pytest.raises(BatchFailed, match="low_queue: .*RequestThrottled"):
            run_topology(topo, records, batch_size=100)
    assert (queue_counts(sqs, high_url), queue_counts(sqs, low_url)) == (18, 0)
    run = run_topology(topo, records, batch_size=100)  # the batch delivered again
    counts = Counter(o.outcome for o in run.outcomes)
    assert counts == {Outcome.COMMITTED: 59, Outcome.DEAD_LETTERED: 5}
    high = [o["order_id"] for o in orders() if queued(o) and o["priority"] in HIGH]
    got_high = [json.loads(m["Body"])["order_id"] for m in drain(sqs, high_url)]
    assert sorted(got_high) == sorted(high)  # each once: 18
    assert len(drain(sqs, low_url)) == 41


def test_a_low_queue_gone_fails_the_batch_at_once(example, monkeypatch):
    """The low queue deleted while the example runs (moto's own answer: the queue does not exist):
    the batch fails at its first call to it — no retry by the sink nor the engine — after the high
    queue, listed first, took its orders."""
    sqs, topo, high_url, low_url = example
    low_calls = []

    def gone(kw, call):
        if "kiosk-low" in kw["QueueUrl"]:
            low_calls.append(len(kw["Entries"]))
            sqs.delete_queue(QueueUrl=kw["QueueUrl"])
        return call(**kw)

    real = aws.client

    def client(service, **kwargs):
        made = real(service, **kwargs)
        return FlakyClient(made, send_message_batch=gone) if service == "sqs" else made

    monkeypatch.setattr(aws, "client", client)
    with pytest.raises(BatchFailed, match="low_queue: .*NonExistentQueue"):
        run_topology(topo, shard_records(by_shard()), batch_size=100)
    assert len(low_calls) == 1  # not retried, by the sink nor by the engine
    assert queue_counts(sqs, high_url) == 18
