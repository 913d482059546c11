"""An integer beyond 64 bits (the json bolt keeps it exact) reaching a sink: the warehouse writes it
exactly in a json column and dead-letters only its own event from a bigint column; every
dead-letter sink writes the payload with the integer exact, never failing the event."""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq
import pytest

from squall.bolts.base import Bolt, Output
from squall.deploy.dead_letters import read_file
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.moto_standin import unique

BIG = 123456789012345678901234567890
HUGE = 7 * 10**399  # 400 digits: orjson can neither read nor write it
PAYLOADS = [
    b'{"id": "a", "doc": {"big": 123456789012345678901234567890, "f": 1.5}, "n": 1}',
    b'{"id": "b", "doc": [-9223372036854775809], "n": 18446744073709551616}',
    b'{"id": "c", "doc": {"x": 1}, "n": 2, "t": {"big": 18446744073709551616}}',
]

WAREHOUSE = """
name: wide
resources:
  db: {{url: "{url}"}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: {table}
    columns:
      id: {{path: id, nullable: false}}
      doc: {{path: doc, type: json}}
      n: {{path: n, type: bigint}}
      t: {{path: t}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {table}}}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse(request, tmp_path: Path, unique_name: str):
    """(url, query) of a real SQLite file or the PostgreSQL test database."""
    if request.param == "sqlite":
        path = tmp_path / "w.db"

        def lite(sql: str) -> list:
            with closing(sqlite3.connect(path)) as conn:
                return conn.execute(sql).fetchall()

        yield f"sqlite:///{path}", lite
        return
    url = request.getfixturevalue("pg_url")

    def pg(sql: str) -> list:
        with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()

    yield url, pg
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(f'drop table if exists "{unique_name}"')
        conn.commit()


def test_the_warehouse_writes_them_exactly_in_json_and_refuses_them_alone_in_bigint(
    warehouse, unique_name
):
    url, query = warehouse
    run = run_topology(WAREHOUSE.format(url=url, table=unique_name), records_from(PAYLOADS))
    assert [o.outcome for o in run.outcomes] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    rows = query(f'select id, doc, n, t from "{unique_name}" order by id')
    docs = {r[0]: r[1] if isinstance(r[1], dict) else json.loads(r[1]) for r in rows}
    assert docs == {"a": {"big": BIG, "f": 1.5}, "c": {"x": 1}}
    assert json.loads(rows[1][3]) == {"big": 2**64}  # a text column holding an object
    (dead,) = MemorySink.stores[unique_name]
    assert dead.failure.reason.startswith("column 'n': cannot store 18446744073709551616")
    assert dead.failure.component == "rows"


def test_the_file_dead_letter_writes_the_integer_exactly_and_replay_reads_it(tmp_path, unique_name):
    path = tmp_path / "dl.jsonl"
    yaml = f"""
name: wide
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: {{type: object, required: [missing]}}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {unique_name}}}
  - {{id: dlq, type: dead_letter, path: "{path}", include_payload: true}}
"""
    huge = b'{"id": "h", "n": ' + str(HUGE).encode() + b"}"
    run = run_topology(yaml, records_from([PAYLOADS[0], huge]))
    assert [o.outcome for o in run.outcomes] == [Outcome.DEAD_LETTERED] * 2
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert_exact(docs[0])
    assert docs[1]["payload"] == {"id": "h", "n": HUGE}
    # orjson cannot read the second line (400 digits); squall replay and the sink's tail can.
    letters = list(read_file(path))
    assert [d.record.data for d in letters] == [PAYLOADS[0], huge]
    again = run_topology(yaml, records_from([PAYLOADS[0], huge]))  # a replay: both remembered
    assert [o.outcome for o in again.outcomes] == [Outcome.DEAD_LETTERED] * 2
    assert len(path.read_text().splitlines()) == 2


def assert_exact(doc: dict) -> None:
    """The dead letter's payload holds the integer exactly; the record is as sent."""
    assert doc["payload"] == {"id": "a", "doc": {"big": BIG, "f": 1.5}, "n": 1}
    assert doc["record"] == PAYLOADS[0].decode()


@pytest.mark.parametrize("kind", ["sqs", "s3", "kinesis"])
def test_aws_dead_letters_keep_the_event_instead_of_failing_it(moto_server, tmp_path, kind):
    name = unique("wide")
    client = moto_server.client(kind)
    if kind == "sqs":
        target = f'queue: "{client.create_queue(QueueName=name)["QueueUrl"]}"'
    elif kind == "s3":
        client.create_bucket(Bucket=name)
        target = f"bucket: {name}"
    else:
        client.create_stream(StreamName=name, ShardCount=1)
        client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
        target = f"stream: {name}"
    yaml = f"""
name: wide
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: {{type: object, required: [missing]}}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {name}}}
  - {{id: dlq, type: dead_letter_{kind}, {target}, endpoint_url: "{moto_server.endpoint}", include_payload: true}}
"""
    run = run_topology(yaml, records_from(PAYLOADS[:1]))
    assert [o.outcome for o in run.outcomes] == [Outcome.DEAD_LETTERED]
    if kind == "sqs":
        [body] = [m["Body"] for m in client.receive_message(QueueUrl=target[8:-1])["Messages"]]
    elif kind == "s3":
        [key] = [o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]]
        body = gzip.decompress(client.get_object(Bucket=name, Key=key)["Body"].read())
    else:
        shard = client.list_shards(StreamName=name)["Shards"][0]["ShardId"]
        it = client.get_shard_iterator(
            StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        [body] = [r["Data"] for r in client.get_records(ShardIterator=it)["Records"]]
    assert_exact(json.loads(body))


S3 = """
name: wide
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: s3, bucket: {bucket}, endpoint_url: "{endpoint}", time_field: ts{extra}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {bucket}}}
"""
LAKE = [
    b'{"ts": "2026-11-03T18:00:00Z", "n": 1, "doc": {"big": 123456789012345678901234567890}}',
    b'{"ts": "2026-11-03T18:00:01Z", "n": 18446744073709551616, "doc": [1]}',
]


@pytest.mark.parametrize("extra", ["", ", roll_bytes: 1048576"], ids=["per-batch", "rolled"])
def test_s3_json_lines_write_them_exactly_instead_of_failing_the_batch(moto_server, extra):
    s3, bucket = moto_server.client("s3"), unique("lake")
    s3.create_bucket(Bucket=bucket)
    yaml = S3.format(bucket=bucket, endpoint=moto_server.endpoint, extra=extra)
    run = run_topology(yaml, records_from(LAKE), end_of_input=True)
    assert {o.outcome for o in run.outcomes} == {Outcome.COMMITTED}
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert [json.loads(line) for line in body.splitlines()] == [
        {"ts": "2026-11-03T18:00:00Z", "n": 1, "doc": {"big": BIG}},
        {"ts": "2026-11-03T18:00:01Z", "n": 2**64, "doc": [1]},
    ]


def test_s3_parquet_json_columns_write_them_exactly_and_int64_refuses_them_alone(moto_server):
    s3, bucket = moto_server.client("s3"), unique("lake")
    s3.create_bucket(Bucket=bucket)
    extra = ", format: parquet, columns: {n: {path: n, type: int64}, doc: {path: doc, type: json}}"
    yaml = S3.format(bucket=bucket, endpoint=moto_server.endpoint, extra=extra)
    run = run_topology(yaml, records_from(LAKE))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]
    assert run.outcomes[1].reason == "column 'n': 18446744073709551616 does not fit in 64 bits"
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    assert table.to_pylist() == [{"n": 1, "doc": '{"big":123456789012345678901234567890}'}]


def test_stdout_prints_them_exactly(capsysbinary):
    yaml = """
name: wide
spout: {type: 'squall.testing:ListSpout'}
bolts:
  - {id: decode, type: json}
sinks:
  - {id: out, type: stdout}
"""
    run = run_topology(yaml, records_from([b'{"n": 1}', b'{"n": -9223372036854775809}']))
    assert {o.outcome for o in run.outcomes} == {Outcome.COMMITTED}
    assert capsysbinary.readouterr().out == b'{"n":1}\n{"n":-9223372036854775809}\n'


class LoneSurrogate(Bolt):
    """Puts a lone surrogate (which no JSON encoder writes as UTF-8) into events marked ``bad``."""

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            if ev.value.get("bad"):
                ev.value["s"] = "\udc80"
            out.emit(ev)
        return out


def test_s3_json_lines_a_row_no_encoder_writes_is_that_records_failure_not_the_batchs(
    moto_server,
):
    s3, bucket = moto_server.client("s3"), unique("lake")
    s3.create_bucket(Bucket=bucket)
    yaml = S3.format(bucket=bucket, endpoint=moto_server.endpoint, extra="").replace(
        "  - {id: decode, type: json}\n",
        f"  - {{id: decode, type: json}}\n  - {{id: odd, type: '{__name__}:LoneSurrogate'}}\n",
    )
    good = b'{"ts": "2026-11-03T18:00:00Z", "n": 1}'
    run = run_topology(yaml, records_from([good, b'{"ts": "2026-11-03T18:00:01Z", "bad": 1}']))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]
    assert "surrogates not allowed" in run.outcomes[1].reason
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert body == good.replace(b" ", b"") + b"\n"
