"""The commit sequence: dead letters → sinks → staged state → checkpoint, one owner (the engine).

- A stateful bolt stages its changes during ``process``; the engine writes them after the sinks,
  only for records the checkpoint covers, so a batch delivered again is enriched from the state
  its first delivery saw.
- When the warehouse, the state store and the checkpoint store share one database, rows, state
  and checkpoint are one transaction.
- A database error that names one row (PostgreSQL: index row too large) is that record's failure.
"""

from __future__ import annotations

import json
import secrets
import uuid

import pytest
import sqlalchemy as sa

from squall.errors import BatchFailed, TransientError
from squall.sinks.base import Prepared, WriteContext, WriteResult
from squall.testing import MemorySink, records_from
from squall.topology.checkpoint import Checkpointer, SqlCheckpointStore
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from squall.topology.resources import Resources


class FlakySink(MemorySink):
    """Fails (partially: WriteResult.failed) the events marked ``flaky`` on its first write only."""

    def open(self, resources=None) -> None:
        super().open(resources)
        self.writes = 0

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult:
        self.writes += 1
        failed = [ev for ev in prepared.events if self.writes == 1 and ev.value.get("flaky")]
        self.store.extend(ev for ev in prepared.events if ev not in failed)
        return WriteResult(failed=failed)


def subscription_topology(tag: str, state_url: str, sink_type: str) -> str:
    return json.dumps(
        {
            "name": "commit",
            "resources": {"state": {"url": state_url}},
            "spout": {"type": "squall.testing:ListSpout"},
            "bolts": [
                {"id": "decode", "type": "json"},
                # no history: a replay can only be right if the state was not written ahead of it
                {"id": "subs", "type": "subscription", "store": "state", "history": 0},
            ],
            "sinks": [
                {"id": "out", "type": sink_type, "name": f"{tag}-out"},
                {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
            ],
        }
    )


EVENTS = [
    {
        "event_type": "subscribe",
        "device_token": "a",
        "timestamp": "2024-05-01T10:00:00Z",
        "topics": ["x"],
    },
    {
        "event_type": "unsubscribe",
        "device_token": "a",
        "timestamp": "2024-05-01T10:01:00Z",
        "flaky": True,
    },
    {"event_type": "click", "device_token": "a", "timestamp": "2024-05-01T10:02:00Z"},
    {
        "event_type": "subscribe",
        "device_token": "a",
        "timestamp": "2024-05-01T10:03:00Z",
        "topics": ["y"],
    },
    {"event_type": "click", "device_token": "a", "timestamp": "2024-05-01T10:04:00Z"},
]


def component(engine: Engine, node_id: str):
    return next(c for c in engine.components if c.id == node_id)


def blocks(tag: str) -> dict[str, dict]:
    """The subscription block each event was last written with, by event id."""
    return {ev.event_id: ev.value["subscription"] for ev in MemorySink.stores.pop(f"{tag}-out")}


def test_state_is_committed_only_up_to_the_checkpoint_and_a_redelivery_sees_the_first_state(
    tmp_path,
):
    records = records_from(EVENTS)
    clean_tag, flaky_tag = f"c{uuid.uuid4().hex[:6]}", f"f{uuid.uuid4().hex[:6]}"

    clean = Engine(
        load_text(
            subscription_topology(
                clean_tag, f"sqlite:///{tmp_path / 'clean.db'}", "squall.testing:MemorySink"
            )
        ).plan
    )
    with clean:
        assert clean.process(records).ok
    expected = blocks(clean_tag)

    engine = Engine(
        load_text(
            subscription_topology(
                flaky_tag, f"sqlite:///{tmp_path / 'flaky.db'}", f"{__name__}:FlakySink"
            )
        ).plan
    )
    with engine:
        first = engine.process(records)
        assert [o.outcome for o in first.records][:2] == [Outcome.COMMITTED, Outcome.FAILED]
        assert first.checkpoint["shardId-000000000000"].sequence_number == "1"
        # Only the first record's change is stored: the rest of the shard comes again.
        stored = component(engine, "subs").store.load(["a"])["a"]
        assert (stored.status, stored.topics) == ("subscribed", ("x",))
        again = engine.process(records[1:])  # the source delivers from the failed record on
        assert again.ok
    assert blocks(flaky_tag) == expected
    MemorySink.stores.pop(f"{clean_tag}-dlq", None)
    MemorySink.stores.pop(f"{flaky_tag}-dlq", None)


def test_a_batch_that_fails_after_retries_discards_its_staged_state(tmp_path):
    tag = f"t{uuid.uuid4().hex[:6]}"
    yaml = subscription_topology(tag, f"sqlite:///{tmp_path / 's.db'}", "squall.testing:FaultySink")
    yaml = yaml.replace(
        '"name": "' + tag + '-out"', '"name": "' + tag + '-out", "transient_failures": 9'
    )
    engine = Engine(load_text(yaml).plan, sleep=lambda s: None)
    with engine:
        with pytest.raises(BatchFailed):
            engine.process(records_from(EVENTS[:1]))
        assert component(engine, "subs").store.load(["a"]) == {}  # nothing was written
        assert component(engine, "subs")._staged == {}
    MemorySink.stores.pop(f"{tag}-out", None)


# -- one transaction when the stores share a database -------------------------------------------


def shared_db_topology(db_url: str, table: str) -> str:
    return json.dumps(
        {
            "name": "shared",
            "resources": {"db": {"url": db_url}},
            "spout": {"type": "squall.testing:ListSpout"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "subs", "type": "subscription", "store": "db", "table": f"{table}_state"},
            ],
            "sinks": [
                {
                    "id": "rows",
                    "type": "warehouse",
                    "resource": "db",
                    "table": table,
                    "columns": {"kind": "event_type", "status": "subscription.status"},
                }
            ],
        }
    )


class FailingCheckpoints(SqlCheckpointStore):
    def save_in(self, connection, stream, positions):
        raise TransientError("checkpoint store: injected failure")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rows_state_and_checkpoint_are_one_transaction(backend, tmp_path, request):
    table = f"t_{uuid.uuid4().hex[:10]}"
    url = (
        f"sqlite:///{tmp_path / 'w.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    topo = load_text(shared_db_topology(url, table))
    resources = Resources(topo.resources)
    good = SqlCheckpointStore(resources.sql("db"), "shared", resource="db", table=f"{table}_cp")
    bad = FailingCheckpoints(resources.sql("db"), "shared", resource="db", table=f"{table}_cp")
    db = resources.sql("db")
    try:
        engine = Engine(
            topo.plan,
            resources=resources,
            checkpointer=Checkpointer(bad),
            sleep=lambda s: None,
        )
        with engine:
            assert engine.checkpoint_in_transaction and engine._tx_states
            with pytest.raises(BatchFailed, match="injected"):
                engine.process(records_from(EVENTS[:2]))
        with db.connect() as conn:  # the checkpoint failed: neither rows nor state were kept
            assert conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar() == 0
            assert conn.execute(sa.text(f'SELECT count(*) FROM "{table}_state"')).scalar() == 0

        engine = Engine(topo.plan, resources=resources, checkpointer=Checkpointer(good))
        with engine:
            result = engine.process(records_from(EVENTS[:2]))
        assert good.load("test") == result.checkpoint
        with db.connect() as conn:
            assert conn.execute(
                sa.text(f'SELECT status FROM "{table}" ORDER BY kind')
            ).scalars().all() == ["subscribed", "unsubscribed"]
            assert (
                conn.execute(sa.text(f'SELECT status FROM "{table}_state"')).scalar()
                == "unsubscribed"
            )
    finally:
        with db.begin() as conn:
            for name in (table, f"{table}_state", f"{table}_cp"):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))
        resources.close()


# -- a database error that names one row ----------------------------------------------------------


def test_postgres_index_row_too_large_dead_letters_that_record_only(pg_url):
    """SQLSTATE 54000 on one row's indexed value used to fail every batch holding it."""
    table = f"t_{uuid.uuid4().hex[:10]}"
    tag = f"d{uuid.uuid4().hex[:6]}"
    topo = load_text(
        json.dumps(
            {
                "name": "poison-pg",
                "resources": {"db": {"url": pg_url}},
                "spout": {"type": "squall.testing:ListSpout"},
                "bolts": [{"id": "decode", "type": "json"}],
                "sinks": [
                    {
                        "id": "rows",
                        "type": "warehouse",
                        "resource": "db",
                        "table": table,
                        "columns": {
                            "label": {"path": "label", "index": True},
                            "n": {"path": "n", "type": "integer"},
                        },
                    },
                    {
                        "id": "dlq",
                        "type": "squall.testing:MemoryDeadLetterSink",
                        "name": f"{tag}-dlq",
                    },
                ],
            }
        )
    )
    huge = secrets.token_urlsafe(9000)  # incompressible: over btree's ~2.7 kB limit per index row
    payloads = [{"label": "ok", "n": i} for i in range(20)]
    payloads[7] = {"label": huge, "n": 7}
    engine = Engine(topo.plan)
    try:
        with engine:
            result = engine.process(records_from(payloads))
            db = engine.resources.sql("db")
            with db.connect() as conn:
                rows = conn.execute(sa.text(f'SELECT n FROM "{table}" ORDER BY n')).scalars().all()
        assert rows == [i for i in range(20) if i != 7]
        assert result.count(Outcome.DEAD_LETTERED) == 1 and result.ok
        dead = MemorySink.stores.pop(f"{tag}-dlq")
        assert [ev.value["n"] for ev in dead] == [7]
        assert dead[0].failure.component == "rows" and "SQLSTATE 54000" in dead[0].failure.reason
    finally:
        with sa.create_engine(
            pg_url.replace("postgresql://", "postgresql+psycopg2://")
        ).begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))


def test_two_resource_names_for_one_database_share_the_transaction_and_the_engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    doc = json.loads(shared_db_topology(url, "t"))
    doc["resources"] = {"warehouse": {"url": url}, "state": {"url": url}}
    doc["bolts"][1]["store"] = "state"
    doc["sinks"][0]["resource"] = "warehouse"
    engine = Engine(load_text(json.dumps(doc)).plan)
    with engine:
        assert engine._tx_states and engine._tx_sinks
        assert engine.resources.sql("warehouse") is engine.resources.sql("state")
        assert engine.process(records_from(EVENTS[:3])).ok
    other = json.loads(json.dumps(doc))
    other["resources"]["state"] = {"url": f"sqlite:///{tmp_path / 'two.db'}"}
    engine = Engine(load_text(json.dumps(other)).plan)
    with engine:
        assert (
            not engine._tx_states and engine._tx_sinks
        )  # the state commits after the rows, on its own
        assert engine.process(records_from(EVENTS[:3])).ok
