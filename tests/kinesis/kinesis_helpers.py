"""Helpers shared by the Kinesis tests: build spouts, consume as the engine does, put test records."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from squall.component import ComponentContext
from squall.event import Position, Record, derive_event_id
from squall.kinesis.kpl import deaggregate
from squall.spouts.kinesis import KinesisSpout, KinesisSpoutConfig
from squall.topology.checkpoint import open_checkpoint_store


class FakeClock:
    """Time for a spout under test: ``sleep`` advances ``now`` at once (backoff without waiting)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def make_spout(
    endpoint: str,
    stream: str,
    *,
    store: Any = None,
    resources: Any = None,
    topology: str = "test-app",
    clock: Any = None,
    **options: Any,
) -> KinesisSpout:
    """A spout opened and resumed as the local runner does; its store is ``spout.test_store``."""
    options.setdefault("poll_interval", 0.05)
    options.setdefault("idle_exit", 1.0)
    config = KinesisSpoutConfig(
        id="spout", type="kinesis", stream=stream, endpoint_url=endpoint, **options
    )
    spout = KinesisSpout(
        config,
        ComponentContext(topology),
        **({"clock": clock.now, "sleep": clock.sleep} if clock else {}),
    )
    spout.open(resources)
    if store is None:
        store = open_checkpoint_store(spout.checkpointing(), resources, topology)
    spout.test_store = store  # type: ignore[attr-defined]
    spout.resume(store.load(spout.stream_name))
    return spout


def commit_positions(spout: KinesisSpout, positions: dict[str, Position]) -> None:
    """What the engine and the runner do after a batch: save the positions, then SHARD_END markers."""
    store = spout.test_store  # type: ignore[attr-defined]
    store.save(spout.stream_name, positions)
    extra = spout.commit(positions)
    if extra:
        store.save(spout.stream_name, extra)


def consume(
    spout: KinesisSpout,
    *,
    max_records: int = 500,
    on_batch: Callable[[int, list[Record]], None] | None = None,
    commit: bool = True,
) -> list[Record]:
    """Read until the spout stops, as the engine would: de-aggregate, then commit per shard."""
    seen: list[Record] = []
    for i, batch in enumerate(spout.read(max_records)):
        users = [u for r in batch for u in deaggregate(r)]
        seen.extend(users)
        if commit:
            commit_positions(spout, last_positions(users))
        if on_batch is not None:
            on_batch(i, users)
    if commit:
        commit_positions(spout, {})
    return seen


def last_positions(users: list[Record]) -> dict[str, Position]:
    out: dict[str, Position] = {}
    for u in users:
        out[u.meta.shard_id] = u.meta.position
    return out


def event_ids(records: list[Record]) -> list[str]:
    return [derive_event_id(r.meta) for r in records]


def payloads(records: list[Record]) -> list[dict]:
    return [orjson.loads(r.data) for r in records]


def put_plain(kinesis: Any, stream: str, docs: list[dict], key: str = "pk") -> None:
    for i in range(0, len(docs), 500):
        chunk = docs[i : i + 500]
        resp = kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": orjson.dumps(d), "PartitionKey": str(d[key])} for d in chunk],
        )
        assert resp["FailedRecordCount"] == 0


def split_shard(kinesis: Any, stream: str, shard_id: str) -> None:
    shard = next(
        s for s in kinesis.list_shards(StreamName=stream)["Shards"] if s["ShardId"] == shard_id
    )
    lo, hi = (
        int(shard["HashKeyRange"]["StartingHashKey"]),
        int(shard["HashKeyRange"]["EndingHashKey"]),
    )
    kinesis.split_shard(
        StreamName=stream, ShardToSplit=shard_id, NewStartingHashKey=str((lo + hi) // 2)
    )


def shard_of(kinesis: Any, stream: str, partition_key: str) -> str:
    """The open shard a partition key maps to."""
    h = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
    for s in kinesis.list_shards(StreamName=stream)["Shards"]:
        if "EndingSequenceNumber" in s["SequenceNumberRange"]:
            continue
        r = s["HashKeyRange"]
        if int(r["StartingHashKey"]) <= h <= int(r["EndingHashKey"]):
            return s["ShardId"]
    raise AssertionError("no shard")


def assert_key_order(docs: list[dict], key: str = "pk", counter: str = "n") -> None:
    """Within each partition key, the counter increases in reading order."""
    last: dict[Any, int] = {}
    for d in docs:
        k = d[key]
        assert d[counter] > last.get(k, -1), f"partition key {k}: {d[counter]} read after {last[k]}"
        last[k] = d[counter]


def record_put_calls(client) -> list[dict]:
    """The API parameters of every later PutRecords call."""
    calls: list[dict] = []
    client.meta.events.register(
        "before-parameter-build.kinesis.PutRecords", lambda params, **kw: calls.append(dict(params))
    )
    return calls


class Faults:
    """Make chosen entries of chosen PutRecords calls fail; the rest really reach kinesis-mock."""

    def __init__(self, target: Any, real: Any, plan: dict[int, object]):
        """``target`` has the ``client`` to fault; ``real`` writes the entries that succeed."""
        self.real, self.plan, self.call = real, plan, 0
        target.client.meta.events.register("before-call.kinesis.PutRecords", self)

    def __call__(self, params, **kwargs):
        body = orjson.loads(params["body"])
        n = self.call
        self.call += 1
        fault = self.plan.get(n)
        if fault is None:
            return None

        class Http:
            status_code = 200

        if isinstance(fault, str):  # the whole call fails
            Http.status_code = 400
            return Http(), {"Error": {"Code": fault, "Message": "injected"}, "ResponseMetadata": {}}
        entries = body["Records"]
        keep = [i for i in range(len(entries)) if i not in fault]
        ok = (
            self.real.put_records(
                StreamName=body["StreamName"],
                Records=[
                    {
                        "Data": base64.b64decode(entries[i]["Data"]),
                        "PartitionKey": entries[i]["PartitionKey"],
                    }
                    for i in keep
                ],
            )["Records"]
            if keep
            else []
        )
        answers, it = [], iter(ok)
        for i in range(len(entries)):
            answers.append(
                {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "injected"}
                if i in fault
                else next(it)
            )
        return Http(), {"FailedRecordCount": len(fault), "Records": answers}
