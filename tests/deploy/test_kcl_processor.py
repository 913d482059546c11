"""The KCL record processor's hooks, driven with kclpy's own message classes."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from squall.deploy.kcl import EXIT_RECORDS_FAILED, RecordProcessor, check_kcl_safe
from squall.errors import SquallError
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.factories import KclCheckpointer, kcl_initialize, kcl_message, kcl_process_records

TOPOLOGY = """
name: kcl-test
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt', transient_failures: {transient}}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
{dlq}
"""


def processor(tmp_path: Path, *, transient: int = 0, dlq: bool = True):
    dl = f"  - {{id: dlq, type: dead_letter, path: {tmp_path / 'dlq.jsonl'}}}" if dlq else ""
    topo = load_text(TOPOLOGY.format(db=tmp_path / "w.db", transient=transient, dlq=dl))
    slept: list[float] = []
    p = RecordProcessor(Engine(topo.plan), stream="s", sleep=slept.append)
    kcl_initialize().dispatch(None, p)
    return p, slept


def test_processes_and_checkpoints_the_last_safe_position(tmp_path: Path):
    p, _ = processor(tmp_path)
    cp = KclCheckpointer()
    kcl_process_records([{"n": 1}, {"n": 2, "fail": "x"}, {"n": 3}]).dispatch(cp, p)
    kcl_process_records([{"n": 4}], start=200).dispatch(cp, p)
    assert cp.calls == [("102", 0), ("200", 0)]
    assert sqlite3.connect(tmp_path / "w.db").execute("select sum(n) from events").fetchone() == (
        8,
    )
    assert len((tmp_path / "dlq.jsonl").read_text().splitlines()) == 1


def test_a_dependency_outage_is_retried_in_process_never_skipped(tmp_path: Path):
    p, slept = processor(tmp_path, transient=3)
    cp = KclCheckpointer()
    kcl_process_records([{"n": 1}]).dispatch(cp, p)
    assert slept == [1.0, 2.0, 4.0] and cp.calls == [("100", 0)]


def test_failed_records_checkpoint_before_them_and_exit(tmp_path: Path):
    p, _ = processor(tmp_path, dlq=False)
    cp = KclCheckpointer()
    with pytest.raises(SystemExit) as exc:
        kcl_process_records([{"n": 1}, {"n": 2, "fail": "bad"}, {"n": 3}]).dispatch(cp, p)
    assert exc.value.code == EXIT_RECORDS_FAILED
    assert cp.calls == [("100", 0)]


def test_shard_end_checkpoints_so_children_can_start(tmp_path: Path):
    p, _ = processor(tmp_path)
    cp = KclCheckpointer()
    kcl_message({"action": "shardEnded"}).dispatch(cp, p)
    assert cp.calls == [(None, None)]


def test_stdout_sinks_are_refused_under_the_kcl(tmp_path: Path):
    topo = load_text(
        TOPOLOGY.format(db=tmp_path / "w.db", transient=0, dlq="  - {id: out, type: stdout}")
    )
    with pytest.raises(SquallError, match="protocol channel"):
        check_kcl_safe(topo)


HOLDING = """
name: kcl-hold
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
sinks:
  - {id: lake, type: 'tests.topology.test_holding:RollingSink', roll_events: 3}
"""


def test_a_holding_sink_holds_the_checkpoint_idle_polls_roll_and_shard_end_releases_first():
    from squall.testing import memory_stores

    with memory_stores({}):
        engine = Engine(load_text(HOLDING).plan, hold=True)
        p = RecordProcessor(engine, stream="s")
        kcl_initialize().dispatch(None, p)
        lake = next(c for c in engine.components if c.id == "lake")
        cp = KclCheckpointer()
        kcl_process_records([{"n": 1}, {"n": 2}]).dispatch(cp, p)
        assert cp.calls == []  # held: not durable yet
        kcl_process_records([]).dispatch(cp, p)  # an idle poll, not due
        assert cp.calls == []
        kcl_process_records([{"n": 3}], start=102).dispatch(cp, p)
        assert cp.calls == [("102", 0)] and len(lake.durable) == 3
        kcl_process_records([{"n": 4}], start=103).dispatch(cp, p)
        lake.config = lake.config.model_copy(update={"roll_events": 1})
        kcl_process_records([]).dispatch(cp, p)  # idle, now due (its age, in a real sink)
        assert cp.calls[-1] == ("103", 0)
        kcl_process_records([{"n": 5}], start=104).dispatch(cp, p)  # due at once: released
        lake.config = lake.config.model_copy(update={"roll_events": 9})
        kcl_process_records([{"n": 6}], start=105).dispatch(cp, p)
        kcl_message({"action": "shardEnded"}).dispatch(cp, p)
        # the held record is made durable and checkpointed before SHARD_END
        assert cp.calls[-3:] == [("104", 0), ("105", 0), (None, None)]
        assert [ev.value["n"] for ev in lake.durable] == [1, 2, 3, 4, 5, 6]


def test_the_young_collection_after_a_batch_does_not_scan_its_events(tmp_path: Path):
    """Between batches the process's own thresholds apply; the young collection then due ran
    right after ``Engine.process`` returned, while the batch's result still held its events —
    it scanned them all and collected nothing. A batch is now let go first."""
    import gc

    from squall.event import Event

    p, _ = processor(tmp_path)
    cp = KclCheckpointer()
    seen: list[int] = []
    # This test's events only: a thread another test left running (a server, a sink's) may
    # allocate events of its own in the young generation meanwhile.
    tag = uuid.uuid4().hex

    def ours(o: object) -> bool:
        if not isinstance(o, Event):
            return False
        if isinstance(o.value, dict):
            return o.value.get("tag") == tag
        return isinstance(o.raw, bytes) and tag.encode() in o.raw

    def census(phase: str, info: dict) -> None:
        if phase == "start" and gc.get_threshold()[0] == 50:  # the process's own: between batches
            seen.append(sum(1 for o in gc.get_objects(generation=0) if ours(o)))

    saved = gc.get_threshold()
    gc.set_threshold(50, 10, 10)  # a young collection due right after every batch
    gc.callbacks.append(census)
    try:
        for k in range(4):
            payloads = [{"n": 3 * k + i, "pad": ["x"] * 20, "tag": tag} for i in range(3)]
            kcl_process_records(payloads, start=100 * (k + 1)).dispatch(cp, p)
    finally:
        gc.callbacks.remove(census)
        gc.set_threshold(*saved)
    assert [c[0] for c in cp.calls] == ["102", "202", "302", "402"]
    assert seen and set(seen) == {0}, seen
    assert gc.get_threshold() == saved


def test_a_release_outside_a_batch_counts_as_a_checkpoint_not_a_batch():
    """The local runner counts a rolling sink's idle or final release in
    ``squall_checkpoints_total`` (hG); the KCL processor checkpointed it without a count."""
    from prometheus_client import CollectorRegistry

    from squall.observability.metrics import Recorder
    from squall.observability.prometheus import PrometheusBackend
    from squall.testing import memory_stores

    backend = PrometheusBackend(CollectorRegistry())
    with memory_stores({}):
        engine = Engine(load_text(HOLDING).plan, hold=True)
        p = RecordProcessor(engine, stream="s")
        p.metrics = Recorder("kcl-hold", [backend])
        kcl_initialize().dispatch(None, p)
        lake = next(c for c in engine.components if c.id == "lake")
        cp = KclCheckpointer()
        kcl_process_records([{"n": 1}]).dispatch(cp, p)  # held
        lake.config = lake.config.model_copy(update={"roll_events": 1})
        kcl_process_records([]).dispatch(cp, p)  # idle, due: released and checkpointed
        kcl_process_records([{"n": 2}], start=101).dispatch(cp, p)  # released in its batch
        lake.config = lake.config.model_copy(update={"roll_events": 9})
        kcl_process_records([{"n": 3}], start=102).dispatch(cp, p)  # held
        kcl_message({"action": "shardEnded"}).dispatch(cp, p)  # released before SHARD_END
    assert cp.calls == [("100", 0), ("101", 0), ("102", 0), (None, None)]

    def value(name: str, **labels: str) -> float:
        return backend.registry.get_sample_value(name, {"topology": "kcl-hold", **labels}) or 0.0

    assert value("squall_checkpoints_total") == 3  # was 1: the two releases went uncounted
    assert value("squall_batches_total", status="ok") == 3  # the idle poll is no batch
