"""The ``dead_letter`` file's key index: every ``(event_id, component, replay)`` key the file holds.

A SQLite database beside the file (``rejects.jsonl`` → ``rejects.jsonl.index``; while it is open,
SQLite's ``-wal`` and ``-shm`` files too) holding a 16-byte BLAKE2b digest per dead letter, so that
a dead letter is written once however far back its first copy lies — a ``file``, ``stdin`` or
``s3`` spout keeps no checkpoint and re-delivers its whole input on every run. The sink asks it
only about keys its in-memory window (``remember``) does not hold.

The file is the truth and the index is derived from it, under two rules:

* a key is committed to the index only after its line is on disk (written, and fsynced when the
  sink fsyncs): a key in the index means its dead letter is in the file, so skipping it loses
  nothing;
* ``offset`` says how far the file is indexed: every complete line before it has its key in the
  index. The lines beyond — the last dead letters written, whose keys wait in memory
  (``pending``) to be committed ``COMMIT_KEYS`` at a time or at close; what a crash kept from the
  index; another process's lines — are read from the file (:meth:`KeyIndex.sync`: on open, and
  before a lookup when the file grew under the sink), so a dead letter already in the file is
  never written twice.

Committing keys in bulk, not per batch, matters with ``fsync``: on ext4 the fsync of the
dead-letter file also flushes what SQLite wrote since the last one, ~3 ms a batch when the index
was written each time (``benchmarks/bench_dead_letters.py``). The file's first bytes are kept as
a digest: a file replaced (rotated, restored from a backup, truncated) is indexed again from its
start, as is a missing or unreadable index (an older squall's file: indexed once, on the first
open) or one a lookup or a commit finds damaged (``rebuild``). SQLite runs in WAL mode with
``synchronous NORMAL``: a commit costs no fsync, and a power cut may lose the last commits —
never the index's consistency; ``offset`` goes back with them and the lines are indexed again.

A file truncated while processes append it (an operator, logrotate's ``copytruncate``) is
noticed by each at its next look-up or commit (shorter than it read, or other first bytes): its
keys and offset in memory are dropped, never committed into the index of the file as it is now.
The index names the file it is of (device and inode): a process still on a file rotated away
(renamed) commits nothing into the index of the new file at the path.
A failed fsync of the file marks the index (``distrust``): no open takes a key from the lines
after the last fsync that succeeded (a range kept as long as the file: ``skips``), so their dead
letters are written again; a process sharing the file takes the mark (or the range another's
open made of it) at its next look-up (``_follow_marks``).

Size (~560 lines): one derived index and its recoveries (damaged, busy, replaced, truncated,
a failed fsync), each needing the offset and head bookkeeping of the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from squall import exact_json, safe_json
from squall.digests import blake2b

log = logging.getLogger("squall.sinks.dead_letter")

#: The index's name: the dead-letter file's with this suffix (and SQLite's ``-wal``/``-shm``).
SUFFIX = ".index"
#: The companion files of a dead-letter file (left out of packages with it).
SUFFIXES = (SUFFIX, SUFFIX + "-wal", SUFFIX + "-shm")
#: Bytes of the file's start whose digest tells the same file from a replaced one.
HEAD = 4096
#: Bytes read at a time when indexing lines from the file; a transaction per block.
BLOCK = 4 << 20
#: Keys that wait in memory before they are committed to the index (~1.5 MB).
COMMIT_KEYS = 10_000
#: Keys per lookup query (under SQLite's bound on parameters).
CHUNK = 500
VERSION = 1
#: Seconds a statement waits for another process's lock on the index before it fails.
LOCK_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letter_keys (k BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letter_index (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""

Key = tuple[str, "str | None", int]

#: Starts the key's id of an event id that is not UTF-8 text (a lone surrogate): no event id a
#: decode bolt sets holds a NUL, so it is told from every other.
NOT_UTF8 = "\x00"


def key_id(event_id: str) -> str:
    """An event id as its dead letter's line holds it: a lone surrogate (an id a Python bolt or
    the standard library's ``json`` decoded from ``"\\ud800"``) cannot be written as JSON text,
    so the line holds ``safe_json``'s marked repr instead; the key is made of that repr."""
    if isinstance(event_id, str) and not event_id.isascii():
        try:
            event_id.encode("utf-8")
        except UnicodeEncodeError:
            return NOT_UTF8 + safe_json.text(event_id)
    return event_id


def digest(key: Key) -> bytes:
    """The 16 bytes kept for a key (collisions: about one in 2**64 after 2**32 keys)."""
    try:
        data = orjson.dumps(key)
    except TypeError:  # a replay count beyond 64 bits, or another value orjson cannot write
        data = repr(key).encode("utf-8", "surrogatepass")
    return blake2b(data, digest_size=16).digest()


def line_key(line: bytes) -> Key | None:
    """The key of a dead-letter line (as ``key_id`` makes it for the event written); None for a
    line that is not one (a torn line)."""
    try:
        doc = exact_json.loads(line)  # a payload may hold integers beyond 64 bits
        replay = (doc.get("meta") or {}).get("replay", 0)
        event_id = doc["event_id"]
        if isinstance(event_id, dict) and event_id.get("squall_truncated") == safe_json.TRUNCATED:
            event_id = NOT_UTF8 + event_id["repr"]  # an id that was not UTF-8 text
        key = (event_id, doc.get("component"), replay)
        hash(key)  # a key of the in-memory window: a line no sink wrote may hold a list
        return key
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _ranges(meta: dict) -> list[tuple[int, int]]:
    """The ranges a failed fsync's marks left in the index (``KeyIndex.skips``)."""
    text = meta.get("distrusted")
    return [(int(a), int(b)) for a, b in orjson.loads(text)] if text else []


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges in order, overlapping ones joined (``_read_lines`` cuts them from the last)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def index_path(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def damaged(exc: BaseException) -> bool:
    """Whether SQLite found the index damaged (a bad sector, a partial copy): pages that a lookup
    or a commit reaches, beyond what the open read."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def cannot_create(exc: BaseException) -> bool:
    """Whether SQLite could not open or create the index's files where they go (its folder not
    writable by this process: a file another user created in a folder of theirs, /proc)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
    )


def _busy(exc: BaseException) -> bool:
    """Whether SQLite answered busy or locked (another connection holds what it needs)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class KeyIndex:
    """The index of one dead-letter file, read and extended through the file's descriptor."""

    def __init__(
        self,
        path: Path,
        fd: int,
        *,
        fsync: bool = True,
        sync_file: Callable[[], None] | None = None,
    ):
        self.path = index_path(path)
        self.data = path
        self.fd = fd
        self.fsync = fsync
        #: How the file is fsynced (the sink's: a failure is final for its process).
        self.sync_file = sync_file or (lambda: os.fsync(fd))
        #: The byte ranges ``[start, end)`` of the file whose lines no key is taken from: what a
        #: failed fsync may have left off the disk (``distrust``), for as long as the file lasts.
        self.skips: list[tuple[int, int]] = []
        #: The offset the index holds as far as this process knows: the file is on disk up to it
        #: (committed after an fsync).
        self.committed = 0
        #: Every complete line of the file before this position has its key in the index or in
        #: ``pending``: ``sync`` reads only what lies beyond.
        self.known_to = 0
        #: Keys of lines in the file (before ``known_to``) not yet committed to the index.
        self.pending: set[bytes] = set()
        self.head_len = 0
        self.head = b""  # the digest of the file's first ``head_len`` bytes (``open``)
        #: The digest of the file's first ``read_len`` bytes when this process read them.
        self.read_len, self.read_head = 0, b""
        self.db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            return self._open_retrying()
        except sqlite3.DatabaseError as exc:
            if not damaged(exc):
                raise
            problem = exc
        # Not a database, or damaged: it is only derived from the file, built again.
        log.warning("%s: unreadable (%s): indexing %s again", self.path, problem, self.data)
        self._remove()
        return self._open_retrying()

    def _open_retrying(self) -> sqlite3.Connection:
        """``_open_db``, tried again while SQLite answers busy, until ``LOCK_TIMEOUT``: another
        process opening the same new index (the KCL's shard processes start together — so after
        a damaged index is deleted, each of them finding it damaged; setting WAL mode on a new
        file is not covered by SQLite's busy wait). Locked past it, or not openable
        (permissions, a full disk): the index may be another writer's, in use; its files are
        left alone and the open fails (the sink's open: a located error)."""
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                return self._open_db()
            except sqlite3.DatabaseError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _remove(self) -> None:
        for suffix in SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.data.with_name(self.data.name + suffix))

    def rebuild(self, exc: BaseException) -> None:
        """Start the index again and index the whole file: SQLite found it damaged (``damaged``)
        in pages the open did not read — every lookup would fail, at every restart."""
        log.warning("%s: damaged (%s): indexing %s again", self.path, exc, self.data)
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        self._remove()
        self.pending.clear()
        self.known_to = self.head_len = 0
        self.head = self._head(0)
        self.db = self._open_retrying()
        if self.skips:  # derived from the file too, but not from what it holds: kept
            with self._transaction():
                self._set(offset=0, version=VERSION, head_len=0, head=self.head)
                self._set(distrusted=orjson.dumps(self.skips).decode())
        self.open()

    def _open_db(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=LOCK_TIMEOUT
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM dead_letter_index").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _meta(self) -> dict:
        return dict(self.db.execute("SELECT name, value FROM dead_letter_index"))

    def _set(self, **values) -> None:
        self.db.executemany(
            "INSERT INTO dead_letter_index (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def _head(self, size: int) -> bytes:
        return blake2b(os.pread(self.fd, size, 0), digest_size=16).digest()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")  # one writer at a time (KCL: a process per shard)
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def open(self) -> None:
        """Check the index is of this file (else start it again), then index what it lacks."""
        with self._transaction():
            # Read under the index's write lock, with the offset: read before it, another
            # process's append and commit in between left the offset beyond this size — the
            # index taken for another file's, every key deleted while other processes looked up.
            size = os.fstat(self.fd).st_size
            meta = self._meta()
            offset, head_len = meta.get("offset", 0), meta.get("head_len", 0)
            same = self._same(meta, size)
            if not same:
                if meta:
                    log.warning(
                        "%s: not the index of %s as it is now (replaced, truncated or rotated): "
                        "indexing it again",
                        self.path,
                        self.data,
                    )
                self.db.execute("DELETE FROM dead_letter_keys")
                offset = 0
                self._set(offset=0, version=VERSION, head_len=0, head=self._head(0))
            self.head_len = head_len if same else 0
            self.head = meta["head"] if same else self._head(0)
            if meta.get("file") != self._file_id():
                self._set(file=self._file_id())
            self._take_marks(meta, size)
        self.known_to = self.committed = offset
        self.read_len = 0
        self._note_head()
        if size - offset > BLOCK:
            log.info("%s: indexing %d bytes of dead letters", self.data, size - offset)
        self.sync()
        self.commit()

    def _file_id(self) -> str:
        """The file's device and inode, kept in the index: the index beside the path is of the
        file at the path, and a process still on one rotated away commits nothing into it."""
        st = os.fstat(self.fd)
        return f"{st.st_dev}:{st.st_ino}"

    def _same(self, meta: dict, size: int) -> bool:
        """Whether the index (its ``meta``) is of the file as it is (``size``): every key it holds
        of a line the file holds before its offset."""
        offset, head_len = meta.get("offset", 0), meta.get("head_len", 0)
        return (
            meta.get("version") == VERSION
            and offset <= size
            and head_len <= size
            and meta.get("head") == self._head(head_len)
        )

    def _replaced(self) -> bool:
        """Whether the file is no longer the one this process read its keys from: truncated
        (shorter than read) or truncated and written again (its first bytes differ)."""
        if os.fstat(self.fd).st_size < self.known_to:
            return True
        return bool(self.read_len) and self._head(self.read_len) != self.read_head

    def _note_head(self) -> None:
        """Keep the digest of the file's first bytes as read (up to ``HEAD``): ``_replaced``."""
        if self.read_len < HEAD and self.known_to > self.read_len:
            self.read_len = min(self.known_to, HEAD)
            self.read_head = self._head(self.read_len)

    def _index_again(self) -> None:
        """The file was truncated under this process (an operator, logrotate's copytruncate):
        the keys and offset in memory are of what it held, dropped. The index is started again
        — unless another process did so already and indexed the file as it is now (its keys
        deleted under it, it wrote dead letters again)."""
        log.warning("%s shrank or was replaced: indexing it again", self.data)
        with self._transaction():
            size = os.fstat(self.fd).st_size
            meta = self._meta()
            if self._same(meta, size):
                offset, head_len, head = meta["offset"], meta["head_len"], meta["head"]
                self.skips = _ranges(meta)
            else:
                self.db.execute("DELETE FROM dead_letter_keys")
                offset, head_len, head = 0, 0, self._head(0)
                self._set(offset=offset, head_len=head_len, head=head)
                # A failed fsync's marks, of what the file still holds (cut short, its head
                # kept), are kept as a start's open keeps them (``_take_marks``); let go with
                # the rest when the file was replaced
                self._take_marks(meta, size)
        self.pending.clear()
        self.known_to = self.committed = offset
        self.head_len, self.head = head_len, head
        self.read_len = 0
        self._note_head()

    def _take_marks(self, meta: dict, size: int) -> None:
        """The ranges of the file whose lines no key is taken from (``skips``), inside the open's
        transaction. A failed fsync's mark (``distrust``: from an offset on, maybe not on disk)
        becomes the range from it to the file's end now: those keys are deleted from the index
        and the range is kept as long as the file (``distrusted``). Let go at the first open, it
        left a start that stopped before writing those dead letters again (killed, a dependency
        down), or another process sharing the file opening first, and every later start, trusting
        the lines in the file's tail: the records' dead letters never written again."""
        head_len = meta.get("head_len", 0)
        ours = meta.get("head") == self._head(min(head_len, size))  # else another file's marks
        skips = [(a, min(b, size)) for a, b in _ranges(meta) if a < size] if ours else []
        start = meta.get("distrust")
        if ours and start is not None and start < size:
            log.warning(
                "%s: an fsync of it failed after offset %d: the %d bytes from there are not taken "
                "as dead letters on disk; those records' dead letters are written again",
                self.data,
                start,
                size - start,
            )
            data = os.pread(self.fd, size - start, start)
            keys = (line_key(line) for line in data.split(b"\n"))
            self.db.executemany(
                "DELETE FROM dead_letter_keys WHERE k = ?", ((digest(k),) for k in keys if k)
            )
            skips = _merged([*skips, (start, size)])
        self.db.execute("DELETE FROM dead_letter_index WHERE name = 'distrust'")
        if skips:
            self._set(distrusted=orjson.dumps(skips).decode())
        elif "distrusted" in meta:
            self.db.execute("DELETE FROM dead_letter_index WHERE name = 'distrusted'")
        self.skips = skips

    def _follow_ranges(self, ranges: list[tuple[int, int]]) -> set[bytes]:
        """Take the ranges another process's open took (``_take_marks``) since this process read
        them: the keys of their lines read meanwhile are dropped from ``pending`` (returned, to
        be deleted from the index too). A process running since before a range, its index
        behind it, read the range's lines and committed their keys: every later start trusted
        them, and those records' dead letters were never written again."""
        new = [r for r in ranges if r not in self.skips]
        self.skips = ranges
        dropped: set[bytes] = set()
        for a, b in new:
            keys = (line_key(line) for line in os.pread(self.fd, b - a, a).split(b"\n"))
            dropped.update(digest(k) for k in keys if k is not None)
        self.pending -= dropped
        return dropped

    def _follow_marks(self) -> None:
        """The ranges another's open took since, and a failed fsync's mark no open took yet
        (taken here as an open takes it): one query, before another writer's lines are read and
        before a look-up. Keys read before a range was taken wait in ``pending`` and were found
        there — the replay of the failed batch coming to this process (a shard lease moved to
        it) wrote none of those dead letters again, and its checkpoint moved."""
        marks = dict(
            self.db.execute(
                "SELECT name, value FROM dead_letter_index "
                "WHERE name IN ('distrusted', 'distrust', 'file')"
            )
        )
        # (the index of this file: not one at the path after this one was rotated away)
        if "distrust" in marks and marks.get("file", self._file_id()) == self._file_id():
            before = self.skips
            with self._transaction():
                self._take_marks(self._meta(), os.fstat(self.fd).st_size)
            ranges, self.skips = self.skips, before
        else:
            ranges = _ranges(marks)
        self._follow_ranges(ranges)

    def distrust(self, start: int) -> None:
        """Mark the file's bytes from ``start`` on as maybe not on disk (an fsync failed): the
        next open takes no key from them, nor does any open after it (``_take_marks``)."""
        self.pending.clear()
        with self._transaction():
            current = self._meta().get("distrust")
            self._set(distrust=start if current is None else min(current, start))

    def sync(self) -> None:
        """Take the keys of the file's complete lines beyond ``known_to``: usually none (an
        ``fstat``); committed once ``COMMIT_KEYS`` wait."""
        if os.fstat(self.fd).st_size < self.known_to:  # truncated under us
            self._index_again()
        self._follow_marks()
        size = os.fstat(self.fd).st_size
        span = BLOCK
        while self.known_to < size:
            end = self._read_lines(self.known_to, min(size, self.known_to + span))
            if end == self.known_to:
                if self.known_to + span >= size:  # only a line still being written (another's)
                    break
                span *= 2  # a line longer than a block (a large record or payload)
                continue
            self.known_to, span = end, BLOCK
            self._note_head()
            if len(self.pending) >= COMMIT_KEYS:
                self.commit()

    def _read_lines(self, start: int, stop: int) -> int:
        """Keys of the complete lines in ``[start, stop)`` into ``pending``; where they end."""
        data = os.pread(self.fd, stop - start, start)
        cut = data.rfind(b"\n") + 1
        body = data[:cut]
        for a, b in reversed(self.skips):  # (rare: a slice per range, from the last)
            if start < b and a < start + cut:
                lo, hi = max(a - start, 0), min(b - start, cut)
                body = body[:lo] + b"\n" + body[hi:]
        keys = (line_key(line) for line in body.split(b"\n"))
        self.pending.update(digest(k) for k in keys if k is not None)
        return start + cut

    def known(self, digests: list[bytes]) -> set[bytes]:
        """Which of these digests the file holds (as far as it is known: ``sync`` first)."""
        found = {d for d in digests if d in self.pending}
        rest = [d for d in digests if d not in found]
        for i in range(0, len(rest), CHUNK):
            chunk = rest[i : i + CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self.db.execute(
                    f"SELECT k FROM dead_letter_keys WHERE k IN ({marks})",  # noqa: S608 - marks only
                    chunk,
                )
            )
        return found

    def add(self, digests: list[bytes], start: int, end: int) -> None:
        """Keys of the lines just written at ``[start, end)`` of the file (on disk already)."""
        if self.known_to < start:  # another writer's lines before ours
            self.known_to = self._read_lines(self.known_to, start)
        self.pending.update(digests)
        if self.known_to == start:
            self.known_to = end
            self._note_head()
        if len(self.pending) >= COMMIT_KEYS:
            self.commit()

    def commit(self) -> None:
        """Commit the keys that wait, and how far the file is indexed."""
        if self.fsync:  # another writer's lines read into pending: on disk before indexed
            self.sync_file()
        if self._replaced():
            # Committed, keys and an offset of what the file held: keys of dead letters it no
            # longer holds, an offset past lines nobody indexed (another process killed -9).
            self._index_again()
            return
        with self._transaction():
            meta = self._meta()
            if meta.get("file", self._file_id()) != self._file_id():
                # The index at the path is another file's: this one was rotated away (renamed),
                # and a process writing at the path started the index of the new one. Keys and
                # an offset of this file are not that one's (followed at the next write).
                self.pending.clear()
                return
            dropped = self._follow_ranges(_ranges(meta))
            if dropped:  # (committed before the range was taken: its open deleted them)
                self.db.executemany(
                    "DELETE FROM dead_letter_keys WHERE k = ?", ((d,) for d in dropped)
                )
            self.db.executemany(
                "INSERT OR IGNORE INTO dead_letter_keys (k) VALUES (?)",
                ((d,) for d in self.pending),
            )
            offset = meta.get("offset", 0)
            if self.known_to > offset:
                self._set(offset=self.known_to)
            self.committed = max(offset, self.known_to)
            head_len = min(self.known_to, HEAD)
            if head_len > self.head_len:
                self.head_len, self.head = head_len, self._head(head_len)
                self._set(head_len=head_len, head=self.head)
        self.pending.clear()

    def close(self) -> None:
        try:
            if self.pending:
                self.commit()
        finally:
            self.db.close()
