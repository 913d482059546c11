"""Helpers for testing topologies and components: list spout, memory sink, ``run_topology``.

from squall.testing import run_topology, records_from
result = run_topology("topology.yaml", records_from([{"event_type": "click"}]))
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from squall import exact_json
from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig
from squall.errors import TransientError
from squall.event import Event, Record, RecordMeta
from squall.secrets import aws_secrets
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.spouts.base import Spout
from squall.topology.executor import Engine
from squall.topology.graph import Plan
from squall.topology.loader import load, load_text
from squall.topology.model import Topology
from squall.topology.outcomes import BatchResult


def records_from(
    payloads: Iterable[Any],
    *,
    stream: str = "test",
    shard_id: str = "shardId-000000000000",
    start: int = 1,
    partition_key: str = "pk",
) -> list[Record]:
    """Records with increasing sequence numbers; dicts/lists become JSON, bytes pass as they are."""
    out = []
    for i, p in enumerate(payloads):
        data = p if isinstance(p, bytes) else exact_json.dumps(p)  # (a NumPy float64: a number)
        out.append(Record(data, RecordMeta(stream, shard_id, str(start + i), 0, partition_key)))
    return out


class ListSpoutConfig(ComponentConfig):
    records: list[Any] = Field(default_factory=list, description="Payloads to emit (JSON values).")


class ListSpout(Spout):
    """A spout over an in-memory list, for tests; ``committed`` keeps every checkpoint it was given."""

    Config = ListSpoutConfig
    summary = "Emit a fixed list of payloads (tests)."

    def __init__(self, config: ListSpoutConfig, context):
        super().__init__(config, context)
        self.records = records_from(config.records)
        self.committed: list[dict] = []

    def read(self, max_records: int) -> Iterator[list[Record]]:
        for i in range(0, len(self.records), max_records):
            yield self.records[i : i + max_records]
            if self.stopping:
                return

    def commit(self, checkpoint: dict) -> dict:
        if checkpoint:
            self.committed.append(dict(checkpoint))
        return {}


_scopes: list[dict[str, list[Event]]] = []
_scopes_lock = threading.Lock()


@contextmanager
def memory_stores(stores: dict[str, list[Event]] | None = None) -> Iterator[dict[str, list[Event]]]:
    """The caller's stores for the memory sinks opened inside the block: a sink named ``name``
    appends to ``stores[name]`` (a list the caller put there is used as it is). Blocks nest;
    the innermost one is used, from any thread. ``MemorySink.stores`` reads the same dict.

        with memory_stores() as stores:
            run_topology("topology.yaml", records)
        assert len(stores["out"]) == 3
    """
    own = {} if stores is None else stores
    with _scopes_lock:
        _scopes.append(own)
    try:
        yield own
    finally:
        with _scopes_lock:
            _scopes.remove(own)


class _CurrentStores:
    """``MemorySink.stores``: the innermost ``memory_stores`` block's dict (no store of its own)."""

    def __get__(self, obj: object, owner: type) -> dict[str, list[Event]]:
        with _scopes_lock:
            if not _scopes:
                raise LookupError(
                    "no memory stores: run memory sinks inside `with squall.testing.memory_stores()`"
                )
            return _scopes[-1]


class MemorySinkConfig(ComponentConfig):
    name: str | None = Field(
        None, description="Key in the caller's memory_stores() (default: the sink id)."
    )


class MemorySink(Sink):
    """Appends written events to the caller's list: ``stores[name]`` of the innermost
    ``memory_stores(stores)`` block open when the sink opens. Outside any block it keeps them
    in a list of its own (``sink.store``)."""

    Config = MemorySinkConfig
    summary = "Keep events in memory (tests)."
    stores = _CurrentStores()

    def open(self, resources=None) -> None:
        with _scopes_lock:
            scope = _scopes[-1] if _scopes else None
        name = self.config.name or self.id
        self.store: list[Event] = scope.setdefault(name, []) if scope is not None else []

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        self.store.extend(prepared.events)


@dataclass
class TopologyRun:
    """Results of ``run_topology``: one BatchResult per batch, plus the engine for its stats."""

    results: list[BatchResult]
    engine: Engine
    outcomes: list = field(default_factory=list)


def topology_from(source: str | Path | Topology) -> Topology:
    if isinstance(source, Topology):
        return source
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
    ):
        return load(source, secrets=aws_secrets())
    return load_text(str(source), secrets=aws_secrets())


def run_topology(
    source: str | Path | Topology,
    records: list[Record],
    *,
    batch_size: int | None = None,
    end_of_input: bool = False,
    **engine_kwargs: Any,
) -> TopologyRun:
    """Run records through a topology (YAML path, YAML text or loaded model) with the bare engine.

    ``end_of_input``: then end the input as ``squall run`` does at the end of a file
    (``Engine.finish``: windows still open are emitted); its batch's one unit (shard
    ``<end of input>``) is in the outcomes."""
    topo = topology_from(source)
    plan: Plan = topo.plan
    size = batch_size or topo.settings.batch_size
    engine = Engine(plan, **engine_kwargs)
    results = []
    with engine:
        for i in range(0, len(records), size):
            results.append(engine.process(records[i : i + size]))
        if end_of_input and (last := engine.finish()) is not None:
            results.append(last)
    return TopologyRun(results, engine, [o for r in results for o in r.records])


class MemoryDeadLetterSink(MemorySink):
    """A dead-letter sink in memory (tests)."""

    summary = "Keep failed events in memory (tests)."
    dead_letter = True


class FaultyBoltConfig(ComponentConfig):
    transient_failures: int = Field(
        0, ge=0, description="Raise TransientError on this many calls first."
    )


class FaultyBolt(Bolt):
    """Fails what the payload asks for: ``{"fail": "reason"}`` fails the event, ``{"drop": true}`` drops it.

    Raises ``TransientError`` on its first ``transient_failures`` calls, before touching any event.
    """

    Config = FaultyBoltConfig
    summary = "Inject record failures, drops and transient errors (tests)."

    def __init__(self, config: FaultyBoltConfig, context):
        super().__init__(config, context)
        self.calls = 0

    def process(self, batch: list[Event]) -> Output:
        self.calls += 1
        if self.calls <= self.config.transient_failures:
            raise TransientError(f"injected transient failure {self.calls}")
        out = Output(self.id)
        for ev in batch:
            v = ev.value if isinstance(ev.value, dict) else {}
            if v.get("fail"):
                out.fail(ev, str(v["fail"]))
            elif v.get("drop"):
                out.drop(ev)
            else:
                out.emit(ev)
        return out


class FaultySinkConfig(MemorySinkConfig):
    transient_failures: int = Field(
        0, ge=0, description="Raise TransientError on this many writes first."
    )


class FaultySink(MemorySink):
    """A memory sink that fails writes transiently, and events whose payload has ``"sink_fail"`` (partially)."""

    Config = FaultySinkConfig
    summary = "A memory sink with injected transient and partial failures (tests)."

    def open(self, resources=None) -> None:
        super().open(resources)
        self.calls = 0

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult:
        self.calls += 1
        if self.calls <= self.config.transient_failures:
            raise TransientError(f"injected transient write failure {self.calls}")
        failed = [
            ev for ev in prepared.events if isinstance(ev.value, dict) and ev.value.get("sink_fail")
        ]
        bad = {id(ev) for ev in failed}
        self.store.extend(ev for ev in prepared.events if id(ev) not in bad)
        return WriteResult(failed=failed)
