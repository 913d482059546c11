"""The s3 sink rolling objects across batches (roll_bytes, roll_seconds), against moto.

- The local runner and the KCL hold: objects appear only when a roll is due, and the checkpoint
  moves only then.
- A crash (the engine closed without a release, even halfway through one) and a rerun from the
  checkpoint, cut into other batches, leave every row in S3 exactly once: rolled objects are named
  by their first position, so the replay overwrites what the lost release had put.
- Lambda (the engine's default, ``hold=False``) still writes every batch.
"""

from __future__ import annotations

import gzip
import io
import json
import uuid
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from pydantic import Field

from squall.component import ComponentContext
from squall.deploy.kcl import RecordProcessor
from squall.deploy.local import EXIT_OK, LocalRunner
from squall.errors import BatchFailed, TransientError
from squall.event import Event
from squall.sinks.s3 import S3Sink, S3SinkConfig
from squall.testing import ListSpout, ListSpoutConfig, records_from
from squall.topology.checkpoint import Checkpointer, SqlCheckpointStore
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.factories import KclCheckpointer, kcl_initialize, kcl_message, kcl_process_records
from tests.moto_standin import FlakyClient, client_error

SHARD = "shardId-000000000000"


def payloads(n: int, start: int = 0) -> list[dict]:
    """Rows of one size, in two hour partitions (even rows 18h, odd rows 19h)."""
    return [
        {"n": 100 + i, "ts": f"2026-11-03T{18 + i % 2}:00:00Z", "pad": "x" * 300}
        for i in range(start, start + n)
    ]


def line_size(payload: dict) -> int:
    return len(orjson.dumps(payload)) + 1


def keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def rows(s3, bucket: str) -> list[dict]:
    """Every row of every object in the bucket (JSON lines or Parquet), in key order."""
    out = []
    for key in keys(s3, bucket):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if key.endswith(".parquet"):
            out.extend(pq.read_table(io.BytesIO(body)).to_pylist())
        else:
            out.extend(json.loads(x) for x in gzip.decompress(body).splitlines())
    return out


def sink_yaml(endpoint: str, bucket: str, **extra: Any) -> dict:
    return {
        "id": "lake",
        "type": "s3",
        "bucket": bucket,
        "prefix": "events",
        "endpoint_url": endpoint,
        "time_field": "ts",
        **extra,
    }


def topology(sink: dict, spout: dict | None = None, batch_size: int = 10) -> str:
    return json.dumps(
        {
            "name": f"roll{uuid.uuid4().hex[:6]}",
            "resources": {"db": {"url": "sqlite:///:memory:"}},
            "spout": spout or {"type": "stdin"},
            "settings": {
                "batch_size": batch_size,
                "retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0},
            },
            "bolts": [{"id": "decode", "type": "json"}],
            "sinks": [sink, {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink"}],
        }
    )


def lake(engine: Engine) -> S3Sink:
    return next(c for c in engine.components if c.id == "lake")


# -- the local runner ---------------------------------------------------------------------------


class WatchingSpoutConfig(ListSpoutConfig):
    bucket: str = Field(description="The bucket to list between batches.")
    endpoint_url: str = Field(description="moto's endpoint.")


class WatchingSpout(ListSpout):
    """A list spout that lists the bucket before each batch after the first and at each checkpoint."""

    Config = WatchingSpoutConfig

    def open(self, resources=None) -> None:
        import boto3

        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.config.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        self.seen: list[tuple[str, Any]] = []

    def _objects(self) -> int:
        return len(self.s3.list_objects_v2(Bucket=self.config.bucket).get("Contents", []))

    def read(self, max_records: int):
        for i, batch in enumerate(super().read(max_records)):
            if i:
                self.seen.append(("before batch", self._objects()))
            yield batch

    def commit(self, checkpoint: dict) -> dict:
        if checkpoint:
            self.seen.append((checkpoint[SHARD].sequence_number, self._objects()))
        return super().commit(checkpoint)


def test_local_runner_puts_rolled_objects_only_when_due_and_checkpoints_only_then(
    moto_server, s3, bucket, tmp_path
):
    data = payloads(25)
    roll = sum(line_size(p) for p in data[:20])  # due after the second batch of 10, not the first
    spout = {
        "type": f"{__name__}:WatchingSpout",
        "records": data,
        "bucket": bucket,
        "endpoint_url": moto_server.endpoint,
    }
    runner = LocalRunner(
        load_text(
            topology(sink_yaml(moto_server.endpoint, bucket, roll_bytes=roll), spout),
            base_dir=tmp_path,
        )
    )
    report = runner.run()
    assert report.exit_code == EXIT_OK
    # nothing after batch 1 (held, no checkpoint); 2 objects (one per hour) and the checkpoint
    # at 20 after batch 2; the last 5 rows released at the end of input, then checkpointed
    assert runner.spout.seen == [
        ("before batch", 0),
        ("20", 2),
        ("before batch", 2),
        ("25", 4),
    ]
    assert keys(s3, bucket) == [
        "events/dt=2026-11-03/hour=18/test.shardId-000000000000.1.0.jsonl.gz",
        "events/dt=2026-11-03/hour=18/test.shardId-000000000000.21.0.jsonl.gz",
        "events/dt=2026-11-03/hour=19/test.shardId-000000000000.2.0.jsonl.gz",
        "events/dt=2026-11-03/hour=19/test.shardId-000000000000.22.0.jsonl.gz",
    ]
    assert sorted(rows(s3, bucket), key=lambda r: r["n"]) == data


# -- a crash, and the rerun from the checkpoint -------------------------------------------------


def engine_with_checkpoints(yaml: str, table: str) -> tuple[Engine, Any, Resources]:
    topo = load_text(yaml)
    resources = Resources(topo.resources)
    store = SqlCheckpointStore(resources.sql("db"), topo.name, resource="db", table=table)
    engine = Engine(
        topo.plan,
        resources=resources,
        checkpointer=Checkpointer(store),
        sleep=lambda s: None,
        hold=True,
    )
    return engine, store, resources


PARQUET = {
    "format": "parquet",
    "columns": {"n": {"path": "n", "type": "int64"}, "ts": "ts", "pad": "pad"},
}


@pytest.mark.parametrize("fmt", [{}, PARQUET], ids=["jsonl", "parquet"])
def test_a_crash_halfway_through_a_release_then_a_rerun_in_other_batches_leaves_each_row_once(
    moto_server, s3, bucket, tmp_path, fmt
):
    data = payloads(30)
    records = records_from(data, start=1)
    roll = sum(line_size(p) for p in data[:8])  # due at 8 rows or more
    sink = sink_yaml(moto_server.endpoint, bucket, roll_bytes=roll, **fmt)
    yaml = topology(sink).replace('"sqlite:///:memory:"', json.dumps(f"sqlite:///{tmp_path}/c.db"))
    table = f"cp_{uuid.uuid4().hex[:8]}"
    broken = {"on": False}

    def put(kw, call):
        if broken["on"] and kw["Key"].split("/")[2] == "hour=19":
            raise client_error("InternalError", "We encountered an internal error.", 500)
        return call(**kw)

    engine, store, resources = engine_with_checkpoints(yaml, table)
    engine.open()
    lake(engine).client = FlakyClient(s3, put_object=put)
    engine.process(records[0:5])  # held
    assert keys(s3, bucket) == [] and store.load("test") == {}
    assert engine.process(records[5:10]).checkpoint[SHARD].sequence_number == "10"  # rolled
    assert len(keys(s3, bucket)) == 2
    engine.process(records[10:15])  # held
    broken["on"] = True  # the release after 20 puts its hour-18 object, then S3 fails
    with pytest.raises(BatchFailed, match="InternalError"):
        engine.process(records[15:20])
    assert len(keys(s3, bucket)) == 3  # the hour-18 object of rows 11-19 is there
    engine.close()  # a crash: no release; the held checkpoint is the last durable one
    resources.close()
    assert store.load("test")[SHARD].sequence_number == "10"

    engine, store, resources = engine_with_checkpoints(yaml, table)
    with engine:  # resume after 10 in batches of 7: other roll points than the first run
        for i in range(10, 30, 7):
            engine.process(records[i : i + 7])
        assert engine.release()[SHARD].sequence_number == "30"
    resources.close()
    got = sorted(rows(s3, bucket), key=lambda r: r["n"])
    assert got == data  # each row once: the rerun overwrote the object the lost release put
    assert store.load("test")[SHARD].sequence_number == "30"


def test_a_failed_put_is_transient_and_the_next_release_puts_only_the_missing_objects(
    moto_server, s3, bucket
):
    calls = {"n": 0}

    def fail_second(kw, call):
        calls["n"] += 1
        if calls["n"] == 2:
            raise client_error("SlowDown", "Please reduce your request rate.", 503)
        return call(**kw)

    sink = S3Sink(
        S3SinkConfig(id="lake", type="s3", bucket=bucket, time_field="ts", roll_seconds=60),
        ComponentContext("t"),
    )
    sink.client = FlakyClient(s3, put_object=fail_second)
    sink.open()
    events = [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from(payloads(6)))
    ]
    for _ in range(2):  # the same batch delivered twice: held once
        assert sink.write_batch(sink.prepare(events), None) is None
    assert sink.redelivered == 6 and sink.holding() and keys(s3, bucket) == []
    with pytest.raises(TransientError, match="SlowDown"):
        sink.release()
    assert sink.holding() and sink.due()  # a release that failed is due at once
    sink.release()
    assert calls["n"] == 3 and sink.puts == 2 and not sink.holding()
    assert sorted(rows(s3, bucket), key=lambda r: r["n"]) == payloads(6)


def test_roll_seconds_rolls_an_idle_buffer_by_age_on_tick(moto_server, s3, bucket):
    sink = sink_yaml(moto_server.endpoint, bucket, roll_seconds=30)
    engine = Engine(load_text(topology(sink)).plan, hold=True)
    now = [1000.0]
    with engine:
        lake(engine).clock = lambda: now[0]
        result = engine.process(records_from(payloads(3)))
        assert result.checkpoint == {} and engine.holding
        now[0] += 29
        assert engine.tick() == {} and keys(s3, bucket) == []  # not yet 30 s old
        now[0] += 1
        assert engine.tick()[SHARD].sequence_number == "3"
        assert len(keys(s3, bucket)) == 2 and not engine.holding


def test_lambda_engine_writes_every_batch_even_with_roll_settings(moto_server, s3, bucket):
    sink = sink_yaml(moto_server.endpoint, bucket, roll_bytes=1 << 20, roll_seconds=600)
    engine = Engine(load_text(topology(sink)).plan)  # hold=False: an invocation ends durable
    with engine:
        first = engine.process(records_from(payloads(4), start=1))
        assert first.checkpoint[SHARD].sequence_number == "4" and len(keys(s3, bucket)) == 2
        engine.process(records_from(payloads(4, start=4), start=5))
        assert len(keys(s3, bucket)) == 4 and not engine.holding
    assert sorted(rows(s3, bucket), key=lambda r: r["n"]) == payloads(8)


def test_without_roll_settings_nothing_is_held_and_objects_are_named_first_to_last(
    moto_server, s3, bucket
):
    engine = Engine(load_text(topology(sink_yaml(moto_server.endpoint, bucket))).plan, hold=True)
    with engine:
        result = engine.process(records_from(payloads(4), start=1))
        assert result.checkpoint[SHARD].sequence_number == "4" and not engine.holding
    assert [k.rsplit("/", 1)[1] for k in keys(s3, bucket)] == [
        "test.shardId-000000000000.1.0-3.0.jsonl.gz",
        "test.shardId-000000000000.2.0-4.0.jsonl.gz",
    ]


def test_roll_bytes_has_a_floor_and_the_memory_cap_as_ceiling():
    with pytest.raises(ValueError, match="greater than or equal to 1024"):
        S3SinkConfig(id="lake", type="s3", bucket="b", roll_bytes=10)
    with pytest.raises(ValueError, match="less than or equal to"):
        S3SinkConfig(id="lake", type="s3", bucket="b", roll_bytes=1 << 30)


# -- the KCL ------------------------------------------------------------------------------------


def test_kcl_holds_the_checkpoint_until_the_roll_and_releases_at_shard_end(moto_server, s3, bucket):
    data = payloads(7)
    roll = sum(line_size(p) for p in data[:4])
    sink = sink_yaml(moto_server.endpoint, bucket, roll_bytes=roll)
    engine = Engine(load_text(topology(sink)).plan, hold=True)
    p = RecordProcessor(engine, stream="s")
    kcl_initialize().dispatch(None, p)
    cp = KclCheckpointer()
    kcl_process_records(data[:2], start=100).dispatch(cp, p)
    assert cp.calls == [] and keys(s3, bucket) == []  # held
    kcl_process_records(data[2:4], start=102).dispatch(cp, p)
    assert cp.calls == [("103", 0)] and len(keys(s3, bucket)) == 2  # rolled, then checkpointed
    kcl_process_records(data[4:7], start=104).dispatch(cp, p)
    assert cp.calls == [("103", 0)]
    kcl_message({"action": "shardEnded"}).dispatch(cp, p)
    # the held rows are put and checkpointed before SHARD_END
    assert cp.calls[-2:] == [("106", 0), (None, None)] and len(keys(s3, bucket)) == 4
    assert sorted(rows(s3, bucket), key=lambda r: r["n"]) == data
