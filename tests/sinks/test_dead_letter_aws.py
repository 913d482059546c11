"""Durable dead letters to SQS, S3 and Kinesis (moto): the file sink's record format, replays, limits."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import pytest

from squall.event import Failure
from squall.sinks.base import Prepared, WriteContext, WriteResult
from squall.sinks.dead_letter_aws import fitted
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.moto_standin import FlakyClient, unique

PAYLOADS = [{"id": 1}, {"no_id": True}, b"\xff not json", {"id": 4}]


def topology(dl_sink: str, file_path: Path) -> str:
    return f"""
name: dl
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: {{type: object, required: [id]}}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {file_path.name}-out}}
  - {dl_sink}
  - {{id: file_dl, type: dead_letter, path: "{file_path}"}}
"""


def comparable(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "failed_at"}


def file_docs(path: Path) -> list[dict]:
    return sorted(
        (comparable(json.loads(x)) for x in path.read_text().splitlines()),
        key=lambda d: d["event_id"],
    )


def test_dead_letter_sqs_writes_the_file_sinks_documents_and_a_fifo_replay_adds_nothing(
    moto_server, tmp_path
):
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("dlq") + ".fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    yaml = topology(
        f'{{id: dlq, type: dead_letter_sqs, queue: "{url}", endpoint_url: "{moto_server.endpoint}"}}',
        tmp_path / "dl.jsonl",
    )
    for _ in range(2):
        run = run_topology(yaml, records_from(PAYLOADS))
        assert [o.outcome for o in run.outcomes] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,
            Outcome.DEAD_LETTERED,
            Outcome.COMMITTED,
        ]
    msgs = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]
    ).get("Messages"):
        msgs += batch
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    docs = sorted((comparable(json.loads(m["Body"])) for m in msgs), key=lambda d: d["event_id"])
    assert len(docs) == 2  # the replay was deduplicated
    file = file_docs(tmp_path / "dl.jsonl")
    assert docs == file  # the very documents the file sink wrote
    assert {d["component"] for d in docs} == {"validate", "decode"}
    assert any(base64.b64decode(d.get("record_base64", "")) == b"\xff not json" for d in docs)
    assert {m["Attributes"]["MessageGroupId"] for m in msgs} == {"validate", "decode"}


def test_dead_letter_s3_writes_one_object_per_batch_and_shard_and_a_replay_overwrites_it(
    moto_server, tmp_path
):
    s3 = moto_server.client("s3")
    bucket = unique("dl")
    s3.create_bucket(Bucket=bucket)
    yaml = topology(
        f'{{id: dlq, type: dead_letter_s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}", '
        f"include_payload: true}}",
        tmp_path / "dl.jsonl",
    )
    records = records_from(PAYLOADS, stream="clicks", shard_id="shardId-000000000007", start=500)
    run_topology(yaml, records)
    run_topology(yaml, records)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 1 and re.fullmatch(
        r"dead-letters/clicks/shardId-000000000007/501\.0-502\.0\.[0-9a-f]{12}\.jsonl\.gz", keys[0]
    )
    body = s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    docs = sorted(
        (comparable(json.loads(x)) for x in gzip.decompress(body).splitlines()),
        key=lambda d: d["event_id"],
    )
    assert len(docs) == 2 and {d["component"] for d in docs} == {"decode", "validate"}
    assert {d["meta"]["sequence_number"] for d in docs} == {"501", "502"}
    assert next(d for d in docs if d["component"] == "validate")["payload"] == {"no_id": True}


def test_dead_letter_kinesis_puts_one_record_per_failure_keyed_by_event_id(moto_server, tmp_path):
    kinesis = moto_server.client("kinesis")
    stream = unique("dl")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    yaml = topology(
        f'{{id: dlq, type: dead_letter_kinesis, stream: {stream}, endpoint_url: "{moto_server.endpoint}"}}',
        tmp_path / "dl.jsonl",
    )
    run = run_topology(yaml, records_from(PAYLOADS))
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    got = kinesis.get_records(ShardIterator=it)["Records"]
    docs = sorted((comparable(json.loads(r["Data"])) for r in got), key=lambda d: d["event_id"])
    assert docs == file_docs(tmp_path / "dl.jsonl")
    assert sorted(r["PartitionKey"] for r in got) == sorted(
        o.event_id for o in run.outcomes if o.outcome is Outcome.DEAD_LETTERED
    )


def test_a_dead_letter_sqs_that_cannot_send_keeps_the_records_failing(moto_server, tmp_path):
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]

    def refuse(kw, call):
        return {
            "Successful": [],
            "Failed": [
                {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "x"}
                for e in kw["Entries"]
            ],
        }

    from squall.testing import topology_from
    from squall.topology.executor import Engine

    topo = topology_from(
        topology(
            f'{{id: dlq, type: dead_letter_sqs, queue: "{url}", max_attempts: 1}}',
            tmp_path / "dl.jsonl",
        )
    )
    engine = Engine(topo.plan)
    next(c for c in engine.components if c.id == "dlq").client = FlakyClient(
        moto_server.client("sqs"), send_message_batch=refuse
    )
    with engine:
        result = engine.process(records_from(PAYLOADS))
    assert [o.outcome for o in result.records] == [
        Outcome.COMMITTED,
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.HELD,  # after the failures of its shard: it comes again with them
    ]
    assert (
        result.records[1].component == "validate"
    )  # the failure it came with, not the dead letter's
    assert (
        result.checkpoint["shardId-000000000000"].sequence_number == "1"
    )  # stops before the first failure


def _fail_first_once(field: str, failed: dict, taken: list):
    """A hook failing the first entry of the first call (``failed``: that entry's error), and
    keeping the entries the real call took in ``taken``."""
    state = {"calls": 0}

    def hook(kw, call):
        state["calls"] += 1
        entries = kw[field]
        keep = entries[1:] if state["calls"] == 1 else entries
        resp = call(**{**kw, field: keep}) if keep else {}
        taken.extend(
            json.loads(e["MessageBody"] if "MessageBody" in e else e["Data"]) for e in keep
        )
        if state["calls"] == 1 and field == "Entries":  # SQS: Failed entries by Id
            resp["Failed"] = [{"Id": entries[0]["Id"], "SenderFault": False, **failed}]
        elif state["calls"] == 1:  # Kinesis: an answer per record, in order
            resp["Records"] = [failed, *resp.get("Records", [])]
            resp["FailedRecordCount"] = 1
        return resp

    return hook


def _dead_letter_run(moto_server, tmp_path, sink_yaml: str, op: str, hook, left: float):
    """Run PAYLOADS (two records fail validation) with the dead-letter sink ``dlq`` behind
    ``hook`` and the engine's ``time_left`` (a Lambda runner's deadline) at ``left``."""
    from squall.testing import topology_from
    from squall.topology.executor import Engine

    engine = Engine(topology_from(topology(sink_yaml, tmp_path / "dl.jsonl")).plan)
    dlq = next(c for c in engine.components if c.id == "dlq")
    service = "sqs" if op == "send_message_batch" else "kinesis"
    dlq.client = FlakyClient(moto_server.client(service), **{op: hook})
    dlq.sleeps = []
    dlq.sleep = dlq.sleeps.append  # before open: the kinesis writer takes it then
    engine.time_left = lambda: left
    engine._sleep = dlq.sleeps.append  # the engine's own retries are not slept either
    with engine:
        result = engine.process(records_from(PAYLOADS))
    return result, dlq


def _sqs_dead_letter(moto_server) -> tuple[str, str, str, dict]:
    """A ``dead_letter_sqs`` sink on a new queue: (its YAML, the call, the entries' field, the
    failed answer of an entry)."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    return (
        f'{{id: dlq, type: dead_letter_sqs, queue: "{url}"}}',
        "send_message_batch",
        "Entries",
        {"Code": "InternalError", "Message": "x"},
    )


def _kinesis_dead_letter(moto_server) -> tuple[str, str, str, dict]:
    """A ``dead_letter_kinesis`` sink on a new stream, its record throttled (as above)."""
    kinesis = moto_server.client("kinesis")
    stream = unique("dl")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    return (
        f'{{id: dlq, type: dead_letter_kinesis, stream: {stream}, endpoint_url: "{moto_server.endpoint}"}}',
        "put_records",
        "Records",
        {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"},
    )


@pytest.mark.parametrize(("left", "retried"), [(0.04, False), (900.0, True)])
@pytest.mark.parametrize(
    "dead_letter", [_sqs_dead_letter, _kinesis_dead_letter], ids=["sqs", "kinesis"]
)
def test_a_durable_dead_letter_retries_only_while_the_backoff_fits_in_the_time_left(
    moto_server, tmp_path, dead_letter, left, retried
):
    """40 ms left (a Lambda runner's deadline less its margin) is under the sink's shortest
    backoff (50 ms): the dead letter SQS failed (Kinesis throttled, in PutRecords) is not retried
    and its record stays failing (the runner answers it for Lambda's retry); with time left it
    is sent again."""
    sink_yaml, op, field, failed = dead_letter(moto_server)
    taken: list = []
    hook = _fail_first_once(field, failed, taken)
    result, dlq = _dead_letter_run(moto_server, tmp_path, sink_yaml, op, hook, left)
    outcomes = [o.outcome for o in result.records]
    if retried:
        assert outcomes[1:3] == [Outcome.DEAD_LETTERED] * 2 and len(dlq.sleeps) == 1
        assert len(taken) == 2
    else:
        # one of the two dead letters was not taken: its record stays failing
        assert set(outcomes[1:3]) == {Outcome.FAILED, Outcome.DEAD_LETTERED}
        assert dlq.sleeps == []
        assert len(taken) == 1


def test_an_oversized_dead_letter_keeps_everything_but_a_cut_record():
    from squall.event import Event, Failure

    rec = records_from([{"blob": "é" * 300_000}])[0]
    ev = Event(rec.data, rec.meta, None, 0, {"blob": "x"}, Failure("validate", "too big"))
    data = fitted(ev, 256 * 1024, include_payload=True)
    doc = json.loads(data)
    assert len(data) <= 256 * 1024
    assert doc["record_truncated"] == len(rec.data) and "payload" not in doc
    assert doc["reason"] == "too big" and rec.data.decode().startswith(doc["record"])
    small = json.loads(fitted(ev, 1_000_000, include_payload=True))
    assert "record_truncated" not in small and small["payload"] == {"blob": "x"}


@pytest.mark.parametrize("sink_type", ["dead_letter_sqs", "dead_letter_s3", "dead_letter_kinesis"])
def test_durable_dead_letters_are_registered_as_dead_letter_sinks(sink_type):
    from squall.topology import registry

    assert registry.resolve("sink", sink_type).dead_letter is True


class RefusingSink(MemorySink):
    """Refuses for good, at write time, every event whose payload has ``refuse`` (WriteResult.rejected)."""

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult:
        refused = [ev for ev in prepared.events if ev.value.get("refuse")]
        for ev in refused:
            ev.failure = Failure(self.id, f"{self.id} refuses it")
        self.store.extend(ev for ev in prepared.events if ev not in refused)
        return WriteResult(rejected=refused)


def test_dead_letter_s3_keeps_two_failures_of_one_record_written_apart_in_one_batch(
    moto_server, tmp_path
):
    # Two sinks refuse the same record at write time: the engine dead-letters each refusal as it
    # comes, so the dead-letter sink writes twice in one batch for the same position. The second
    # object must not overwrite the first.
    s3 = moto_server.client("s3")
    bucket = unique("dl")
    s3.create_bucket(Bucket=bucket)
    yaml = f"""
name: dl2
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: a, type: 'tests.sinks.test_dead_letter_aws:RefusingSink', name: {bucket}-a}}
  - {{id: b, type: 'tests.sinks.test_dead_letter_aws:RefusingSink', name: {bucket}-b}}
  - {{id: dlq, type: dead_letter_s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}"}}
  - {{id: file_dl, type: dead_letter, path: "{tmp_path / "dl.jsonl"}"}}
"""
    records = records_from([{"id": 1}, {"refuse": True}, {"id": 3}], stream="clicks")
    for _ in range(2):  # a replay of the same batch overwrites, it adds nothing
        run = run_topology(yaml, records)
        assert [o.outcome for o in run.outcomes] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,
            Outcome.COMMITTED,
        ]
    docs = []
    for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        docs += [comparable(json.loads(x)) for x in gzip.decompress(body).splitlines()]
    docs.sort(key=lambda d: d["component"])
    assert [d["component"] for d in docs] == ["a", "b"]
    assert docs == sorted(file_docs(tmp_path / "dl.jsonl"), key=lambda d: d["component"])


def test_dead_letter_sqs_escapes_characters_sqs_refuses_so_the_record_is_kept_not_stuck(
    moto_server, tmp_path
):
    # SQS refuses a message body holding characters outside XML 1.0 (U+FFFE, U+FFFF) for good;
    # moto does not, so the wrapped client answers as SQS does. The record's own bytes carry one:
    # its dead letter must still be taken (escaped in the JSON), or the record fails forever.
    legal = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]

    def like_sqs(kw, call):
        bad = [e for e in kw["Entries"] if legal.search(e["MessageBody"])]
        good = [e for e in kw["Entries"] if e not in bad]
        answer = call(QueueUrl=kw["QueueUrl"], Entries=good) if good else {"Successful": []}
        answer["Failed"] = [
            {"Id": e["Id"], "SenderFault": True, "Code": "InvalidMessageContents", "Message": "x"}
            for e in bad
        ]
        return answer

    from squall.testing import topology_from
    from squall.topology.executor import Engine

    engine = Engine(
        topology_from(
            topology(f'{{id: dlq, type: dead_letter_sqs, queue: "{url}"}}', tmp_path / "dl.jsonl")
        ).plan
    )
    next(c for c in engine.components if c.id == "dlq").client = FlakyClient(
        moto_server.client("sqs"), send_message_batch=like_sqs
    )
    records = records_from([{"id": 1}, {"no_id": "a\ufffeb\uffffc"}])
    with engine:
        result = engine.process(records)
    assert [o.outcome for o in result.records] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]
    (msg,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    doc = json.loads(msg["Body"])
    assert doc["record"] == records[1].data.decode() and doc["component"] == "validate"


@pytest.mark.parametrize("char", ["é", "日", "\uffff"])
def test_an_oversized_non_ascii_record_is_cut_to_what_fits_not_to_nothing(char):
    from squall.event import Event, Failure

    rec = records_from([{"blob": char * 300_000}])[0]
    ev = Event(rec.data, rec.meta, None, 0, None, Failure("validate", "too big"))
    limit = 256 * 1024
    data = fitted(ev, limit, include_payload=False, xml_safe=True)
    doc = json.loads(data)
    assert len(data) <= limit and doc["record_truncated"] == len(rec.data)
    assert rec.data.decode().startswith(doc["record"])
    # as much of the record as the limit leaves room for (its escapes counted)
    assert len(data) > limit - 16


def test_dead_letter_kinesis_takes_an_event_id_longer_than_a_partition_key(moto_server, tmp_path):
    # Event ids from a payload field may be up to 512 bytes; a partition key at most 256 characters.
    kinesis = moto_server.client("kinesis")
    stream = unique("dl")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    long_id = "order-" + "7" * 300
    yaml = f"""
name: dl
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: id}}
  - {{id: validate, type: schema, schema: {{type: object, required: [n]}}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink'}}
  - {{id: dlq, type: dead_letter_kinesis, stream: {stream}, endpoint_url: "{moto_server.endpoint}"}}
"""
    run = run_topology(yaml, records_from([{"id": "short", "n": 1}, {"id": long_id}]))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    (got,) = kinesis.get_records(ShardIterator=it)["Records"]
    assert json.loads(got["Data"])["event_id"] == long_id
    assert 1 <= len(got["PartitionKey"]) <= 256


def test_kinesis_sink_keys_a_record_without_a_source_key_by_a_digest_of_a_long_event_id():
    from squall.component import ComponentContext
    from squall.event import Event, RecordMeta
    from squall.sinks.kinesis import KinesisSink, KinesisSinkConfig

    sink = KinesisSink(
        KinesisSinkConfig(id="out", type="kinesis", stream="s"), ComponentContext("t")
    )
    ev = Event(b'{"a":1}', RecordMeta("f", "shard", "1", 0, None), None, 0, {"a": 1})
    ev.event_id = "x" * 400
    p = sink.prepare([ev])
    assert p.rejected == [] and p.events == [ev]
    ((_, pk, _),) = p.payload
    assert 1 <= len(pk) <= 256


def test_dead_letter_sqs_takes_a_queue_url_with_a_trailing_slash(moto_server, tmp_path):
    """A queue URL ending in '/' was sent as it was (SQS, moto's server: NonExistentQueue, the
    dead letters kept failing); a FIFO queue's was not taken for one. Used without it."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("dlq") + ".fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    yaml = topology(
        f'{{id: dlq, type: dead_letter_sqs, queue: "{url}/", '
        f'endpoint_url: "{moto_server.endpoint}"}}',
        tmp_path / "dl.jsonl",
    )
    run = run_topology(yaml, records_from(PAYLOADS))
    assert [o.outcome for o in run.outcomes] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
    msgs = got.get("Messages", [])
    assert len(msgs) == 2
    assert all("MessageGroupId" in m["Attributes"] for m in msgs)  # sent as to a FIFO queue
