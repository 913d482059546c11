"""examples/etl end to end on the stand-ins: S3 events → ingest Lambda → Kinesis → transform
Lambda → the curated stream, the Parquet lake and PostgreSQL.

Both topologies run in the consumer handler, in process, with the events Lambda would send: S3
notifications (URL-encoded keys with a space and a `+`, an empty object, a cut gzip, one event
delivered twice as Lambda retries it, the same export uploaded again under another name) and
Kinesis batches of the raw stream's records as GetRecords returns them (KPL aggregates), each
delivered twice. The warehouse holds every order once (one row per order: the second upload's
lines are other events of the same orders); the lake and the curated stream hold each at least
once (their readers deduplicate on the event id, as the example's README says).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import shutil
from pathlib import Path
from urllib.parse import quote_plus

import psycopg2
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from squall.deploy.lambda_consumer import make_handler
from tests.conftest import EXAMPLES
from tests.deploy.test_sqs_s3_sources import s3_lambda_event
from tests.kinesis.test_lambda_e2e import lambda_event
from tests.moto_standin import unique

pytestmark = pytest.mark.e2e

ORDERS = {"o-1001", "o-1002", "o-1007", "o-1008"}  # kind order, valid
REFUNDS = {"o-1003"}


def shard_records(kinesis, stream: str) -> dict[str, list[dict]]:
    out = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        out[shard["ShardId"]] = kinesis.get_records(ShardIterator=it, Limit=10000)["Records"]
    return out


def test_ingest_then_transform_on_the_stand_ins(
    tmp_path: Path,
    monkeypatch,
    caplog,
    capsys,
    kinesis,
    kinesis_mock,
    make_stream,
    moto_server,
    pg_url: str,
    unique_name: str,
):
    example = tmp_path / "etl"
    shutil.copytree(EXAMPLES / "etl", example)
    s3 = moto_server.client("s3")
    landing, lake = unique("landing"), unique("lake")
    for bucket in (landing, lake):
        s3.create_bucket(Bucket=bucket)
    raw, curated = make_stream(2, "orders-raw"), make_stream(1, "orders-curated")
    secret = "s3cr3t-pw"  # PostgreSQL trusts the loopback: a password that must never show
    env = {
        "AWS_ENDPOINT_URL_S3": moto_server.endpoint,
        "AWS_ENDPOINT_URL_KINESIS": kinesis_mock.endpoint,
        "LANDING_BUCKET": landing,
        "LAKE_BUCKET": lake,
        "RAW_STREAM": raw,
        "CURATED_STREAM": curated,
        "WAREHOUSE_URL": pg_url.replace("://postgres@", f"://postgres:{secret}@"),
        "ORDERS_TABLE": f"{unique_name}_orders",
        "REJECTS_TABLE": f"{unique_name}_rejects",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    caplog.set_level(logging.INFO)

    # A: three uploads, each notified; the first notification delivered twice (a Lambda retry).
    sample = (example / "orders.jsonl").read_bytes()
    uploads = {
        "incoming/2026-11-03 export+1.jsonl.gz": gzip.compress(sample),
        "incoming/empty.jsonl": b"",
        "incoming/cut.jsonl.gz": gzip.compress(sample)[:-12],
        # The same export uploaded again under another name: its lines are other events, the
        # same orders (the warehouse keeps one row per order, the lake and stream hold both).
        "incoming/2026-11-03 export (again).jsonl": sample,
    }
    ingest = make_handler(example / "ingest.yaml")
    for key, body in uploads.items():
        s3.put_object(Bucket=landing, Key=key, Body=body)
        assert ingest(s3_lambda_event(landing, quote_plus(key, safe="/")), None)["objects"] == 1
    ingest(s3_lambda_event(landing, quote_plus("incoming/2026-11-03 export+1.jsonl.gz", safe="/")))

    dead = [
        json.loads(line)
        for o in s3.list_objects_v2(Bucket=lake, Prefix="dead-letters/ingest/")["Contents"]
        for line in gzip.decompress(s3.get_object(Bucket=lake, Key=o["Key"])["Body"].read())
        .decode()
        .splitlines()
    ]
    located = {(d["meta"]["shard_id"], d["meta"]["sequence_number"], d["component"]) for d in dead}
    assert located == {
        ("incoming/2026-11-03 export+1.jsonl.gz", "5", "decode"),  # the torn line
        ("incoming/2026-11-03 export+1.jsonl.gz", "7", "validate"),  # amount "ten"
        ("incoming/2026-11-03 export (again).jsonl", "5", "decode"),
        ("incoming/2026-11-03 export (again).jsonl", "7", "validate"),
        ("incoming/cut.jsonl.gz", "0", "spout"),  # the object as a whole
    }
    assert any("'ten' is not of type 'number'" in d["reason"] for d in dead)

    # A stranger's record in the raw stream: transform's problem to dead-letter, alone.
    kinesis.put_record(StreamName=raw, Data=b"\x00not json", PartitionKey="stranger")

    # B: each shard's records as one Kinesis event, delivered twice.
    transform = make_handler(example / "transform.yaml")
    delivered = 0
    for shard, records in shard_records(kinesis, raw).items():
        for _ in range(2 if records else 0):  # Lambda sends no empty batch
            answer = transform(lambda_event(records, shard, raw), None)
            assert answer == {"batchItemFailures": []}
        delivered += len(records)
    assert delivered >= 3  # aggregates: fewer Kinesis records than lines

    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT order_id, kind, currency, amount FROM "{unique_name}_orders"')
        fetched = cur.fetchall()
        rows = {r[0]: r[1:] for r in fetched}
        cur.execute(f'SELECT component, reason FROM "{unique_name}_rejects"')
        rejects = cur.fetchall()
    # once each, whatever the retries and the second upload (a dict of rows hid duplicates)
    assert len(fetched) == 5 and set(rows) == ORDERS | REFUNDS
    assert rows["o-1003"] == ("refund", "USD", -12.0)
    assert rows["o-1007"][1] == "EUR"  # the default of a missing currency
    [(component, reason)] = rejects
    assert component == "decode" and "invalid JSON" in reason

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=lake, Prefix="orders/")["Contents"]]
    assert {k.split("/")[1:3][1] for k in keys} == {"hour=09", "hour=10"}
    first = pq.read_table(io.BytesIO(s3.get_object(Bucket=lake, Key=keys[0])["Body"].read()))
    assert str(first.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert str(first.schema.field("amount").type) == "double"
    local = tmp_path / "lake"
    for key in keys:
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(s3.get_object(Bucket=lake, Key=key)["Body"].read())
    table = ds.dataset(local / "orders", format="parquet", partitioning="hive").to_table()
    lake_rows = {(r["order_id"], r["event_id"], r["hour"]) for r in table.to_pylist()}
    # at least once: a row may repeat (the retries put lines again), but deduplicated on
    # event_id there is one per order and upload, in the hour of its own time (o-1008:
    # 12:59:59+02:00)
    assert {(o, h) for o, _, h in lake_rows} == {
        ("o-1001", 9),
        ("o-1002", 9),
        ("o-1007", 10),
        ("o-1008", 10),
    }
    assert len({e for _, e, _ in lake_rows}) == 8  # the four orders of two uploads

    out = [
        json.loads(r["Data"])
        for records in shard_records(kinesis, curated).values()
        for r in records
    ]
    assert {o["order_id"] for o in out} == ORDERS
    assert len({o["source_event_id"] for o in out}) == 8

    logged = caplog.text + capsys.readouterr().out
    assert "invocation:" in logged and secret not in logged


def test_an_older_export_read_after_a_newer_one_changes_nothing_as_the_readme_says(
    tmp_path: Path,
    monkeypatch,
    kinesis,
    kinesis_mock,
    make_stream,
    moto_server,
    pg_url: str,
    unique_name: str,
):
    """The README: the warehouse keeps, of an order's versions, the one with the latest
    `updated_at` — not the one transform wrote last, which is the older export's when its S3 event
    comes after the newer one's (a Lambda retry), or an old export uploaded again."""
    example = tmp_path / "etl"
    shutil.copytree(EXAMPLES / "etl", example)
    s3 = moto_server.client("s3")
    landing, lake = unique("landing"), unique("lake")
    for bucket in (landing, lake):
        s3.create_bucket(Bucket=bucket)
    raw = make_stream(1, "orders-raw")
    env = {
        "AWS_ENDPOINT_URL_S3": moto_server.endpoint,
        "AWS_ENDPOINT_URL_KINESIS": kinesis_mock.endpoint,
        "LANDING_BUCKET": landing,
        "LAKE_BUCKET": lake,
        "RAW_STREAM": raw,
        "CURATED_STREAM": make_stream(1, "orders-curated"),
        "WAREHOUSE_URL": pg_url,
        "ORDERS_TABLE": f"{unique_name}_orders",
        "REJECTS_TABLE": f"{unique_name}_rejects",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    line = {"order_id": "o-1", "customer_id": "c-1", "kind": "order", "ts": "2026-11-03T08:00:00Z"}
    exports = {  # each export: the order as it was then
        "incoming/0900.jsonl": dict(line, amount=10.0, updated_at="2026-11-03T08:30:00Z"),
        "incoming/1000.jsonl": dict(line, amount=12.0, updated_at="2026-11-03T09:45:00+01:00"),
    }
    for key, order in exports.items():
        s3.put_object(Bucket=landing, Key=key, Body=json.dumps(order).encode())
    ingest = make_handler(example / "ingest.yaml")
    transform = make_handler(example / "transform.yaml")
    read = 0

    def amount_after(*keys: str) -> float:
        nonlocal read
        for key in keys:
            ingest(s3_lambda_event(landing, key))
        [records] = shard_records(kinesis, raw).values()
        shard = kinesis.list_shards(StreamName=raw)["Shards"][0]["ShardId"]
        assert transform(lambda_event(records[read:], shard, raw), None) == {
            "batchItemFailures": []
        }
        read = len(records)
        with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT amount FROM "{unique_name}_orders"')
            [(amount,)] = cur.fetchall()
        return amount

    # the newer export, then the older one's event (retried by Lambda after the newer went through)
    assert amount_after("incoming/1000.jsonl", "incoming/0900.jsonl") == 12.0
    assert amount_after("incoming/0900.jsonl") == 12.0  # the older export once more
    # (a version: 08:45 UTC is later than 08:30, though its text, in another offset, sorts before)


def test_records_an_earlier_ingest_put_without_updated_at_are_written_as_older_than_any_export(
    tmp_path: Path,
    monkeypatch,
    kinesis,
    kinesis_mock,
    make_stream,
    moto_server,
    pg_url: str,
    unique_name: str,
):
    """The README's upgrade: records still on orders-raw from the earlier ingest (no `updated_at`)
    reach the new transform — in whichever order the two are deployed. They are written, older than
    any export that has `updated_at` (not rejected: the order would be missing from `orders`)."""
    example = tmp_path / "etl"
    shutil.copytree(EXAMPLES / "etl", example)
    earlier = example / "schemas" / "earlier_order.json"  # the earlier ingest's schema
    schema = json.loads((example / "schemas" / "order.json").read_text())
    schema["required"].remove("updated_at")
    earlier.write_text(json.dumps(schema))
    (example / "earlier_ingest.yaml").write_text(
        (example / "ingest.yaml").read_text().replace("schemas/order.json", str(earlier))
    )
    s3 = moto_server.client("s3")
    landing, lake = unique("landing"), unique("lake")
    for bucket in (landing, lake):
        s3.create_bucket(Bucket=bucket)
    raw = make_stream(1, "orders-raw")
    env = {
        "AWS_ENDPOINT_URL_S3": moto_server.endpoint,
        "AWS_ENDPOINT_URL_KINESIS": kinesis_mock.endpoint,
        "LANDING_BUCKET": landing,
        "LAKE_BUCKET": lake,
        "RAW_STREAM": raw,
        "CURATED_STREAM": make_stream(1, "orders-curated"),
        "WAREHOUSE_URL": pg_url,
        "ORDERS_TABLE": f"{unique_name}_orders",
        "REJECTS_TABLE": f"{unique_name}_rejects",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    line = {"order_id": "o-1", "customer_id": "c-1", "kind": "order", "ts": "2026-11-03T08:00:00Z"}
    exports = {
        "incoming/old-1.jsonl": dict(line, amount=10.0),  # before updated_at
        "incoming/new.jsonl": dict(line, amount=12.0, updated_at="2026-11-03T08:30:00Z"),
        "incoming/old-2.jsonl": dict(line, amount=11.0),
    }
    for key, order in exports.items():
        s3.put_object(Bucket=landing, Key=key, Body=json.dumps(order).encode())
    earlier_ingest = make_handler(example / "earlier_ingest.yaml")
    ingest = make_handler(example / "ingest.yaml")
    transform = make_handler(example / "transform.yaml")
    read = 0

    def after(handler, key: str) -> list[tuple]:
        nonlocal read
        handler(s3_lambda_event(landing, key))
        [records] = shard_records(kinesis, raw).values()
        shard = kinesis.list_shards(StreamName=raw)["Shards"][0]["ShardId"]
        assert transform(lambda_event(records[read:], shard, raw), None) == {
            "batchItemFailures": []
        }
        read = len(records)
        with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT amount FROM "{unique_name}_orders"')
            orders = cur.fetchall()
            cur.execute(f'SELECT count(*) FROM "{unique_name}_rejects"')
            [(rejected,)] = cur.fetchall()
        assert rejected == 0
        return orders

    assert after(earlier_ingest, "incoming/old-1.jsonl") == [(10.0,)]  # written, not rejected
    assert after(ingest, "incoming/new.jsonl") == [(12.0,)]  # a real updated_at is newer
    assert after(earlier_ingest, "incoming/old-2.jsonl") == [(12.0,)]  # older than it
