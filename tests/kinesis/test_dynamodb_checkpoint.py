"""DynamoDB checkpoint store against dynalite, alone and under the Kinesis spout."""

from __future__ import annotations

import uuid

import pytest

from squall.aws import client as aws_client
from squall.errors import SquallError, TransientError
from squall.event import Position
from squall.kinesis.shards import SHARD_END, is_shard_end
from squall.topology.checkpoint import CheckpointStore
from squall.topology.dynamodb_checkpoint import DynamoDbCheckpointStore, position_key
from tests.kinesis.kinesis_helpers import consume, make_spout, payloads, put_plain

SEQ = "49590338271490256608559692538361571095921575989136588898"


def store_for(dynalite, table=None, application="app") -> DynamoDbCheckpointStore:
    client = aws_client("dynamodb", region="us-east-1", endpoint_url=dynalite.endpoint)
    return DynamoDbCheckpointStore(client, table or f"cp-{uuid.uuid4().hex[:8]}", application)


def test_save_and_load_round_trip(dynalite):
    store = store_for(dynalite)
    assert isinstance(store, CheckpointStore)
    assert store.load("s") == {}
    store.save(
        "s", {"shardId-000000000000": Position(SEQ, 0), "shardId-000000000001": Position(SEQ, 7)}
    )
    assert store.load("s") == {
        "shardId-000000000000": Position(SEQ, 0),
        "shardId-000000000001": Position(SEQ, 7),
    }
    assert store.load("other-stream") == {}


def test_positions_never_move_backwards(dynalite):
    store = store_for(dynalite)
    later = str(int(SEQ) + 10)
    store.save("s", {"a": Position(later, 2)})
    store.save("s", {"a": Position(SEQ, 9)})  # a replayed, older batch
    store.save("s", {"a": Position(later, 1)})
    assert store.load("s") == {"a": Position(later, 2)}
    store.save("s", {"a": Position(later, 3)})
    assert store.load("s") == {"a": Position(later, 3)}
    store.save("s", {"a": SHARD_END})
    store.save("s", {"a": Position(later, 4)})
    assert is_shard_end(store.load("s")["a"])


def test_applications_and_streams_are_separate(dynalite):
    table = f"cp-{uuid.uuid4().hex[:8]}"
    one, two = (
        store_for(dynalite, table, "one"),
        store_for(dynalite, table, "two"),
    )  # the second finds the table
    one.save("s", {"a": Position(SEQ)})
    two.save("s", {"a": Position("1")})
    one.save("s2", {"b": Position("5")})
    assert one.load("s") == {"a": Position(SEQ)}
    assert two.load("s") == {"a": Position("1")}
    assert one.load("s2") == {"b": Position("5")}


def test_many_shards_load_across_pages(dynalite):
    store = store_for(dynalite)
    positions = {f"shardId-{i:012d}": Position(str(10**50 + i), i) for i in range(300)}
    for i in range(0, 300, 100):
        store.save("s", dict(list(positions.items())[i : i + 100]))
    pages = []

    def small_pages(params, **kwargs):
        params["Limit"] = 64  # real pages end at 1 MB; force several
        pages.append(1)

    store.client.meta.events.register("before-parameter-build.dynamodb.Query", small_pages)
    assert store.load("s") == positions
    assert len(pages) == 5


def test_position_key_orders_like_numbers():
    keys = [Position("9"), Position("10"), Position("10", 1), Position(SEQ), SHARD_END]
    assert sorted(keys, key=position_key) == keys


def test_missing_table_without_create_is_a_clear_error(dynalite):
    client = aws_client("dynamodb", region="us-east-1", endpoint_url=dynalite.endpoint)
    store = DynamoDbCheckpointStore(client, "never-created", "app", create_table=False)
    with pytest.raises(SquallError, match="never-created"):
        store.load("s")


def test_throttling_is_transient(dynalite):
    store = store_for(dynalite)

    def throttle(**kwargs):
        class Http:
            status_code = 400

        return Http(), {
            "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"}
        }

    store.client.meta.events.register("before-call.dynamodb.UpdateItem", throttle)
    with pytest.raises(TransientError):
        store.save("s", {"a": Position("1")})


def test_a_replicated_write_conflict_is_transient(dynalite):
    """A multi-Region strongly consistent table answers UpdateItem 409
    ReplicatedWriteConflictException while another Region writes the item: botocore's model marks
    it retryable (and botocore retries it), the checkpoint was a permanent SquallError."""
    store = store_for(dynalite)

    def conflict(**kwargs):
        class Http:
            status_code = 409

        return Http(), {
            "Error": {"Code": "ReplicatedWriteConflictException", "Message": "injected"}
        }

    store.client.meta.events.register("before-call.dynamodb.UpdateItem", conflict)
    with pytest.raises(TransientError, match="ReplicatedWriteConflictException"):
        store.save("s", {"a": Position("1")})


def test_kinesis_spout_with_a_dynamodb_store_resumes(kinesis, kinesis_mock, make_stream, dynalite):
    stream = make_stream(2)
    put_plain(kinesis, stream, [{"pk": f"k{i % 3}", "n": i} for i in range(120)])
    table = f"cp-{uuid.uuid4().hex[:8]}"
    checkpoint = {"store": "dynamodb", "table": table, "endpoint_url": dynalite.endpoint}
    first = make_spout(kinesis_mock.endpoint, stream, checkpoint=checkpoint)
    assert isinstance(first.test_store, DynamoDbCheckpointStore)

    def stop(i, users):
        if i == 1:
            first.stop()

    seen1 = consume(first, max_records=30, on_batch=stop)
    put_plain(kinesis, stream, [{"pk": "k0", "n": 120 + i} for i in range(10)])
    seen2 = consume(
        make_spout(kinesis_mock.endpoint, stream, checkpoint=checkpoint), max_records=30
    )
    assert sorted(d["n"] for d in payloads(seen1 + seen2)) == list(range(130))
    stored = store_for(dynalite, table, "test-app").load(stream)
    assert set(stored) == {"shardId-000000000000", "shardId-000000000001"}


def test_checkpoint_retries_are_counted_in_the_metrics(dynalite, tmp_path):
    """The engine retries a checkpoint store that throttles (or is down) as any dependency; those
    retries were in no metric (``squall_retries_total`` counts components' calls only)."""
    from prometheus_client import CollectorRegistry

    from squall.observability.metrics import Recorder
    from squall.observability.prometheus import PrometheusBackend
    from squall.testing import records_from
    from squall.topology.checkpoint import Checkpointer
    from squall.topology.executor import Engine
    from squall.topology.loader import load_text

    store = store_for(dynalite)
    throttled = [2]  # the next two UpdateItem calls are throttled, then they pass

    def throttle(**kwargs):
        if not throttled[0]:
            return None
        throttled[0] -= 1

        class Http:
            status_code = 400

        return Http(), {
            "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"}
        }

    store.client.meta.events.register("before-call.dynamodb.UpdateItem", throttle)
    topology = load_text(
        "name: cp-retries\nspout: {type: stdin}\nbolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: 'squall.testing:MemorySink', name: cp-retries}]\n",
        base_dir=tmp_path,
    )
    engine = Engine(topology.plan, checkpointer=Checkpointer(store), sleep=lambda s: None)
    backend = PrometheusBackend(CollectorRegistry())
    recorder = Recorder("cp-retries", [backend])
    with engine:
        for start in (1, 3):
            records = records_from([{"n": start}, {"n": start + 1}], start=start)
            with recorder.batch(engine, records) as watch:
                watch.result = engine.process(records)
            assert recorder.last.checkpoint_retries == (2 if start == 1 else 0)
    assert store.load("test") == {"shardId-000000000000": Position("4")}
    value = backend.registry.get_sample_value
    assert value("squall_checkpoint_retries_total", {"topology": "cp-retries"}) == 2
