"""Adversarial review of 982481e..510b8f7 (everything but the engine's holding core, which
tests/topology/test_review_hold.py covers). Each test here fails on 510b8f7 and names what is
wrong."""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest

from squall.component import ComponentContext
from squall.spouts.sqs import Message, SqsSpout, SqsSpoutConfig
from tests.moto_standin import unique


@pytest.fixture
def moto(moto_server):
    return moto_server


def test_sqs_spout_commit_after_a_redelivery_of_an_unsettled_message_does_not_crash(moto):
    """``SqsSpout._records`` now keeps every record not yet covered, across batches. A message
    that is not covered (failed, or held by a rolling sink past the visibility timeout) comes
    back from SQS and is appended a second time. When a checkpoint then covers it, ``settled``
    marks both copies, and ``commit`` pops the same ``(shard, sequence)`` receipt handle twice:
    KeyError, the runner dies, and the message is never deleted."""
    sqs = moto.client("sqs")
    url = sqs.create_queue(QueueName=unique("redeliver"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": 1}))
    cfg = SqsSpoutConfig(
        id="in",
        type="sqs",
        queue=url,
        endpoint_url=moto.endpoint,
        wait_time=0,
        visibility_timeout=0,  # comes back at once: a hold longer than the timeout
        stop_when_empty=False,
    )
    spout = SqsSpout(cfg, ComponentContext("t"))
    spout.open()
    batches = spout.read(1)
    first = next(batches)
    assert len(first) == 1
    spout.commit({})  # not covered yet (held by a sink, or failed)
    again = next(batches)  # the same message, redelivered
    assert again[0].meta == first[0].meta
    spout.commit({first[0].meta.shard_id: first[0].meta.position})
    assert spout.deleted == 1


def test_arrival_ms_rejects_an_arrival_after_9999_like_the_parse_time_it_replaced():
    """The subscription bolt used ``parse_time(arrival.isoformat())``, which refuses a time after
    9999-12-31T23:59:59.999Z (``_MAX_MS``). ``arrival_ms`` only checks the 1970 bound, so an aware
    arrival whose UTC instant falls in year 10000 (9999-12-31T23:00-05:00) is now accepted: the
    state keeps 253402315200000, which ``format_time`` renders as "10000-01-01T04:00:00.000Z" and
    ``parse_time`` cannot read back ("not an ISO-8601 time"), where the record used to be that
    record's failure. Low impact (an arrival time that far out is a broken source)."""
    from datetime import datetime, timedelta, timezone

    from squall.times import arrival_ms, parse_time

    arrival = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    with pytest.raises(ValueError):
        parse_time(arrival.isoformat())  # the old behaviour
    with pytest.raises(ValueError):
        arrival_ms(arrival)


class _SequencedSqsSpout(SqsSpout):
    """moto 5.2 gives FIFO messages no ``SequenceNumber``: add the one SQS would (stable per
    message, increasing in the group), from the body's ``n``."""

    def _receive(self, n: int, wait: int) -> list[Message]:
        return [
            dataclasses.replace(m, sequence_number=str(1000 + json.loads(m.body)["n"]))
            if m.group_id is not None
            else m
            for m in super()._receive(n, wait)
        ]


def test_sqs_spout_fifo_redelivery_never_deletes_a_message_after_the_checkpoint(moto):
    """FIFO: the checkpoint covers, per group, the records *in ``_records`` order* up to the one at
    the checkpointed position. ``_records`` now keeps the stale copies of messages that were not
    covered (g2, g3) ahead of their redeliveries (g2', g3'). When g2' settles and g3' fails, the
    checkpoint names g2's position; every record before the *last* copy of g2 is "covered" —
    including the stale g3, whose key maps to g3's live receipt handle. Today the double pop of
    g2's handle raises KeyError first; with only that fixed (``pop(key, None)``), g3 would be
    deleted from the queue though it never settled: lost. A re-received message must replace its
    earlier record, not be appended after it."""
    sqs = moto.client("sqs")
    url = sqs.create_queue(
        QueueName=unique("redeliver") + ".fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    for n in (1, 2, 3):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}), MessageGroupId="g")
    cfg = SqsSpoutConfig(
        id="in",
        type="sqs",
        queue=url,
        endpoint_url=moto.endpoint,
        wait_time=0,
        visibility_timeout=30,
        stop_when_empty=False,
    )
    spout = _SequencedSqsSpout(cfg, ComponentContext("t"))
    spout.open()
    batches = spout.read(3)
    first = next(batches)
    assert [json.loads(r.data)["n"] for r in first] == [1, 2, 3]
    g1, g2, _ = first
    assert g1.meta.shard_id == "group-g"
    spout.commit({g1.meta.shard_id: g1.meta.position})  # g2 failed: g2 and g3 stay
    for handle in spout._handles.values():  # their visibility timeout ends now
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    again = next(batches)
    assert [json.loads(r.data)["n"] for r in again] == [2, 3]
    spout.commit({g2.meta.shard_id: again[0].meta.position})  # g2 settled now, g3 failed again
    assert spout.deleted == 2  # g1 and g2
    for handle in spout._handles.values():
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
    assert [json.loads(m["Body"])["n"] for m in answer.get("Messages", [])] == [3]  # g3 stays


DEVICE_TOPOLOGY = """
name: review2-device
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - {id: device, type: device}
sinks:
  - {id: out, type: 'squall.testing:MemorySink', name: review2-device}
  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: review2-device-dlq}
"""


def test_device_rules_that_cannot_be_built_never_dead_letter_the_records(monkeypatch):
    """The device bolt used to build ua-parser's resolver in ``open()``: a resolver that cannot be
    built (ua-parser-builtins missing, a broken wheel) stopped the run at start. Now ``open()``
    only imports crawleruseragents and the resolver is built at the first user agent, inside
    ``process()``: the ImportError there is taken for a poison record, the engine bisects, every
    record with a user agent "fails alone" and is dead-lettered with the same environment error
    — and the checkpoint moves past all of them, batch after batch. The build failure must fail
    the start (``open``) or the batch (``BatchFailed``), never the records."""
    from squall.enrichment import device
    from squall.enrichment.device_class import DeviceClassifier
    from squall.errors import SquallError
    from squall.event import Record, RecordMeta
    from squall.topology.executor import Engine
    from squall.topology.loader import load_text
    from squall.topology.outcomes import Outcome

    monkeypatch.setattr(device, "_shared_resolvers", {}, raising=False)  # the process's
    monkeypatch.setattr(device, "_default_classifier", DeviceClassifier())

    def missing_builtins():
        raise ModuleNotFoundError("No module named 'ua_parser_builtins'")

    import ua_parser

    monkeypatch.setattr(ua_parser, "load_lazy_builtins", missing_builtins)
    monkeypatch.setattr(ua_parser, "load_builtins", missing_builtins)
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
    records = [
        Record(json.dumps({"user_agent": ua, "n": n}).encode(), RecordMeta("s", "sh", str(n)))
        for n in range(1, 5)
    ]
    engine = Engine(load_text(DEVICE_TOPOLOGY).plan)
    try:
        try:
            engine.open()
        except Exception:  # noqa: BLE001 - the start failed (982481e): nothing was dead-lettered
            return
        try:
            result = engine.process(records)
        except SquallError:  # BatchFailed: nothing was dead-lettered
            return
    finally:
        engine.close()
    assert result.count(Outcome.DEAD_LETTERED) == 0, [r.reason for r in result.records]


def test_s3_rolled_objects_of_two_different_files_with_one_name_do_not_overwrite(moto, tmp_path):
    """A file (or stdin) record's position is its line number; ``RecordMeta.fingerprint`` is what
    tells two different inputs with the same name apart (their event ids differ). A rolled object
    is named by its *first* position only (``stream.shard.first``), without it: the second run
    over another ``events.jsonl`` (or another ``cat … | squall run``), writing rows of the same
    hour, rolls ``events/…/events.jsonl.file.1.0.jsonl.gz`` again and overwrites the first run's
    object — its rows are gone from S3 though both runs ended OK and checkpointed. (Named
    first-last, per-batch objects collide the same way whenever two inputs' batches cover the
    same line numbers.) The fingerprint of the first row is replay-stable, so adding it to the
    name keeps the crash-safety the first-position naming is for."""
    from squall.deploy.local import EXIT_OK, LocalRunner
    from squall.topology.loader import load_text

    s3 = moto.client("s3")
    bucket = unique("collide")
    s3.create_bucket(Bucket=bucket)
    total = []
    for run, base in ((1, 0), (2, 100)):
        folder = tmp_path / f"day{run}"
        folder.mkdir()
        data = [{"n": base + i, "ts": "2026-11-03T18:00:00Z"} for i in range(3)]
        (folder / "events.jsonl").write_text("".join(json.dumps(d) + "\n" for d in data))
        total += data
        text = json.dumps(
            {
                "name": "review2-collide",
                "spout": {"type": "file", "path": str(folder / "events.jsonl")},
                "bolts": [{"id": "decode", "type": "json"}],
                "sinks": [
                    {
                        "id": "lake",
                        "type": "s3",
                        "bucket": bucket,
                        "prefix": "events",
                        "endpoint_url": moto.endpoint,
                        "time_field": "ts",
                        "roll_bytes": 1024,
                    }
                ],
            }
        )
        report = LocalRunner(load_text(text, base_dir=folder)).run()
        assert report.exit_code == EXIT_OK
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    rows = []
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        rows += [json.loads(x) for x in gzip.decompress(body).splitlines()]
    assert sorted(rows, key=lambda r: r["n"]) == total, keys
