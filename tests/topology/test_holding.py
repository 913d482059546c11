"""Sinks that hold what they wrote across batches, and sink feedback into a stateful bolt.

- A holding sink (files rolled by size or age) keeps events that are not yet durable: the engine
  then saves no checkpoint past them until the sink released (made them durable). A crash loses
  only the buffer: the source delivers its records again from the held checkpoint.
- A runner that cannot hold (Lambda, the default) has the engine release after every batch.
- Feedback: events a sink's answers call for are staged in a stateful bolt and committed with
  the batch's state.
"""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from pydantic import Field

from squall.component import ComponentConfig
from squall.errors import BatchFailed, TopologyError, TransientError
from squall.event import Event, Record
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.testing import MemorySink, memory_stores, records_from
from squall.topology.checkpoint import Checkpointer, SqlCheckpointStore
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.resources import Resources

SHARD = "shardId-000000000000"


class RollingConfig(ComponentConfig):
    roll_events: int = Field(3)
    fail_release: int = Field(0, description="Release raises TransientError this many times.")


class RollingSink(Sink):
    """Keeps events in a buffer; ``release`` moves them to the durable list ``MemorySink.stores``."""

    Config = RollingConfig

    def open(self, resources=None) -> None:
        self.durable: list[Event] = MemorySink.stores.setdefault(self.id, [])
        self.buffer: dict[tuple[str, str], Event] = {}
        self.releases = 0
        self.failures_left = self.config.fail_release

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        for ev in prepared.events:  # by position: a batch delivered again adds nothing
            self.buffer.setdefault((ev.meta.shard_id, ev.meta.sequence_number), ev)

    def holding(self) -> bool:
        return bool(self.buffer)

    def due(self) -> bool:
        return len(self.buffer) >= self.config.roll_events

    def release(self) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise TransientError("lake: injected outage")
        self.durable.extend(
            sorted(self.buffer.values(), key=lambda ev: int(ev.meta.sequence_number))
        )
        self.buffer.clear()
        self.releases += 1


def topology(db_url: str, *, sinks: list[dict] | None = None, **rolling) -> str:
    return json.dumps(
        {
            "name": f"hold{uuid.uuid4().hex[:6]}",
            "resources": {"db": {"url": db_url}},
            "spout": {"type": "squall.testing:ListSpout"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [{"id": "decode", "type": "json"}],
            "sinks": sinks
            or [
                {"id": "lake", "type": f"{__name__}:RollingSink", **rolling},
                {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink"},
            ],
        }
    )


def engine_with_checkpoints(yaml: str, **kwargs) -> tuple[Engine, SqlCheckpointStore, Resources]:
    topo = load_text(yaml)
    resources = Resources(topo.resources)
    store = SqlCheckpointStore(
        resources.sql("db"), topo.name, resource="db", table=f"cp_{uuid.uuid4().hex[:8]}"
    )
    engine = Engine(
        topo.plan,
        resources=resources,
        checkpointer=Checkpointer(store),
        sleep=lambda s: None,
        **kwargs,
    )
    return engine, store, resources


def lake(engine: Engine) -> RollingSink:
    return next(c for c in engine.components if c.id == "lake")


def seqs(events) -> list[str]:
    return [ev.meta.sequence_number for ev in events]


def test_the_checkpoint_waits_for_what_a_sink_holds_then_covers_it(tmp_path):
    engine, store, resources = engine_with_checkpoints(
        topology(f"sqlite:///{tmp_path / 'cp.db'}", roll_events=4), hold=True
    )
    with memory_stores({}), engine:
        first = engine.process(records_from([{"n": i} for i in range(3)], start=1))
        assert first.ok and first.checkpoint == {}  # held: nothing durable yet
        assert store.load("test") == {} and engine.holding
        second = engine.process(records_from([{"n": i} for i in range(3)], start=4))
        assert second.checkpoint[SHARD].sequence_number == "6"  # due at 6 events: released
        assert store.load("test")[SHARD].sequence_number == "6"
        assert seqs(lake(engine).durable) == ["1", "2", "3", "4", "5", "6"]
        assert not engine.holding
    resources.close()


def test_a_crash_while_holding_loses_only_the_buffer_and_the_replay_restores_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    yaml = topology(url, roll_events=4)
    records = records_from([{"n": i} for i in range(6)], start=1)
    with memory_stores({}):
        engine, store, resources = engine_with_checkpoints(yaml, hold=True)
        with engine:
            engine.process(records[:2])
            assert engine.process(records[2:4]).checkpoint[SHARD].sequence_number == "4"
            assert engine.process(records[4:5]).checkpoint == {}
            assert lake(engine).holding()
        # closed without release (a crash): the held checkpoint is the last durable one
        assert store.load("test")[SHARD].sequence_number == "4"
        durable = list(lake(engine).durable)
        assert seqs(durable) == ["1", "2", "3", "4"]
        resources.close()

        engine, store, resources = engine_with_checkpoints(yaml, hold=True)
        with engine:  # the source resumes after 4: 5 comes again, nothing is lost or doubled
            engine.process(records[4:])
            assert engine.release()[SHARD].sequence_number == "6"
        assert seqs(lake(engine).durable) == ["1", "2", "3", "4", "5", "6"]
        resources.close()


def test_a_runner_that_cannot_hold_has_every_batch_released(tmp_path):
    engine, store, resources = engine_with_checkpoints(
        topology(f"sqlite:///{tmp_path / 'cp.db'}", roll_events=100)
    )
    assert engine.hold is False  # the default: Lambda's
    with memory_stores({}), engine:
        result = engine.process(records_from([{"n": 1}, {"n": 2}]))
        assert result.checkpoint[SHARD].sequence_number == "2"
        assert seqs(lake(engine).durable) == ["1", "2"] and not engine.holding
    resources.close()


def test_a_release_that_stays_down_fails_the_batch_and_checkpoints_nothing(tmp_path):
    engine, store, resources = engine_with_checkpoints(
        topology(f"sqlite:///{tmp_path / 'cp.db'}", roll_events=2, fail_release=5), hold=True
    )
    with memory_stores({}), engine:
        with pytest.raises(BatchFailed, match="injected outage"):
            engine.process(records_from([{"n": 1}, {"n": 2}]))
        assert store.load("test") == {} and lake(engine).durable == []
        lake(engine).failures_left = 0
        # the source delivers the batch again: the buffer drops what it holds, then rolls
        result = engine.process(records_from([{"n": 1}, {"n": 2}]))
        assert result.checkpoint[SHARD].sequence_number == "2"
        assert seqs(lake(engine).durable) == ["1", "2"]
    resources.close()


def test_tick_releases_an_idle_due_sink_and_finish_releases_at_end_of_input(tmp_path):
    engine, store, resources = engine_with_checkpoints(
        topology(f"sqlite:///{tmp_path / 'cp.db'}", roll_events=3), hold=True
    )
    with memory_stores({}), engine:
        engine.process(records_from([{"n": 1}, {"n": 2}]))
        assert engine.tick() == {}  # not due: keeps holding
        lake(engine).config = lake(engine).config.model_copy(update={"roll_events": 2})
        assert engine.tick()[SHARD].sequence_number == "2"  # due now (its age, in a real sink)
        assert store.load("test")[SHARD].sequence_number == "2"
        engine.process(records_from([{"n": 3}], start=3))
        assert engine.holding
        assert engine.release()[SHARD].sequence_number == "3"
        assert store.load("test")[SHARD].sequence_number == "3"
        assert engine.release() == {}  # nothing held: nothing to do
    resources.close()


def test_a_record_failed_elsewhere_comes_again_and_reaches_the_holding_sink(tmp_path):
    """The buffer drops re-deliveries by position, not "at or before": a record that another
    sink failed comes again after later ones were held, and must not be skipped."""

    class Once(MemorySink):
        def write_batch(self, prepared, ctx):
            seen = getattr(self, "seen", 0)
            self.seen = seen + 1
            failed = [ev for ev in prepared.events if seen == 0 and ev.value.get("flaky")]
            self.store.extend(ev for ev in prepared.events if ev not in failed)
            return WriteResult(failed=failed)

    globals()["Once"] = Once
    yaml = topology(
        f"sqlite:///{tmp_path / 'cp.db'}",
        sinks=[
            {"id": "lake", "type": f"{__name__}:RollingSink", "roll_events": 10},
            {"id": "rows", "type": f"{__name__}:Once"},
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink"},
        ],
    )
    engine, store, resources = engine_with_checkpoints(yaml, hold=True)
    records = records_from([{"n": 1}, {"n": 2, "flaky": True}, {"n": 3}])
    with memory_stores({}), engine:
        first = engine.process(records)
        assert not first.ok and first.checkpoint == {}
        # the local runner stops here; a restart delivers from the failed record on
        assert engine.process(records[1:]).ok
        engine.release()
        assert seqs(lake(engine).durable) == ["1", "2", "3"]
        assert store.load("test")[SHARD].sequence_number == "3"
    resources.close()


def test_held_checkpoint_in_the_shared_transaction(tmp_path):
    """When the checkpoint is written in the rows' transaction, holding saves nothing there;
    the release saves the positions held back."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    table = f"t_{uuid.uuid4().hex[:8]}"
    yaml = topology(
        url,
        sinks=[
            {"id": "lake", "type": f"{__name__}:RollingSink", "roll_events": 3},
            {
                "id": "rows",
                "type": "warehouse",
                "resource": "db",
                "table": table,
                "columns": {"n": "n"},
            },
        ],
    )
    engine, store, resources = engine_with_checkpoints(yaml, hold=True)
    with memory_stores({}), engine:
        assert engine.checkpoint_in_transaction
        assert engine.process(records_from([{"n": 1}, {"n": 2}])).checkpoint == {}
        assert store.load("test") == {}
        with resources.sql("db").connect() as conn:  # the rows are committed all the same
            assert conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar() == 2
        result = engine.process(records_from([{"n": 3}], start=3))
        assert result.checkpoint[SHARD].sequence_number == "3"
        assert store.load("test")[SHARD].sequence_number == "3"
    resources.close()


# -- feedback ---------------------------------------------------------------------------------


class GoneTokensConfig(ComponentConfig):
    state: str = Field(description="The stateful bolt that receives the unsubscribes.")


class GoneTokens(Sink):
    """Answers 'gone' for tokens starting with 'dead': they come back as unsubscribe events."""

    Config = GoneTokensConfig

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult:
        feedback = []
        for ev in prepared.events:
            token = ev.value.get("device_token", "")
            if token.startswith("dead"):
                value = {
                    "event_type": "unsubscribe",
                    "device_token": token,
                    "timestamp": ev.value["timestamp"],
                }
                feedback.append(Event(b"", ev.meta, None, ev.origin, value))
        return WriteResult(feedback=feedback)

    def feedback_target(self) -> str | None:
        return self.config.state


def feedback_topology(state_url: str, target: str = "subs") -> str:
    return json.dumps(
        {
            "name": "feedback",
            "resources": {"state": {"url": state_url}},
            "spout": {"type": "squall.testing:ListSpout"},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "subs", "type": "subscription", "store": "state"},
            ],
            "sinks": [{"id": "push", "type": f"{__name__}:GoneTokens", "state": target}],
        }
    )


def test_sink_feedback_is_committed_with_the_batchs_state(tmp_path):
    engine = Engine(load_text(feedback_topology(f"sqlite:///{tmp_path / 's.db'}")).plan)
    events = [
        {"event_type": "subscribe", "device_token": t, "timestamp": "2024-05-01T10:00:00Z"}
        for t in ("alive", "dead-1")
    ] + [
        {"event_type": "campaign", "device_token": t, "timestamp": "2024-05-01T11:00:00Z"}
        for t in ("alive", "dead-1")
    ]
    with engine:
        assert engine.process(records_from(events)).ok
        subs = next(c for c in engine.components if c.id == "subs")
        stored = subs.store.load(["alive", "dead-1"])
        assert stored["alive"].status == "subscribed"
        assert stored["dead-1"].status == "unsubscribed"


def test_feedback_to_a_bolt_that_is_not_stateful_is_refused_at_open(tmp_path):
    engine = Engine(load_text(feedback_topology(f"sqlite:///{tmp_path / 's.db'}", "decode")).plan)
    with pytest.raises(TopologyError, match="sink 'push': feedback goes to 'decode'.*subs"):
        engine.open()
    engine.close()


# -- the end of input is named after its input ------------------------------------------------


class EndsConfig(ComponentConfig):
    pass


class Ends(Sink):
    """Keeps the metadata of what reached it (a window's end-of-input results would)."""

    Config = EndsConfig

    def open(self, resources=None) -> None:
        self.metas = MemorySink.stores.setdefault(self.id, [])

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        self.metas.extend(ev.meta for ev in prepared.events)


class Flusher(__import__("squall.bolts.base", fromlist=["Bolt"]).Bolt):
    """Emits one event built on the end of input (as the window bolt does for open windows)."""

    Config = EndsConfig

    def process(self, batch):
        from squall.bolts.base import Output

        out = Output(self.id)
        for ev in batch:
            out.drop(ev)
        return out

    def flush(self, end, final):
        from squall.bolts.base import Output

        out = Output(self.id)
        out.emit(Event(b"", end.meta, f"result-{end.meta.fingerprint}", end.origin, {}))
        return out


def test_the_end_of_input_carries_the_inputs_fingerprint(tmp_path):
    """What a bolt emits at the end of input is built on its unit; its metadata names the input
    (the running digest of a file or stdin), so two different files' end results never share a
    name in a sink that names objects by position (s3), and the same file's always do."""
    from squall.testing import run_topology

    spec = json.dumps(
        {
            "name": "ends",
            "spout": {"type": "squall.testing:ListSpout"},
            "bolts": [{"id": "flush", "type": f"{__name__}:Flusher"}],
            "sinks": [{"id": "ends", "type": f"{__name__}:Ends"}],
        }
    )
    topo = load_text(spec)

    def end_meta(payloads: list[bytes]):
        records = [  # a running digest of the input, as the file spout gives
            Record(r.data, r.meta._replace(fingerprint=b"|".join(payloads[: i + 1]).hex()))
            for i, r in enumerate(records_from(payloads))
        ]
        with memory_stores({}) as stores:
            run_topology(topo, records, end_of_input=True)
            (meta,) = stores["ends"]
        return meta

    a, b, a_again = end_meta([b"1", b"2"]), end_meta([b"1", b"3"]), end_meta([b"1", b"2"])
    assert a.shard_id == "<end of input>" and a.stream == "test"
    assert a.fingerprint != b.fingerprint and a == a_again
