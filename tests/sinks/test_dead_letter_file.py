"""The dead-letter file writes each dead letter once: the last `remember` keys in memory (read from
the file's tail), every key in the index beside the file (``dead_letter_index``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squall.sinks.dead_letter import tail_lines
from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.graph import compile_plan
from squall.topology.loader import load_text

TOPOLOGY = """
name: dl
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: dl-{name}}}
  - {{id: dlq, type: dead_letter, path: {path}, fsync: {fsync}, remember: {remember}{extra}}}
settings: {{retry: {{attempts: 3, initial_backoff: 0, max_backoff: 0}}}}
"""


def engine(
    tmp_path: Path, remember: int, name: str, *, fsync: bool = False, extra: str = ""
) -> Engine:
    topo = load_text(
        TOPOLOGY.format(
            path=tmp_path / "dlq.jsonl",
            remember=remember,
            name=name,
            fsync=str(fsync).lower(),
            extra=extra,
        ),
        base_dir=tmp_path,
    )
    return Engine(compile_plan(topo)).open()


def bad(start: int, n: int) -> list:
    return records_from(
        [f"not json {i}".encode() for i in range(start, start + n)], start=start + 1
    )


def lines(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "dlq.jsonl").read_text().splitlines()]


def dlq(e: Engine):
    return next(c for c in e.components if c.id == "dlq")


def test_memory_holds_only_the_last_remember_keys_and_a_replay_of_the_last_batch_is_skipped(
    tmp_path: Path,
):
    e = engine(tmp_path, remember=10, name="a")
    batches = [bad(i * 4, 4) for i in range(5)]  # 20 dead letters, 4 a batch
    for b in batches:
        assert e.process(b).ok
    assert len(dlq(e)._seen) == 10
    assert e.process(batches[-1]).ok  # the replay of the last batch: nothing written again
    assert len(lines(tmp_path)) == 20
    e.close()


def test_on_open_the_keys_come_from_the_files_tail_only(tmp_path: Path):
    e = engine(tmp_path, remember=1000, name="b")
    batches = [bad(i * 4, 4) for i in range(5)]
    for b in batches:
        e.process(b)
    e.close()
    e = engine(tmp_path, remember=6, name="c")
    seen = dlq(e)._seen
    last_six = [(d["event_id"], d["component"], 0) for d in lines(tmp_path)[-6:]]
    assert list(seen) == last_six  # oldest first, nothing older read
    assert e.process(batches[-1]).ok  # a restart replaying from the last checkpoint
    assert len(lines(tmp_path)) == 20
    e.close()


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("count", [1, 3, 10, 50])
def test_tail_lines_reads_the_last_lines_whatever_the_block_size(
    tmp_path: Path, block: int, count: int
):
    f = tmp_path / "f"
    content = [f"line {i} " + "x" * (i % 13) for i in range(30)]
    f.write_text("\n".join(content) + "\n")
    assert tail_lines(f, count, block) == [c.encode() for c in content[-count:]]
    f.write_text("\n".join(content) + "\n" + '{"event_id": "torn')  # a torn last line
    assert tail_lines(f, count, block)[-1] == b'{"event_id": "torn'
    assert len(tail_lines(f, count, block)) == min(count, 31)
    (tmp_path / "empty").write_bytes(b"")
    assert tail_lines(tmp_path / "empty", count, block) == []


def run_input(e: Engine, batches: list) -> None:
    """One run of a spout without a checkpoint: its whole input, batch after batch."""
    for b in batches:
        assert e.process(b).ok


def event_ids(tmp_path: Path) -> list[str]:
    return [d["event_id"] for d in lines(tmp_path)]


@pytest.mark.parametrize("fsync", [False, True], ids=["no-fsync", "fsync"])
def test_a_second_run_of_an_input_with_more_dead_letters_than_remember_writes_none_again(
    tmp_path: Path, fsync: bool
):
    """A ``file``, ``stdin`` or ``s3`` spout keeps no checkpoint: a second run (a restart after a
    crash) re-delivers the whole input. Only the last ``remember`` keys were recognised, so the
    older dead letters were written again (``remember: 10`` on the example: 60 lines, then 120);
    the index beside the file knows every key."""
    batches = [bad(i * 10, 10) for i in range(6)]  # 60 dead letters
    e = engine(tmp_path, remember=10, name="run1", fsync=fsync)
    run_input(e, batches)
    e.close()
    first = event_ids(tmp_path)
    assert len(first) == 60 == len(set(first))
    for run in range(2):
        e = engine(tmp_path, remember=10, name=f"run{run + 2}", fsync=fsync)
        run_input(e, batches)
        e.close()
    assert event_ids(tmp_path) == first
    assert (tmp_path / "dlq.jsonl.index").exists()


def test_without_the_index_only_the_last_remember_are_recognised(tmp_path: Path):
    """``index: false``: the bounded memory alone (no file beside the dead letters)."""
    batches = [bad(i * 10, 10) for i in range(6)]
    for run in range(2):
        e = engine(tmp_path, remember=10, name=f"noidx{run}", extra=", index: false")
        run_input(e, batches)
        e.close()
    # The run starts from the oldest: each one written again pushes a remembered one out.
    assert len(lines(tmp_path)) == 120
    assert not (tmp_path / "dlq.jsonl.index").exists()


def test_a_crash_before_the_index_commit_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Dead letters come first in the commit sequence; their keys wait in memory and reach the
    index later (``COMMIT_KEYS`` at a time, at close). A kill -9 loses what waits: the next open
    indexes those lines from the file, so the restart's replay of the whole input writes none of
    them again — and writes the ones never written."""
    from squall.sinks import dead_letter_index

    monkeypatch.setattr(dead_letter_index, "COMMIT_KEYS", 4)  # a commit every batch or so
    batches = [bad(i * 10, 10) for i in range(4)]
    e = engine(tmp_path, remember=1, name="crash1", fsync=True)
    run_input(e, batches[:2])
    monkeypatch.setattr(dead_letter_index.KeyIndex, "commit", lambda self: None)
    assert e.process(batches[2]).ok  # written and fsynced, never indexed: then kill -9
    monkeypatch.undo()
    assert len(lines(tmp_path)) == 30
    e = engine(tmp_path, remember=1, name="crash2", fsync=True)
    run_input(e, batches)  # the restart: the input again, from its start
    e.close()
    ids = event_ids(tmp_path)
    assert len(ids) == 40 == len(set(ids))


def test_an_index_commit_that_fails_is_retried_and_the_retry_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The index refuses (disk I/O error): the dead letters are on disk, the batch is retried
    (transient), the retry finds their keys waiting in memory and writes nothing again; the
    next commit takes them."""
    import sqlite3

    from squall.sinks import dead_letter_index

    monkeypatch.setattr(dead_letter_index, "COMMIT_KEYS", 1)
    real_commit, calls = dead_letter_index.KeyIndex.commit, []

    def commit_failing_once(self):
        calls.append(len(self.pending))
        if len(calls) == 2:  # the first is the open's
            raise sqlite3.OperationalError("disk I/O error")
        return real_commit(self)

    monkeypatch.setattr(dead_letter_index.KeyIndex, "commit", commit_failing_once)
    e = engine(tmp_path, remember=1, name="idxfail")
    result = e.process(bad(0, 5))
    assert result.ok
    assert calls == [0, 5]  # the retry wrote nothing: nothing more to commit
    assert e.process(bad(5, 1)).ok
    assert calls == [0, 5, 6]
    e.close()
    monkeypatch.undo()
    e = engine(tmp_path, remember=1, name="idxfail2")
    assert e.process(bad(0, 6)).ok
    e.close()
    assert len(lines(tmp_path)) == 6


def test_lines_longer_than_a_read_block_and_small_commits_index_every_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from squall.sinks import dead_letter_index

    monkeypatch.setattr(dead_letter_index, "BLOCK", 64)  # a dead letter is ~400 bytes
    monkeypatch.setattr(dead_letter_index, "COMMIT_KEYS", 3)
    batches = [bad(i * 7, 7) for i in range(3)]
    e = engine(tmp_path, remember=1, name="blk1", extra=", index: false")
    run_input(e, batches)
    e.close()
    for run in range(2):
        e = engine(tmp_path, remember=1, name=f"blk{run + 2}")
        run_input(e, batches)
        e.close()
    assert len(lines(tmp_path)) == 21


def test_a_torn_last_line_is_written_again_once(tmp_path: Path):
    """kill -9 in the middle of the write: the torn line is no dead letter; the replay writes its
    record's on a line of its own, and a third run writes nothing."""
    batches = [bad(0, 3)]
    e = engine(tmp_path, remember=1, name="torn1")
    run_input(e, batches)
    e.close()
    f = tmp_path / "dlq.jsonl"
    data = f.read_bytes()
    f.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 20])  # the last line cut
    (tmp_path / "dlq.jsonl.index").unlink()  # its key was indexed: an index of an older file
    for run in range(2):
        e = engine(tmp_path, remember=1, name=f"torn{run + 2}")
        run_input(e, batches)
        e.close()
    docs = f.read_text().splitlines()
    assert len(docs) == 4 and not docs[2].endswith("}")
    assert sorted(json.loads(d)["event_id"] for i, d in enumerate(docs) if i != 2) == sorted(
        set(json.loads(d)["event_id"] for i, d in enumerate(docs) if i != 2)
    )


def test_a_file_without_an_index_is_indexed_on_the_first_open(tmp_path: Path):
    """A dead-letter file of an older squall (or whose index was deleted): indexed whole once."""
    batches = [bad(i * 10, 10) for i in range(3)]
    e = engine(tmp_path, remember=10, name="old1", extra=", index: false")
    run_input(e, batches)
    e.close()
    e = engine(tmp_path, remember=1, name="old2")
    run_input(e, batches)
    e.close()
    assert len(lines(tmp_path)) == 30


def test_a_damaged_index_is_built_again_from_the_file(tmp_path: Path, caplog):
    batches = [bad(i * 10, 10) for i in range(3)]
    e = engine(tmp_path, remember=1, name="dmg1")
    run_input(e, batches)
    e.close()
    (tmp_path / "dlq.jsonl.index").write_bytes(b"not a database" * 100)
    e = engine(tmp_path, remember=1, name="dmg2")
    run_input(e, batches)
    e.close()
    assert len(lines(tmp_path)) == 30
    assert "unreadable" in caplog.text


def test_an_index_locked_by_another_process_is_not_taken_for_damaged(tmp_path: Path, monkeypatch):
    """Another process holding the index locked past the wait makes the open fail with a located
    error; its files are left alone (they were deleted as if damaged, under the other writer)."""
    import sqlite3

    from squall.errors import SquallError
    from squall.sinks import dead_letter_index

    e = engine(tmp_path, remember=1, name="lock1")
    run_input(e, [bad(0, 10)])
    e.close()
    index = tmp_path / "dlq.jsonl.index"
    other = sqlite3.connect(index, isolation_level=None)
    other.execute("PRAGMA journal_mode=DELETE")  # as a writer in rollback mode: an exclusive lock
    other.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(dead_letter_index, "LOCK_TIMEOUT", 0.05)
    try:
        with pytest.raises(SquallError, match="locked"):
            engine(tmp_path, remember=1, name="lock2")
        assert index.exists()
        assert other.execute("SELECT count(*) FROM dead_letter_keys").fetchone()[0] == 10
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize("how", ["removed", "truncated", "replaced"])
def test_a_file_rotated_or_replaced_is_indexed_again(tmp_path: Path, how: str):
    """The index holds the keys of the file as it is: dead letters no longer in the file (rotated
    away) are written again; the others once."""
    batches = [bad(i * 10, 10) for i in range(3)]
    e = engine(tmp_path, remember=1, name=f"rot1{how}")
    run_input(e, batches)
    e.close()
    f = tmp_path / "dlq.jsonl"
    kept = f.read_text().splitlines()
    if how == "removed":
        f.unlink()
        kept = []
    elif how == "truncated":
        kept = kept[:5]
        f.write_text("".join(line + "\n" for line in kept))
    else:  # as long, other dead letters: only the start tells
        other = [line.replace('"event_id":"', '"event_id":"x') for line in kept]
        f.write_text("".join(line + "\n" for line in other))
        kept = other
    e = engine(tmp_path, remember=1, name=f"rot2{how}")
    run_input(e, batches)
    e.close()
    ids = event_ids(tmp_path)
    assert len(ids) == len(kept) + 30 - (5 if how == "truncated" else 0)
    assert len(set(ids)) == len(ids)


def test_two_writers_of_one_file_know_each_others_dead_letters(tmp_path: Path):
    """The KCL runs a process per shard: two sinks append to one file. Each indexes the other's
    lines before it looks a key up."""
    a = engine(tmp_path, remember=1, name="two-a")
    b = engine(tmp_path, remember=1, name="two-b")
    assert a.process(bad(0, 10)).ok
    assert b.process(bad(10, 10)).ok
    assert a.process(bad(20, 10)).ok
    assert b.process(bad(0, 10)).ok  # a's dead letters, delivered to b (a lease taken over)
    assert a.process(bad(10, 10)).ok
    a.close()
    b.close()
    ids = event_ids(tmp_path)
    assert len(ids) == 30 == len(set(ids))


def test_squall_run_twice_on_a_file_writes_its_dead_letters_once(tmp_path: Path):
    """The found case, end to end: ``squall run`` of a ``file`` spout, twice, ``remember`` below
    the input's dead letters (before: every dead letter written again by the second run)."""
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"n": {i}}}\n' if i % 2 else f"bad {i}\n" for i in range(60)))
    t = tmp_path / "t.yaml"
    t.write_text(
        "name: twice\nspout: {type: file, path: in.jsonl}\nsettings: {batch_size: 7}\n"
        "bolts:\n  - {id: decode, type: json}\n"
        "sinks:\n  - {id: out, type: stdout}\n"
        "  - {id: dlq, type: dead_letter, path: out/dlq.jsonl, remember: 5}\n"
    )
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, "-m", "squall.cli", "run", str(t)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in (tmp_path / "out" / "dlq.jsonl").read_text().splitlines()]
    assert sorted(d["record"] for d in docs) == sorted(f"bad {i}" for i in range(0, 60, 2))


def test_an_event_id_with_a_lone_surrogate_is_written_once_and_its_file_opens_again(
    tmp_path: Path,
):
    """An event id that is not UTF-8 text (a Python bolt's, or the standard library's ``json``
    reading ``"\\ud800"``) is written as ``safe_json``'s marked repr, an object: read back from
    the file's tail it made the sink's open fail (an object is no key of the memory: every
    restart failed), and indexed from the file it was another key than the one written (written
    again after the index was lost)."""
    from squall.event import Event, Failure
    from squall.sinks.base import Prepared, WriteContext

    odd = "order-\ud800-1"

    def batch() -> list:
        records = bad(0, 3)
        return [
            Event(r.data, r.meta, odd if i == 0 else f"ok-{i}", i, failure=Failure("decode", "x"))
            for i, r in enumerate(records)
        ]

    def run(remember: int, name: str) -> None:
        e = engine(tmp_path, remember=remember, name=name)
        dlq(e).write_batch(Prepared(batch()), WriteContext())
        e.close()

    run(1, "sur1")
    assert lines(tmp_path)[0]["event_id"]["repr"] == "order-\\ud800-1"
    run(5, "sur2")  # its line in the tail read on open
    (tmp_path / "dlq.jsonl.index").unlink()  # indexed again from the file
    run(1, "sur3")
    assert len(lines(tmp_path)) == 3


def test_a_line_torn_by_another_writer_does_not_swallow_the_next_dead_letter(tmp_path: Path):
    """The KCL runs a process per shard, appending to one file: one killed in the middle of its
    write (or whose write failed part-way, disk full) leaves a line without its end. The other's
    next dead letter was appended to that torn line — one unreadable line, its dead letter lost
    though its key was indexed; it starts on a line of its own."""
    a = engine(tmp_path, remember=1, name="glue-a")
    assert a.process(bad(0, 2)).ok
    with open(tmp_path / "dlq.jsonl", "ab") as other:  # the other writer's torn line
        other.write(b'{"event_id": "torn-by-kill-9", "compo')
    assert a.process(bad(2, 2)).ok
    a.close()
    raw = (tmp_path / "dlq.jsonl").read_text().splitlines()
    readable = []
    for line in raw:
        try:
            readable.append(json.loads(line)["record"])
        except ValueError:
            assert line.startswith('{"event_id": "torn-by-kill-9"')
    assert readable == [f"not json {i}" for i in range(4)]
    again = engine(tmp_path, remember=1, name="glue-b")  # every key indexed: none written again
    assert again.process(bad(0, 4)).ok
    again.close()
    assert (tmp_path / "dlq.jsonl").read_text().splitlines() == raw


def test_an_index_damaged_beyond_what_the_open_reads_is_built_again(tmp_path: Path, caplog):
    """A bad sector or a partial copy damages pages of keys the open does not read: SQLite says
    "database disk image is malformed" at the lookup. Every batch failed (the index's error a
    transient one: retried, then the run stopped), at every restart; the index is derived from
    the file, so it is built again and the batch goes on."""
    batches = [bad(i * 500, 500) for i in range(4)]
    e = engine(tmp_path, remember=1, name="bad1")
    run_input(e, batches)
    e.close()
    index = tmp_path / "dlq.jsonl.index"
    data = bytearray(index.read_bytes())
    middle = len(data) // 2 // 4096 * 4096  # a page of keys (SQLite's pages: 4 KiB)
    data[middle : middle + 4096] = b"\xa5" * 4096
    index.write_bytes(bytes(data))
    for run in range(2):
        e = engine(tmp_path, remember=1, name=f"bad{run + 2}")
        run_input(e, batches)
        e.close()
    assert len(lines(tmp_path)) == 2000
    assert "damaged" in caplog.text


@pytest.mark.parametrize("index", [True, False], ids=["index", "no-index"])
def test_the_lines_an_open_counts_as_written_are_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: bool
):
    """kill -9 between the write and the fsync leaves the lines in the page cache only. The next
    open reads their keys (the tail, the index): the replay of their batch writes nothing, so
    nothing is fsynced before the checkpoint moves — a power cut then lost them. With ``index:
    false`` nothing fsynced the file at open (the index's open does)."""
    import os

    from squall.sinks import dead_letter

    batch = bad(0, 3)
    e = engine(tmp_path, remember=10, name=f"sync1{index}", fsync=True, extra=f", index: {index}")
    run_input(e, [batch])
    e.close()
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(dead_letter.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    e = engine(tmp_path, remember=10, name=f"sync2{index}", fsync=True, extra=f", index: {index}")
    opened = len(synced)
    run_input(e, [batch])  # the replay: every key known, nothing written
    e.close()
    assert opened >= 1 and len(lines(tmp_path)) == 3


@pytest.mark.parametrize("how", ["renamed", "deleted"])
def test_a_file_rotated_away_while_the_sink_runs_is_followed(tmp_path: Path, how: str):
    """logrotate's default renames the file (then compresses and deletes the renamed one): the sink
    wrote on into the renamed file, or into a deleted one — those dead letters were lost. It
    writes to the file at its path; the index follows the new file."""
    f = tmp_path / "dlq.jsonl"
    e = engine(tmp_path, remember=1, name=f"follow{how}")
    assert e.process(bad(0, 3)).ok
    if how == "renamed":
        f.rename(tmp_path / "dlq.jsonl.1")
    else:
        f.unlink()
    assert e.process(bad(3, 2)).ok
    assert e.process(bad(3, 2)).ok  # its replay: written once in the new file
    e.close()
    assert [d["record"] for d in lines(tmp_path)] == ["not json 3", "not json 4"]
    e = engine(tmp_path, remember=1, name=f"follow{how}2")
    assert e.process(bad(3, 2)).ok  # the index is of the new file
    e.close()
    assert len(lines(tmp_path)) == 2


def test_processes_opening_a_new_index_together_all_open_it(tmp_path: Path):
    """The KCL starts a process per shard together, each opening the same new index: SQLite
    answers busy (setting WAL mode is outside its busy wait) and the open tries again until
    LOCK_TIMEOUT — it failed the shard's start ("database is locked", seen in a KCL daemon
    test). Connections of threads stand in for the processes; the race shows in a few trials."""
    import os
    import threading

    from squall.sinks.dead_letter_index import KeyIndex

    errors: list[BaseException] = []
    for trial in range(20):
        path = tmp_path / f"dlq{trial}.jsonl"
        path.touch()
        barrier = threading.Barrier(8)

        def open_it(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            try:
                barrier.wait()
                index = KeyIndex(path, fd, fsync=False)
                index.open()
                index.close()
            except Exception as exc:  # collected: asserted below
                errors.append(exc)
            finally:
                os.close(fd)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


@pytest.mark.parametrize("when", ["new", "damaged at the open", "damaged at a lookup"])
def test_an_index_open_answered_busy_at_once_is_tried_again(tmp_path: Path, monkeypatch, when: str):
    """Another process opening the same new index (the KCL's shard processes start together; so
    after a damaged index is deleted: each of them finds it damaged) makes SQLite answer busy at
    once, outside its busy wait: the open is tried again until LOCK_TIMEOUT. After a damaged
    index was deleted — at the open or at a lookup (``rebuild``) — the new one was opened once,
    and that busy answer failed the shard's start or its write ("database is locked"). The other
    process: a connection holding the new index's write lock in rollback mode (SQLite answers
    setting WAL mode busy at once then); it lets go when the open pauses to try again."""
    import os
    import sqlite3
    import time
    import types

    from squall.sinks import dead_letter_index
    from squall.sinks.dead_letter_index import KeyIndex

    data = tmp_path / "dlq.jsonl"
    data.write_bytes(b'{"event_id": "a", "component": "c"}\n')
    index = tmp_path / "dlq.jsonl.index"
    other: list[sqlite3.Connection] = []
    pauses: list[float] = []

    def hold() -> None:  # another process starts the new index
        db = sqlite3.connect(index, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        other.append(db)

    def pause(seconds: float) -> None:  # the open waits to try again: the other one is done
        pauses.append(seconds)
        while other:
            db = other.pop()
            db.execute("ROLLBACK")
            db.close()

    remove = KeyIndex._remove

    def remove_then_hold(self: KeyIndex) -> None:  # each process finds it damaged, deletes it
        remove(self)
        hold()

    fd = os.open(data, os.O_RDWR | os.O_APPEND)
    try:
        if when == "damaged at a lookup":
            ki = KeyIndex(data, fd, fsync=False)
            ki.open()
        elif when == "damaged at the open":
            index.write_bytes(b"not a database" * 100)
        else:
            hold()
        monkeypatch.setattr(
            dead_letter_index, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=pause)
        )
        monkeypatch.setattr(KeyIndex, "_remove", remove_then_hold)
        if when == "damaged at a lookup":
            ki.rebuild(sqlite3.DatabaseError("database disk image is malformed"))
        else:
            ki = KeyIndex(data, fd, fsync=False)
            ki.open()
        assert pauses  # answered busy, and tried again
        assert ki.known([dead_letter_index.digest(("a", "c", 0))])  # indexed from the file
        ki.close()
    finally:
        for db in other:
            db.close()
        os.close(fd)


def test_two_processes_given_the_same_records_write_their_dead_letters_once(tmp_path: Path):
    """A KCL lease that moves mid-batch gives two shard processes the same records, both
    appending one file: the look-up and the append are one step under an exclusive lock of the
    file, so the second finds the first's lines. Without the lock both found the keys absent
    (each looked before the other wrote) and both wrote them. Two engines stand for the two
    processes (a lock of the file is per open file, as between processes); the second writes
    while the first holds its look-up's answer."""
    import fcntl
    import threading

    first, second = engine(tmp_path, 100, "lock-a"), engine(tmp_path, 100, "lock-b")
    records = bad(0, 3)
    sink = dlq(first)
    write_all = sink._write_all
    other: list[BaseException | bool] = []

    def write_between(data: bytes) -> None:  # the first has looked; the second writes now
        with open(tmp_path / "dlq.jsonl", "rb") as probe:  # another open file: another lock
            with pytest.raises(BlockingIOError):  # held across look-up and append
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        runner = threading.Thread(target=lambda: other.append(second.process(records).ok))
        runner.start()
        runner.join(1.0)  # without the lock it writes now; with it, it waits for ours
        write_all(data)
        threads.append(runner)

    threads: list[threading.Thread] = []
    sink._write_all = write_between
    assert first.process(records).ok
    threads[0].join()
    assert other == [True]
    written = [d["event_id"] for d in lines(tmp_path)]
    assert len(written) == len(set(written)) == 3, written
    first.close()
    second.close()


def test_a_write_waits_for_another_processs_lock_of_the_file_no_longer_than_lock_timeout(
    tmp_path: Path, monkeypatch
):
    """Another process holding the file's lock for ever (stopped by SIGSTOP or a debugger in its
    write, or stuck) kept this one's write waiting for ever without a word — a blocking flock.
    It now waits up to the index's LOCK_TIMEOUT, then fails transient, naming the file (as an
    index locked past the wait does). A lock of the file is per open file: the test's own open
    of it stands for the other process."""
    import fcntl
    import threading

    from squall.errors import TransientError
    from squall.event import Event, Failure
    from squall.sinks import dead_letter_index
    from squall.sinks.base import Prepared, WriteContext

    e = engine(tmp_path, remember=1, name="held")
    assert e.process(bad(0, 2)).ok
    monkeypatch.setattr(dead_letter_index, "LOCK_TIMEOUT", 0.2)
    batch = [
        Event(r.data, r.meta, f"held-{i}", i, failure=Failure("decode", "x"))
        for i, r in enumerate(bad(10, 2))
    ]
    outcome: list[tuple[BaseException | None, bool]] = []
    held = True

    def write() -> None:
        try:
            dlq(e).write_batch(Prepared(batch), WriteContext())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append((exc, held))
        else:
            outcome.append((None, held))

    with open(tmp_path / "dlq.jsonl", "rb") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(20.0)  # a guard only: with the bound it ends after ~0.2 s
        held = False
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    writer.join()
    ((exc, while_held),) = outcome
    assert while_held, "the write waited for the lock to be let go"
    assert isinstance(exc, TransientError) and "locked by another process" in str(exc), exc
    assert str(tmp_path / "dlq.jsonl") in str(exc)
    assert "held-0" not in (tmp_path / "dlq.jsonl").read_text()
    dlq(e).write_batch(Prepared(batch), WriteContext())  # the lock let go: written
    assert [d["event_id"] for d in lines(tmp_path)][-2:] == ["held-0", "held-1"]
    e.close()


def test_a_failed_open_after_a_rotation_is_tried_again_not_written_past(
    tmp_path: Path, monkeypatch
):
    """The file rotated away, the sink opens the one at the path; its index's open failing there
    (locked by another process past the wait, a full disk) failed that write, transient — but
    the retry found the new file already open and wrote without any index (nor the file's lock)
    for the rest of the run: dead letters beyond ``remember`` written again (and two processes'
    the same ones). The retry opens the file and its index again."""
    import sqlite3

    from squall.sinks import dead_letter

    e = engine(tmp_path, remember=1, name="reopen")
    assert e.process(bad(0, 1)).ok
    (tmp_path / "dlq.jsonl").rename(tmp_path / "dlq.jsonl.1")
    real, calls = dead_letter.KeyIndex, []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(dead_letter, "KeyIndex", failing_once)
    assert e.process(bad(10, 3)).ok  # the first attempt fails, the engine's retry writes
    assert len(calls) == 2, "the retry opened the index again"
    assert dlq(e)._index is not None
    assert e.process(bad(10, 3)).ok  # a replay: 2 of its 3 beyond remember, in the index
    written = [d["event_id"] for d in lines(tmp_path)]
    assert len(written) == len(set(written)) == 3, written
    e.close()


def test_the_files_lock_is_let_go_before_the_fsync(tmp_path: Path, monkeypatch):
    """The look-up and the append are one step under the file's lock; the fsync is not: held
    across it, the lock made every process appending the file (the KCL's, one per shard) wait
    for the others' fsyncs. A lock of the file is per open file: the probe's own open of it
    stands for another process."""
    import fcntl
    import os

    from squall.sinks import dead_letter

    e = engine(tmp_path, remember=1, name="unlocked", fsync=True)
    assert e.process(bad(0, 2)).ok
    sink_fd = dlq(e)._fh.fileno()
    free: list[bool] = []
    real = os.fsync

    def probing(fd: int) -> None:
        if fd == sink_fd:
            with open(tmp_path / "dlq.jsonl", "rb") as probe:
                try:
                    fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    free.append(False)
                else:
                    free.append(True)
                    fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
        real(fd)

    monkeypatch.setattr(dead_letter.os, "fsync", probing)
    assert e.process(bad(10, 3)).ok
    monkeypatch.undo()
    assert free == [True], free
    e.close()
    ids = event_ids(tmp_path)
    assert len(ids) == 5 == len(set(ids))


CHILD = """
import os, sys
from pathlib import Path
from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.graph import compile_plan
from squall.topology.loader import load_text

e = Engine(compile_plan(load_text(sys.argv[1], base_dir=Path(sys.argv[2])))).open()

def stopped(fd):  # its lines written, the lock let go: killed here, its fsync never comes
    print("in fsync", flush=True)
    sys.stdin.read()

os.fsync = stopped
e.process(records_from([f"not json {i}".encode() for i in range(3)], start=1))
"""


def test_a_process_killed_before_its_fsync_another_finds_its_lines_and_fsyncs_them(
    tmp_path: Path, monkeypatch
):
    """Two processes given the same records (a KCL lease moving mid-batch). The first appends
    them and is killed (-9) before its fsync. The second, meanwhile, neither waits for the first's
    fsync (the lock is let go before it) nor writes the dead letters again (it finds the lines in
    the file) — and fsyncs the file itself before its checkpoint may move, since it relies on
    lines nobody has fsynced: before, it wrote nothing and fsynced nothing, and a power cut could
    lose dead letters of records both had acknowledged. The restart's replay writes none again."""
    import os
    import subprocess
    import sys

    from squall.sinks import dead_letter, dead_letter_index

    text = TOPOLOGY.format(
        path=tmp_path / "dlq.jsonl", remember=100, name="killed", fsync="true", extra=""
    )
    second = engine(tmp_path, remember=100, name="second", fsync=True)  # opened before: its
    # open's fsync does not cover the first's lines
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, text, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "in fsync\n"
        assert len(lines(tmp_path)) == 3  # written, the fsync to come
        # (Only so that a lock held across the fsync fails this test in a second, not 90 s.)
        monkeypatch.setattr(dead_letter_index, "LOCK_TIMEOUT", 0.3)
        synced: list[int] = []
        real = os.fsync
        monkeypatch.setattr(dead_letter.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
        assert second.process(bad(0, 3)).ok
        assert dlq(second)._fh.fileno() in synced, "the lines it relies on are fsynced"
        monkeypatch.undo()
    finally:
        child.kill()
        child.wait()
    second.close()
    assert len(lines(tmp_path)) == 3
    restart = engine(tmp_path, remember=100, name="restart", fsync=True)
    assert restart.process(bad(0, 3)).ok
    restart.close()
    ids = event_ids(tmp_path)
    assert len(ids) == 3 == len(set(ids))


def test_an_index_opened_while_another_process_commits_is_not_taken_for_another_files(
    tmp_path: Path, monkeypatch, caplog
):
    """The open read the file's size before it took the index's write lock: another process
    appending and committing its keys in between left the index's ``offset`` beyond that size,
    and the open took the index for another file's — it deleted every key (a third process's
    look-up then found keys absent whose dead letters the file holds, and wrote them again) and
    indexed the whole file anew. The size is read under the index's lock, as the offset is."""
    import os

    from squall.sinks.dead_letter_index import KeyIndex

    first = engine(tmp_path, remember=1, name="commits")
    assert first.process(bad(0, 5)).ok
    fd = os.open(tmp_path / "dlq.jsonl", os.O_RDWR | os.O_APPEND)
    opening = KeyIndex(tmp_path / "dlq.jsonl", fd)
    real, between = KeyIndex._transaction, []

    def other_commits_first(self: KeyIndex):
        if self is opening and not between:
            between.append(True)  # the other process: 5 more dead letters, keys committed
            assert first.process(bad(5, 5)).ok
            dlq(first)._index.commit()
        return real(self)

    monkeypatch.setattr(KeyIndex, "_transaction", other_commits_first)
    try:
        opening.open()
        assert between
        assert "indexing it again" not in caplog.text
        assert opening.db.execute("SELECT count(*) FROM dead_letter_keys").fetchone()[0] == 10
        opening.close()
    finally:
        os.close(fd)
    first.close()
    assert len(lines(tmp_path)) == 10


@pytest.mark.parametrize("refilled", [False, True], ids=["shorter", "refilled"])
def test_a_file_truncated_while_two_processes_write_it_keeps_an_index_of_what_it_holds(
    tmp_path: Path, refilled: bool
):
    """An operator truncates the file while two processes append it (logrotate's
    ``copytruncate``; ``: > rejects.jsonl``). The first to write again finds it shrunk and indexes
    it anew; the other's keys and offset, read before, waited in its memory and were committed at
    its close into the index of the file as it is now: keys of dead letters the file no longer
    holds (their records' replay wrote nothing: 35 of 35), and an offset beyond what was indexed
    — a later open skipped the lines before it that the first had not committed (killed -9), and
    a replay wrote them again (35 twice). A commit first checks the file is still the one its keys
    were read from: no shorter, the same first bytes (``refilled``: written past the other's
    offset again before its commit)."""
    import os

    a = engine(tmp_path, remember=1, name="trunc-a")
    b = engine(tmp_path, remember=1, name="trunc-b")
    assert a.process(bad(0, 5)).ok
    assert b.process(bad(5, 30)).ok  # b's keys and offset wait in its memory
    os.truncate(tmp_path / "dlq.jsonl", 0)
    first = 40 if refilled else 15
    assert a.process(bad(100, first)).ok  # a indexes the file anew
    b.close()  # b's commit, into the index of the truncated file
    assert a.process(bad(100 + first, 45 - first)).ok  # a killed -9: nothing committed
    del a
    restart = engine(tmp_path, remember=1, name="trunc-c")
    assert restart.process(bad(0, 35)).ok  # truncated away: written again
    assert restart.process(bad(100, 45)).ok  # in the file: written once
    restart.close()
    written = [d["record"] for d in lines(tmp_path)]
    assert sorted(written) == sorted(f"not json {i}" for i in (*range(35), *range(100, 145)))


def test_a_process_finding_the_file_truncated_keeps_what_another_indexed_of_it_since(
    tmp_path: Path,
):
    """Two processes append one file; it is truncated. The first to look up again starts the
    index again and commits the keys of what it writes; the second, finding the file shorter
    than it read, deleted every key again — the first's replay then found its own dead letters
    absent (beyond ``remember``) and wrote them twice. It keeps an index already of the file as
    it is now."""
    import os

    a = engine(tmp_path, remember=1, name="again-a")
    b = engine(tmp_path, remember=1, name="again-b")
    assert a.process(bad(0, 5)).ok
    assert b.process(bad(5, 5)).ok
    os.truncate(tmp_path / "dlq.jsonl", 0)
    assert a.process(bad(100, 5)).ok  # a starts the index again
    dlq(a)._index.commit()  # (COMMIT_KEYS reached)
    assert b.process(bad(200, 1)).ok  # b finds the file shorter than it read
    assert a.process(bad(100, 5)).ok  # a's replay
    a.close()
    b.close()
    written = [d["record"] for d in lines(tmp_path)]
    assert sorted(written) == sorted(f"not json {i}" for i in (*range(100, 105), 200))


def test_a_process_closing_after_its_file_was_rotated_away_commits_nothing_into_the_new_index(
    tmp_path: Path,
):
    """logrotate renames the file while two processes append it. The one that writes next opens
    the file at the path and starts its index (the index's name is the path's); the other, with
    no write after the rotation, closed — and committed the keys and the offset it had read of
    the renamed file into the index of the new one. A later open trusted that offset: the lines
    of the new file before it, which the first had not committed (killed -9), were never indexed
    and a replay wrote them again. A commit is made only into the index of its own file."""
    a = engine(tmp_path, remember=1, name="rot-a")
    b = engine(tmp_path, remember=1, name="rot-b")
    assert a.process(bad(0, 15)).ok
    dlq(a)._index.commit()  # (COMMIT_KEYS reached: a file of some size)
    assert a.process(bad(15, 15)).ok  # a's keys and offset wait in its memory
    (tmp_path / "dlq.jsonl").rename(tmp_path / "dlq.jsonl.1")
    assert b.process(bad(100, 5)).ok  # b follows the path: a new file and index
    dlq(b)._index.commit()  # (COMMIT_KEYS reached)
    a.close()  # no write since the rotation: a has not followed
    assert b.process(bad(105, 40)).ok  # past a's old offset; b killed -9: nothing committed
    del b
    restart = engine(tmp_path, remember=1, name="rot-c")
    assert restart.process(bad(100, 45)).ok  # all in the new file: nothing written again
    assert restart.process(bad(0, 30)).ok  # in the renamed file only: written to this one
    restart.close()
    written = [d["record"] for d in lines(tmp_path)]
    assert sorted(written) == sorted(f"not json {i}" for i in (*range(100, 145), *range(30)))
