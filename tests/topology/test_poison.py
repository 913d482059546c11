"""Poison records: whatever raises on one record is that record's failure, never the batch's.

The engine isolates the records that make a component call raise (bolt ``process``, sink
``prepare`` and ``write_batch``, dead-letter writes) by splitting the call, dead-letters exactly
those with the component and the reason, and commits the rest. Transient errors still retry the
batch; a sink broken for every record (``SinkError``) still fails it.
"""

from __future__ import annotations

import functools
import uuid
import weakref

import pytest
from pydantic import Field

from squall.bolts.base import Bolt, Output, RecordBolt
from squall.component import ComponentConfig
from squall.errors import BatchFailed, RecordError, SinkError
from squall.event import Event, Failure
from squall.sinks.base import Prepared, WriteContext, WriteResult
from squall.testing import (
    MemoryDeadLetterSink,
    MemorySink,
    records_from,
    run_topology,
    topology_from,
)
from squall.topology.outcomes import Outcome

CALLS: dict[str, list[int]] = {}


class TouchyConfig(ComponentConfig):
    trigger: str = Field("boom", description="Payload key that makes the call raise.")
    error: str = Field("type", description="type | record | sink")


def _raise(kind: str, what: str) -> None:
    if kind == "record":
        raise RecordError(f"{what} refused")
    if kind == "sink":
        raise SinkError(f"{what}: no such table")
    raise TypeError(f"cannot handle {what}")


#: The line of ``_raise``'s TypeError (a reason names it).
RAISED_AT = _raise.__code__.co_firstlineno + 5


class TouchyBolt(Bolt):
    """A batch bolt with a bug: the whole call raises when any event carries the trigger."""

    Config = TouchyConfig

    def process(self, batch: list[Event]) -> Output:
        CALLS.setdefault(self.id, []).append(len(batch))
        out = Output(self.id)
        for ev in batch:
            if self.config.trigger in ev.value:
                _raise(self.config.error, f"event {ev.value['i']}")
            ev.value["seen_by"] = self.id
            out.emit(ev)
        return out


class TouchySinkConfig(TouchyConfig):
    name: str | None = None
    stage: str = Field("write", description="prepare | write")


class TouchySink(MemorySink):
    """A memory sink whose whole write (or prepare) raises when any event carries the trigger."""

    Config = TouchySinkConfig

    def prepare(self, events: list[Event]) -> Prepared:
        if self.config.stage == "prepare" and any(self.config.trigger in ev.value for ev in events):
            _raise(self.config.error, "rows")
        return Prepared(list(events))

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        CALLS.setdefault(self.id, []).append(len(prepared.events))
        if self.config.stage == "write" and any(
            self.config.trigger in ev.value for ev in prepared.events
        ):
            _raise(self.config.error, "rows")
        self.store.extend(prepared.events)


class PickyDeadLetterSink(MemoryDeadLetterSink):
    """A dead-letter sink that cannot write one particular record, even alone."""

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        if any(
            isinstance(ev.value, dict) and ev.value.get("undeliverable") for ev in prepared.events
        ):
            raise ValueError("cannot serialise this dead letter")
        self.store.extend(prepared.events)


def topology(
    tag: str, *, bolt: str = "", sink: str = "", dlq: str = "squall.testing:MemoryDeadLetterSink"
) -> str:
    here = __name__
    bolts = "  - {id: decode, type: json}\n"
    if bolt:
        bolts += f"  - {{id: touchy, type: '{here}:TouchyBolt', {bolt}}}\n"
    if sink:
        out = f"  - {{id: out, type: '{here}:TouchySink', name: {tag}-out, {sink}}}\n"
    else:
        out = f"  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}\n"
    return f"""
name: poison
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
{bolts}sinks:
{out}  - {{id: dlq, type: '{dlq}', name: {tag}-dlq}}
"""


def payloads(n: int, poison: set[int], key: str = "boom") -> list[dict]:
    return [{"i": i, key: True} if i in poison else {"i": i} for i in range(n)]


@pytest.fixture
def tag():
    name = f"p{uuid.uuid4().hex[:8]}"
    yield name
    for suffix in ("out", "dlq"):
        MemorySink.stores.pop(f"{name}-{suffix}", None)
    CALLS.clear()


def outcome_of(run) -> dict[int, Outcome]:
    return {o.index: o.outcome for o in run.outcomes}


@pytest.mark.parametrize("error", ["type", "record"])
def test_a_bolt_that_raises_on_one_record_dead_letters_only_that_record(tag, error):
    run = run_topology(
        topology(tag, bolt=f"error: {error}"), records_from(payloads(40, {17})), batch_size=40
    )
    out, dlq = MemorySink.stores[f"{tag}-out"], MemorySink.stores[f"{tag}-dlq"]
    assert sorted(ev.value["i"] for ev in out) == [i for i in range(40) if i != 17]
    assert all(ev.value["seen_by"] == "touchy" for ev in out)
    assert [ev.value["i"] for ev in dlq] == [17]
    failure = dlq[0].failure
    assert failure.component == "touchy"
    if error == "type":  # a bug: with where in the bolt's code it raised
        assert failure.reason.startswith(
            f"TypeError: cannot handle event 17 (at {__file__}, line "
        ) and failure.reason.endswith(
            ", in process; raised at " + f"{__file__}, line {RAISED_AT}, in _raise)"
        )
    else:  # a RecordError's reason, written on purpose, as it is
        assert failure.reason == "event 17 refused"
    assert outcome_of(run)[17] is Outcome.DEAD_LETTERED
    assert run.results[0].checkpoint["shardId-000000000000"].sequence_number == "40"


class PartialBolt(TouchyBolt):
    """``process`` a ``functools.partialmethod``: a callable with no ``__code__`` of its own."""

    def _process(self, label: str, batch: list[Event]) -> Output:
        out = Output(self.id)
        for ev in batch:
            if self.config.trigger in ev.value:
                _raise(self.config.error, f"{label} {ev.value['i']}")
            out.emit(ev)
        return out

    process = functools.partialmethod(_process, "partial")


def test_a_bolt_whose_process_has_no_code_of_its_own_still_dead_letters_the_record(tag):
    """Naming where it raised looked up ``process.__code__``: a ``partialmethod`` has none, and
    the AttributeError took the engine's isolation down, where the record was dead-lettered."""
    source = topology(tag, bolt="error: type").replace(":TouchyBolt'", ":PartialBolt'")
    run = run_topology(source, records_from(payloads(8, {5})), batch_size=8)
    out, dlq = MemorySink.stores[f"{tag}-out"], MemorySink.stores[f"{tag}-dlq"]
    assert [ev.value["i"] for ev in out] == [0, 1, 2, 3, 4, 6, 7]
    assert [ev.value["i"] for ev in dlq] == [5]
    # the first frame of the bolt's own code (the partial's function), then where it raised
    line = PartialBolt._process.__code__.co_firstlineno + 4
    assert dlq[0].failure.reason == (
        f"TypeError: cannot handle partial 5 (at {__file__}, line {line}, in _process; "
        f"raised at {__file__}, line {RAISED_AT}, in _raise)"
    )
    assert outcome_of(run)[5] is Outcome.DEAD_LETTERED


def test_several_poison_records_are_all_found_and_the_order_of_the_rest_is_kept(tag):
    poison = {0, 5, 6, 31, 63}
    run_topology(
        topology(tag, bolt="error: type"), records_from(payloads(64, poison)), batch_size=64
    )
    out, dlq = MemorySink.stores[f"{tag}-out"], MemorySink.stores[f"{tag}-dlq"]
    assert [ev.value["i"] for ev in out] == [i for i in range(64) if i not in poison]
    assert sorted(ev.value["i"] for ev in dlq) == sorted(poison)


def test_a_clean_batch_costs_one_call(tag):
    run_topology(
        topology(tag, bolt="error: type", sink="error: type"),
        records_from(payloads(50, set())),
        batch_size=50,
    )
    assert CALLS == {"touchy": [50], "out": [50]}


def test_isolation_splits_in_halves(tag):
    run_topology(topology(tag, bolt="error: type"), records_from(payloads(64, {40})), batch_size=64)
    # 64 fails, then halves: 32 ok, 32 fails, 16 ok, 16 fails, 8 fails / 8 ok, ... down to one.
    calls = CALLS["touchy"]
    assert calls[0] == 64 and calls.count(1) == 2 and len(calls) == 1 + 2 * 6


@pytest.mark.parametrize("stage", ["prepare", "write"])
def test_a_sink_that_raises_on_one_record_dead_letters_only_that_record(tag, stage):
    run = run_topology(
        topology(tag, sink=f"stage: {stage}, error: record"),
        records_from(payloads(30, {3})),
        batch_size=30,
    )
    out, dlq = MemorySink.stores[f"{tag}-out"], MemorySink.stores[f"{tag}-dlq"]
    assert sorted({ev.value["i"] for ev in out}) == [i for i in range(30) if i != 3]
    assert [(ev.value["i"], ev.failure.component, ev.failure.reason) for ev in dlq] == [
        (3, "out", "rows refused")
    ]
    assert (
        run.results[0].count(Outcome.COMMITTED) == 29
        and run.results[0].count(Outcome.DEAD_LETTERED) == 1
    )


def test_a_sink_broken_for_every_record_fails_the_batch_not_each_record(tag):
    with pytest.raises(BatchFailed, match="no such table"):
        run_topology(
            topology(tag, sink="error: sink"), records_from(payloads(10, {2})), batch_size=10
        )
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []


def test_a_dead_letter_that_cannot_be_written_fails_that_record_only(tag):
    dlq = f"{__name__}:PickyDeadLetterSink"
    records = records_from(
        [{"i": 0}, {"i": 1, "boom": True}, {"i": 2, "boom": True, "undeliverable": True}, {"i": 3}]
    )
    run = run_topology(topology(tag, bolt="error: type", dlq=dlq), records, batch_size=4)
    result = run.results[0]
    assert [o.outcome for o in result.records] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.FAILED,
        Outcome.HELD,  # after the failed one: it comes again with it, so it is not written now
    ]
    assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [0]
    assert result.failed[0].component == "dlq"
    # The checkpoint stops before the record that has nowhere to go: it is delivered again.
    assert result.checkpoint["shardId-000000000000"].sequence_number == "2"


class DepthBolt(Bolt):
    """Measures payload depth recursively, as naive code does."""

    Config = ComponentConfig

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        for ev in batch:
            ev.value["depth"] = _depth(ev.value)
            out.emit(ev)
        return out


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)  # two frames a level: a generator
    return 0


def test_a_payload_nested_a_thousand_deep_is_isolated_with_a_bounded_reason(tag):
    """orjson accepts 1,024 levels; Python code that recurses over them hits RecursionError.
    (The json bolt's own ``max_depth`` would refuse it first: raised here to let it through.)"""
    deep = b'{"i": 1, "x": ' + b"[" * 900 + b"]" * 900 + b"}"
    yaml = topology(tag).replace(
        "  - {id: decode, type: json}\n",
        "  - {id: decode, type: json, max_depth: 1000}\n"
        f"  - {{id: depth, type: '{__name__}:DepthBolt'}}\n",
    )
    run = run_topology(yaml, records_from([{"i": 0}, deep, {"i": 2}]), batch_size=3)
    out, dlq = MemorySink.stores[f"{tag}-out"], MemorySink.stores[f"{tag}-dlq"]
    assert [(ev.value["i"], ev.value["depth"]) for ev in out] == [(0, 1), (2, 1)]
    assert len(dlq) == 1 and dlq[0].failure.component == "depth"
    assert dlq[0].failure.reason.startswith("RecursionError: maximum recursion depth exceeded")
    assert [o.outcome for o in run.results[0].records] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]


class RefusingSink(MemorySink):
    """Takes every event but those marked ``refuse``, which it refuses for good (like an HTTP 400)."""

    Config = TouchySinkConfig

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult:
        refused = [ev for ev in prepared.events if ev.value.get("refuse")]
        for ev in refused:
            ev.failure = Failure(self.id, "HTTP 400: bad device token")
        self.store.extend(ev for ev in prepared.events if ev not in refused)
        return WriteResult(rejected=refused)


def test_events_a_sink_refuses_at_write_time_are_dead_lettered_not_delivered_again(tag):
    yaml = topology(tag).replace("'squall.testing:MemorySink'", f"'{__name__}:RefusingSink'")
    records = records_from([{"i": 0}, {"i": 1, "refuse": True}, {"i": 2}])
    run = run_topology(yaml, records, batch_size=3)
    result = run.results[0]
    assert [o.outcome for o in result.records] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    assert result.ok and result.checkpoint["shardId-000000000000"].sequence_number == "3"
    dlq = MemorySink.stores[f"{tag}-dlq"]
    assert [(ev.value["i"], ev.failure.component, ev.failure.reason) for ev in dlq] == [
        (1, "out", "HTTP 400: bad device token")
    ]


class OverflowBolt(Bolt):
    """Converts a payload timestamp the naive way: a huge value raises OSError (EOVERFLOW)."""

    Config = ComponentConfig

    def process(self, batch: list[Event]) -> Output:
        import datetime

        out = Output(self.id)
        for ev in batch:
            ev.value["when"] = datetime.datetime.fromtimestamp(
                ev.value["t"], datetime.UTC
            ).isoformat()
            out.emit(ev)
        return out


def test_an_os_error_caused_by_one_records_value_is_that_records_not_the_machines(tag):
    yaml = topology(tag).replace(
        "  - {id: decode, type: json}\n",
        f"  - {{id: decode, type: json}}\n  - {{id: when, type: '{__name__}:OverflowBolt'}}\n",
    )
    run = run_topology(
        yaml,
        records_from([{"i": 0, "t": 0}, {"i": 1, "t": -1e18}, {"i": 2, "t": 60}]),
        batch_size=3,
    )
    assert [o.outcome for o in run.results[0].records] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    assert "Errno 75" in MemorySink.stores[f"{tag}-dlq"][0].failure.reason


class PlacedOutage(Bolt):
    """Raises, once, a TransientError that names its place as the stores' errors do."""

    summary = "an outage naming its place"
    calls = 0

    def process(self, batch):
        type(self).calls += 1
        if type(self).calls == 1:
            from squall.errors import TransientError

            raise TransientError(f"{self.id}: connection refused")
        out = Output(self.id)
        out.emit_all(list(batch))
        return out


def test_a_retry_line_names_the_place_once(caplog: pytest.LogCaptureFixture):
    PlacedOutage.calls = 0
    yaml_text = """
name: retry-line
spout: {type: stdin}
settings: {retry: {attempts: 3, initial_backoff: 0, max_backoff: 0}}
bolts:
  - {id: outage, type: "tests.topology.test_poison:PlacedOutage"}
sinks:
  - {id: out, type: "squall.testing:MemorySink", name: retry-line}
"""
    with caplog.at_level("WARNING", logger="squall"):
        run_topology(yaml_text, records_from([{"n": 1}]))
    [line] = [r.getMessage() for r in caplog.records if "retry 1/2" in r.getMessage()]
    assert line.startswith("outage: connection refused; retry 1/2 in "), line


@pytest.mark.parametrize("with_dead_letter", [True, False])
def test_a_components_rejections_count_as_failed_when_no_dead_letter_takes_them(
    with_dead_letter: bool,
):
    """The per-component counts agree with the records' outcomes: a record a bolt (or the json
    decode) rejects is dead-lettered by it when a dead-letter sink takes it, else it fails."""
    from squall.topology.executor import Engine
    from squall.topology.loader import load_text
    from squall.topology.outcomes import Outcome

    tag = f"t{uuid.uuid4().hex[:8]}"
    text = f"""
name: counts-{tag}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: touchy, type: "tests.topology.test_poison:TouchyBolt", error: record}}
sinks:
  - {{id: out, type: "squall.testing:MemorySink", name: {tag}-out}}
"""
    if with_dead_letter:
        text += f'  - {{id: dlq, type: "squall.testing:MemoryDeadLetterSink", name: {tag}-dl}}\n'
    engine = Engine.for_topology(load_text(text)).open()
    try:
        records = records_from([{"n": 1}, {"boom": True}, {"n": 3}])
        records.append(records_from([b"not json"])[0])
        result = engine.process(records)
    finally:
        engine.close()
    stats = {s.id: s for s in engine.stats}
    counts = result.counts()
    if with_dead_letter:
        assert counts[Outcome.DEAD_LETTERED] == 2
        assert (stats["decode"].dead_lettered, stats["decode"].failed) == (1, 0)
        assert (stats["touchy"].dead_lettered, stats["touchy"].failed) == (1, 0)
    else:
        assert counts[Outcome.FAILED] == 2 and counts[Outcome.DEAD_LETTERED] == 0
        assert (stats["decode"].dead_lettered, stats["decode"].failed) == (0, 1)
        assert (stats["touchy"].dead_lettered, stats["touchy"].failed) == (0, 1)


class LongOutage(Bolt):
    """Raises a TransientError on its first 34 calls."""

    summary = "a long outage"
    calls = 0

    def process(self, batch):
        type(self).calls += 1
        if type(self).calls <= 34:
            from squall.errors import TransientError

            raise TransientError(f"{self.id}: connection refused")
        out = Output(self.id)
        out.emit_all(list(batch))
        return out


def test_a_large_backoff_multiplier_over_many_attempts_is_retried_not_an_overflow():
    """``multiplier ** (attempt - 1)`` of a float overflows (1e10 from the 32nd call on): the
    retry raised OverflowError out of the engine — the invocation failed — instead of waiting
    ``max_backoff`` (0 here, so nothing is slept)."""
    from squall.topology.model import backoff_ceiling

    LongOutage.calls = 0
    tag = f"t{uuid.uuid4().hex[:8]}"
    yaml_text = f"""
name: long-outage
spout: {{type: stdin}}
settings: {{retry: {{attempts: 40, initial_backoff: 0.1, max_backoff: 0, multiplier: 1e10}}}}
bolts:
  - {{id: outage, type: "tests.topology.test_poison:LongOutage"}}
sinks:
  - {{id: out, type: "squall.testing:MemorySink", name: {tag}}}
"""
    run_topology(yaml_text, records_from([{"n": 1}]))
    assert LongOutage.calls == 35
    assert len(MemorySink.stores[tag]) == 1  # committed after the 34 failed calls
    assert backoff_ceiling(0.1, 1e10, 7.0, 40) == 7.0
    assert backoff_ceiling(0.0, 1e10, 7.0, 40) == 0.0
    assert backoff_ceiling(0.1, 2.0, 10.0, 3) == 0.4
    # the triggered S3 reads' retry (the engine's policy, ``spouts/s3.ReadBound``) the same way
    from squall.spouts.s3 import ReadBound

    bound = ReadBound(lambda: 60.0, 40, 0.1, 3.0, 1e10, rng=lambda: 1.0)
    assert bound.delay(35) == 3.0


class RawRedisOutage(Bolt):
    """A user's bolt that calls Redis itself and lets the client's error escape unwrapped."""

    summary = "a raw redis-py error"
    answer = "BUSY"
    calls = 0

    def process(self, batch):
        import redis

        type(self).calls += 1
        errors = {
            "BUSY": redis.exceptions.ResponseError(
                "BUSY Redis is busy running a script. You can only call SCRIPT KILL or "
                "SHUTDOWN NOSAVE."
            ),
            "READONLY": redis.exceptions.ReadOnlyError(
                "You can't write against a read only replica."
            ),
            "LOADING": redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
            # redis-py strips the OOM code from its message (OutOfMemoryError); MISCONF has no
            # class of its own. In a pipeline, the command comes first.
            "OOM": redis.exceptions.OutOfMemoryError(
                "command not allowed when used memory > 'maxmemory'."
            ),
            "MISCONF": redis.exceptions.ResponseError(
                "Command # 1 (INCR k) of pipeline caused error: MISCONF Redis is configured to "
                "save RDB snapshots, but it's currently unable to persist to disk. Commands that "
                "may modify the data set are disabled"
            ),
            "WRONGTYPE": redis.exceptions.ResponseError(
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            ),
        }
        for ev in batch:
            if ev.value.get("calls_redis"):
                raise errors[type(self).answer]
        out = Output(self.id)
        out.emit_all(list(batch))
        return out


@pytest.mark.parametrize("answer", ["BUSY", "READONLY", "LOADING", "OOM", "MISCONF"])
def test_a_redis_outage_a_user_bolt_lets_escape_fails_the_batch_not_each_record(tag, answer):
    """Before, only redis-py's ConnectionError and TimeoutError counted as Redis being down
    when a user's bolt let them escape: a server answering BUSY (a script past its time), a
    replica that was promoted away (READONLY) or a server still loading was taken for each
    record's fault — every event of the outage dead-lettered, the shard checkpointed past it.
    So were a server refusing every write: OOM (memory full under maxmemory with noeviction)
    and MISCONF (a failed snapshot stops writes)."""
    RawRedisOutage.answer, RawRedisOutage.calls = answer, 0
    yaml_text = f"""
name: raw-redis
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: cache, type: "tests.topology.test_poison:RawRedisOutage"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    records = records_from([{"i": i, "calls_redis": True} for i in range(4)])
    expected = {
        "BUSY": "BUSY",
        "READONLY": "ReadOnlyError",
        "LOADING": "BusyLoadingError",
        "OOM": "OutOfMemoryError",
        "MISCONF": "MISCONF",
    }
    with pytest.raises(BatchFailed, match=expected[answer]):
        run_topology(yaml_text, records, batch_size=4)
    assert RawRedisOutage.calls == 2  # retried as an outage, never split record by record
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []
    assert MemorySink.stores.get(f"{tag}-out", []) == []


def test_a_redis_error_about_one_key_stays_that_records_fault(tag):
    RawRedisOutage.answer, RawRedisOutage.calls = "WRONGTYPE", 0
    yaml_text = f"""
name: raw-redis-key
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: cache, type: "tests.topology.test_poison:RawRedisOutage"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    payload = [{"i": 0}, {"i": 1, "calls_redis": True}, {"i": 2}]
    run_topology(yaml_text, records_from(payload), batch_size=3)
    assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [0, 2]
    [dead] = MemorySink.stores[f"{tag}-dlq"]
    assert dead.value["i"] == 1 and dead.failure.reason.startswith("ResponseError: WRONGTYPE")


@pytest.mark.parametrize("option", ["max_backoff", "initial_backoff"])
def test_a_backoff_beyond_an_hour_is_refused_where_it_is_written(option: str):
    """A ``max_backoff`` of 1e300 was accepted and a long outage then raised OverflowError out
    of ``time.sleep`` (its limit is ~9.2e9 s) instead of retrying: refused at load, located."""
    from squall.errors import TopologyError
    from squall.topology.loader import load_text

    text = f"""name: slow
spout: {{type: stdin}}
settings:
  retry: {{{option}: 1e300}}
sinks:
  - {{id: out, type: "squall.testing:MemorySink", name: slow}}
"""
    with pytest.raises(TopologyError) as refused:
        load_text(text, file="t.yaml")
    assert "t.yaml:4:" in str(refused.value) and option in str(refused.value), refused.value
    assert "3600" in str(refused.value)


def test_a_bolts_own_long_reason_is_cut_as_an_exceptions_is():
    """A bolt's ``Output.fail`` reason of 80,000 characters went whole into the dead letter (an
    SQS dead-letter message is 256 KiB at most), the outcome and the Lambda invocation's ERROR
    line; an exception's reason is cut to ``MAX_REASON`` already. Cut alike, with its length, and
    cut once: the engine's ``dataclasses.replace`` of a failure keeps the same text."""
    import dataclasses

    from squall.errors import MAX_REASON

    text_ = """
name: long-reason
spout: {type: 'squall.testing:ListSpout'}
bolts:
  - {id: decode, type: json}
  - {id: faulty, type: 'squall.testing:FaultyBolt'}
sinks:
  - {id: out, type: 'squall.testing:MemorySink'}
  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}
"""
    run = run_topology(text_, records_from([{"n": 1, "fail": "x" * 80_000}, {"n": 2}]))
    [dlq] = [c for c in run.engine.components if isinstance(c, MemoryDeadLetterSink)]
    dead = dlq.store
    [reason] = [ev.failure.reason for ev in dead]
    assert MAX_REASON < len(reason) < MAX_REASON + 40
    assert reason.endswith("[truncated, 80000 chars]")
    assert [o.outcome for o in run.outcomes] == [Outcome.DEAD_LETTERED, Outcome.COMMITTED]
    cut = Failure("faulty", "y" * 5_000)
    assert dataclasses.replace(cut, retry=True).reason == cut.reason


class RawRedisCannotServe(Bolt):
    """A user's bolt whose Redis command the server does not serve, the error escaping raw."""

    summary = "a raw redis-py error"
    url = ""
    calls = 0

    def process(self, batch):
        import redis

        type(self).calls += 1
        for ev in batch:
            if ev.value.get("calls_redis"):
                with redis.Redis.from_url(type(self).url) as client:
                    client.execute_command("SQUALLNOSUCHCOMMAND", f"k{ev.value['i']}")
        out = Output(self.id)
        out.emit_all(list(batch))
        return out


def test_a_command_the_user_bolts_redis_does_not_serve_fails_the_batch_not_each_record(
    tag, redis_url
):
    """A real Redis answering ``unknown command`` (renamed away, a proxy) to a user's own bolt:
    no record causes it. Before, the engine took it for each record's fault: every event that
    reached the command was dead-lettered alone and the shard checkpointed past them. Now the
    batch fails as a misconfiguration, not retried, nothing dead-lettered."""
    RawRedisCannotServe.url, RawRedisCannotServe.calls = redis_url, 0
    yaml_text = f"""
name: raw-redis-unserved
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 3, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: cache, type: "tests.topology.test_poison:RawRedisCannotServe"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    records = records_from([{"i": i, "calls_redis": True} for i in range(4)])
    with pytest.raises(BatchFailed, match="unknown command"):
        run_topology(yaml_text, records, batch_size=4)
    assert RawRedisCannotServe.calls == 1  # neither retried nor split record by record
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []
    assert MemorySink.stores.get(f"{tag}-out", []) == []


def test_a_cluster_nodes_moved_is_never_a_records_fault():
    """A client that is not cluster-aware gets ``MOVED`` / ``CROSSSLOT`` / ``ASK`` from a Redis
    Cluster node (no cluster runs here: the answers as redis-py raises them, plain and inside a
    pipeline); an error a record can cause stays the record's."""
    import redis

    from squall.topology.executor import _refused_for_good

    err = redis.exceptions.ResponseError
    for text in (
        "MOVED 3999 127.0.0.1:6381",
        "ASK 3999 127.0.0.1:6381",
        "CROSSSLOT Keys in request don't hash to the same slot",
        "Command # 2 (MGET a b) of pipeline caused error: MOVED 15495 127.0.0.1:7002",
    ):
        assert _refused_for_good(err(text)), text
    for text in ("value is not an integer or out of range", "WRONGTYPE Operation against a key"):
        assert not _refused_for_good(err(text)), text


class RawRedisPerEvent(RecordBolt):
    """A user's one-event-at-a-time bolt that calls Redis per event and lets the client's
    error escape unwrapped: down for its first ``down`` calls, then serving."""

    summary = "a raw redis-py error per event"
    answer = "ConnectionError"
    down = 0
    calls = 0

    def process_event(self, event):
        import redis

        type(self).calls += 1
        if type(self).calls <= type(self).down:
            raise {
                "ConnectionError": redis.exceptions.ConnectionError(
                    "Error 111 connecting to 127.0.0.1:6390. Connection refused."
                ),
                "READONLY": redis.exceptions.ReadOnlyError(
                    "You can't write against a read only replica."
                ),
                "WRONGPASS": redis.exceptions.AuthenticationError(
                    "WRONGPASS invalid username-password pair or user is disabled."
                ),
                "WRONGTYPE": redis.exceptions.ResponseError(
                    "WRONGTYPE Operation against a key holding the wrong kind of value"
                ),
                "refused": ConnectionRefusedError(111, "Connection refused"),
            }[type(self).answer]
        event.value["seen"] = event.value.get("seen", 0) + 1
        return "default"


def _per_event_yaml(tag: str) -> str:
    return f"""
name: raw-redis-per-event
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 3, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: cache, type: "tests.topology.test_poison:RawRedisPerEvent"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""


@pytest.mark.parametrize("answer", ["ConnectionError", "READONLY"])
def test_a_redis_outage_in_a_record_bolt_is_retried_not_dead_lettered(tag, answer):
    """``RecordBolt`` caught every exception of ``process_event`` as that event's failure: a
    raw redis-py ConnectionError (Redis down) dead-lettered each event of the outage and the
    shard checkpointed past them, where a batch ``Bolt`` gets the engine's retry. Now such an
    error escapes to the engine: the call is retried and, once Redis serves, every event is
    written — none dead-lettered."""
    RawRedisPerEvent.answer, RawRedisPerEvent.down, RawRedisPerEvent.calls = answer, 2, 0
    records = records_from([{"i": i} for i in range(4)])
    run_topology(_per_event_yaml(tag), records, batch_size=4)
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []
    assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [0, 1, 2, 3]
    assert RawRedisPerEvent.calls == 2 + 4  # two failed calls (at the first event), the batch


@pytest.mark.parametrize("answer", ["WRONGPASS", "refused"])
def test_a_refused_password_or_lost_connection_in_a_record_bolt_fails_the_batch(tag, answer):
    """A refused password (the engine's misconfiguration) and a lost connection of Python's
    own (``ConnectionRefusedError`` of a service the bolt calls) fail the batch as they do
    for a batch ``Bolt``: before, each event was dead-lettered with the same error."""
    RawRedisPerEvent.answer, RawRedisPerEvent.down, RawRedisPerEvent.calls = answer, 99, 0
    with pytest.raises(BatchFailed, match="WRONGPASS|Connection refused") as failed:
        run_topology(_per_event_yaml(tag), records_from([{"i": 0}, {"i": 1}]), batch_size=2)
    if answer == "WRONGPASS":
        assert isinstance(failed.value.__cause__, SinkError)  # a misconfiguration: exit 2
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []
    assert RawRedisPerEvent.calls == 1  # not retried, not isolated record by record


def test_a_redis_error_about_one_key_in_a_record_bolt_stays_that_records(tag):
    RawRedisPerEvent.answer, RawRedisPerEvent.down, RawRedisPerEvent.calls = "WRONGTYPE", 1, 0
    run_topology(_per_event_yaml(tag), records_from([{"i": 0}, {"i": 1}]), batch_size=2)
    assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [1]
    [dead] = MemorySink.stores[f"{tag}-dlq"]
    assert dead.value["i"] == 0 and dead.failure.reason.startswith("ResponseError: WRONGTYPE")


class RenamePerEvent(RecordBolt):
    """A user's bolt that changes each event in place (a rename, a counter), then calls Redis —
    down for its first ``down`` calls — for the event at index ``at`` of the batch."""

    summary = "a rename and a counter per event, Redis for one"
    down = 0
    at = 2
    calls = 0

    def process_event(self, event):
        import redis

        value = event.value
        value["name"] = value.pop("n")  # KeyError when run again on an event it renamed
        value["seen"] = value.get("seen", 0) + 1
        if value["i"] == type(self).at:
            type(self).calls += 1
            if type(self).calls <= type(self).down:
                value["n"] = value.pop("name")  # as it was: the call failed
                value["seen"] -= 1
                raise redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
        return "default"


def test_an_outage_retry_does_not_run_a_record_bolt_again_on_events_it_changed(tag):
    """The engine's retry gives the bolt the batch's events again, the same objects: those
    before the event whose Redis call failed had been renamed and counted, and ran again the
    rename failed (``KeyError: 'n'``, dead-lettered) and the counter counted twice. The retry
    now goes on from the event that raised; the events before keep their one outcome."""
    RenamePerEvent.down, RenamePerEvent.at, RenamePerEvent.calls = 2, 2, 0
    yaml = _per_event_yaml(tag).replace(
        "test_poison:RawRedisPerEvent", "test_poison:RenamePerEvent"
    )
    run_topology(yaml, records_from([{"i": i, "n": f"x{i}"} for i in range(4)]), batch_size=4)
    assert MemorySink.stores.get(f"{tag}-dlq", []) == []
    got = [
        (ev.value["i"], ev.value["name"], ev.value["seen"])
        for ev in MemorySink.stores[f"{tag}-out"]
    ]
    assert got == [(0, "x0", 1), (1, "x1", 1), (2, "x2", 1), (3, "x3", 1)]
    assert RenamePerEvent.calls == 3


class DataErrorsPerEvent(RecordBolt):
    """A user's bolt whose per-record work raises, on one record's data, an error of Python's
    that is an ``OSError`` without an errno or a ``TimeoutError``."""

    summary = "per-record data errors"

    def process_event(self, event):
        import gzip

        import regex

        kind = event.value.get("bad")
        if kind == "gzip":
            gzip.decompress(b"\x1f\x8b" + b"\x00" * 20)  # gzip.BadGzipFile: errno None
        elif kind == "regex":  # a catastrophic pattern on this record's text, bounded
            regex.match(r"(a+)+$", "a" * 64 + "!", timeout=0.0)  # TimeoutError
        elif kind == "eoverflow":
            raise OSError(75, "Value too large for defined data type")
        return "default"


def test_a_records_data_error_in_a_record_bolt_stays_that_records(tag):
    """Since the outage rule reached ``RecordBolt``, a record's bad gzip (``BadGzipFile``, an
    ``OSError`` without an errno) or a per-record regex timeout (``TimeoutError``) failed the
    whole batch — at every replay: the shard stopped on that record. They are the record's
    again: dead-lettered, the other records written."""
    yaml = _per_event_yaml(tag).replace(
        "test_poison:RawRedisPerEvent", "test_poison:DataErrorsPerEvent"
    )
    values = [
        {"i": 0},
        {"i": 1, "bad": "gzip"},
        {"i": 2, "bad": "regex"},
        {"i": 3, "bad": "eoverflow"},
    ]
    run_topology(yaml, records_from(values), batch_size=4)
    assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [0]
    reasons = [dead.failure.reason for dead in MemorySink.stores[f"{tag}-dlq"]]
    assert [r.split(":")[0] for r in reasons] == ["BadGzipFile", "TimeoutError", "OSError"], reasons


class _Marker:
    """A weakly referable object in an event's payload: whether the event is still held."""


class MarkedPerEvent(RecordBolt):
    """Puts a marker in each event, then finds Redis down for the event ``i == 2``, for good."""

    summary = "a marker per event, Redis down for one"
    markers: list = []

    def process_event(self, event):
        import redis

        marker = _Marker()
        type(self).markers.append(weakref.ref(marker))
        event.value["marker"] = marker
        if event.value["i"] == 2:
            raise redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
        return "default"


def test_a_record_bolt_holds_no_event_of_a_failed_batch(tag):
    """What a call that raised had processed is kept for the retry to go on from: once the
    retries are spent and the batch failed, the bolt held those events (payloads and all) until
    its next call — the next batch's, a Lambda's next invocation. The engine ends that with
    the batch."""
    import gc

    from squall.topology.executor import Engine

    MarkedPerEvent.markers = []
    yaml = _per_event_yaml(tag).replace(
        "test_poison:RawRedisPerEvent", "test_poison:MarkedPerEvent"
    )
    engine = Engine(topology_from(yaml).plan)
    with engine:
        with pytest.raises(BatchFailed):
            engine.process(records_from([{"i": i} for i in range(4)]))
        gc.collect()
        assert len(MarkedPerEvent.markers) == 2 + 2 + 1  # events 0 and 1 once, 2 three times
        assert [m() for m in MarkedPerEvent.markers] == [None] * 5


class TeeBolt(Bolt):
    """Emits each event, the same object, on ``default`` and on ``copy``."""

    summary = "each event on two streams"
    streams = ("copy",)

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        for ev in batch:
            out.emit(ev)
            out.emit(ev, "copy")
        return out


class CountedPerEvent(RecordBolt):
    """Counts its visits of each event; Redis is down once, at the second visit of ``i == 0``."""

    summary = "a visit count per event, Redis down once"
    visits: list = []
    raised = 0

    def process_event(self, event):
        import redis

        i = event.value["i"]
        if i == 0 and type(self).visits.count(0) == 1 and not type(self).raised:
            type(self).raised += 1
            raise redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
        type(self).visits.append(i)
        return "default"


def test_an_outage_retry_resumes_at_the_second_place_of_an_event_given_twice(tag):
    """Two streams of one bolt both coming into a ``RecordBolt`` give it the same event objects
    twice in a batch. Redis down at an event's second place: the retry resumed at its first
    place (found by identity), so the events between were processed again and written twice
    (9 visits and 9 rows for 3 records on two streams). It goes on from the second place."""
    CountedPerEvent.visits, CountedPerEvent.raised = [], 0
    yaml = f"""
name: twice-into-a-record-bolt
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 3, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: tee, type: "tests.topology.test_poison:TeeBolt"}}
  - {{id: per, type: "tests.topology.test_poison:CountedPerEvent"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
streams:
  - {{from: decode, to: tee}}
  - {{from: tee, to: per}}
  - {{from: tee, stream: copy, to: per}}
  - {{from: per, to: out}}
"""
    run_topology(yaml, records_from([{"i": i} for i in range(3)]), batch_size=3)
    assert CountedPerEvent.raised == 1
    assert CountedPerEvent.visits == [0, 1, 2, 0, 1, 2]
    assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [0, 1, 2, 0, 1, 2]
