"""A record a bolt lost — its ``process`` returned without emitting, dropping or failing any event
of it — is found right after the bolts and dead-lettered with a reason naming the bolt, so its
shard moves on (unacknowledged, it came again for ever: the bolt loses it again each time). With
no dead-letter sink it fails, as any record without a dead letter does. Records with an outcome
through another event (fan-out, a second stream), filtered records, window bolts that keep events
until a window closes, ``flush`` output and KPL aggregates stay as they were."""

from __future__ import annotations

import logging
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.bolts.base import Bolt, Output
from squall.errors import TransientError
from squall.event import Event, Record, RecordMeta
from squall.sinks.base import Prepared
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome

HERE = __name__


def lost_reason(bolt: str) -> str:
    return f"no outcome: bolt '{bolt}' returned without emitting, dropping or failing it"


class Forgetful(Bolt):
    """A user's bolt with a bug: an event with ``"lose": true`` (or its copy ``k`` in ``lose_k``)
    is neither emitted, dropped nor failed. ``"drop": true`` drops the event on purpose,
    ``"fail": reason`` fails it."""

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        for ev in batch:
            v = ev.value
            if v.get("drop"):
                out.drop(ev)
            elif v.get("fail"):
                out.fail(ev, v["fail"])
            elif not (v.get("lose") or v.get("k", -1) in v.get("lose_k", ())):
                out.emit(ev)
        return out


class Emptying(Forgetful):
    """As ``Forgetful``, but it empties the list it was given as it reads it (``pop``)."""

    def process(self, batch: list[Event]) -> Output:
        kept = []
        while batch:
            kept.append(batch.pop(0))
        return super().process(kept)


class Splitter(Bolt):
    """One record → three events (``k`` 0, 1, 2)."""

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        for ev in batch:
            for k in range(3):
                copy = ev.fork()
                copy.value = {**ev.value, "k": k}
                copy.event_id = f"{ev.event_id}-{k}"
                out.emit(copy)
        return out


class Both(Bolt):
    """Emits each event, the same object, into ``default`` and ``audit``."""

    streams = ("audit",)

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        for ev in batch:
            out.emit(ev)
            out.emit(ev, "audit")
        return out


def chain(tag: str, bolts: str, *, dead_letter: bool = True, extra_sinks: str = "") -> str:
    dl = (
        f"  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}\n"
        if dead_letter
        else ""
    )
    return f"""
name: lost
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
{bolts}sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
{extra_sinks}{dl}"""


@pytest.fixture
def tag():
    name = f"l{uuid.uuid4().hex[:8]}"
    yield name
    for suffix in ("out", "dlq", "audit"):
        MemorySink.stores.pop(f"{name}-{suffix}", None)


def store(tag: str, name: str) -> list[Event]:
    return MemorySink.stores.get(f"{tag}-{name}", [])


ENRICH = f"  - {{id: enrich, type: '{HERE}:Forgetful'}}\n"


def test_a_record_a_bolt_lost_is_dead_lettered_naming_the_bolt_and_the_shard_moves_on(tag):
    payloads = [{"i": i, "lose": i == 2} for i in range(6)]
    run = run_topology(chain(tag, ENRICH), records_from(payloads), batch_size=6)
    assert [ev.value["i"] for ev in store(tag, "out")] == [0, 1, 3, 4, 5]
    [dead] = store(tag, "dlq")
    assert dead.value["i"] == 2
    assert (dead.failure.component, dead.failure.reason) == ("engine", lost_reason("enrich"))
    [result] = run.results
    # was: failed (engine: no outcome: a bolt lost the event), the checkpoint stopped before it
    assert [o.outcome for o in result.records] == [Outcome.COMMITTED] * 2 + [
        Outcome.DEAD_LETTERED
    ] + [Outcome.COMMITTED] * 3
    assert result.records[2].reason == lost_reason("enrich")
    assert result.checkpoint["shardId-000000000000"].sequence_number == "6"
    enrich = next(s for s in run.engine.stats if s.id == "enrich")
    assert (enrich.received, enrich.emitted, enrich.dead_lettered) == (6, 5, 1)


def test_without_a_dead_letter_sink_the_lost_record_fails_naming_the_bolt_and_holds_the_rest(tag):
    payloads = [{"i": i, "lose": i == 2} for i in range(5)]
    run = run_topology(chain(tag, ENRICH, dead_letter=False), records_from(payloads), batch_size=5)
    [result] = run.results
    assert [o.outcome for o in result.records] == [Outcome.COMMITTED] * 2 + [Outcome.FAILED] + [
        Outcome.HELD
    ] * 2
    assert (result.records[2].component, result.records[2].reason) == (
        "engine",
        lost_reason("enrich"),
    )
    assert [ev.value["i"] for ev in store(tag, "out")] == [0, 1]  # none after it, nor ahead of it
    assert result.checkpoint["shardId-000000000000"].sequence_number == "2"
    enrich = next(s for s in run.engine.stats if s.id == "enrich")
    assert enrich.failed == 1


def test_fan_out_names_the_last_bolt_holding_the_record_and_a_partly_lost_record_goes_on(tag):
    bolts = (
        f"  - {{id: split, type: '{HERE}:Splitter'}}\n"
        f"  - {{id: pick, type: '{HERE}:Emptying'}}\n"  # it empties its input list as it reads
    )
    payloads = [
        {"i": 0},
        {"i": 1, "lose_k": [0, 2]},  # copy 1 goes on: the record has an outcome
        {"i": 2, "lose": True},  # every copy lost, in `pick` (not in `split`)
        {"i": 3, "drop": True},  # every copy dropped: filtered
    ]
    run = run_topology(chain(tag, bolts), records_from(payloads), batch_size=4)
    assert [(ev.value["i"], ev.value["k"]) for ev in store(tag, "out")] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 1),
    ]
    [dead] = store(tag, "dlq")
    assert (dead.value["i"], dead.failure.reason) == (2, lost_reason("pick"))
    assert run.outcomes[2].reason == lost_reason("pick")  # (the copy lost, not the record's event)
    assert [o.outcome for o in run.outcomes] == [
        Outcome.COMMITTED,
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.FILTERED,
    ]
    pick = next(s for s in run.engine.stats if s.id == "pick")
    assert (pick.received, pick.emitted, pick.dropped, pick.dead_lettered) == (12, 4, 3, 1)


class AuditForgetful(Forgetful):
    """``Forgetful`` that also loses an event with ``"lose_audit": true``."""

    def process(self, batch: list[Event]) -> Output:
        out = super().process([ev for ev in batch if not ev.value.get("lose_audit")])
        return out


def test_an_event_emitted_into_two_streams_and_lost_in_one_branch_is_dead_lettered_there(tag):
    bolts = (
        f"  - {{id: both, type: '{HERE}:Both'}}\n"
        f"  - {{id: audit_check, type: '{HERE}:AuditForgetful'}}\n"
        f"  - {{id: main_check, type: '{HERE}:Forgetful'}}\n"
    )
    yaml = chain(
        tag,
        bolts,
        extra_sinks=f"  - {{id: audit, type: 'squall.testing:MemorySink', name: {tag}-audit}}\n",
    ) + (
        "streams:\n"
        "  - {from: decode, to: both}\n"
        "  - {from: both, stream: default, to: main_check}\n"
        "  - {from: both, stream: audit, to: audit_check}\n"
        "  - {from: main_check, to: out}\n"
        "  - {from: audit_check, to: audit}\n"
    )
    payloads = [{"i": 0}, {"i": 1, "lose": True}, {"i": 2, "lose_audit": True}]
    run = run_topology(yaml, records_from(payloads), batch_size=3)
    assert [ev.value["i"] for ev in store(tag, "out")] == [0, 2]
    assert [ev.value["i"] for ev in store(tag, "audit")] == [0]
    # 1: lost in both branches, one dead letter each; 2: lost in the audit branch only — the
    # main branch wrote it, but the audit sink must not miss it silently (a replay writes both)
    assert sorted((ev.value["i"], ev.failure.reason) for ev in store(tag, "dlq")) == [
        (1, lost_reason("audit_check")),
        (1, lost_reason("main_check")),
        (2, lost_reason("audit_check")),
    ]
    assert [o.outcome for o in run.outcomes] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.DEAD_LETTERED,
    ]
    assert run.outcomes[2].reason == lost_reason("audit_check")


class SplitAndLose(Splitter):
    """Splits a record in three and loses one with ``"lose": true`` in the same call: as many
    events out as in, so the loss is found after the bolts, not at the bolt."""

    def process(self, batch: list[Event]) -> Output:
        return super().process([ev for ev in batch if not ev.value.get("lose")])


def test_a_record_lost_by_a_bolt_that_split_another_is_found_after_the_bolts(tag):
    bolts = f"  - {{id: split, type: '{HERE}:SplitAndLose'}}\n"
    run = run_topology(chain(tag, bolts), records_from([{"i": 0}, {"i": 1, "lose": True}]))
    assert [(ev.value["i"], ev.value["k"]) for ev in store(tag, "out")] == [(0, 0), (0, 1), (0, 2)]
    [dead] = store(tag, "dlq")
    assert (dead.value["i"], dead.failure.reason) == (1, lost_reason("split"))
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]


def kpl_record(payloads: list[bytes], seq: str) -> Record:
    from aws_kinesis_agg.aggregator import RecordAggregator

    agg = RecordAggregator()
    for p in payloads:
        agg.add_user_record("pk", p)
    data = agg.clear_and_get().get_contents()[2]
    return Record(data, RecordMeta("test", "shardId-000000000000", seq, 0, "pk"))


@pytest.mark.parametrize("dead_letter", [True, False])
def test_a_kpl_sub_record_a_bolt_lost(tag, dead_letter):
    records = [
        kpl_record([b'{"i": 0}', b'{"i": 1, "lose": true}', b'{"i": 2}'], "10"),
        kpl_record([b'{"i": 3}'], "11"),
    ]
    run = run_topology(
        chain(tag, ENRICH, dead_letter=dead_letter), records, batch_size=2, whole_records=True
    )
    outcomes = [o.outcome for o in run.outcomes]
    if dead_letter:  # only it is dead-lettered; its aggregate's others are written
        assert outcomes == [Outcome.COMMITTED, Outcome.DEAD_LETTERED] + [Outcome.COMMITTED] * 2
        assert [ev.value["i"] for ev in store(tag, "out")] == [0, 2, 3]
        assert run.results[0].checkpoint["shardId-000000000000"].sequence_number == "11"
    else:  # it fails: its aggregate comes again whole (Lambda), so none of it is settled
        assert outcomes == [Outcome.HELD, Outcome.FAILED, Outcome.HELD, Outcome.HELD]
        assert run.outcomes[1].reason == lost_reason("enrich")
        assert store(tag, "out") == []


def test_window_bolts_keep_events_without_losing_them_and_flush_output_is_committed(tag, tmp_path):
    yaml = f"""
name: lost-window
resources:
  state: {{url: "sqlite:///{tmp_path / "state.db"}"}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: enrich, type: '{HERE}:Forgetful'}}
  - id: minutely
    type: window
    store: state
    key: [app]
    size: 1m
    aggregates:
      n: {{fn: count}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    t0 = 1_714_557_600_000
    payloads = [
        {"timestamp": t0 + i * 10_000, "app": "a", "lose": i == 4, "drop": i == 5} for i in range(8)
    ]
    run = run_topology(yaml, records_from(payloads), batch_size=3, end_of_input=True)
    outcomes = {o.index + 3 * k: o.outcome for k, r in enumerate(run.results) for o in r.records}
    assert outcomes[4] is Outcome.DEAD_LETTERED  # (batch 2, its second record)
    [dead] = store(tag, "dlq")
    assert dead.failure.reason == lost_reason("enrich")  # not the window's: it kept the others
    assert sum(o.outcome is Outcome.DEAD_LETTERED for o in run.outcomes) == 1
    assert Outcome.FAILED not in {o.outcome for o in run.outcomes}
    # the windows' results (the last one flushed at the end of input) count the events they kept
    finals = {ev.value["window_start"]: ev.value["n"] for ev in store(tag, "out")}
    assert list(finals.values()) == [4, 2]  # minute 0: 0-5 but 4 (lost) and 5 (dropped); 6, 7
    ends = [o for o in run.outcomes if o.shard_id == "<end of input>"]
    assert [o.outcome for o in ends] == [Outcome.COMMITTED]  # it carried the flushed result


def test_lost_records_are_logged_at_warning_once_and_bounded(tag, caplog):
    payloads = [{"i": i, "lose": i >= 3} for i in range(28)]  # 25 lost
    yaml = chain(tag, ENRICH, dead_letter=False)
    from squall.testing import topology_from
    from squall.topology.executor import Engine

    engine = Engine(topology_from(yaml).plan)
    with engine, caplog.at_level(logging.DEBUG, logger="squall.engine"):
        engine.process(records_from(payloads))
        first = [(r.levelno, r.getMessage()) for r in caplog.records]
        caplog.clear()
        engine.process(records_from(payloads))  # the same batch again (nothing acknowledged)
        again = [(r.levelno, r.getMessage()) for r in caplog.records]
    warned = [m for level, m in first if level == logging.WARNING]
    assert len(warned) == 11
    assert all(
        m.startswith("enrich: record ") and m.endswith(lost_reason("enrich")) for m in warned[:10]
    )
    assert "lost by the bolt, isolated from its batch" in warned[0]
    assert warned[10].startswith("enrich: 15 more record(s) of the batch lost by the bolt")
    assert [m for level, m in again if level == logging.WARNING] == []


KIND = st.sampled_from(["ok", "ok", "ok", "drop", "fail", "lose", "lose_some"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(st.tuples(KIND, st.integers(0, 1)), max_size=30),
    dead_letter=st.booleans(),
    batch_size=st.integers(1, 12),
)
def test_every_lost_record_has_one_outcome_and_the_checkpoint_stops_only_for_a_failure(
    data, dead_letter, batch_size
):
    tag = f"l{uuid.uuid4().hex[:8]}"
    bolts = (
        f"  - {{id: split, type: '{HERE}:Splitter'}}\n  - {{id: pick, type: '{HERE}:Forgetful'}}\n"
    )
    records, seq = [], {0: 0, 1: 0}
    for i, (kind, shard) in enumerate(data):
        seq[shard] += 1
        payload = {
            "i": i,
            "drop": kind == "drop",
            "fail": "bad" if kind == "fail" else "",
            "lose": kind == "lose",
            "lose_k": [0, 2] if kind == "lose_some" else [],
        }
        [rec] = records_from([payload], shard_id=f"shard-{shard}", start=seq[shard])
        records.append(rec)
    try:
        run = run_topology(
            chain(tag, bolts, dead_letter=dead_letter), records, batch_size=batch_size
        )
        outcomes = [o for r in run.results for o in r.records]
        assert len(outcomes) == len(data)
        blocked: set[int] = set()  # shards with a failed record earlier in the batch
        first = 0
        for result in run.results:
            blocked.clear()
            for o in result.records:
                kind, shard = data[first + o.index]
                expected = {
                    "ok": Outcome.COMMITTED,
                    "lose_some": Outcome.COMMITTED,
                    "drop": Outcome.FILTERED,
                    "fail": Outcome.DEAD_LETTERED,
                    "lose": Outcome.DEAD_LETTERED,
                }[kind]
                if not dead_letter and kind in ("fail", "lose"):
                    expected = Outcome.FAILED
                    blocked.add(shard)
                elif shard in blocked:
                    expected = Outcome.HELD
                assert o.outcome is expected, (kind, o)
                if kind == "lose":
                    assert (o.component, o.reason) == ("engine", lost_reason("pick"))
            first += len(result.records)
        if dead_letter:
            lost = [ev.value["i"] for ev in store(tag, "dlq") if "no outcome" in ev.failure.reason]
            assert lost == [i for i, (kind, _) in enumerate(data) if kind == "lose"]
    finally:
        for suffix in ("out", "dlq"):
            MemorySink.stores.pop(f"{tag}-{suffix}", None)


class Fixed(Bolt):
    """``Forgetful`` once its bug is fixed: every event is emitted."""

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        out.emit_all(list(batch))
        return out


def test_a_lost_record_is_replayed_from_its_dead_letter_once_the_bolt_is_fixed(tag, tmp_path):
    import json

    from click.testing import CliRunner

    from squall.cli import main

    text = f"""
name: lost-replay
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: enrich, type: '{HERE}:BOLT'}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {tag}-out}}
  - {{id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}}
"""
    path = tmp_path / "lost.yaml"
    path.write_text(text.replace("BOLT", "Forgetful"))
    run = run_topology(path, records_from([{"i": 0}, {"i": 1, "lose": True}, {"i": 2}]))
    assert run.results[0].checkpoint["shardId-000000000000"].sequence_number == "3"
    [letter] = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert (letter["component"], letter["reason"]) == ("engine", lost_reason("enrich"))

    path.write_text(text.replace("BOLT", "Fixed"))  # the bug fixed
    result = CliRunner().invoke(
        main,
        [
            "replay",
            str(path),
            str(tmp_path / "rejects.jsonl"),
            "--reason-contains",
            "bolt 'enrich'",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "committed 1" in result.output
    assert sorted(ev.value["i"] for ev in store(tag, "out")) == [0, 1, 2]


class PopThenRaise(Bolt):
    """Reads its batch by emptying the list (``pop``) and raises on an event with ``"bad"``
    (``"transient"``: a dependency down, the first call of the process only)."""

    calls = 0

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        while batch:
            ev = batch.pop(0)
            if ev.value.get("bad"):
                raise ValueError("bad record")
            if ev.value.get("transient") and PopThenRaise.calls == 0:
                PopThenRaise.calls += 1
                raise TransientError("enrich: store down")
            out.emit(ev)
        return out


def test_a_poison_record_of_a_bolt_that_emptied_its_list_is_isolated_not_the_batch_lost(tag):
    bolts = f"  - {{id: enrich, type: '{HERE}:PopThenRaise'}}\n"
    payloads = [{"i": i, "bad": i == 2} for i in range(6)]
    run = run_topology(chain(tag, bolts), records_from(payloads), batch_size=6)
    # was: the bisection halved the emptied list: 0, 1 and 2 dead-lettered as lost by the bolt
    assert [ev.value["i"] for ev in store(tag, "out")] == [0, 1, 3, 4, 5]
    [dead] = store(tag, "dlq")
    assert (dead.value["i"], dead.failure.component) == (2, "enrich")
    assert "bad record" in dead.failure.reason
    enrich = next(s for s in run.engine.stats if s.id == "enrich")
    assert (enrich.received, enrich.emitted, enrich.dead_lettered) == (6, 5, 1)


def test_a_bolt_that_emptied_its_list_before_a_transient_error_is_retried_on_the_whole_batch(tag):
    PopThenRaise.calls = 0
    bolts = f"  - {{id: enrich, type: '{HERE}:PopThenRaise'}}\n"
    payloads = [{"i": i, "transient": i == 3} for i in range(6)]
    run = run_topology(
        chain(tag, bolts), records_from(payloads), batch_size=6, sleep=lambda s: None
    )
    # was: the retry was given the emptied list's rest: 0, 1, 2 and 3 dead-lettered as lost
    assert [ev.value["i"] for ev in store(tag, "out")] == list(range(6))
    assert store(tag, "dlq") == []
    assert [o.outcome for o in run.results[0].records] == [Outcome.COMMITTED] * 6


class Skipping(MemorySink):
    """A user's sink with a bug: its ``prepare`` leaves out an event with ``"skip": true`` (not
    to write, not rejected)."""

    def prepare(self, events: list[Event]) -> Prepared:
        return Prepared([ev for ev in events if not ev.value.get("skip")])


def sink_lost_reason(sink: str) -> str:
    return f"no outcome: sink '{sink}' prepared it neither to write nor to reject"


@pytest.mark.parametrize("dead_letter", [True, False])
def test_a_record_a_sinks_prepare_lost_is_dead_lettered_naming_the_sink(tag, dead_letter):
    text = chain(tag, "", dead_letter=dead_letter).replace(
        "'squall.testing:MemorySink'", f"'{HERE}:Skipping'"
    )
    payloads = [{"i": i, "skip": i == 2} for i in range(5)]
    run = run_topology(text, records_from(payloads), batch_size=5)
    assert [ev.value["i"] for ev in store(tag, "out")] == ([0, 1, 3, 4] if dead_letter else [0, 1])
    [result] = run.results
    # was: failed as "engine: no outcome: a bolt lost the event" (no bolt lost it), for ever
    assert result.records[2].reason == sink_lost_reason("out")
    out = next(s for s in run.engine.stats if s.id == "out")
    if dead_letter:
        [dead] = store(tag, "dlq")
        assert (dead.value["i"], dead.failure.component) == (2, "engine")
        assert [o.outcome for o in result.records] == [Outcome.COMMITTED] * 2 + [
            Outcome.DEAD_LETTERED
        ] + [Outcome.COMMITTED] * 2
        assert result.checkpoint["shardId-000000000000"].sequence_number == "5"
        assert (out.received, out.emitted, out.dead_lettered) == (5, 4, 1)
    else:
        assert [o.outcome for o in result.records] == [Outcome.COMMITTED] * 2 + [Outcome.FAILED] + [
            Outcome.HELD
        ] * 2
        assert result.checkpoint["shardId-000000000000"].sequence_number == "2"
        # the held ones count when they come again: in = out + dead + failed
        assert (out.received, out.emitted, out.dead_lettered, out.failed) == (3, 2, 0, 1)


@pytest.mark.parametrize("how", ["failed by a bolt", "left out by a sink's prepare"])
def test_a_record_dead_lettered_as_a_copy_has_its_dead_letters_reason_in_its_outcome(tag, how):
    """A record a bolt split, a part of which was failed (``Output.fail``) or left out by a
    sink: its outcome read its own event's failure — none, the copy was dead-lettered — so it
    was dead-lettered with no component nor reason (the Lambda producer answered `None: None`)."""
    split = f"  - {{id: split, type: '{HERE}:Splitter'}}\n"
    if how == "failed by a bolt":
        text = chain(tag, split + ENRICH)
        payloads = [{"i": 0}, {"i": 1, "fail": "bad part"}]
        want = ("enrich", "bad part")
    else:
        text = chain(tag, split).replace("'squall.testing:MemorySink'", f"'{HERE}:Skipping'")
        payloads = [{"i": 0}, {"i": 1, "skip": True}]
        want = ("engine", sink_lost_reason("out"))
    run = run_topology(text, records_from(payloads), batch_size=2)
    first, second = run.results[0].records
    assert first.outcome is Outcome.COMMITTED and first.reason is None
    assert second.outcome is Outcome.DEAD_LETTERED
    assert (second.component, second.reason) == want  # was: (None, None)
