"""A partial commit saves how its records that come again were decided (window.py
``_decisions``): another process delivering them decides the same, the saved decisions go once
the records are committed, a hopping window's partly closed decision is kept too, and a store
written by the previous version (no decisions table) keeps working. On every store."""

from __future__ import annotations

import sqlalchemy as sa

from tests.bolts.test_review_window2 import S1, S2, TEN, commit, results, sql_url  # noqa: F401
from tests.bolts.test_window import MIN, T0, ev, make_bolt, mark_name, run, store_url  # noqa: F401

AT = "2024-05-01T10:{:02d}:00.000Z".format


def test_a_record_that_comes_again_to_another_process_is_decided_as_the_first_time(
    store_url,  # noqa: F811
    unique_name,
):
    """One batch of two shards: shard 2's record of 10:06 (accepted: shard 1 was at 10:04), then
    shard 1's of 10:10; shard 2's record failed downstream. The commit saves its decision; a new
    process (a restart) delivers it again: accepted, the window 10:06 emitted with it, and the
    saved decision deleted with that commit. Without the saved decision, the watermark (10:10:
    shard 2, 10 min behind, looks idle) makes it late."""
    a = make_bolt(store_url, unique_name)
    run(a, [ev(0, T0, S2, app="x"), ev(0, T0 + 4 * MIN, S1, app="x")])
    first = a.process([ev(1, T0 + 6 * MIN, S2, app="k"), ev(1, T0 + 10 * MIN, S1, app="z")])
    assert "late" not in first.streams
    commit(a, lambda e: e.meta.shard_id == S1)
    assert set(a.store.read_marks()[1]) == {mark_name(S2)}
    b = make_bolt(store_url, unique_name)
    again = b.process([ev(1, T0 + 6 * MIN, S2, app="k"), ev(2, T0 + 10 * MIN, S2, app="x")])
    assert "late" not in again.streams
    assert {(r["window_start"], r["app"]): r["n"] for r in results(again)}[(AT(6), "k")] == 1
    commit(b)
    assert b.store.read_marks()[1] == {}
    late, _ = run(b, [ev(3, T0 + 11 * MIN, S1)]), None
    assert late[1] == []


def test_a_record_failed_twice_keeps_its_first_decision_and_a_hopping_window_its_part(
    store_url,  # noqa: F811
    unique_name,
):
    """Hopping windows (2 min, hop 1 min): shard 2's record of 10:05:30 falls in 10:04–10:06 and
    10:05–10:07. Shard 1 at 10:06 (lateness 0): the first delivery takes it in 10:05–10:07 only
    (10:04–10:06 closed). It fails twice, the second time after shard 1 has moved to 10:20; then
    it is committed: counted in 10:05–10:07 once, and not late."""
    a = make_bolt(store_url, unique_name, size="2m", hop="1m")
    run(a, [ev(0, T0 + 6 * MIN, S1, app="x"), ev(0, T0 + 5 * MIN, S2, app="x")])
    rec = ev(1, T0 + 5 * MIN + 30_000, S2, app="k")
    out = a.process([rec, ev(1, T0 + 6 * MIN + 1, S1, app="x")])
    assert "late" not in out.streams
    commit(a, lambda e: e.meta.shard_id == S1)
    out = a.process([ev(1, T0 + 5 * MIN + 30_000, S2, app="k"), ev(2, T0 + 20 * MIN, S1)])
    assert "late" not in out.streams
    commit(a, lambda e: e.meta.shard_id == S1)
    b = make_bolt(store_url, unique_name, size="2m", hop="1m")
    out = b.process([ev(1, T0 + 5 * MIN + 30_000, S2, app="k")])
    commit(b)
    assert "late" not in out.streams
    got = {r["window_start"]: r["n"] for r in results(out) if r["final"] and r["app"] == "k"}
    assert got == {AT(5): 1}


def test_a_sql_store_of_the_previous_version_gets_its_decisions_table(sql_url, unique_name):  # noqa: F811
    """The previous version's two tables, with a mark, and no ``_decided`` table: the bolt
    creates it, reads the mark (a record at it is a replay) and saves decisions."""
    url = sa.make_url(sql_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    engine = sa.create_engine(url)
    table = f"w_{unique_name}"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {table}_log (name VARCHAR(200) NOT NULL, window_start BIGINT NOT NULL, "
                "id VARCHAR(32) NOT NULL, window_end BIGINT NOT NULL, rev INTEGER NOT NULL, "
                "body TEXT NOT NULL, PRIMARY KEY (name, window_start, id))"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TABLE {table}_shards (name VARCHAR(200) NOT NULL, shard VARCHAR(200) NOT NULL, "
                "watermark BIGINT NOT NULL, sequence VARCHAR(64) NOT NULL, sub INTEGER NOT NULL, "
                "PRIMARY KEY (name, shard))"
            )
        )
        conn.execute(
            sa.text(f"INSERT INTO {table}_shards VALUES (:n, :s, :w, '1000', 0)"),
            {"n": unique_name, "s": S1, "w": T0},
        )
    engine.dispose()
    bolt = make_bolt(sql_url, unique_name)
    out = bolt.process([ev(0, T0, S1, app="k"), ev(1, T0 + 1, S2), ev(1, T0 + 2, S1)])
    assert len(out.dropped) == 3 and "late" not in out.streams  # the replay, and two counted
    commit(bolt, lambda e: e.meta.shard_id == S1)
    assert set(bolt.store.read_marks()[1]) == {mark_name(S2)}


def test_a_lineage_with_records_to_come_again_keeps_its_mark(store_url, unique_name):  # noqa: F811
    """After the partial commit, shard 2's mark (10:00) is idle and its window closed — prunable
    (test_window_marks.py) — but its record of 10:06 is still to come: the mark stays until that
    record is committed, then goes with a later commit."""
    a = make_bolt(store_url, unique_name)
    run(a, [ev(0, T0, S2, app="x"), ev(0, T0 + 4 * MIN, S1, app="x")])
    a.process([ev(1, T0 + 6 * MIN, S2, app="k"), ev(1, T0 + 10 * MIN, S1, app="z")])
    commit(a, lambda e: e.meta.shard_id == S1)
    run(a, [ev(2, T0 + 11 * MIN, S1)])
    assert mark_name(S2) in a.store.shards()
    run(a, [ev(1, T0 + 6 * MIN, S2, app="k")])
    run(a, [ev(3, T0 + 12 * MIN, S1)])
    assert mark_name(S2) not in a.store.shards() and a.store.read_marks()[1] == {}


def test_decisions_of_a_lineage_that_never_comes_back_go_once_its_windows_expired(
    store_url,  # noqa: F811
    unique_name,
):
    """A producer request (its own lineage) whose second record failed after the request's first
    record and another shard's were committed: the decision of the failed record is saved. The
    client retries with a new request (another lineage): this one never comes back. Once the
    failed record's windows have expired and its lineage is idle, the decision and the mark go
    (they stayed for ever, read by every batch); delivered again after all, the record is late
    (accepted by its old decision, it would have emitted its window again from itself alone)."""
    bolt = make_bolt(store_url, unique_name, idle_shard_after="2m")
    req = "api-req-1"
    bolt.process([ev(0, T0, req), ev(1, T0 + 1000, req), ev(2, T0 + 2000, S1)])
    commit(bolt, lambda e: e.origin != 1)
    assert set(bolt.store.read_marks()[1]) == {mark_name(req)}
    for i in range(3, 8):
        run(bolt, [ev(i, T0 + i * 2 * MIN, S1)])
    marks, decided = bolt.store.read_marks()
    assert mark_name(req) not in marks and decided == {}
    out = bolt.process([ev(1, T0 + 1000, req)])
    assert len(out.streams.get("late", [])) == 1 and "default" not in out.streams


def test_a_decided_record_in_a_later_call_of_its_batch_goes_into_a_window_an_earlier_call_closed(
    store_url,  # noqa: F811
    unique_name,
):
    """Shard 2's records of 10:00:30 and 10:00:40, then shard 1's of 10:03 (shard 2 idle after
    1 min: the window 10:00 closes, emitting 2); the second failed downstream. Delivered again in
    a batch the engine's poison isolation runs in two calls: the first closes 10:00 (the
    watermark read at the batch's start passed it) without the record, the second takes it by
    its saved decision. The window is closed again with it (its result said 1 for ever, the
    commit's replace dropping the record)."""
    for split in (False, True):
        name = f"{unique_name}{int(split)}"  # (Redis: under the fixture's prefix, deleted after)
        bolt = make_bolt(store_url, name, key_prefix=f"test:{unique_name}:", idle_shard_after="1m")
        first = bolt.process(
            [ev(1, T0 + 30_000, S2), ev(2, T0 + 40_000, S2), ev(3, T0 + 3 * MIN, S1)]
        )
        assert [r["n"] for r in results(first)] == [2]
        commit(bolt, lambda e: e.origin != 2)  # shard 2's checkpoint stops before record 2
        again = [ev(4, T0 + 3 * MIN + 1, S1), ev(2, T0 + 40_000, S2)]
        outs = (
            [bolt.process(again[:1]), bolt.process(again[1:])] if split else [bolt.process(again)]
        )
        got = {r["window_start"]: r["n"] for out in outs for r in results(out) if r["final"]}
        assert got == {TEN: 2}
        commit(bolt)
        closed, _ = run(bolt, [ev(5, T0 + 10 * MIN, S1), ev(6, T0 + 10 * MIN, S2)])
        assert TEN not in {r["window_start"] for r in closed}
