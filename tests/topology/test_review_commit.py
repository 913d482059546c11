"""Adversarial review of the commit sequence and poison isolation (issue 14, sections 1 and 2).

Each test here failed on b31d147 and names what was wrong.
"""

from __future__ import annotations

import json
import uuid

import pytest

from squall.testing import MemorySink, records_from
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome


@pytest.fixture
def tag():
    name = f"r{uuid.uuid4().hex[:8]}"
    yield name
    for key in [k for k in MemorySink.stores if k.startswith(name)]:
        MemorySink.stores.pop(key, None)


def engine_for(spec: dict) -> Engine:
    return Engine(load_text(json.dumps(spec)).plan, sleep=lambda s: None)


# -- a stateful bolt whose process() raised keeps nothing of that call's staging ------------------


def subscription_spec(tag: str, db: str) -> dict:
    return {
        "name": "review",
        "resources": {"state": {"url": f"sqlite:///{db}"}},
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [
            {"id": "decode", "type": "json"},
            {
                "id": "subs",
                "type": "subscription",
                "store": "state",
                "history": 0,
                "target": "enrich.subscription",
            },
        ],
        "sinks": [
            {"id": "out", "type": "squall.testing:MemorySink", "name": f"{tag}-out"},
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
        ],
    }


def subscription_events(poison: dict) -> list[dict]:
    def at(minute: int) -> str:
        return f"2024-05-01T10:{minute:02d}:00Z"

    return [
        {"event_type": "subscribe", "device_token": "a", "timestamp": at(1), "topics": ["x"]},
        {"event_type": "unsubscribe", "device_token": "a", "timestamp": at(2), **poison},
        {"event_type": "click", "device_token": "a", "timestamp": at(3)},
        {"event_type": "subscribe", "device_token": "a", "timestamp": at(4), "topics": ["y"]},
        {"event_type": "click", "device_token": "a", "timestamp": at(5)},
        {"event_type": "unsubscribe", "device_token": "a", "timestamp": at(6)},
        {"event_type": "click", "device_token": "a", "timestamp": at(7)},
    ]


def test_a_poison_record_in_a_stateful_bolt_changes_no_state_and_the_rest_is_enriched_as_of_itself(
    tag, tmp_path
):
    """The subscription bolt staged the whole batch before a later event made process() raise; the
    engine then called process() again on halves: the poison record's change stayed staged and was
    committed (it is dead-lettered), and the other events were enriched from the batch's *final*
    state instead of the state as of each of them."""
    # The poison: a valid unsubscribe whose target parent is not an object (set_target raises).
    poisoned = engine_for(subscription_spec(f"{tag}-p", tmp_path / "p.db"))
    with poisoned:
        result = poisoned.process(records_from(subscription_events({"enrich": 5})))
        state = next(c for c in poisoned.components if c.id == "subs").store.load(["a"])["a"]
    assert [o.outcome for o in result.records] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED] + [
        Outcome.COMMITTED
    ] * 5
    # The reference: the same record rejected by the bolt itself (a bad time): it changes nothing.
    reference = engine_for(subscription_spec(f"{tag}-r", tmp_path / "r.db"))
    with reference:
        reference.process(records_from(subscription_events({"timestamp": "not a time"})))
        expected_state = next(c for c in reference.components if c.id == "subs").store.load(["a"])[
            "a"
        ]

    def blocks(name: str) -> list[dict]:
        return [ev.value["enrich"]["subscription"] for ev in MemorySink.stores[name]]

    assert blocks(f"{tag}-p-out") == blocks(f"{tag}-r-out")
    assert (
        blocks(f"{tag}-p-out")[0]["status"] == "subscribed"
    )  # as of the first event, not the last
    assert state == expected_state


# -- a failed call must not have destroyed what the re-processing needs -----------------------------


def test_geo_drop_ip_with_a_poison_record_keeps_the_geo_of_the_other_records(tag):
    """With drop_ip, the geo bolt removed each event's address as it went; an event whose target
    parent is not an object then made process() raise, and the engine's isolation called process()
    again on the *same* events — now without their address: status missing_ip, no country."""
    engine = engine_for(
        {
            "name": "review-geo",
            "spout": {"type": "squall.testing:ListSpout"},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "geo", "type": "geo", "drop_ip": True, "target": "enrich.geo"},
            ],
            "sinks": [
                {"id": "out", "type": "squall.testing:MemorySink", "name": f"{tag}-out"},
                {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
            ],
        }
    )
    with engine:
        result = engine.process(
            records_from(
                [
                    {"i": 0, "ip": "8.8.8.8"},
                    {"i": 1, "ip": "1.1.1.1", "enrich": 5},
                    {"i": 2, "ip": "81.2.69.142"},
                ]
            )
        )
    assert [o.outcome for o in result.records] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    out = MemorySink.stores[f"{tag}-out"]
    assert [
        (
            ev.value["i"],
            ev.value["enrich"]["geo"]["status"],
            ev.value["enrich"]["geo"]["country_code"],
        )
        for ev in out
    ] == [(0, "ok", "US"), (2, "ok", "GB")]
    assert all("ip" not in ev.value for ev in out)
    [dead] = MemorySink.stores[f"{tag}-dlq"]
    assert dead.failure.component == "geo" and "enrich" in dead.failure.reason


# -- a dead letter can always be written -----------------------------------------------------------


def _deep_fail_bolt_class():
    from squall.bolts.base import Bolt, Output
    from squall.component import ComponentConfig

    class DeepFailBolt(Bolt):
        """Puts a value nested 300 levels deep in the payload (a user bolt can; orjson encodes at most
        254), then rejects the event: its dead letter carries that payload."""

        Config = ComponentConfig

        def process(self, batch):
            out = Output(self.id)
            for ev in batch:
                if ev.value.get("deep"):
                    nested: list = []
                    for _ in range(300):
                        nested = [nested]
                    ev.value["x"] = nested
                    out.fail(ev, "rejected")
                elif ev.value.get("fail"):
                    out.fail(ev, ev.value["fail"])
                else:
                    out.emit(ev)
            return out

    return DeepFailBolt


DeepFailBolt = _deep_fail_bolt_class()


@pytest.mark.parametrize("sink", ["dead_letter", "dead_letter_table"])
def test_a_dead_letter_with_include_payload_of_a_deeply_nested_payload_is_written(
    tag, tmp_path, sink
):
    """orjson encodes at most 254 levels: with include_payload the dead-letter write raised on a
    300-deep payload, so the record had nowhere to go (FAILED) and the shard stalled on it
    forever. The payload is now written in a bounded, marked form."""
    dlq = (
        {
            "id": "dlq",
            "type": "dead_letter",
            "path": str(tmp_path / "dl.jsonl"),
            "include_payload": True,
        }
        if sink == "dead_letter"
        else {"id": "dlq", "type": "dead_letter_table", "resource": "db", "include_payload": True}
    )
    engine = engine_for(
        {
            "name": "review-dl",
            "resources": {"db": {"url": f"sqlite:///{tmp_path / 'dl.db'}"}},
            "spout": {"type": "squall.testing:ListSpout"},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "deep", "type": f"{__name__}:DeepFailBolt"},
            ],
            "sinks": [
                {"id": "out", "type": "squall.testing:MemorySink", "name": f"{tag}-out"},
                dlq,
            ],
        }
    )
    with engine:
        result = engine.process(
            records_from([{"i": 0}, {"i": 1, "deep": True}, {"i": 2, "fail": "plain"}])
        )
        if sink == "dead_letter_table":
            import sqlalchemy as sa

            with engine.resources.sql("db").connect() as conn:
                payloads = (
                    conn.execute(sa.text("SELECT payload FROM squall_dead_letters ORDER BY meta"))
                    .scalars()
                    .all()
                )
    assert [o.outcome for o in result.records] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.DEAD_LETTERED,
    ]
    if sink == "dead_letter":
        payloads = [
            json.dumps(json.loads(line)["payload"])
            for line in (tmp_path / "dl.jsonl").read_text().splitlines()
        ]
    # The deep payload is kept in some bounded, marked form (the marker's shape is the sink's).
    assert len(payloads) == 2 and all(p not in (None, "null") for p in payloads)
    assert any('"plain"' in p for p in payloads)


# -- a record's data must never make the state commit fail the batch --------------------------------


def test_a_nul_in_an_event_id_does_not_fail_every_delivery_of_its_batch_on_postgresql(tag, pg_url):
    """PostgreSQL text cannot hold NUL; psycopg2 refuses such a parameter with a ValueError. An
    update whose event id (from the payload: event_id_field) holds one was staged, and its state
    row — version and event_id carry the id — made the engine's commit raise: BatchFailed on
    every delivery, the shard stalled forever. The update is now that record's failure."""
    import sqlalchemy as sa

    table = f"s_{uuid.uuid4().hex[:10]}"
    engine = engine_for(
        {
            "name": "review-nul",
            "resources": {"state": {"url": pg_url}},
            "spout": {"type": "squall.testing:ListSpout"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [
                {"id": "decode", "type": "json", "event_id_field": "message_id"},
                {"id": "subs", "type": "subscription", "store": "state", "table": table},
            ],
            "sinks": [
                {"id": "out", "type": "squall.testing:MemorySink", "name": f"{tag}-out"},
                {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
            ],
        }
    )
    events = [
        {
            "message_id": "m1",
            "event_type": "subscribe",
            "device_token": "a",
            "timestamp": "2024-05-01T10:00:00Z",
        },
        {
            "message_id": "m\u00002",
            "event_type": "unsubscribe",
            "device_token": "b",
            "timestamp": "2024-05-01T10:01:00Z",
        },
        {
            "message_id": "m3",
            "event_type": "subscribe",
            "device_token": "c\u0000",
            "timestamp": "2024-05-01T10:02:00Z",
        },
    ]
    try:
        with engine:
            result = engine.process(records_from(events))
            stored = next(c for c in engine.components if c.id == "subs").store.load(["a", "b"])
        assert [o.outcome for o in result.records] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,
            Outcome.DEAD_LETTERED,
        ]
        assert sorted(stored) == ["a"]
        assert all("NUL" in ev.failure.reason for ev in MemorySink.stores[f"{tag}-dlq"])
    finally:
        with sa.create_engine(
            pg_url.replace("postgresql://", "postgresql+psycopg2://")
        ).begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))


# -- Lambda: the platform checkpoints whole Kinesis records, never inside a KPL aggregate -------------


def kpl_aggregate(payloads: list[dict]) -> bytes:
    from aws_kinesis_agg.aggregator import RecordAggregator

    agg = RecordAggregator()
    for p in payloads:
        agg.add_user_record("pk", json.dumps(p).encode())
    return agg.clear_and_get().get_contents()[2]


def _fail_once_bolt_class():
    from squall.testing import FaultyBolt

    class FailOnceBolt(FaultyBolt):
        """FaultyBolt whose ``fail`` holds for its first call only (the cause went away)."""

        def process(self, batch):
            if self.calls:
                for ev in batch:
                    if isinstance(ev.value, dict):
                        ev.value.pop("fail", None)
            return super().process(batch)

    return FailOnceBolt


FailOnceBolt = _fail_once_bolt_class()


def test_lambda_redelivery_of_a_kpl_aggregate_sees_the_state_of_its_first_delivery(tag, tmp_path):
    """Lambda retries from the *sequence number* of the first failed record: every sub-record of
    its KPL aggregate comes again. The engine committed the state changes of the sub-records
    before the failed one (covered at sub-record granularity), so the redelivered sub-records were
    enriched from a state that already held their own changes: a subscribe stored as unsubscribed.

    Since the sub-records before the failed one come again, they are held (not written) at the
    first delivery, and written once — from the state before them — when the aggregate passes."""
    from squall.deploy.lambda_consumer import make_handler
    from tests.factories import kinesis_lambda_event

    (tmp_path / "topology.yaml").write_text(
        json.dumps(
            {
                "name": "review-lambda",
                "resources": {"state": {"url": f"sqlite:///{tmp_path / 's.db'}"}},
                "spout": {"type": "stdin"},
                "bolts": [
                    {"id": "decode", "type": "json"},
                    {"id": "chaos", "type": f"{__name__}:FailOnceBolt"},
                    {"id": "subs", "type": "subscription", "store": "state", "history": 0},
                ],
                # no dead-letter sink: a failed record is reported to Lambda, which delivers it again
                "sinks": [{"id": "out", "type": "squall.testing:MemorySink", "name": f"{tag}-out"}],
            }
        )
    )
    handler = make_handler(tmp_path / "topology.yaml")
    aggregate = kpl_aggregate(
        [
            {
                "n": 0,
                "event_type": "subscribe",
                "device_token": "a",
                "timestamp": "2024-05-01T10:01:00Z",
                "topics": ["x"],
            },
            {
                "n": 1,
                "event_type": "unsubscribe",
                "device_token": "a",
                "timestamp": "2024-05-01T10:02:00Z",
            },
            {
                "n": 2,
                "event_type": "click",
                "device_token": "a",
                "timestamp": "2024-05-01T10:03:00Z",
                "fail": "later",
            },
        ]
    )
    event = kinesis_lambda_event([aggregate])
    first = handler(event, None)
    assert first == {
        "batchItemFailures": [{"itemIdentifier": event["Records"][0]["kinesis"]["sequenceNumber"]}]
    }
    out = MemorySink.stores.setdefault(f"{tag}-out", [])
    assert out == []  # held: the whole aggregate comes again
    assert handler(event, None) == {"batchItemFailures": []}  # Lambda delivers it again
    again = [(ev.value["n"], ev.value["subscription"]["status"]) for ev in out]
    assert again == [(0, "subscribed"), (1, "unsubscribed"), (2, "unsubscribed")]
    handler.engine.close()


# -- a dependency outage is never a record's fault ---------------------------------------------------


def _unmapped_bolt_class():
    """A user bolt that queries a database and lets the driver's error escape (no TransientError)."""
    import sqlalchemy as sa

    from squall.bolts.base import Bolt, Output
    from squall.component import ComponentConfig

    class Config(ComponentConfig):
        url: str
        kind: str = "sql"

    class Lookup(Bolt):
        def open(self, resources) -> None:
            if self.config.kind == "sql":
                self.db = sa.create_engine(self.config.url, pool_pre_ping=False)
            else:
                import redis

                self.db = redis.Redis.from_url(self.config.url, socket_connect_timeout=0.5)

        def process(self, batch):
            out = Output(self.id)
            for ev in batch:
                if self.config.kind == "sql":
                    with self.db.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                else:
                    self.db.get("k")
                out.emit(ev)
            return out

    Lookup.Config = Config
    return Lookup


UnmappedLookup = _unmapped_bolt_class()


@pytest.mark.parametrize("kind", ["sql", "redis"])
def test_a_database_outage_in_a_user_bolt_fails_the_batch_instead_of_dead_lettering_every_record(
    tag, kind
):
    """A driver's connection error raised raw by a user bolt was taken for a poison record: the
    engine split the batch down to single events, each failed alone, and *every* record was
    dead-lettered and checkpointed past during the outage. A connection-level driver error is now
    a dependency failure: retried, then the batch fails and nothing is checkpointed."""
    url = (
        "postgresql+psycopg2://postgres@127.0.0.1:9/none?connect_timeout=1"
        if kind == "sql"
        else "redis://127.0.0.1:9/0"
    )
    engine = engine_for(
        {
            "name": "review-outage",
            "spout": {"type": "squall.testing:ListSpout"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "lookup", "type": f"{__name__}:UnmappedLookup", "url": url, "kind": kind},
            ],
            "sinks": [
                {"id": "out", "type": "squall.testing:MemorySink", "name": f"{tag}-out"},
                {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
            ],
        }
    )
    from squall.errors import BatchFailed

    with engine, pytest.raises(BatchFailed):
        engine.process(records_from([{"i": i} for i in range(4)]))
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []


# -- SHARD_END, saved by the runner after the engine's commit ------------------------------------------


def _ending_spout_class():
    from squall.component import ComponentConfig
    from squall.kinesis.shards import SHARD_END
    from squall.spouts.base import Spout
    from squall.topology.checkpoint import CheckpointSpec

    class EndingSpout(Spout):
        """One record, then its shard is read to its end: commit() hands back SHARD_END to save."""

        Config = ComponentConfig

        def checkpointing(self):
            return CheckpointSpec("sql", "s", resource="db", owner=self.id)

        def read(self, max_records):
            yield records_from([{"i": 1}], stream="s")

        def commit(self, checkpoint):
            return {"shardId-000000000000": SHARD_END} if checkpoint else {}

    return EndingSpout


EndingSpout = _ending_spout_class()


def test_a_passing_checkpoint_store_failure_while_saving_shard_end_is_retried(
    tag, tmp_path, monkeypatch
):
    """The local runner saved SHARD_END with a bare store.save(): one transient failure of the
    checkpoint store (retried everywhere else by the engine) ended the run with an error, after a
    batch that had committed fine."""
    from squall.deploy.local import EXIT_OK, LocalRunner
    from squall.errors import TransientError
    from squall.kinesis.shards import SHARD_END
    from squall.topology.checkpoint import SqlCheckpointStore
    from squall.topology.loader import load_text as load

    failures = []
    real_save = SqlCheckpointStore.save

    def flaky_save(self, stream, positions):
        if not failures:
            failures.append(positions)
            raise TransientError("checkpoint store: connection reset")
        real_save(self, stream, positions)

    monkeypatch.setattr(SqlCheckpointStore, "save", flaky_save)
    topology = load(
        json.dumps(
            {
                "name": "review-shard-end",
                "resources": {"db": {"url": f"sqlite:///{tmp_path / 'cp.db'}"}},
                "spout": {"type": f"{__name__}:EndingSpout"},
                "settings": {"retry": {"attempts": 3, "initial_backoff": 0, "max_backoff": 0}},
                "bolts": [{"id": "decode", "type": "json"}],
                "sinks": [{"id": "out", "type": "squall.testing:MemorySink", "name": f"{tag}-out"}],
            }
        ),
        base_dir=tmp_path,
    )  # the run lock goes next to the topology
    runner = LocalRunner(topology)
    report = runner.run()
    assert failures, "the flaky save was not reached"
    assert report.exit_code == EXIT_OK, report.setup_error or report.error
    assert runner.checkpointer.load("s") == {"shardId-000000000000": SHARD_END}


# -- a write that fails on the whole batch but on no part of it ----------------------------------------


def _size_limited_sink_class():
    from squall.errors import RecordError
    from squall.sinks.base import WriteResult
    from squall.testing import MemorySink

    class SizeLimitedSink(MemorySink):
        """Refuses a write of more than 4 rows (a statement's parameter limit, a message size):
        every part of a batch is written, the whole never is."""

        def write_batch(self, prepared, ctx):
            if len(prepared.events) > 4:
                raise RecordError(
                    "program limit exceeded: too many rows in one statement (SQLSTATE 54000)"
                )
            failed = [ev for ev in prepared.events if ev.value.get("sink_fail")]
            self.store.extend(ev for ev in prepared.events if ev not in failed)
            return WriteResult(failed=failed)  # a partial failure: delivered again

    return SizeLimitedSink


SizeLimitedSink = _size_limited_sink_class()


class SizeLimitedDeadLetterSink(SizeLimitedSink):
    dead_letter = True


def test_a_write_that_fails_only_on_the_whole_batch_commits_what_its_parts_wrote(tag):
    """The isolation wrote every part of the batch for real and none failed alone; the engine then
    raised BatchFailed ("a fault of the batch after all"), so the same batch failed on every
    delivery and the shard stalled forever, although all its rows were written. The events are
    now settled as written by the parts."""
    engine = engine_for(
        {
            "name": "review-size",
            "spout": {"type": "squall.testing:ListSpout"},
            "bolts": [{"id": "decode", "type": "json"}],
            "sinks": [
                {"id": "out", "type": f"{__name__}:SizeLimitedSink", "name": f"{tag}-out"},
                {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
            ],
        }
    )
    with engine:
        result = engine.process(records_from([{"i": i} for i in range(10)]))
        assert result.ok and result.count(Outcome.COMMITTED) == 10
        assert sorted({ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]}) == list(range(10))
        assert result.checkpoint["shardId-000000000000"].sequence_number == "10"
        assert MemorySink.stores.get(f"{tag}-dlq", []) == []
        # What a part's write reports failed (WriteResult) still fails: it is delivered again.
        again = engine.process(
            records_from([{"i": i, "sink_fail": i == 7} for i in range(10)], start=11)
        )
    # The two after it were in the same write (written), but come again with it: held.
    assert [o.outcome for o in again.records] == [Outcome.COMMITTED] * 7 + [Outcome.FAILED] + [
        Outcome.HELD
    ] * 2
    assert again.checkpoint["shardId-000000000000"].sequence_number == "17"


def test_dead_letters_that_fail_only_as_a_whole_are_all_written(tag):
    """Same for the dead-letter step: after the isolation had written every dead letter in parts,
    the engine wrote "the rest" again in one call, which failed again: BatchFailed, forever."""
    engine = engine_for(
        {
            "name": "review-size-dl",
            "spout": {"type": "squall.testing:ListSpout"},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "faulty", "type": "squall.testing:FaultyBolt"},
            ],
            "sinks": [
                {"id": "out", "type": "squall.testing:MemorySink", "name": f"{tag}-out"},
                {
                    "id": "dlq",
                    "type": f"{__name__}:SizeLimitedDeadLetterSink",
                    "name": f"{tag}-dlq",
                },
            ],
        }
    )
    with engine:
        result = engine.process(
            records_from(
                [{"i": i, "fail": "no", "sink_fail": i == 5} for i in range(7)] + [{"i": 7}]
            )
        )
    # the dead letter the sink reported not written (WriteResult) fails: it is delivered again,
    # and the records after it with it (held): the last one is not written to `out` now
    assert [o.outcome for o in result.records] == [Outcome.DEAD_LETTERED] * 5 + [
        Outcome.FAILED,
        Outcome.HELD,
        Outcome.HELD,
    ]
    assert sorted({ev.value["i"] for ev in MemorySink.stores[f"{tag}-dlq"]}) == [0, 1, 2, 3, 4, 6]
    assert MemorySink.stores.get(f"{tag}-out", []) == []


# -- the Redis cache in front of the SQL state store -----------------------------------------------------


def test_a_cache_that_refuses_writes_after_the_commit_does_not_fail_the_run(
    tag, tmp_path, redis_url, monkeypatch
):
    """CachedStateStore.flush() — after the SQL commit — swallowed only TransientError: a Redis
    that refuses writes (OOM under maxmemory/noeviction, MISCONF) raised a raw ResponseError out
    of engine.process() after the batch was committed, on every batch: a full *cache* stopped the
    pipeline. Populating the cache is best effort: a failure costs a later miss."""
    import redis

    from squall.enrichment.stores import RedisStateStore

    real_write = RedisStateStore.write

    def oom_write(self, states, forget=()):
        if states:  # the population after the commit; dropping keys (DEL) is allowed under OOM
            raise redis.exceptions.ResponseError(
                "OOM command not allowed when used memory > 'maxmemory'."
            )
        return real_write(self, states, forget)

    monkeypatch.setattr(RedisStateStore, "write", oom_write)
    spec = subscription_spec(tag, tmp_path / "s.db")
    spec["resources"]["cache"] = {"url": redis_url}
    spec["bolts"][1].update(cache="cache", key_prefix=f"{tag}:", target="subscription")
    engine = engine_for(spec)
    with engine:
        first = engine.process(records_from(subscription_events({})[:3]))
        second = engine.process(records_from(subscription_events({})[3:], start=4))
        state = next(c for c in engine.components if c.id == "subs").store.store.load(["a"])["a"]
    assert first.ok and second.ok
    assert state.status == "unsubscribed" and state.changed_at is not None


def test_a_record_holding_nul_is_dead_lettered_into_a_postgresql_table(tag, pg_url):
    """A record's bytes may hold 0x00 (valid UTF-8); PostgreSQL text cannot, and psycopg2 refuses
    the parameter (ValueError). The json bolt rejected such a record, the dead_letter_table sink
    could not write it even alone, so it FAILED and was delivered again forever (Lambda: the shard
    stalled). Its bytes are now kept in record_base64, and NUL in text columns is replaced."""
    import base64

    import sqlalchemy as sa

    table = f"dl_{uuid.uuid4().hex[:10]}"
    engine = engine_for(
        {
            "name": "review-nul-dl",
            "resources": {"db": {"url": pg_url}},
            "spout": {"type": "squall.testing:ListSpout"},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "faulty", "type": "squall.testing:FaultyBolt"},
            ],
            "sinks": [
                {"id": "out", "type": "squall.testing:MemorySink", "name": f"{tag}-out"},
                {
                    "id": "dlq",
                    "type": "dead_letter_table",
                    "resource": "db",
                    "table": table,
                    "include_payload": True,
                },
            ],
        }
    )
    raw = b'{"id": "x", "a": \x00}'
    try:
        with engine:
            result = engine.process(
                records_from([{"id": "ok"}, raw, {"id": "n", "fail": "bad\u0000reason"}])
            )
            with engine.resources.sql("db").connect() as conn:
                rows = conn.execute(
                    sa.text(
                        f'SELECT event_id, reason, record, record_base64 FROM "{table}" '
                        "ORDER BY meta"
                    )
                ).all()
        assert [o.outcome for o in result.records] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,
            Outcome.DEAD_LETTERED,
        ]
        assert len(rows) == 2
        assert rows[0].record is None and base64.b64decode(rows[0].record_base64) == raw
        assert "\x00" not in rows[1].reason and rows[1].reason.startswith("bad")
    finally:
        with sa.create_engine(
            pg_url.replace("postgresql://", "postgresql+psycopg2://")
        ).begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
