"""Log lines: text or JSON (``--log-format json``, ``SQUALL_LOG_FORMAT=json``), with batch context.

Every line carries the context of the batch in flight — topology, batch id, each shard of its
records with their sequence range (``batch_positions``), and the component when one is named —
from a context variable the runner sets around each batch, so a line from deep inside a bolt
still says which records it was about. Credentials in
URLs (``scheme://user:password@host``), ``password=…`` pairs, ``Authorization:``-style headers
and credential keys (``squall.redact``) are masked in every line, in both formats — in JSON, the
value of an extra field named as a credential too: a connection error that quotes its DSN, or an
HTTP error that echoes its request's headers, does not leak the secret.

The JSON formatter is written here (with orjson, already a dependency) rather than taken from
python-json-logger: it is the context injection and the masking that matter, a few lines each.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from squall.exact_json import text_default
from squall.redact import is_secret_name, masked_secret, redact_text

FORMAT_ENV = "SQUALL_LOG_FORMAT"
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "squall_log_context", default=None
)

_KEY_VALUE = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|aws_secret_access_key)(\s*[=:]\s*)([^\s&;,'\"()\[\]{}]+)"
)
_KEY_VALUE_WORDS = ("pass", "pwd", "secret", "token")  # a line with none of them is not scanned


def redact(text: str) -> str:
    """Mask credentials (``squall.redact.redact_text``: URL passwords, ``password=…`` pairs,
    ``Authorization:`` headers, credential keys of a rendered dict or JSON) and ``token: …``-style
    pairs."""
    text = redact_text(text)
    if ("=" in text or ":" in text) and any(w in text.lower() for w in _KEY_VALUE_WORDS):
        text = _KEY_VALUE.sub(r"\1\2***", text)
    return text


def _redacted(value: Any) -> Any:
    """``value`` with every string in it redacted (JSON lines are masked field by field: a URL's
    password runs to its last ``@``, which in one encoded line could be another field's), and the
    value of a key named as a credential (``Authorization``, ``X-Api-Key``, ``password``) masked."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: _masked(k, v) if isinstance(k, str) and is_secret_name(k) else _redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))  # what orjson would write with default=str


def _masked(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, dict, list, tuple)):
        return _redacted(value)
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return masked_secret(name, text)


#: Shards a batch's ``shards`` field lists; a batch of records of more (an SQS standard queue's
#: messages, each its own shard) counts the others in ``shards_more``.
SHARDS_LISTED = 50


def batch_positions(records: Sequence[Any]) -> dict[str, Any]:
    """The fields that say which records a batch held, for its log lines (every runner's, through
    ``Recorder``): ``shards``, each shard of the records (in the order of their first record) with
    the sequence numbers of its first and last record in the batch —
    ``[{"shard", "sequence_first", "sequence_last"}, ...]``, the first ``SHARDS_LISTED`` and
    ``shards_more`` for the others; a batch of one shard's records (the KCL's, a Lambda Kinesis
    trigger's, often ``squall run``'s) also has them at the top: ``shard``, ``sequence_first``,
    ``sequence_last``. A batch of several shards has no top-level range: its first record and
    its last are of different shards.

    On every batch's path: a batch of one shard (the usual) is found by comparing shard ids
    only, 0.36k instructions a record where the ranges' walk takes 0.9k (callgrind, a batch
    of 500); a batch of several shards stops that comparison at its first other shard."""
    if records:
        shard = records[0].meta.shard_id
        for record in records:
            if record.meta.shard_id != shard:
                break
        else:
            first, last = records[0].meta.sequence_number, records[-1].meta.sequence_number
            return {
                "shard": shard,
                "sequence_first": first,
                "sequence_last": last,
                "shards": [{"shard": shard, "sequence_first": first, "sequence_last": last}],
            }
    ranges: dict[str, list[str]] = {}
    for record in records:
        meta = record.meta
        seen = ranges.get(meta.shard_id)
        if seen is None:
            ranges[meta.shard_id] = [meta.sequence_number, meta.sequence_number]
        else:
            seen[1] = meta.sequence_number
    out: dict[str, Any] = {}
    if len(ranges) == 1:
        [(shard, (first, last))] = ranges.items()
        out = {"shard": shard, "sequence_first": first, "sequence_last": last}
    if ranges:
        out["shards"] = [
            {"shard": shard, "sequence_first": first, "sequence_last": last}
            for shard, (first, last) in list(ranges.items())[:SHARDS_LISTED]
        ]
    if len(ranges) > SHARDS_LISTED:
        out["shards_more"] = len(ranges) - SHARDS_LISTED
    return out


def text_fields(fields: dict[str, Any]) -> str:
    """``key=value …`` of a text line's fields: ``shards`` as ``shard:first-last,…``, and left
    out when ``shard`` is there (a batch of one shard: ``shard``, ``sequence_first`` and
    ``sequence_last`` say it)."""
    pairs = []
    for key, value in fields.items():
        if key == "shards" and isinstance(value, list):
            if "shard" in fields:
                continue
            value = ",".join(
                f"{s.get('shard')}:{s.get('sequence_first')}-{s.get('sequence_last')}"
                for s in value
                if isinstance(s, dict)
            )
        pairs.append(f"{key}={value}")
    return " ".join(pairs)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields to every log line emitted inside the block (nested blocks add to the outer ones)."""
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


#: Control characters (C0 but tab, DEL, C1) and Unicode's line and paragraph separators: a
#: record's value in a text line (an event id, a reason quoting a field) would otherwise end the
#: line and start a forged one, or send a terminal escape sequence.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\x1b``): one line, no terminal escapes."""
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message [key=value …]``, masked, on one line (control characters escaped);
    a traceback on the lines after it."""

    def __init__(self, fmt: str = "%(levelname)s %(name)s: %(message)s"):
        super().__init__(fmt)

    terminator = ""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        ctx = _context.get()
        if ctx:
            line += (
                " [" + text_fields({k: v for k, v in ctx.items() if not isinstance(v, dict)}) + "]"
            )
        line = one_line(redact(line))  # masked first: a secret's pattern may end at a newline
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + redact(record.exc_text)
        if record.stack_info:
            line += "\n" + redact(self.formatStack(record.stack_info))
        return line + self.terminator


class JsonFormatter(logging.Formatter):
    terminator = ""

    """One JSON object per line: time, level, logger, message, the batch context, extra ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = _context.get()
        if ctx:
            out.update(ctx)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        request_id = getattr(record, "aws_request_id", None)  # set by Lambda's runtime client
        if request_id:
            out["request_id"] = request_id
        if record.exc_info:  # the text RedactingFilter made of the exception itself, if it did
            # (the record's exc_info then holds a masked stand-in: an ExceptionGroup's without
            # its sub-exceptions)
            out["exception"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(_redacted(out), default=text_default).decode() + self.terminator


def log_format(explicit: str | None = None) -> str:
    """``json`` or ``text``: the option if given, else ``SQUALL_LOG_FORMAT``, else text."""
    value = (explicit or os.environ.get(FORMAT_ENV) or "text").strip().lower()
    if value not in ("json", "text"):
        raise ValueError(f"{FORMAT_ENV}: expected json or text, not {value!r}")
    return value


def configure(fmt: str | None = None, *, level: int = logging.WARNING, stream: Any = None) -> None:
    """Install one handler on the root logger with the chosen format (stderr by default)."""
    formatter = JsonFormatter() if log_format(fmt) == "json" else TextFormatter()
    root = logging.getLogger()
    root.setLevel(level)
    for h in root.handlers:
        if getattr(
            h, "_squall", False
        ):  # configured before (a second CLI call in one process): reformat it
            if stream is not None:
                h.setStream(stream)  # type: ignore[attr-defined]
            h.setFormatter(formatter)
            return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler._squall = True  # type: ignore[attr-defined]
    root.addHandler(handler)


def install_formatter(fmt: str | None = None) -> None:
    """Give the handlers already on the root logger (Lambda's own) squall's formatter."""
    root = logging.getLogger()
    if not root.handlers:
        configure(fmt, level=logging.INFO)
        return
    for h in root.handlers:
        formatter = JsonFormatter() if log_format(fmt) == "json" else TextFormatter()
        if not hasattr(
            h, "terminator"
        ):  # Lambda's runtime client writes the line as is: end it here
            formatter.terminator = "\n"
        h.setFormatter(formatter)
