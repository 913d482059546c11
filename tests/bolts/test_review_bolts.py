"""An adversarial review of the generic and lookup bolts: one defect per test, each failing before its fix."""

from __future__ import annotations

from squall.event import Event, RecordMeta
from squall.topology.outcomes import Outcome
from tests.bolts.test_builtin_bolts import run
from tests.bolts.test_window import MIN, T0, ev, make_bolt, store_url  # noqa: F401
from tests.bolts.test_window import run as run_window


def test_project_gives_each_event_its_own_copy_of_an_object_default():
    # One shared `{}` took what a later bolt wrote into one event to every event of the batch
    # (and to the config's default, so to later batches): all three ended with n 3.
    bolts = """  - {id: decode, type: json}
  - {id: p, type: project, defaults: {extra: {}, tags: []}}
  - {id: q, type: project, rename: {n: extra.n}}"""
    _, stores = run(bolts, [{"n": 1}, {"n": 2}, {"n": 3}])
    assert [ev.value for ev in stores["out"]] == [
        {"extra": {"n": 1}, "tags": []},
        {"extra": {"n": 2}, "tags": []},
        {"extra": {"n": 3}, "tags": []},
    ]
    stores["out"][0].value["tags"].append("x")
    assert stores["out"][1].value["tags"] == []


def test_dedupe_does_not_take_true_for_the_key_1():
    # Python's True == 1: the event keyed `true` was filtered as a duplicate of the one keyed 1
    # (acknowledged, never written).
    bolts = "  - {id: decode, type: json}\n  - {id: d, type: dedupe, key: k}"
    outcomes, stores = run(bolts, [{"k": 1}, {"k": True}, {"k": "1"}, {"k": 1}, {"k": True}])
    assert [ev.value["k"] for ev in stores["out"]] == [1, True, "1"]
    assert [o.outcome for o in outcomes][3:] == [Outcome.FILTERED, Outcome.FILTERED]


def test_a_window_where_tells_booleans_from_numbers_and_lets_an_object_match_nothing(
    tmp_path, unique_name
):
    # `where: {paid: true}` counted `paid: 1` (True == 1), and an event whose `paid` was a list
    # failed as a whole ("unhashable type"), lost to every other aggregate of the window.
    aggs = {
        "n": {"fn": "count"},
        "paid": {"fn": "count", "where": {"paid": True}},
        "ones": {"fn": "count", "where": {"k": [1, "x"]}},
    }
    bolt = make_bolt(f"sqlite:///{tmp_path / 's.db'}", unique_name, aggregates=aggs)
    batch = [
        ev(0, T0, paid=True, k=1),
        ev(1, T0 + 1, paid=1, k=True),
        ev(2, T0 + 2, paid=[True], k={"k": 1}),
        ev(3, T0 + 2 * MIN),
    ]
    out = bolt.process(batch)
    assert "error" not in out.streams
    bolt.commit_state(lambda e: True, None)
    bolt.state_committed()
    [result] = [e.value for e in out.streams["default"]]
    assert (result["n"], result["paid"], result["ones"]) == (3, 1, 1)


def test_a_window_fed_by_an_s3_object_with_a_long_key_commits_and_knows_its_replays(
    store_url,  # noqa: F811
    unique_name,
):
    # The S3 spout's shard is the object's key (up to 1,024 bytes): on PostgreSQL every commit
    # failed (`value too long for type character varying(200)`), so the input never moved on.
    key = "exports/year=2026/" + "é" * 300 + ".jsonl.gz"

    def line(i: int, t: int) -> Event:
        meta = RecordMeta("bucket", key, str(i), 0, "", None, None, f"digest{i}")
        return Event(b"", meta, None, i, {"timestamp": t, "app": "a"})

    bolt = make_bolt(store_url, unique_name)
    assert run_window(bolt, [line(1, T0), line(2, T0 + 1)]) == ([], [])
    # delivered again (the state was committed, the checkpoint not): not counted twice
    again = make_bolt(store_url, unique_name)
    assert run_window(again, [line(1, T0), line(2, T0 + 1), line(3, T0 + MIN)]) == (
        [{"window_start": "2024-05-01T10:00:00.000Z", "window_end": "2024-05-01T10:01:00.000Z",
          "app": "a", "n": 2, "final": True}],
        [],
    )  # fmt: skip


def test_a_second_input_file_is_counted_whole(tmp_path, unique_name):
    """Every file read by `squall run` is the shard 'file', numbered from line 1: the marks are
    kept per lineage (shard and input), else a second input's first lines, up to the first
    input's line count, were taken for replays and dropped (counted as filtered)."""

    def day(stream: str, n: int, t: int) -> list[Event]:
        # as the file spout makes them: a running fingerprint, the first one naming the input
        return [
            Event(b"", RecordMeta(stream, "file", str(i), 0, "", None, None, f"{stream}{i}",
                                  None, f"{stream}1"),
                  None, i, {"timestamp": t + i, "app": "a"})
            for i in range(1, n + 1)
        ]  # fmt: skip

    url = f"sqlite:///{tmp_path / 's.db'}"
    run_window(make_bolt(url, unique_name), day("day1.jsonl", 3, T0))
    bolt = make_bolt(url, unique_name)
    results, _ = run_window(bolt, day("day2.jsonl", 5, T0 + 24 * 60 * MIN))
    results += [e.value for e in bolt.flush(day("day2.jsonl", 1, T0)[0]).streams["default"]]
    counts = {r["window_start"]: r["n"] for r in results}
    assert counts["2024-05-01T10:00:00.000Z"] == 3  # the first file: whole
    assert counts["2024-05-02T10:00:00.000Z"] == 5  # the second: 2 (its lines 1-3 dropped)


def test_a_second_file_starting_with_the_first_files_line_is_counted_whole(tmp_path, unique_name):
    """Review of 6 December: two files whose first line is the same (a header line) have the
    same source (the first record's fingerprint); the lineage also names the input (its stream,
    the file name), else day 2's first lines were dropped as replays of day 1's."""

    def day(stream: str, n: int, t: int) -> list[Event]:
        return [
            Event(b"", RecordMeta(stream, "file", str(i), 0, "", None, None, f"{stream}{i}",
                                  None, "same-first-line"),
                  None, i, {"timestamp": t + i, "app": "a"})
            for i in range(1, n + 1)
        ]  # fmt: skip

    url = f"sqlite:///{tmp_path / 's.db'}"
    run_window(make_bolt(url, unique_name), day("day1.jsonl", 3, T0))
    bolt = make_bolt(url, unique_name)
    results, _ = run_window(bolt, day("day2.jsonl", 5, T0 + 24 * 60 * MIN))
    results += [e.value for e in bolt.flush(day("day2.jsonl", 1, T0)[0]).streams["default"]]
    counts = {r["window_start"]: r["n"] for r in results}
    assert counts["2024-05-02T10:00:00.000Z"] == 5  # before: 2 (its lines 1-3 dropped)
    # the same file read again is still its own replay: nothing counted twice
    again = make_bolt(url, unique_name)
    results, _ = run_window(again, day("day2.jsonl", 5, T0 + 24 * 60 * MIN))
    assert results == []


def test_a_lookup_key_with_a_nul_fails_only_its_events_on_postgresql(pg_url_psycopg2, unique_name):
    # psycopg2 refuses a NUL in a parameter with a ValueError before sending anything: it left
    # the bolt's own isolation of keys (raised out of `process`, whatever the other keys).
    import sqlalchemy as sa

    from tests.bolts.test_lookup import create_apps
    from tests.bolts.test_lookup import make_bolt as make_lookup
    from tests.bolts.test_lookup import run as run_lookup
    from tests.enrichment.support import resources

    create_apps(pg_url_psycopg2, unique_name)
    try:
        bolt = make_lookup(
            resources(db=pg_url_psycopg2),
            key="platform",
            source={"type": "sql", "resource": "db", "table": unique_name, "columns": ["name"],
                    "key_columns": ["platform"]},
        )  # fmt: skip
        ok, failed, _ = run_lookup(bolt, [{"platform": "android"}, {"platform": "i\x00os"}])
        assert ok == {0: {"name": "Weather"}}
        assert set(failed) == {1} and "NUL" in failed[1]
    finally:
        with sa.create_engine(pg_url_psycopg2).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')


def test_a_record_squall_replay_redrives_is_counted_in_its_open_window(tmp_path, unique_name):
    """A record dead-lettered before the window (its decode failed) while later records of its
    shard were counted: its position is behind the shard's mark. Re-driven by `squall replay`
    (meta.replay = 1), it is a record of its own lineage — counted now, not dropped as a replay
    of what the mark covers; the same replay repeated counts nothing twice."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    bolt = make_bolt(url, unique_name)
    # records 1 and 3 counted (record 2 failed upstream and went to the dead letter)
    run_window(bolt, [ev(1, T0), ev(3, T0 + 2)])
    replayed = ev(2, T0 + 1)
    replayed.meta = replayed.meta._replace(replay=1)
    for _ in range(2):
        copy = Event(b"", replayed.meta, None, 0, dict(replayed.value))
        out = bolt.process([copy])
        bolt.commit_state(lambda e: True, None)
        bolt.state_committed()
        assert out.streams.get("late") is None
    bolt = make_bolt(url, unique_name)
    results, _ = run_window(bolt, [ev(4, T0 + 3 * MIN)])
    assert {r["window_start"]: r["n"] for r in results if r["final"]} == {
        "2024-05-01T10:00:00.000Z": 3
    }


def test_an_s3_key_named_like_a_replay_is_a_shard_that_holds_the_watermark(tmp_path, unique_name):
    """Marks of re-driven records take no part in the watermark, told by their lineage's head;
    an S3 object whose key starts with "replay" is an input like any other."""
    from squall.event import REPLAY_LINEAGE, lineage

    meta = RecordMeta("bucket", "replay 2024-05-01.jsonl", "1", 0, "", None, None, "f", None, "s")
    assert not lineage(meta).startswith(REPLAY_LINEAGE)
    assert lineage(meta._replace(replay=1)).startswith(REPLAY_LINEAGE)
