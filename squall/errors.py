"""One exception root for squall, with typed control flow for the engine.

- ``TopologyError``: a configuration problem, raised at load time with file:line:col.
- ``RecordError``: one record cannot be processed; it goes to dead letter with the reason.
- ``TransientError``: a dependency is down or slow; the engine retries with backoff, then
  fails the whole batch (nothing is checkpointed).
- ``SinkError``: a sink is broken for every record (no table, no rights): the batch fails.
- Any other exception from a component call is taken to be caused by some record of the call:
  the engine isolates those records and dead-letters them (``describe_exception`` is the reason).
- ``StaleState``: a stateful bolt's staged state was computed from a stored state another
  process changed since: retrying the commit cannot help; the engine runs the batch again.
- ``BatchFailed``: retries are exhausted; the runner must not checkpoint the batch.
- ``ComponentFailed``: a component's ``open``/``warm_up``/``after_restore`` raised another error.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squall.redact import redact_text


class SquallError(Exception):
    """Root of every error squall raises on purpose. Its message never shows a password (``redact_text``)."""

    def __init__(self, *args: object):
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))


@dataclass(frozen=True)
class Problem:
    """One configuration problem at a place in a YAML file."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    path: str  # path in the document, e.g. ``bolts[2].type``
    message: str
    #: A service it depends on was unreachable or throttled (a secret reference's): the same
    #: start may work later.
    outage: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return redact_text(text)


class TopologyError(SquallError):
    """The topology (YAML or graph) is invalid; carries every problem found."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def outage(self) -> bool:
        """Every problem is a dependency's outage (the file itself is fine): exit as a failed
        run does (1), not as a configuration error (2)."""
        return bool(self.problems) and all(p.outage for p in self.problems)


class RecordError(SquallError):
    """A single record cannot be processed. It is dead-lettered with this reason.

    Raised from a call over many records (a sink's write refused by the database for one row's
    value), the engine finds the record(s) that cause it by splitting the call.
    """

    def __init__(self, reason: str, *, stream: str = "error"):
        self.reason = reason
        self.stream = stream
        super().__init__(reason)


class DecodeError(RecordError):
    """The record's bytes are not a valid payload (bad JSON, bad gzip, corrupt KPL aggregate)."""


class TransientError(SquallError):
    """A dependency failed in a way that may pass (connection lost, throttled, timeout).

    The engine retries the component call with jittered exponential backoff; ``retry_after``
    (seconds) is a lower bound the dependency asked for, e.g. a throttling response — honoured
    up to ``executor.MAX_RETRY_AFTER`` (300 s; NaN or a negative value counts for nothing).
    """

    def __init__(self, message: str, *, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)


class StaleState(TransientError):
    """A stateful bolt's commit found the stored state its staged state was computed from
    changed by another process (``StateMoved``, ``MarkMoved``): nothing of it was written. The
    same commit again would fail the same way, so the engine does not retry it: it discards the
    staged state and runs the whole batch again from the stored state (bounded by the retry
    attempts)."""


class SinkError(SquallError):
    """A sink failed permanently for the whole batch (bad credentials, missing table rights)."""


class BatchFailed(SquallError):
    """A batch could not be processed after bounded retries; it must not be checkpointed."""

    def __init__(self, component: str, cause: BaseException, attempts: int):
        self.component = component
        self.cause = cause
        self.attempts = attempts
        super().__init__(f"{component}: batch failed after {attempts} attempt(s): {cause}")


class ComponentFailed(SquallError):
    """A component's lifecycle hook (``open``, ``warm_up``, ``after_restore``) raised an error
    that is not squall's (a client library's, the component's own code): one line naming the
    component and the hook, its password masked. Runners that report the exception themselves
    (AWS's Lambda runtime client prints an init error as it is) then show no secret."""

    def __init__(self, kind: str, component: str, hook: str, cause: BaseException):
        self.component, self.hook, self.cause = component, hook, cause
        first = safe_text(cause).strip().splitlines()
        detail = f"{type(cause).__name__}: {first[0]}" if first else type(cause).__name__
        super().__init__(f"{kind} '{component}': {hook} failed: {detail}")


#: Longest reason kept for a record failure; longer ones are cut with a marker.
MAX_REASON = 1000
#: How much of a failure's text ``describe_exception`` masks before it cuts it to ``MAX_REASON``.
_MASKED_WINDOW = 4 * MAX_REASON


def safe_text(value: object, limit: int = MAX_REASON) -> str:
    """``str(value)`` cut to ``limit`` characters; never raises (a broken ``__str__``, deep nesting)."""
    try:
        text = str(value)
    except BaseException:  # noqa: BLE001 - describing an error must never fail
        try:
            text = object.__repr__(value)
        except BaseException:  # noqa: BLE001
            text = "<unprintable>"
    if len(text) > limit:
        text = f"{text[:limit]}… [truncated, {len(text)} chars]"
    return text


#: Longest value of a record quoted in a reason (``quoted``).
MAX_QUOTED = 120


def quoted(value: str, limit: int = MAX_QUOTED) -> str:
    """A record's value (a key: maybe an e-mail address, a token, a URL) quoted in a reason:
    passwords masked (``redact_text``), cut to ``limit`` characters with its length, in quotes.
    Only a window of four times ``limit`` is masked: what lies past it is cut anyway."""
    window = value[: 4 * limit]
    text = redact_text(window)
    if len(text) > limit or len(window) < len(value):
        text = f"{text[:limit]}… [{len(value)} chars]"
    return repr(text)


def masked_reason(value: object) -> str:
    """A failure's reason: ``str(value)``, credentials masked (``redact_text``), then cut to
    ``MAX_REASON`` (cut first, a URL's password straddling the cut lost its ``@host``, and no
    later mask found its first characters)."""
    # Only a window past the cut is masked: the URL pattern's cost grows with the square of a
    # long run without spaces (a record's payload quoted whole), and what lies beyond the window
    # is cut anyway (a password would have to run from inside the kept text past the window).
    # The text past the window is never shown: a mask within the window shortens it, and the
    # rest of a value masked to the window's end (a password, a private key over 4,000
    # characters) came back within the kept characters unmasked.
    text = safe_text(value, limit=1 << 62)
    if len(text) <= _MASKED_WINDOW:
        return safe_text(redact_text(text))
    shown = redact_text(text[:_MASKED_WINDOW])
    return f"{shown[:MAX_REASON]}… [truncated, {len(text)} chars]"


def describe_exception(exc: BaseException) -> str:
    """The reason a record failed with this exception: ``Type: message``, bounded, never raising."""
    # Masked before it is cut: the reason goes to dead letters (a queue, a bucket, a table) too.
    source = exc.reason if isinstance(exc, RecordError) else exc
    message = masked_reason(source)
    if isinstance(exc, RecordError):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


#: Longest code location ``exception_location`` gives (two frames, each path cut to fit).
_MAX_LOCATION = 400


def exception_location(
    exc: BaseException, skip: int = 0, code: Any = None, after: Any = None
) -> str:
    """Where ``exc`` was raised, for a reason: ``at FILE, line N, in FUNC`` of the first frame of
    its traceback after ``skip`` — or, given ``code``, of the first frame running that code
    object (a bolt's ``process``); given ``after``, of the first frame after the one running
    that code object (what the engine's caller called, whatever callable a bolt's ``process``
    is: a ``functools.partialmethod`` has no code of its own) — (the code that was called: a
    bolt's ``process_event``), and of the innermost one when that is another (``raised at …``:
    a helper, a library). Empty when the traceback is gone or holds no frame of ``code`` or
    ``after``. Bounded; never raises."""
    try:
        frames = []
        tb = exc.__traceback__
        while tb is not None:
            frames.append(tb)
            tb = tb.tb_next
        if code is not None:
            skip = next((i for i, f in enumerate(frames) if f.tb_frame.f_code is code), len(frames))
        elif after is not None:
            skip = next(
                (i + 1 for i, f in enumerate(frames) if f.tb_frame.f_code is after), len(frames)
            )
        frames = frames[skip:]
        if not frames:
            return ""

        def at(tb: Any) -> str:
            code = tb.tb_frame.f_code
            # a long path keeps its end, the file's name (its start, a venv's or a build's
            # directories, is the same in every reason)
            path, keep = str(code.co_filename), _MAX_LOCATION // 2 - 60
            if len(path) > keep:
                path = f"…{path[-keep:]}"
            return f"{path}, line {tb.tb_lineno}, in {safe_text(code.co_name, limit=100)}"

        text = f"at {at(frames[0])}"
        if len(frames) > 1:
            text += f"; raised at {at(frames[-1])}"
        return text
    except BaseException:  # noqa: BLE001 - describing an error must never fail
        return ""


def describe_exception_at(
    exc: BaseException, skip: int = 0, code: Any = None, after: Any = None
) -> str:
    """``describe_exception`` with the code location (``exception_location``) appended, the
    message cut so the whole stays within a ``Failure``'s bound: for an exception that is a
    bug or an unexpected shape in code of yours (a ``KeyError``), where it was raised. A
    ``RecordError``'s reason, written on purpose, is given as it is."""
    reason = describe_exception(exc)
    if isinstance(exc, RecordError):  # a reason the code wrote on purpose: as it is
        return reason
    where = exception_location(exc, skip, code, after)
    if not where:
        return reason
    room = MAX_REASON + 40 - len(where) - 3
    if len(reason) > room:
        # with the marker a cut reason has (``safe_text``), the message's length in it: a
        # producer's answer that cuts the reason again says how long it was from it
        cut = _TRUNCATED.search(reason)
        mark = f"… [truncated, {cut.group(1) if cut else len(reason)} chars]"
        reason = reason[: (cut.start() if cut else len(reason))][: room - len(mark)] + mark
    return f"{reason} ({where})"


#: The marker of a cut text (``safe_text``, ``masked_reason``): the whole text's length.
_TRUNCATED = re.compile(r"… \[truncated, (\d+) chars\]\Z")
#: A frame of the code location ``describe_exception_at`` appends: `` (at FILE, line N, in F)``,
#: with ``; raised at FILE, line N, in F`` when the innermost frame is another.
_FRAME = re.compile(r", line \d+, in ")


def without_location(reason: str) -> str:
    """``reason`` without the code location ``describe_exception_at`` appended to it (the
    server's paths, lines and function names: the operator's, in the dead letter and the logs),
    for an answer to a caller outside — the Lambda producer's HTTP client.

    Cut from the leftmost `` (at `` followed by a frame: a path or a message holding `` (at ``
    is not half shown. Linear in the reason's length: a pattern of the whole location took 0.1 s
    on a reason of a record's text made of its pieces."""
    at = reason.find(" (at ")
    if at < 0 or not reason.endswith(")") or _FRAME.search(reason, at) is None:
        return reason
    return reason[:at]


class MetricsError(SquallError):
    """Metrics the run was asked for cannot be given: the runner does not start without them."""


class MetricsServerError(MetricsError):
    """The Prometheus endpoint could not be served (the port is taken, the address is not this host's)."""


#: A folder the process may not write in (mode, owner; a read-only mount: a ConfigMap's).
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def cannot_write(exc: OSError, written: str | None = None) -> str:
    """Why a file squall writes (or its folder) could not be made, in words: the file in the way
    of a folder (``mkdir`` says only "File exists" or "Not a directory"), and for a path
    ``written`` relative in the topology (a dead-letter file, a SQLite database) that the
    process may not write there, where it is: the topology file's folder, read-only where the
    topology is mounted (a Kubernetes ConfigMap); in a Lambda function, any path outside /tmp (one
    under /tmp that cannot be written is said as it is: another cause than the folder)."""
    if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename:
        path = Path(exc.filename)
        for part in (path, *path.parents):
            if part.is_file():
                return f"{part} is a file, not a folder"
    reason = exc.strerror or str(exc)
    if written is None or exc.errno not in _NOT_WRITABLE:
        return reason
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # Lambda's package is read-only (/var/task)
        # where it failed (a relative path is the topology folder's, `~` the home folder's)
        failed = os.path.normpath(os.path.expanduser(str(exc.filename or written)))
        if failed == "/tmp" or failed.startswith("/tmp/"):
            return reason  # the writable folder: another cause (a mode, an owner), said as it is
        relative = not Path(written).expanduser().is_absolute()
        where = "in the topology's folder, " if relative else ""
        return reason + (
            f" ({written} is {where}outside /tmp, the only folder a Lambda function may write, "
            "which each execution environment keeps only while it lives: give a SQLite resource "
            "a PostgreSQL URL, dead letters a durable sink such as dead_letter_table)"
        )
    if not Path(written).expanduser().is_absolute():
        reason += (
            f" (the relative path {written} is in the topology file's folder, read-only where "
            "the topology is mounted, as a ConfigMap is: write an absolute path on a "
            "writable volume)"
        )
    return reason
