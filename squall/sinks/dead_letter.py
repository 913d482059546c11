"""``dead_letter`` sink: failed events as JSON lines — reason, component, original record, metadata.

Writes are flushed and fsynced before the engine moves the checkpoint. A dead letter is written
once, however often its record comes again — a replayed batch (a retry, a restart from the last
checkpoint, Lambda's retry of an invocation), and every run of a spout that keeps no checkpoint
(``file``, ``stdin``, ``s3``: each run re-delivers its whole input): its ``(event_id, component,
replay)`` key is looked up in the sink's memory of the last ``remember`` dead letters (read back
from the file's tail on open), then in the file's key index (``dead_letter_index``: every key
the file holds, on disk beside it). A record re-driven by ``squall replay`` carries its replay
count in ``meta.replay``, part of the key: its new failure is written beside the dead letter it
was replayed from, once however often the replay is repeated. Keys count as written only once
their lines are on disk; the index takes them after that and catches up from the file whatever a
crash or error kept from it, so a dead letter is never lost and never written twice — also by
processes appending the same file (the KCL's, one per shard), whose look-up and append are one
step under an exclusive lock of the file (``flock``). The fsync comes after the lock is let go,
so the processes' fsyncs do not wait for each other: the lock orders what the file holds, the
fsync only makes it durable. A process that finds its keys in lines it has not fsynced itself
(another's, whose fsync may be still to come, or never: killed before it) fsyncs the file before
its checkpoint may move. With
``index: false`` only the last ``remember`` keys are known: a spout without a checkpoint then
writes the older dead letters of its input again on a second run.

A failed fsync of the file is final for the process (PostgreSQL's "fsyncgate": the kernel may
drop the pages it could not write and reports the failure once, so an fsync tried again answers
success): the batch fails naming the file, every later write is refused, and the index is marked
so that no later start (of any process) takes a key from the lines after the last fsync that
succeeded — their dead letters are written again (``_fsync``).

Size (~460 lines): one sink and the rules above (memory, index, lock, torn lines, rotation,
fsync failure), each a few lines where the write needs it; the index is its own module.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import sqlite3
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import Field

from squall import safe_json
from squall.component import Capabilities, ComponentConfig
from squall.errors import SinkError, TopologyError, TransientError, cannot_write
from squall.event import Event
from squall.redact import redact_text
from squall.sinks import dead_letter_index
from squall.sinks.base import Prepared, Sink, WriteContext
from squall.sinks.dead_letter_index import KeyIndex, damaged, digest, key_id, line_key

log = logging.getLogger("squall.sinks.dead_letter")

#: Default of ``remember``: twice the largest Lambda/KCL batch (10,000 records), about 5 MB.
REMEMBER = 20_000
#: Bytes read at a time when reading the file's tail backwards on open.
TAIL_BLOCK = 1 << 20


class DeadLetterConfig(ComponentConfig):
    path: str = Field(description="JSON-lines file to append to (relative to the topology file).")
    fsync: bool = Field(True, description="fsync after each batch, before the checkpoint moves.")
    include_payload: bool = Field(
        False, description="Also write the decoded payload as it was when it failed."
    )
    remember: int = Field(
        REMEMBER,
        ge=1,
        description="Keys of the most recent dead letters kept in memory (~250 bytes each; read "
        "back from the file's tail on open), so that a replayed batch's are recognised without "
        "a look-up in the index. With index false, the only dead letters recognised: keep it "
        "above those of one batch, and of a whole input for a spout without a checkpoint.",
    )
    index: bool = Field(
        True,
        description="Keep the key of every dead letter in an index beside the file (path + "
        "'.index', SQLite), so that none is written twice, however long ago it was written "
        "(a file, stdin or s3 spout re-reads its whole input on every run).",
    )


def dead_letter_line(ev: Event, *, include_payload: bool = False) -> dict:
    """The JSON document for one failed event (shared with other dead-letter destinations)."""
    f = ev.failure
    doc: dict = {
        "event_id": ev.event_id,
        "component": f.component if f else None,
        "stream": f.stream if f else None,
        # A reason may quote what a dependency answered (a receiver echoing a header, an
        # OAuth error): credentials in it are masked, as in logs.
        "reason": safe_json.text(redact_text(f.reason)) if f else "unknown",
        "failed_at": datetime.now(UTC).isoformat(),
        "meta": ev.meta.as_dict(),
    }
    try:
        if b"\x00" in ev.raw:  # valid UTF-8, but no SQL text column (PostgreSQL) can hold it
            raise UnicodeDecodeError("utf-8", ev.raw, 0, 1, "NUL byte")
        doc["record"] = ev.raw.decode("utf-8")
    except UnicodeDecodeError:
        doc["record_base64"] = base64.b64encode(ev.raw).decode("ascii")
    # An event a bolt made (a window's result) has no record bytes of its own: its payload is
    # all there is of it, so it is kept whatever ``include_payload`` says.
    if ev.value is not None and (include_payload or not ev.raw):
        doc["payload"] = ev.value
    return doc


@dataclass(frozen=True, slots=True)
class _Appended:
    """Dead letters just appended to the file, at ``[start, end)``: not yet fsynced nor indexed."""

    keys: list[tuple[str, str | None, int]]
    digests: list[bytes]
    start: int
    end: int


class DeadLetterSink(Sink):
    """Append failed events to a JSON-lines file."""

    Config = DeadLetterConfig
    summary = "Write failed events with their reason and original bytes to a JSON-lines file."
    dead_letter = True

    @classmethod
    def capabilities(cls, config: DeadLetterConfig) -> Capabilities:
        return Capabilities(writes_local_files=True)

    def open(self, resources=None) -> None:
        self.path = self.context.path(self.config.path)
        #: The first failed fsync of the file ("fsyncgate"): every later write is refused.
        self._failed: str | None = None
        try:
            self._open_file()
        except OSError as exc:  # a read-only or missing directory: refuse at start, in one line
            # at the `path:` of the topology file, as a geo bolt's missing database is
            raise TopologyError(
                self.context.problem(
                    self.id,
                    "path",
                    f"cannot write dead letters to {self.path}: "
                    f"{cannot_write(exc, self.config.path)}",
                )
            ) from None

    def _open_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen: OrderedDict[tuple[str, str | None, int], None] = OrderedDict()
        self._index: KeyIndex | None = None
        self._unsynced = False  # lines read from the file that this sink has not fsynced
        self._durable = 0  # the file's size at the last fsync that succeeded
        # Unbuffered: a write that fails leaves nothing in a buffer to be written later; readable:
        # the index reads the lines it lacks through it.
        self._fh = open(self.path, "a+b", buffering=0)  # noqa: SIM115 - closed in close()
        st = os.fstat(self._fh.fileno())
        self._file_id = (st.st_dev, st.st_ino)
        # Only a regular file is read back, indexed and fsynced: a device (/dev/null, a terminal)
        # keeps nothing to read back nor to make durable (its tail: "not seekable"; its fsync:
        # EINVAL), and its folder (/dev) no file beside it — 6 December's squall, without an
        # index, wrote to such a path; the index's open refused to start where a user may not
        # create files in /dev, and root's left /dev/null.index
        self._regular = stat.S_ISREG(st.st_mode)
        # Read before the index's open fsyncs the file: its keys count as written once that
        # fsync succeeded (the lines of a process killed before its own fsync too).
        tail = tail_entries(self.path, self.config.remember) if self._regular else []
        indexed = self.config.index and self._regular
        self._mend()
        if self.config.fsync and self._regular and not indexed:  # the index's open fsyncs it
            # The tail's keys count as written: a process killed between its write and its fsync
            # left lines only in the page cache, and a replay finding them writes nothing to sync.
            self._fsync()
        if indexed:
            try:
                self._index = KeyIndex(
                    self.path, self._fh.fileno(), fsync=self.config.fsync, sync_file=self._fsync
                )
                self._index.open()
            except sqlite3.Error as exc:
                if not dead_letter_index.cannot_create(exc):
                    raise SinkError(f"{self.id}: dead-letter index of {self.path}: {exc}") from None
                where = dead_letter_index.index_path(self.path)
                raise SinkError(
                    f"{self.id}: cannot create the key index of {self.path} ({where}: {exc}): "
                    f"it is kept beside the file, so {where.parent} must let this process create "
                    "files (6 December's squall, without an index, needed the file alone); or "
                    "set `index: false` (then only the last `remember` dead letters are recognised)"
                ) from None
        # Not from the lines a failed fsync may have left off the disk (the index's ``skips``).
        skips = self._index.skips if self._index is not None else ()
        for at, line in tail:
            if skips and any(a <= at < b for a, b in skips):
                continue
            key = line_key(line)
            if key is not None:  # else a torn last line after a crash: the replay rewrites it
                self._seen[key] = None

    def _mend(self) -> None:
        """Start the next line on a line of its own after a torn last line (a crash, a write
        that failed part-way): the torn line is no dead letter, its record's is written again."""
        if self._torn_end():
            self._write_all(b"\n")

    def _torn_end(self) -> bool:
        """Whether the file ends in a torn line — ours (a write that failed part-way) or another
        writer's of the same file (a KCL process per shard: one killed in its write)."""
        fd = self._fh.fileno()
        size = os.fstat(fd).st_size
        return bool(size) and os.pread(fd, 1, size - 1) != b"\n"

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._fh.write(view) :]

    def _follow(self) -> None:
        """Write to the file the path names: one rotated away while the sink runs (renamed, as
        logrotate's default does, or deleted) is closed and the path opened again — the dead
        letters went on into the renamed file, lost once it was compressed or deleted."""
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._file_id:
                return
        except FileNotFoundError:
            pass
        if self._file_id is not None:  # (None: the open after a rotation failed, tried again)
            log.warning(
                "%s: %s was rotated away (renamed or deleted): writing to the file at that path",
                self.id,
                self.path,
            )
        if self._index is not None:  # keys and an offset of the file rotated away: not this one's
            self._index.pending.clear()
        self.close()
        try:
            self._open_file()
        except BaseException:
            # Opened again at the next write (the engine's retry): the file may be open already
            # and its index not (locked past the wait, a full disk) — written to as it was, the
            # dead letters went on without any index, nor the file's lock, for the rest of the run.
            self._file_id = None
            raise

    def _fresh(self, events: list[Event]) -> tuple[dict, dict[bytes, tuple]]:
        """The events whose dead letters the file does not hold (by key, in order), and their
        keys' digests."""
        index = self._index
        if index is not None:
            before = index.known_to
            index.sync()  # lines the index lacks (a failed index commit, another writer)
            # Lines read from the file now, not fsynced by us (another writer's, its fsync maybe
            # to come or killed before it; ours, whose fsync failed): a key found in them is
            # relied on, so the file is fsynced before this batch's checkpoint may move.
            self._unsynced |= index.known_to != before
        fresh: dict = {}  # insertion order: the oldest are forgotten first
        for ev in events:
            key = (
                key_id(ev.event_id),
                ev.failure.component if ev.failure else None,
                ev.meta.replay,
            )
            if key not in self._seen and key not in fresh:
                fresh[key] = ev
        digests: dict[bytes, tuple] = {}
        if index is not None and fresh:
            digests = {digest(key): key for key in fresh}
            for d in index.known(list(digests)):
                del fresh[digests.pop(d)]
        return fresh, digests

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        if self._failed is not None:
            raise SinkError(
                f"{self.id}: refusing to write dead letters to {self.path}: {self._failed} "
                "earlier in this process — what was written since the last fsync that succeeded "
                "may not be on disk, and an fsync tried again can answer success (the kernel "
                "reports a failed writeback once): restart the process; its next start writes "
                "those dead letters again"
            )
        try:
            self._follow()
        except (OSError, SinkError) as exc:  # the path cannot be opened again: retried
            if self._failed is not None:
                raise
            raise TransientError(
                f"{self.id}: cannot write dead letters to {self.path}: {exc}"
            ) from None
        if self._index is None:
            self._settle(self._append_fresh(prepared))
            return
        # Other processes append the same file (the KCL's, one per shard; a lease that moves
        # mid-batch gives two of them the same records): the look-up and the append are one step
        # under an exclusive lock of the file, else both find a key absent and both write it.
        # The fsync is not in that step: another process's look-up reads our lines from the page
        # cache, whether or not they are on disk yet, and fsyncs them itself before relying on
        # them (``_unsynced``) — held across the fsync, the lock made the processes' fsyncs wait
        # for each other's.
        self._lock()
        try:
            written = self._append_fresh(prepared)
        finally:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._settle(written)

    def _lock(self) -> None:
        """Take the file's exclusive lock, waiting for another process's write up to the index's
        ``LOCK_TIMEOUT`` — then a ``TransientError`` naming the file (the engine retries the
        write), as for the index's own lock: a holder stopped (SIGSTOP, a debugger) or stuck
        kept every other process's write waiting for ever, without a word."""
        fd = self._fh.fileno()
        deadline, pause = None, 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + dead_letter_index.LOCK_TIMEOUT
                elif now >= deadline:
                    raise TransientError(
                        f"{self.id}: {self.path} is locked by another process's write: waited "
                        f"{dead_letter_index.LOCK_TIMEOUT:g} s"
                    ) from None
                time.sleep(pause)
                pause = min(2 * pause, 0.01)  # (a write holds it for a look-up and an append)

    def _append_fresh(self, prepared: Prepared) -> _Appended | None:
        """Append the dead letters the file does not hold yet (by key); None when it holds all."""
        index = self._index
        try:
            try:
                fresh, digests = self._fresh(prepared.events)
            except sqlite3.DatabaseError as exc:
                if index is None or not damaged(exc):
                    raise
                index.rebuild(exc)  # derived from the file: built again, then asked again
                fresh, digests = self._fresh(prepared.events)
        except (sqlite3.Error, OSError) as exc:
            raise TransientError(f"{self.id}: dead-letter index of {self.path}: {exc}") from None
        if not fresh:
            return None
        lines = [
            safe_json.dumps(dead_letter_line(ev, include_payload=self.config.include_payload))
            for ev in fresh.values()
        ]
        data = b"\n".join(lines) + b"\n"
        # After a torn line — a write of ours that failed part-way, or another process's killed
        # in its write (checked at every write) — ours start on a line of their own, in the same
        # write: else the first is lost in the torn line.
        self._write_all(b"\n" + data if self._torn_end() else data)
        end = self._fh.tell() if self._regular else len(data)  # O_APPEND: right after ours
        return _Appended(list(fresh), list(digests), end - len(data), end)

    def _settle(self, written: _Appended | None) -> None:
        """fsync what the file holds for this batch — our lines, or another process's that keys
        were found in — then count our keys as written and index them."""
        if self.config.fsync and self._regular and (written is not None or self._unsynced):
            self._fsync()
        self._unsynced = False
        if written is None:
            return
        # Only now are they on disk: a write or an fsync that failed left them unseen, so the
        # retry looks them up again.
        seen = self._seen
        for key in written.keys:
            seen[key] = None
        while len(seen) > self.config.remember:
            seen.popitem(last=False)  # the oldest: long since checkpointed
        index = self._index
        if index is not None:
            try:
                try:
                    index.add(written.digests, written.start, written.end)
                except sqlite3.DatabaseError as exc:
                    if not damaged(exc):
                        raise
                    index.rebuild(exc)  # reads the whole file: these lines too
            except (sqlite3.Error, OSError) as exc:
                # The keys wait in memory still: the retry finds them there and writes nothing.
                raise TransientError(
                    f"{self.id}: dead-letter index of {self.path}: {exc}"
                ) from None

    def _fsync(self) -> None:
        """fsync the file. A failure is final for this process (PostgreSQL's "fsyncgate"): the
        kernel may have dropped the pages it could not write and reports the failure once, so an
        fsync tried again — the engine's retry, the next batch finding the same lines in the page
        cache — answers success for lines that are not on disk. The batch fails naming the file
        and the cause, every later write is refused (``write_batch``), no key read since is
        committed to the index (``close``), and the index is marked so that no later start takes
        a key from the lines after the last fsync that succeeded: their dead letters are
        written again (twice in the file at worst; never lost)."""
        fd = self._fh.fileno()
        if self._failed is None:
            size = os.fstat(fd).st_size
            try:
                os.fsync(fd)
            except OSError as exc:
                self._failed = f"the fsync of {self.path} failed ({exc.strerror or exc})"
                index = self._index
                if index is not None:
                    try:  # on disk: up to our last fsync, or what the index holds (fsynced then)
                        index.distrust(max(self._durable, index.committed))
                    except (sqlite3.Error, OSError) as mark:
                        log.error("%s: cannot mark the index of %s: %s", self.id, self.path, mark)
            else:
                self._durable = size
                return
        raise SinkError(
            f"{self.id}: {self._failed}; the batch is not checkpointed and this process writes "
            "no more dead letters to it"
        )

    def close(self) -> None:
        index = getattr(self, "_index", None)
        if index is not None:
            self._index = None
            if getattr(self, "_failed", None) is not None:
                index.pending.clear()  # keys of lines that may not be on disk: never committed
            try:
                index.close()  # commits the keys that wait
            except (sqlite3.Error, OSError) as exc:
                log.warning(
                    "%s: dead-letter index of %s: %s (indexed from the file on the next open)",
                    self.id,
                    self.path,
                    exc,
                )
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()


def tail_lines(path, count: int, block: int = TAIL_BLOCK) -> list[bytes]:
    """The last ``count`` lines of a file (fewer if it has fewer), oldest first, read backwards.

    Only the blocks holding them are read: opening a sink in front of a large file costs what
    ``count`` lines cost, not the file.
    """
    return [line for _, line in tail_entries(path, count, block)]


def tail_entries(path, count: int, block: int = TAIL_BLOCK) -> list[tuple[int, bytes]]:
    """``tail_lines``, each line with the offset it starts at."""
    with open(path, "rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        chunks: list[bytes] = []
        newlines, pos = 0, end
        while pos > 0 and newlines <= count:  # one more newline than lines: the first may be cut
            size = min(block, pos)
            pos -= size
            fh.seek(pos)
            chunk = fh.read(size)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    lines, at = [], pos
    for line in b"".join(reversed(chunks)).split(b"\n"):
        lines.append((at, line))
        at += len(line) + 1
    if lines and not lines[-1][1]:
        lines.pop()  # the file ends with a newline: no line after it
    if pos > 0:
        lines = lines[1:]  # began mid-line
    return lines[-count:] if count else []
