"""The window bolt fed by two Kinesis streams whose shards share ids (every stream has a
``shardId-000000000000``): marks count per stream and shard. And marks saved before lineages
named the stream (the bare shard id) read by this version, on every store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from squall.bolts import window
from squall.bolts.window import WATERMARK_MARK
from squall.bolts.window_store import Retire, ShardMark
from squall.deploy.lambda_consumer import make_handler
from squall.event import REPLAY_LINEAGE, Event, RecordMeta, lineage
from tests.factories import kinesis_lambda_event

from .test_review_window2 import S1, S2, commit, results
from .test_window import MIN, T0, make_bolt, mark_name, run, store_url  # noqa: F401

SHARD = "shardId-000000000000"
CLICKS, VIEWS = 10**21, 10**20  # the first sequence numbers of two streams: views' are lower

TOPOLOGY = """
name: win
resources:
  db: {{url: "sqlite:///{db}"}}
  state: {{url: "sqlite:///{state}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: minutely, type: window, store: state, key: [app], size: 1m, aggregates: {{n: {{fn: count}}}}}}
sinks:
  - id: results
    type: warehouse
    resource: db
    table: minutely
    mode: upsert
    key: [window_start, app]
    columns:
      window_start: {{path: window_start, type: timestamp}}
      app: app
      n: {{path: n, type: integer}}
  - {{id: dlq, type: dead_letter, path: "{dlq}"}}
"""


def test_records_of_a_second_stream_are_counted_not_dropped_as_replays(tmp_path: Path):
    """One Lambda function, two Kinesis event source mappings (clicks, views), one window
    state. Both streams' shard 0 counts in the 10:00 window: two clicks, two views. The views'
    sequence numbers are lower than the clicks': compared under one mark they were taken for
    replays of what the clicks' mark covered, and dropped — a silent loss (10:00 had 2)."""
    path = tmp_path / "w.yaml"
    path.write_text(
        TOPOLOGY.format(db=tmp_path / "w.db", state=tmp_path / "s.db", dlq=tmp_path / "dlq")
    )

    def invoke(stream: str, seconds: list[int], start: int) -> None:
        payloads = [{"timestamp": T0 + s * 1000, "app": "a"} for s in seconds]
        handler = make_handler(path)
        try:
            event = kinesis_lambda_event(payloads, shard=SHARD, stream=stream, start=start)
            assert handler(event, None) == {"batchItemFailures": []}
        finally:
            handler.engine.close()

    invoke("clicks", [0, 10], CLICKS)
    invoke("views", [20, 30], VIEWS)
    invoke("clicks", [70], CLICKS + 2)
    invoke("views", [75], VIEWS + 2)  # both streams past 10:01: 10:00 closes
    rows = sqlite3.connect(tmp_path / "w.db").execute("select app, n from minutely").fetchall()
    assert rows == [("a", 4)]
    assert (tmp_path / "dlq").read_text() == ""


# -- upgrade: marks and decisions saved under the bare shard id ---------------------------------------


def _old_lineage(meta: RecordMeta) -> str:
    """Lineages as squall named them before they named the stream: a Kinesis shard's its id."""
    return meta.shard_id if meta.source is None and not meta.replay else lineage(meta)


@contextmanager
def _previous_version(monkeypatch) -> Iterator[None]:
    with monkeypatch.context() as m:
        m.setattr(window, "lineage", _old_lineage)
        yield


def _on(stream: str, i: int, t: int, shard: str = SHARD, start: int = 1000, **payload) -> Event:
    meta = RecordMeta(stream, shard, str(start + i), 0, "pk")
    return Event(b"", meta, None, i, {"timestamp": t, "app": "a", **payload})


def _counts(results: list[dict]) -> dict[tuple, int]:
    return {(r["window_start"][11:16], r["app"]): r["n"] for r in results if r["final"]}


def test_records_counted_before_the_upgrade_and_delivered_again_after_it_count_once(
    store_url,  # noqa: F811
    unique_name,
    monkeypatch,
):
    """The previous version counted records 0–4 of one stream's shard 0 (mark: the shard id
    alone) but the checkpoint stopped after record 2 (a crash between the state commit and the
    checkpoint: Redis state, Lambda, the KCL). The upgraded consumer starts from the
    checkpoint: records 3 and 4 are recognised by the old mark and dropped, 5 is counted; 10:00
    holds 6. The lineage's first commit saves its mark under the new name and deletes the old
    one. (Without the old mark taken over, 3 and 4 counted twice: 8.)"""
    with _previous_version(monkeypatch):
        old = make_bolt(store_url, unique_name)
        run(old, [_on("clicks", i, T0 + i * 1000) for i in range(3)])
        run(old, [_on("clicks", i, T0 + i * 1000) for i in (3, 4)])
        assert set(old.store.shards()) == {SHARD, WATERMARK_MARK}
    bolt = make_bolt(store_url, unique_name)
    out = bolt.process([_on("clicks", i, T0 + i * 1000) for i in (3, 4, 5)])
    assert [e.origin for e in out.dropped][:2] == [3, 4]  # the replays (5 is consumed)
    commit(bolt)
    new = lineage(_on("clicks", 0, T0).meta)
    assert set(bolt.store.shards()) == {new, WATERMARK_MARK}
    assert bolt.store.shards()[new].sequence == 1005
    got, late = run(bolt, [_on("clicks", 6, T0 + 70_000)])
    assert late == [] and _counts(got) == {("10:00", "a"): 6}


def test_a_mark_of_two_streams_saved_before_the_upgrade_drops_only_what_it_counted(
    store_url,  # noqa: F811
    unique_name,
    monkeypatch,
):
    """The previous version mixed two streams' shard 0 under one mark; the clicks' (higher
    sequence numbers) wrote it last. After the upgrade the views' records below that position
    but later in time than its watermark are new, not replays: counted. Both streams past
    10:01 close 10:00 with 2 clicks and 2 views. (Dropped by position alone: 2.)"""
    with _previous_version(monkeypatch):
        old = make_bolt(store_url, unique_name)
        run(old, [_on("clicks", i, T0 + i * 1000, start=CLICKS) for i in range(2)])
    bolt = make_bolt(store_url, unique_name)
    views = [_on("views", i, T0 + (20 + 10 * i) * 1000, start=VIEWS) for i in range(2)]
    assert run(bolt, views) == ([], [])
    assert SHARD not in bolt.store.shards()  # taken over: the views' first commit deleted it
    run(bolt, [_on("clicks", 2, T0 + 70_000, start=CLICKS)])
    got, late = run(bolt, [_on("views", 2, T0 + 75_000, start=VIEWS)])
    assert late == [] and _counts(got) == {("10:00", "a"): 4}


def test_a_decision_saved_before_the_upgrade_decides_the_record_that_comes_again(
    store_url,  # noqa: F811
    unique_name,
    monkeypatch,
):
    """The previous version's partial commit saved, under the shard id alone, how shard 2's
    record of 10:06 was decided (accepted: shard 1 was at 10:04); it failed downstream. The
    upgraded consumer delivers it again: decided the same (accepted, 10:06 emitted with it),
    and the old name's decision and mark are deleted with that commit. (Without them, shard 2
    looked idle 10 min behind shard 1 and the record was late.)"""
    with _previous_version(monkeypatch):
        a = make_bolt(store_url, unique_name)
        run(a, [_on("s", 0, T0, S2, app="x"), _on("s", 0, T0 + 4 * MIN, S1, app="x")])
        a.process([_on("s", 1, T0 + 6 * MIN, S2, app="k"), _on("s", 1, T0 + 10 * MIN, S1)])
        commit(a, lambda e: e.meta.shard_id == S1)
        assert set(a.store.read_marks()[1]) == {S2}
    b = make_bolt(store_url, unique_name)
    again = b.process([_on("s", 1, T0 + 6 * MIN, S2, app="k"), _on("s", 2, T0 + 10 * MIN, S2)])
    assert "late" not in again.streams
    assert _counts(results(again))[("10:06", "k")] == 1
    commit(b)
    marks, decided = b.store.read_marks()
    assert decided == {} and S2 not in marks and mark_name(S2) in marks


def test_an_old_mark_another_process_wrote_since_it_was_read_stays(
    store_url,  # noqa: F811
    unique_name,
):
    """An old name's mark and decisions are deleted only while still as the bolt read them: the
    previous version, still running somewhere (a rolling upgrade), may have raised them."""
    bolt = make_bolt(store_url, unique_name)
    read = {"a": ShardMark(T0, 5, 0), "b": ShardMark(T0, 5, 0)}
    bolt.store.commit({}, {}, read, 0, decided={"a": "[1]", "b": "[1]"})
    bolt.store.commit({}, {}, {"b": ShardMark(T0 + 1, 6, 0)}, 0, decided={"b": "[2]"})
    bolt.store.commit({}, {}, {}, 0, retire=Retire(read, {"a": "[1]", "b": "[1]"}))
    marks, decided = bolt.store.read_marks()
    assert marks == {"b": ShardMark(T0 + 1, 6, 0)} and decided == {"b": "[2]"}


def _old_replay_lineage(meta: RecordMeta) -> str:
    """Lineages exactly as the previous version named them, a re-driven Kinesis record's too:
    ``replay N``, the shard id alone and the position (no stream)."""
    if meta.source is None and meta.replay:
        position = f"{meta.sequence_number}\x1f{meta.sub_sequence_number}"
        return f"{REPLAY_LINEAGE}{meta.replay}\x1f{meta.shard_id}\x1f{position}"
    return _old_lineage(meta)


def test_a_replay_counted_before_the_upgrade_and_repeated_after_it_counts_once(
    store_url,  # noqa: F811
    unique_name,
    monkeypatch,
):
    """`squall replay` re-drove record 2 of a Kinesis shard (dead-lettered upstream) with the
    previous version: counted in 10:00, its mark under the old replay lineage. The same replay
    repeated after the upgrade is recognised by that mark and dropped: 10:00 holds 3. (Named
    with the stream only, the repeat was counted again: 4.)"""
    replayed = _on("clicks", 2, T0 + 2000)
    replayed.meta = replayed.meta._replace(replay=1)
    with monkeypatch.context() as m:
        m.setattr(window, "lineage", _old_replay_lineage)
        old = make_bolt(store_url, unique_name)
        run(old, [_on("clicks", i, T0 + i * 1000) for i in (1, 3)])
        run(old, [Event(b"", replayed.meta, None, 0, dict(replayed.value))])
    bolt = make_bolt(store_url, unique_name)
    again = bolt.process([Event(b"", replayed.meta, None, 0, dict(replayed.value))])
    assert not again.streams.get("late")
    commit(bolt)
    got, late = run(bolt, [_on("clicks", 4, T0 + 70_000)])
    assert late == [] and _counts(got) == {("10:00", "a"): 3}
