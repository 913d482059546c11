"""A failed fsync of the dead-letter file is final for the process (PostgreSQL's "fsyncgate": the
kernel may have dropped the dirty pages, and an fsync tried again can answer success). The EIO is
injected by wrapping ``os.fsync`` in the test process — a failure of the OS, nothing faked."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from squall.errors import BatchFailed
from squall.sinks import dead_letter
from tests.sinks.test_dead_letter_file import bad, dlq, engine, event_ids


def failing_fsync(monkeypatch: pytest.MonkeyPatch, fd: int, times: int = 1) -> list[int]:
    """``os.fsync`` of ``fd`` fails with EIO ``times`` times, then answers as the kernel does
    after a failed writeback it reported once: success (the dirty pages marked clean)."""
    real, calls = os.fsync, []

    def fsync(f: int) -> None:
        if f == fd:
            calls.append(f)
            if len(calls) <= times:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(f)

    monkeypatch.setattr(dead_letter.os, "fsync", fsync)
    return calls


def readable_records(path: Path) -> list[str]:
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            out.append(json.loads(line)["record"])
        except ValueError:  # a torn or lost line
            continue
    return out


@pytest.mark.parametrize("after", ["power cut", "same boot"])
@pytest.mark.parametrize("batch", ["whole", "isolated"])
def test_a_failed_fsync_fails_the_batch_naming_the_file_and_every_later_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: str, after: str
):
    """The fsync after the append fails (EIO): the batch fails naming the file and the cause — a
    raw ``OSError`` escaped, its message naming no file — and the sink refuses every later write
    of the process. Before, the engine's next attempt (or the runner's next batch) found the keys
    in the lines the failed fsync may not have written, fsynced again — success, since the kernel
    reports a writeback error once — and let the checkpoint move. ``isolated``: the sink's first
    call fails as one record's fault, so the failing fsync comes in the isolation's part writes
    (which call ``write_batch`` directly). The next start takes no key from the lines after the
    last fsync that succeeded: gone (``power cut``: zeros where they were) or still in the page
    cache (``same boot``: maybe not on disk), their dead letters are written again."""
    f = tmp_path / "dlq.jsonl"
    e = engine(tmp_path, remember=100, name=f"eio-{batch}", fsync=True)
    assert e.process(bad(0, 2)).ok
    durable = f.stat().st_size
    sink = dlq(e)
    if batch == "isolated":
        real_fresh, calls = sink._fresh, []

        def fresh_faulting_once(events):
            calls.append(1)
            if len(calls) == 1:
                raise ValueError("a record's fault")  # the engine isolates: part writes
            return real_fresh(events)

        monkeypatch.setattr(sink, "_fresh", fresh_faulting_once)
    failing_fsync(monkeypatch, sink._fh.fileno())
    with pytest.raises(BatchFailed) as failed:
        e.process(bad(2, 3))
    text = str(failed.value)
    assert str(f) in text and "fsync" in text and "Input/output error" in text, text
    assert len(event_ids(tmp_path)) >= 3  # appended, not known to be on disk
    for _ in range(2):  # the runner's next attempts: refused, naming the first failure
        with pytest.raises(BatchFailed) as again:
            e.process(bad(2, 3))
        assert "refus" in str(again.value) and "Input/output error" in str(again.value)
        assert str(f) in str(again.value)
    with pytest.raises(BatchFailed):
        e.process(bad(10, 1))  # a new dead letter too: its keys could not be trusted either
    e.close()
    monkeypatch.undo()
    expected = [f"not json {i}" for i in range(5)]
    unsynced = [json.loads(line)["record"] for line in f.read_bytes()[durable:].splitlines()]
    assert unsynced and set(unsynced) <= set(expected[2:])
    if after == "power cut":
        # The pages the failed fsync did not write: zeros where they were (XFS keeps the size;
        # ext4 may shorten the file, which the index tells by its offset).
        with open(f, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(durable)
            fh.write(b"\0" * (size - durable))
    else:  # readable from the page cache, maybe never on disk: written again after them
        expected += unsynced
    for run in range(2):  # the replay from the last checkpoint; then again: nothing more
        restart = engine(tmp_path, remember=100, name=f"eio-{batch}-{run}", fsync=True)
        assert restart.process(bad(0, 5)).ok
        restart.close()
        assert sorted(readable_records(f)) == sorted(expected)


@pytest.mark.parametrize("opened_by", ["the same process", "another process"])
def test_the_lines_after_a_failed_fsync_stay_distrusted_until_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened_by: str
):
    """The mark of a failed fsync was let go by the first open after it, though no dead letter
    had been written again yet: a start that stopped before its batch was written (killed, or a
    dependency down), or another process sharing the file (the KCL's, one per shard) opening
    first, left the next start trusting the lines in its tail — the records' dead letters never
    written again, though their lines may never reach the disk. It lasts as long as the file."""
    f = tmp_path / "dlq.jsonl"
    e = engine(tmp_path, remember=100, name=f"keep-{opened_by}", fsync=True)
    assert e.process(bad(0, 2)).ok
    durable = f.stat().st_size
    failing_fsync(monkeypatch, dlq(e)._fh.fileno())
    with pytest.raises(BatchFailed):
        e.process(bad(2, 3))
    e.close()
    monkeypatch.undo()
    unsynced = [json.loads(line)["record"] for line in f.read_bytes()[durable:].splitlines()]
    assert unsynced
    # A start that writes nothing: its open reads the mark (and, before, let it go).
    first = engine(tmp_path, remember=100, name=f"keep-{opened_by}-first", fsync=True)
    if opened_by == "another process":
        assert first.process(bad(100, 1)).ok  # its own records only
    first.close()
    expected = [f"not json {i}" for i in range(5)] + unsynced
    if opened_by == "another process":
        expected.append("not json 100")
    for run in range(2):  # the replay from the last checkpoint; then again: nothing more
        restart = engine(tmp_path, remember=100, name=f"keep-{opened_by}-{run}", fsync=True)
        assert restart.process(bad(0, 5)).ok
        restart.close()
        # was: the unsynced lines' dead letters not written again (trusted from the tail)
        assert sorted(readable_records(f)) == sorted(expected)


def test_the_distrusted_range_is_kept_when_a_damaged_index_is_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An index a lookup finds damaged is built again from the file: the range a failed fsync
    left is not in what the file holds, so it is carried over."""
    f = tmp_path / "dlq.jsonl"
    e = engine(tmp_path, remember=100, name="rebuild", fsync=True)
    assert e.process(bad(0, 2)).ok
    failing_fsync(monkeypatch, dlq(e)._fh.fileno())
    with pytest.raises(BatchFailed):
        e.process(bad(2, 3))
    e.close()
    monkeypatch.undo()
    unsynced = readable_records(f)[2:]
    first = engine(tmp_path, remember=100, name="rebuild-first", fsync=True)
    index = dlq(first)._index
    skips = list(index.skips)
    assert skips
    index.rebuild(RuntimeError("database disk image is malformed"))
    assert index.skips == skips
    first.close()
    restart = engine(tmp_path, remember=100, name="rebuild-restart", fsync=True)
    assert restart.process(bad(0, 5)).ok
    restart.close()
    assert sorted(readable_records(f)) == sorted([f"not json {i}" for i in range(5)] + unsynced)


def test_overlapping_distrusted_ranges_keep_the_lines_after_them_indexed(tmp_path: Path):
    """Two failed fsyncs whose ranges overlap (a process opened before the first range was taken,
    its last good fsync inside it): the ranges were cut from the file's lines one after the
    other, the second cut reckoned on offsets the first had moved — lines written after both,
    indexed again from the file (a damaged index built again), were cut out with them."""
    from squall.sinks.dead_letter_index import KeyIndex, digest, line_key

    f = tmp_path / "dlq.jsonl"
    e = engine(tmp_path, remember=100, name="overlap", fsync=False)
    assert e.process(bad(0, 10)).ok
    e.close()
    data = f.read_bytes()
    starts = [0] + [i + 1 for i, c in enumerate(data) if c == ord("\n")][:-1]
    fd = os.open(f, os.O_RDWR | os.O_APPEND)
    try:
        index = KeyIndex(f, fd, fsync=False)
        index.open()
        index.db.execute(
            "INSERT INTO dead_letter_index (name, value) VALUES ('distrusted', ?)",
            (json.dumps([[starts[1], starts[5]]]),),
        )
        index.distrust(starts[3])  # later, from inside the first range
        index.close()
        index = KeyIndex(f, fd, fsync=False)
        index.open()
        more = b"".join(
            json.dumps({"event_id": f"later-{i}", "component": "decode"}).encode() + b"\n"
            for i in range(3)
        )
        os.write(fd, more)
        index.rebuild(RuntimeError("database disk image is malformed"))
        known = index.known([digest((f"later-{i}", "decode", 0)) for i in range(3)])
        assert len(known) == 3  # was: none of them indexed
        kept = [digest(line_key(line)) for line in data.splitlines()]
        assert index.known(kept) == {kept[0]}
        index.close()
    finally:
        os.close(fd)


@pytest.mark.parametrize("reads", ["before the range is taken", "after it"])
def test_a_process_running_since_before_the_range_does_not_index_its_lines_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: str
):
    """Processes sharing the file (the KCL's, one per shard): one's fsync fails, another's start
    turns the mark into a distrusted range and deletes its keys — and a process running since
    before that, its index behind the range, read the range's lines at its next batch and
    committed their keys into the index: every later start took them as dead letters on disk,
    and the records' dead letters were never written again."""
    f = tmp_path / "dlq.jsonl"
    a = engine(tmp_path, remember=100, name="running-a", fsync=True)
    assert a.process(bad(0, 2)).ok
    durable = f.stat().st_size
    b = engine(tmp_path, remember=100, name="running-b", fsync=True)  # idle meanwhile
    failing_fsync(monkeypatch, dlq(a)._fh.fileno())
    with pytest.raises(BatchFailed):
        a.process(bad(2, 3))
    a.close()
    monkeypatch.undo()
    unsynced = [json.loads(line)["record"] for line in f.read_bytes()[durable:].splitlines()]
    assert unsynced
    if reads == "before the range is taken":  # their keys wait in memory, committed at close
        assert b.process(bad(100, 1)).ok
    c = engine(tmp_path, remember=100, name="running-c", fsync=True)  # takes the range
    assert dlq(c)._index.skips
    c.close()
    if reads == "after it":
        assert b.process(bad(100, 1)).ok  # reads the range's lines: their keys were committed
    b.close()
    restart = engine(tmp_path, remember=100, name="running-restart", fsync=True)
    assert restart.process(bad(0, 5)).ok
    restart.close()
    expected = [f"not json {i}" for i in range(5)] + unsynced + ["not json 100"]
    # was: the unsynced lines' dead letters not written again (their keys in the index)
    assert sorted(readable_records(f)) == sorted(expected)


def test_a_file_cut_short_under_a_running_process_keeps_the_range_it_still_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The file cut short (``truncate -s``) under a running process: its index was started
    again from the file's start — and the failed fsync's range let go, though the file still
    held its first lines: their keys were indexed and every later start trusted them. A start
    after the cut keeps the range (``_take_marks``); a running process now does the same."""
    f = tmp_path / "dlq.jsonl"
    a = engine(tmp_path, remember=1000, name="cut-a", fsync=True)
    assert a.process(bad(0, 40)).ok  # past the index's head (4 KiB): the cut keeps it
    durable = f.stat().st_size
    failing_fsync(monkeypatch, dlq(a)._fh.fileno())
    with pytest.raises(BatchFailed):
        a.process(bad(40, 3))
    a.close()
    monkeypatch.undo()
    b = engine(tmp_path, remember=1000, name="cut-b", fsync=True)  # takes the range
    assert dlq(b)._index.skips
    first = f.read_bytes()[durable:].split(b"\n")[0]
    os.truncate(f, durable + len(first) + 1)  # the range's first line is kept
    assert b.process(bad(100, 1)).ok  # finds the file shorter: indexes it again
    b.close()
    restart = engine(tmp_path, remember=1000, name="cut-restart", fsync=True)
    assert restart.process(bad(40, 1)).ok
    restart.close()
    # was: not written again (its key indexed from the kept line, maybe never on disk)
    assert readable_records(f).count("not json 40") == 2


def test_a_process_running_since_before_the_range_writes_its_dead_letters_again_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """As above, but the replay of the failed batch comes to the process running since before
    the range (the KCL moves the failed process's shard lease to it): it had read the range's
    lines before another's start took the range, and its look-up found their keys in memory —
    the range was followed only when the file had grown since, and it had not. The records'
    dead letters were not written again, their checkpoint moved."""
    f = tmp_path / "dlq.jsonl"
    a = engine(tmp_path, remember=100, name="lease-a", fsync=True)
    assert a.process(bad(0, 2)).ok
    durable = f.stat().st_size
    b = engine(tmp_path, remember=100, name="lease-b", fsync=True)
    failing_fsync(monkeypatch, dlq(a)._fh.fileno())
    with pytest.raises(BatchFailed):
        a.process(bad(2, 3))
    a.close()
    monkeypatch.undo()
    unsynced = [json.loads(line)["record"] for line in f.read_bytes()[durable:].splitlines()]
    assert unsynced == ["not json 2", "not json 3", "not json 4"]
    assert b.process(bad(100, 1)).ok  # reads the lines of the failed fsync (their keys wait)
    c = engine(tmp_path, remember=100, name="lease-c", fsync=True)  # takes the range
    assert dlq(c)._index.skips
    c.close()
    assert b.process(bad(2, 3)).ok  # the failed batch, replayed by b
    b.close()
    records = readable_records(f)
    # was: 1 each (found in b's memory, not written again)
    assert [records.count(r) for r in unsynced] == [2, 2, 2]


def test_a_running_process_takes_a_failed_fsyncs_mark_that_no_start_took_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The replay of the failed batch comes to a process sharing the file before any start took
    the failed fsync's mark (``distrust``): it read the lines after the last good fsync as
    another writer's, found the replayed records' keys in them and wrote none again — then its
    checkpoint moved, and the next start's open deleted those keys too late. A look-up now
    takes the mark first, as a start's open does."""
    f = tmp_path / "dlq.jsonl"
    a = engine(tmp_path, remember=100, name="mark-a", fsync=True)
    assert a.process(bad(0, 2)).ok
    durable = f.stat().st_size
    b = engine(tmp_path, remember=100, name="mark-b", fsync=True)
    failing_fsync(monkeypatch, dlq(a)._fh.fileno())
    with pytest.raises(BatchFailed):
        a.process(bad(2, 3))
    monkeypatch.undo()
    unsynced = [json.loads(line)["record"] for line in f.read_bytes()[durable:].splitlines()]
    assert unsynced == ["not json 2", "not json 3", "not json 4"]
    assert b.process(bad(2, 3)).ok  # the failed batch, replayed by b (no start in between)
    b.close()
    a.close()
    records = readable_records(f)
    assert [records.count(r) for r in unsynced] == [2, 2, 2]  # was: 1 each
    restart = engine(tmp_path, remember=100, name="mark-restart", fsync=True)
    assert restart.process(bad(0, 5)).ok  # every dead letter on disk now: nothing more
    restart.close()
    assert sorted(readable_records(f)) == sorted(records)
