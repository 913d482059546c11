"""Adversarial review of 995b16b: sinks that hold, sink feedback, and the runners' changes.

Each test here fails on 995b16b and names what is wrong.
"""

from __future__ import annotations

import json
import uuid

from pydantic import Field

from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig
from squall.errors import TopologyError
from squall.event import Event
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.testing import MemorySink, memory_stores, records_from
from squall.topology.checkpoint import SqlCheckpointStore
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.topology.test_holding import engine_with_checkpoints

SHARD = "shardId-000000000000"
T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z, a minute boundary


class HeldConfig(ComponentConfig):
    roll_events: int = Field(1000)


class HeldSink(Sink):
    """A rolling sink: ``write_batch`` keeps events in a buffer (deduplicated by position);
    ``release`` moves them to ``MemorySink.stores[id]`` (the durable part)."""

    Config = HeldConfig

    def open(self, resources=None) -> None:
        self.durable: list[Event] = MemorySink.stores.setdefault(self.id, [])
        self.buffer: dict[tuple[str, str, str], Event] = {}

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        for ev in prepared.events:
            self.buffer.setdefault((ev.meta.shard_id, ev.meta.sequence_number, ev.event_id), ev)

    def holding(self) -> bool:
        return bool(self.buffer)

    def due(self) -> bool:
        return len(self.buffer) >= self.config.roll_events

    def release(self) -> None:
        self.durable.extend(self.buffer.values())
        self.buffer.clear()


class HeldTxSink(HeldSink):
    """The rolling buffer in a sink that writes in the batch's SQL transaction (it would COPY
    the rolled file in the transaction of the batch that releases it)."""

    def transaction_resource(self) -> str | None:
        return "db"


class HeldDeadLetterSink(HeldSink):
    """The same rolling buffer as a dead-letter sink (an S3 dead letter that rolls files)."""

    dead_letter = True


def with_checkpoints(spec: dict, **kwargs) -> tuple[Engine, SqlCheckpointStore, Resources]:
    return engine_with_checkpoints(json.dumps(spec), **kwargs)


def comp(engine: Engine, cid: str):
    return next(c for c in engine.components if c.id == cid)


# -- 1. state committed per batch while the sink holds: a window result is lost ------------------


def window_spec(tmp_path, name: str) -> dict:
    return {
        "name": name,
        "resources": {
            "db": {"url": f"sqlite:///{tmp_path / 'cp.db'}"},
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        },
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [
            {"id": "decode", "type": "json"},
            {
                "id": "win",
                "type": "window",
                "store": "state",
                "key": ["app"],
                "size": "1m",
                "aggregates": {"n": {"fn": "count"}},
                "table": f"w_{name}",
            },
        ],
        "sinks": [
            {"id": "lake", "type": f"{__name__}:HeldSink"},
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink"},
        ],
    }


def test_a_window_result_held_by_a_sink_survives_a_crash(tmp_path):
    """The window's state (window closed, shard mark) is committed per batch while the sink
    only holds the window's result. A crash loses the buffer; the source delivers the records
    again from the held checkpoint, but the window bolt recognises them by its shard mark (not
    counted again) and the window is closed in the store (not emitted again): the result is gone
    for good. Step 3 (state) must not run ahead of step 2 (durable sinks) for state whose
    replay does not reproduce the output."""
    name = f"w{uuid.uuid4().hex[:6]}"
    records = records_from(
        [
            {"app": "a", "timestamp": T0 + 1000},
            {"app": "a", "timestamp": T0 + 2000},
            {"app": "a", "timestamp": T0 + 120_000},  # the watermark passes the first minute
        ]
    )
    with memory_stores({}) as stores:
        engine, store, resources = with_checkpoints(window_spec(tmp_path, name), hold=True)
        with engine:
            # The fix: a sink downstream of a stateful bolt is released after every batch.
            assert engine.holding_sinks == []
            assert engine.process(records).ok
            assert not engine.holding  # the first minute's result is durable with the state
        resources.close()  # a crash: nothing held to lose

        engine, store, resources = with_checkpoints(window_spec(tmp_path, name), hold=True)
        with engine:
            assert engine.process(records).ok  # delivered again (at least once): adds nothing
            engine.release()
        resources.close()
        results = [ev.value for ev in stores["lake"] if ev.value.get("final")]
        assert [(r["window_start"], r["n"]) for r in results] == [("2024-05-01T10:00:00.000Z", 2)]


# -- 2. feedback staged twice after poison isolation in the sink's write --------------------------


class CountingConfig(ComponentConfig):
    pass


class FeedbackCounter(Bolt):
    """A stateful bolt counting the events it staged; ``committed`` holds what was committed."""

    Config = CountingConfig
    stateful = True
    committed: list[str] = []

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        self._staged = getattr(self, "_staged", []) + [
            ev.value["token"] for ev in batch if ev.value.get("event_type") == "unsubscribe"
        ]
        for ev in batch:
            out.emit(ev)
        return out

    def commit_state(self, covered, connection=None) -> None:
        FeedbackCounter.committed.extend(getattr(self, "_staged", []))

    def state_committed(self) -> None:
        self._staged = []

    def discard_state(self) -> None:
        self._staged = []


class PickyPush(Sink):
    """Raises on a record with ``poison`` (the engine isolates it); answers 'gone' (feedback)
    for tokens starting with 'dead'."""

    Config = CountingConfig

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult:
        if any(ev.value.get("poison") for ev in prepared.events):
            raise ValueError("the service refuses this payload")
        feedback = [
            Event(b"", ev.meta, None, ev.origin, {"event_type": "unsubscribe", "token": t})
            for ev in prepared.events
            if (t := ev.value.get("token", "")).startswith("dead")
        ]
        return WriteResult(feedback=feedback)

    def feedback_target(self) -> str | None:
        return "counter"


def test_feedback_is_staged_once_when_a_poison_record_is_isolated_in_the_write():
    """``_isolate_write`` writes the parts for real and stages their feedback; ``_write_sink``
    then writes the rest again and stages the rest's feedback a second time: every dead token
    of the batch is fed to the bolt twice (a counting state counts it twice)."""
    FeedbackCounter.committed = []
    spec = {
        "name": "fb",
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [
            {"id": "decode", "type": "json"},
            {"id": "counter", "type": f"{__name__}:FeedbackCounter"},
        ],
        "sinks": [
            {"id": "push", "type": f"{__name__}:PickyPush"},
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink"},
        ],
    }
    engine = Engine(load_text(json.dumps(spec)).plan, sleep=lambda s: None)
    with engine:
        result = engine.process(
            records_from(
                [{"token": "dead-1"}, {"token": "alive"}, {"token": "x", "poison": True}]
                + [{"token": "dead-2"}]
            )
        )
    assert result.ok
    assert sorted(FeedbackCounter.committed) == ["dead-1", "dead-2"]


# -- 3. a sink that holds but is a dead-letter sink (or written in the transaction) is ignored ---


def test_a_dead_letter_sink_that_holds_holds_the_checkpoint(tmp_path):
    """Holding is looked for among the data sinks outside the transaction only. A dead-letter
    sink that rolls files is never released and the checkpoint moves past the dead letters it
    holds: a crash then loses them (the record is neither committed nor dead-lettered)."""
    spec = {
        "name": f"dl{uuid.uuid4().hex[:6]}",
        "resources": {"db": {"url": f"sqlite:///{tmp_path / 'cp.db'}"}},
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [{"id": "decode", "type": "json"}],
        "sinks": [
            {"id": "rows", "type": "squall.testing:MemorySink"},
            {"id": "dlq", "type": f"{__name__}:HeldDeadLetterSink"},
        ],
    }
    engine, store, resources = with_checkpoints(spec, hold=True)
    try:
        with engine:
            result = engine.process([*records_from([{"n": 1}]), *records_from([b"{bad"], start=2)])
            assert result.ok
            assert comp(engine, "dlq").holding()  # the dead letter is in the buffer only
            assert store.load("test") == {}, "checkpoint saved past a held dead letter"
    except TopologyError:
        pass  # refusing such a sink at open is a fix too
    finally:
        resources.close()


def test_a_sink_written_in_the_transaction_that_holds_holds_the_checkpoint(tmp_path):
    """The same for a sink whose ``transaction_resource`` is the checkpoint's database: it is
    left out of the holders, never released, and the checkpoint is saved in the transaction
    past what it holds."""
    spec = {
        "name": f"tx{uuid.uuid4().hex[:6]}",
        "resources": {"db": {"url": f"sqlite:///{tmp_path / 'cp.db'}"}},
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [{"id": "decode", "type": "json"}],
        "sinks": [{"id": "lake", "type": f"{__name__}:HeldTxSink"}],
    }
    engine, store, resources = with_checkpoints(spec, hold=True)
    try:
        with engine:
            assert engine.process(records_from([{"n": 1}, {"n": 2}])).ok
            assert comp(engine, "lake").holding()
            assert store.load("test") == {}, "checkpoint saved past what the sink holds"
    except TopologyError:
        pass  # refusing such a sink at open is a fix too
    finally:
        resources.close()
