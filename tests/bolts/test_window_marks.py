"""Shard marks are pruned once they cannot change a decision (window.py ``_prune``): their number
stays bounded with a shard per message (SQS standard queues, S3 objects, daily files), a record
delivered again after its mark is gone is still counted once, a mark another process raised
meanwhile survives the delete, and a mark still holding the watermark is kept. On every store."""

from __future__ import annotations

from squall.bolts import window
from squall.bolts.window import PRUNED_MARK, WATERMARK_MARK
from squall.bolts.window_store import Prune, ShardMark
from tests.bolts.test_window import (  # noqa: F401
    MIN,
    T0,
    ev,
    finals,
    make_bolt,
    mark_name,
    run,
    store_url,
)


def minute(k: int) -> str:
    return f"2024-05-01T10:{k:02d}:00.000Z"


def test_marks_of_a_shard_per_message_stay_bounded_and_a_redelivery_counts_once(
    store_url,  # noqa: F811
    unique_name,
):
    """400 messages one second apart, each its own shard (``msg-<id>``), one per batch. A mark
    goes once it is idle (2 min behind the newest) and its window closed: about 180 stay, not
    400. Messages delivered again after their marks went are late, and no window counts them
    twice (the windows of 10:00–10:03 held 60 each, and still do)."""
    bolt = make_bolt(store_url, unique_name, idle_shard_after="2m")
    got: dict = {}
    for i in range(400):
        results, late = run(bolt, [ev(i, T0 + i * 1000, f"msg-{i}")])
        assert late == []
        got.update(finals(results))
    marks = bolt.store.shards()
    # kept: the newest (the top: 10:06:39), and every mark within idle_shard_after + size of it
    assert 170 <= len(marks) - 2 <= 185, len(marks)  # (- the watermark's and the bound's)
    assert (
        min(m.watermark for s, m in marks.items() if s not in (WATERMARK_MARK, PRUNED_MARK))
        >= T0 + 399_000 - 3 * MIN
    )
    assert {k: r["n"] for k, r in got.items()} == {(minute(k), "a"): 60 for k in range(4)}
    assert mark_name("msg-0") not in marks and mark_name("msg-399") in marks

    results, late = run(bolt, [ev(i, T0 + i * 1000, f"msg-{i}") for i in range(10)])
    assert results == [] and len(late) == 10 and all("late" in e.failure.reason for e in late)
    more: dict = {}
    for i in range(400, 500):  # closes 10:04 and 10:05; 10:00 is never emitted again
        results, _ = run(bolt, [ev(i, T0 + i * 1000, f"msg-{i}")])
        more.update(finals(results))
    assert {k: r["n"] for k, r in more.items()} == {(minute(k), "a"): 60 for k in (4, 5)}


def test_a_delete_never_loses_a_mark_another_process_raised_since(
    store_url,  # noqa: F811
    unique_name,
):
    """Process a reads X's mark (10:00) idle and closed, and stages a batch of shard Z (10:10);
    before a commits, b commits X's next record (10:10). a's commit deletes X's mark only if it
    is still at most its cutoff: it is not, so b's mark stays, and b's record delivered again is
    recognised as counted."""
    a, b = make_bolt(store_url, unique_name), make_bolt(store_url, unique_name)
    run(a, [ev(0, T0, "X")])
    a.process([ev(1, T0 + 10 * MIN, "Z")])
    run(b, [ev(2, T0 + 10 * MIN, "X")])
    a.commit_state(lambda e: True)
    a.state_committed()
    assert a.store.shards()[mark_name("X")] == ShardMark(T0 + 10 * MIN, 1002, 0)
    out = b.process([ev(2, T0 + 10 * MIN, "X")])
    assert out.streams == {} and len(out.dropped) == 1


def test_a_mark_below_the_saved_watermark_that_is_not_idle_keeps_holding_it(
    store_url,  # noqa: F811
    unique_name,
):
    """Shards A and B at 10:10, then a message C of 10:08 (late: its window closed, but C is
    only 2 min behind the newest: not idle). C's mark holds the watermark at 10:10 while A and B
    go to 10:12, so 10:10 stays open; deleting it because its window closed would close 10:10
    at once. Only at 10:13 (C 5 min behind: idle) does 10:10 close."""
    bolt = make_bolt(store_url, unique_name)
    run(bolt, [ev(0, T0 + 10 * MIN, "A"), ev(0, T0 + 10 * MIN, "B")])
    results, late = run(bolt, [ev(1, T0 + 8 * MIN, "C")])
    assert results == [] and len(late) == 1
    assert run(bolt, [ev(2, T0 + 12 * MIN, "A"), ev(2, T0 + 12 * MIN, "B")]) == ([], [])
    assert run(bolt, [ev(3, T0 + 12 * MIN + 1, "A"), ev(3, T0 + 12 * MIN + 1, "B")]) == ([], [])
    results, _ = run(bolt, [ev(4, T0 + 13 * MIN + 1, "A"), ev(4, T0 + 13 * MIN + 1, "B")])
    assert {k: r["n"] for k, r in finals(results).items()} == {
        (minute(10), "a"): 2,
        (minute(12), "a"): 4,
    }
    assert (
        mark_name("C") not in bolt.store.shards()
    )  # idle and closed by then: the next commit deleted it


def test_one_commit_deletes_a_bounded_number_of_marks_lowest_first(
    store_url,  # noqa: F811
    unique_name,
    monkeypatch,
):
    """A backlog of prunable marks (here 20 messages of one batch, then the watermark 10 min on;
    after an upgrade, every mark an earlier version kept) drains over commits: each deletes at
    most ``PRUNE_AT_MOST`` (or twice its batch's lineages), the lowest watermarks first."""
    monkeypatch.setattr(window, "PRUNE_AT_MOST", 3)
    bolt = make_bolt(store_url, unique_name)
    run(bolt, [ev(i, T0 + i * 1000, f"msg-{i}") for i in range(20)])
    run(bolt, [ev(20, T0 + 10 * MIN, "Z")])
    assert sorted(s for s in bolt.store.shards() if s.startswith("msg-")) == sorted(
        mark_name(f"msg-{i}") for i in range(3, 20)
    )
    run(bolt, [ev(21, T0 + 10 * MIN + 1, "Z")])
    assert len([s for s in bolt.store.shards() if s.startswith("msg-")]) == 14


def test_a_lateness_raised_after_a_prune_does_not_count_a_record_again(
    store_url,  # noqa: F811
    unique_name,
):
    """Message X (10:00) is counted, then pruned (idle and closed: the watermark at 10:10).
    The topology is restarted with ``allowed_lateness: 15m``. X delivered again (an SQS message
    a second time) has no mark; by the new lateness alone its window (10:00) would be open and X
    counted a second time — with its mark kept, it would have been dropped as a replay. The
    bound the prune used is saved with the marks: X is late, the window still holds 1."""
    bolt = make_bolt(store_url, unique_name, idle_shard_after="2m")
    run(bolt, [ev(0, T0, "msg-X")])
    results, _ = run(bolt, [ev(1, T0 + 10 * MIN, "Z")])
    assert {k: r["n"] for k, r in finals(results).items()} == {(minute(0), "a"): 1}
    assert mark_name("msg-X") not in bolt.store.shards()
    later = make_bolt(store_url, unique_name, idle_shard_after="2m", allowed_lateness="15m")
    results, late = run(later, [ev(0, T0, "msg-X")])
    assert results == [] and len(late) == 1
    results, _ = run(later, [ev(2, T0 + 30 * MIN, "Z")])
    assert (minute(0), "a") not in finals(results), finals(results)


def test_an_idle_shard_after_raised_after_a_prune_moves_the_watermark_as_the_kept_mark_would(
    store_url,  # noqa: F811
    unique_name,
    monkeypatch,
):
    """X (10:00) goes idle behind Z (10:10) with ``idle_shard_after: 2m``; the topology is
    restarted with ``30m``. Whether X's mark was pruned or not, the watermark moves the same:
    a mark at or below the bound a prune used is idle (as it was when pruned), so Z at 10:12
    closes 10:10 in both states."""
    got = []
    keep = window.WindowBolt._prune

    def bound_only(self, marks, wm):  # the same prune, its bound saved, no mark deleted
        p = keep(self, marks, wm)
        return p and Prune(p.cutoff, [])

    for prune in (True, False):
        name = f"{unique_name}_{int(prune)}"
        if not prune:
            monkeypatch.setattr(window.WindowBolt, "_prune", bound_only)
        bolt = make_bolt(store_url, name, idle_shard_after="2m")
        run(bolt, [ev(0, T0, "msg-X")])
        run(bolt, [ev(1, T0 + 10 * MIN, "Z")])
        assert (mark_name("msg-X") in bolt.store.shards()) is not prune
        later = make_bolt(store_url, name, idle_shard_after="30m")
        results, _ = run(later, [ev(2, T0 + 12 * MIN, "Z")])
        got.append({k: r["n"] for k, r in finals(results).items()})
    assert got[0] == got[1] == {(minute(10), "a"): 1}
