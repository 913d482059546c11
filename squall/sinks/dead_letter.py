"""``dead_letter`` sink: failed events as JSON lines — reason, component, original record, metadata.

Writes are flushed and fsynced before the engine moves the checkpoint. A replayed batch (a retry,
a restart from the last checkpoint, Lambda's retry of an invocation) does not write the same dead
letter twice: the sink remembers the ``(event_id, component)`` keys of the last ``remember``
dead letters it wrote, and on open reads them from the file's tail only. A record re-driven by
``squall replay`` carries its replay count in ``meta.replay``, part of the key: its new failure is
written beside the dead letter it was replayed from, once however often the replay is repeated. A replay re-delivers
only what came after the last checkpoint, so its dead letters are among the most recent ones as
long as fewer than ``remember`` were written since; memory and start time stay bounded however
large the file grows. A spout that keeps no checkpoint (file, stdin, S3) "replays" its whole input
on every run: more than ``remember`` dead letters in that input, and a second run (a restart after
a crash) writes the older ones again.
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict
from datetime import UTC, datetime

from pydantic import Field

from squall import exact_json, safe_json
from squall.component import Capabilities, ComponentConfig
from squall.errors import SinkError
from squall.event import Event
from squall.redact import redact_text
from squall.sinks.base import Prepared, Sink, WriteContext

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
        description="Dead letters remembered (the most recent; ~250 bytes each) so that a "
        "replayed batch does not write them twice; read back from the file's tail on open. Keep "
        "it above the dead letters one batch can produce (Lambda's largest batch: 10,000 records); "
        "with a spout that keeps no checkpoint (file, stdin, s3: a new run reads the input from "
        "its start), above the dead letters of the whole input, else a second run writes the "
        "older ones again.",
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
    if include_payload and ev.value is not None:
        doc["payload"] = ev.value
    return doc


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
        try:
            self._open_file()
        except OSError as exc:  # a read-only or missing directory: refuse at start, in one line
            raise SinkError(
                f"{self.id}: cannot write dead letters to {self.path}: {exc.strerror or exc}"
            ) from None

    def _open_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen: OrderedDict[tuple[str, str | None, int], None] = OrderedDict()
        if self.path.exists():
            for line in tail_lines(self.path, self.config.remember):
                try:
                    doc = exact_json.loads(line)  # a payload may hold integers beyond 64 bits
                    replay = (doc.get("meta") or {}).get("replay", 0)
                    self._seen[(doc["event_id"], doc.get("component"), replay)] = None
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue  # a torn last line after a crash: the replay rewrites it
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        if self._fh.tell() > 0:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a torn last line: start ours on a line of its own
                    self._fh.write(b"\n")

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        lines, keys = [], {}
        for ev in prepared.events:
            key = (ev.event_id, ev.failure.component if ev.failure else None, ev.meta.replay)
            if key in self._seen or key in keys:
                continue
            keys[key] = None  # a dict: insertion order, so the oldest are forgotten first
            lines.append(
                safe_json.dumps(dead_letter_line(ev, include_payload=self.config.include_payload))
            )
        if not lines:
            return
        self._fh.write(b"\n".join(lines) + b"\n")
        self._fh.flush()
        if self.config.fsync:
            os.fsync(self._fh.fileno())
        # Only now are they on disk: a failed write above leaves them unseen, so the retry writes them.
        seen = self._seen
        for key in keys:
            seen[key] = None
        while len(seen) > self.config.remember:
            seen.popitem(last=False)  # the oldest: long since checkpointed

    def close(self) -> None:
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()


def tail_lines(path, count: int, block: int = TAIL_BLOCK) -> list[bytes]:
    """The last ``count`` lines of a file (fewer if it has fewer), oldest first, read backwards.

    Only the blocks holding them are read: opening a sink in front of a large file costs what
    ``count`` lines cost, not the file.
    """
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
    lines = b"".join(reversed(chunks)).splitlines()
    if pos > 0:
        lines = lines[1:]  # began mid-line
    return lines[-count:] if count else []
