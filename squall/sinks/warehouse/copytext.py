"""Rows in PostgreSQL's COPY text format, built in one pass over a batch of events.

Format (https://www.postgresql.org/docs/current/sql-copy.html, "Text Format"): one line per row,
columns separated by a tab, ``\\N`` for NULL; a backslash, tab, newline or carriage return inside a
value is written as ``\\\\``, ``\\t``, ``\\n``, ``\\r``. PostgreSQL cannot store the NUL character
in text or jsonb, so a value containing one sends its event to the dead letter instead of failing
the whole COPY.

The builder works column by column: each column of the batch is read and formatted by one list
comprehension, and a text column is checked for special characters once, as a whole (its joined
text holds no tab, newline or carriage return, and exactly one backslash per NULL). Only the rare
column that fails a check is formatted value by value, which also names the failing events.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from typing import Any

import orjson

from squall import exact_json
from squall.event import Event
from squall.paths import MISSING, getter
from squall.sinks.warehouse.columns import (
    CONVERTERS,
    ColumnSpec,
    ConversionError,
    describe_value,
    json_text,
    to_datetime,
)
from squall.times import MAX_MS, MS_THRESHOLD, float_us

NULL = "\\N"
INT4 = (-(2**31), 2**31 - 1)
INT8 = (-(2**63), 2**63 - 1)
_EPOCH = datetime(1970, 1, 1)
_EMPTY: dict = {}
# A timestamp already in UTC and in a form both Python and PostgreSQL read the same way is passed
# through as it is (after Python has checked it is a real date): formatting costs more than parsing.
_UTC_TEXT = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]00(?::?00)?)\Z", re.ASCII
)
# jsonb rejects the escape of NUL; an escaped backslash followed by "u0000" is ordinary text.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def escape(value: str) -> str:
    """One value in COPY text format (without the NULL check)."""
    if "\x00" in value:
        raise ConversionError("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _text(v: Any) -> str:
    return CONVERTERS["text"](v)


def _int4(v: Any) -> str:
    n = v if v.__class__ is int else CONVERTERS["integer"](v)
    if INT4[0] <= n <= INT4[1]:
        return str(n)
    raise ConversionError("out of range (32-bit)")


def _int8(v: Any) -> str:
    n = v if v.__class__ is int else CONVERTERS["bigint"](v)
    if INT8[0] <= n <= INT8[1]:
        return str(n)
    raise ConversionError("out of range (64-bit)")


def _float8(v: Any) -> str:
    return repr(CONVERTERS["float"](v))  # a float too: NaN and infinities are refused


def _bool(v: Any) -> str:
    if v is True:
        return "t"
    if v is False:
        return "f"
    return "t" if CONVERTERS["boolean"](v) else "f"


def timestamp_text(v: Any) -> str:
    """A timestamp as UTC text PostgreSQL reads exactly (ISO-8601, epoch seconds or milliseconds)."""
    if v.__class__ is str and _UTC_TEXT.match(v):
        datetime.fromisoformat(v)  # a real date and time, or ValueError
        return v
    if (v.__class__ is int or v.__class__ is float) and 0 <= v <= MAX_MS:
        # (``read_time``'s reading: milliseconds from 10^11; a negative number, a NaN or one
        # after the year 9999 takes the general path, which refuses it with its reason)
        if v.__class__ is float:  # (its decimal text floored, not its binary value rounded)
            naive = _EPOCH + timedelta(microseconds=float_us(v, v >= MS_THRESHOLD))
        elif v >= MS_THRESHOLD:
            naive = _EPOCH + timedelta(milliseconds=v)
        else:
            naive = _EPOCH + timedelta(seconds=v)
    else:
        d = to_datetime(v)
        naive = (d.astimezone(UTC) if d.utcoffset() else d).replace(tzinfo=None)
    return naive.isoformat() + "+00"


def _date(v: Any) -> str:
    return CONVERTERS["date"](v).isoformat()


def _json(v: Any) -> str:
    return _checked_json(json_text(v))


def _checked_json(text: str) -> str:
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise ConversionError(
            "contains a NUL character (\\u0000), which PostgreSQL jsonb cannot store"
        )
    return text


#: column type -> value -> COPY text (not yet escaped); ``None`` for text: a str is its own text.
FORMATTERS: dict[str, Callable[[Any], str]] = {
    "text": _text,
    "integer": _int4,
    "bigint": _int8,
    "float": _float8,
    "boolean": _bool,
    "timestamp": timestamp_text,
    "date": _date,
    "json": _json,
}


@dataclass
class CopyRows:
    """What ``CopyRowBuilder.build`` made of a batch: one line per written event, partition keys."""

    lines: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def encode(
        self, chunk: int, reject: Callable[[Event, str], None], *, sort: bool = True
    ) -> list[tuple[bytes, int]]:
        """The lines, sorted by event_id, as UTF-8 COPY buffers of at most ``chunk`` rows.

        Lines start with the event_id, so sorting them sorts by key: PostgreSQL then inserts into
        the key's B-tree in order, touching each index page once instead of at random (measured:
        about a third less server time per batch). Unencodable lines are rejected. With
        ``sort=False`` the lines keep the batch order (an upsert: the last row of a key wins).
        """
        lines = sorted(self.lines) if sort else self.lines
        try:
            return [
                (("\n".join(part) + "\n").encode(), len(part))
                for part in (lines[i : i + chunk] for i in range(0, len(lines), chunk))
            ]
        except UnicodeEncodeError:
            pass
        lines, events = [], []
        for line, ev in zip(self.lines, self.events, strict=True):
            try:
                line.encode()
            except UnicodeEncodeError:
                reject(
                    ev,
                    "a value is not valid Unicode (a lone surrogate), which PostgreSQL cannot store",
                )
                continue
            lines.append(line)
            events.append(ev)
        self.lines, self.events = lines, events
        return self.encode(chunk, reject, sort=sort)


class _Column:
    """One column of the batch: how to read it from the events and format it as COPY text."""

    def __init__(self, name: str, spec: ColumnSpec):
        self.name, self.spec = name, spec
        self.required = not spec.nullable
        self.textual = spec.type in (
            "text",
            "json",
        )  # the only ones that can hold special characters
        self.fmt = FORMATTERS[spec.type]
        parts = spec.path.split(".")
        if parts[0] == "payload":
            parts = parts[1:]
        self.keys: tuple[str, ...] = ()
        self.get: Callable[[Event], Any] | None = None
        if spec.path == "meta.event_id":
            self.get = attrgetter("event_id")
        elif parts[0] == "meta" and len(parts) == 2:
            self.get = attrgetter(spec.path)  # "meta.shard_id": ev.meta.shard_id
        elif len(parts) <= 2:
            self.keys = tuple(parts)
        else:
            path_get = getter(spec.path)
            self.get = lambda ev: None if (v := path_get(ev)) is MISSING else v

    def read(
        self, events: list[Event], payloads: list[dict], objects: dict[str, list[dict]]
    ) -> list[Any]:
        """The column's values, None where missing; ``objects`` caches the batch's nested objects."""
        if self.get is not None:
            return list(map(self.get, events))
        if len(self.keys) == 1:
            (k,) = self.keys
            return [p.get(k) for p in payloads]
        k1, k2 = self.keys
        parents = objects.get(k1)
        if parents is None:  # geo.country and geo.city read the "geo" objects once
            parents = objects[k1] = [
                d if isinstance(d := p.get(k1), dict) else _EMPTY for p in payloads
            ]
        return [d.get(k2) for d in parents]

    def format(self, raw: list[Any], failed: dict[int, str]) -> list[str]:
        """COPY text of each value (NULL for None); failures go into ``failed`` (index -> reason)."""
        nulls = raw.count(None)
        if nulls and self.required:
            for i, v in enumerate(raw):
                if v is None:
                    failed.setdefault(
                        i, f"column '{self.name}': required value '{self.spec.path}' is missing"
                    )
        try:
            out = self._fast(raw)
        except (ConversionError, ValueError, TypeError, OverflowError, OSError):
            out = self._one_by_one(raw, failed)
            nulls = sum(1 for o in out if o is NULL)
        if self.textual:
            joined = "".join(out)
            if (
                joined.count("\\") != nulls
                or "\t" in joined
                or "\n" in joined
                or "\r" in joined
                or "\x00" in joined
            ):
                out = self._escaped(out, failed)
        return out

    def _fast(self, raw: list[Any]) -> list[str]:
        kind, fmt = self.spec.type, self.fmt
        if kind == "text":
            return [NULL if v is None else v if v.__class__ is str else fmt(v) for v in raw]
        if kind == "integer":
            lo, hi = INT4
            return [
                NULL if v is None else str(v) if v.__class__ is int and lo <= v <= hi else fmt(v)
                for v in raw
            ]
        if kind == "float":
            out = [NULL if v is None else repr(v) if v.__class__ is float else fmt(v) for v in raw]
            # A float's repr has an 'n' only as 'nan', 'inf' or '-inf' (NULL's is a capital N):
            # PostgreSQL would store them, which the converter and SQLite's writer refuse.
            if "n" in "".join(out):
                raise ConversionError
            return out
        if kind == "boolean":
            return [
                NULL if v is None else "t" if v is True else "f" if v is False else fmt(v)
                for v in raw
            ]
        if (
            kind == "timestamp"
        ):  # UTC text in a form PostgreSQL reads alike passes (fromisoformat checks it)
            utc, check = _UTC_TEXT.match, datetime.fromisoformat
            return [
                NULL if v is None else v if v.__class__ is str and utc(v) and check(v) else fmt(v)
                for v in raw
            ]
        if kind == "json":
            dumps, numbers = orjson.dumps, exact_json.plain_numbers  # a float subclass: a number
            out = [NULL if v is None else dumps(v, default=numbers).decode() for v in raw]
            if "\\u0000" in "".join(out):  # rare: find the values that really hold a NUL
                out = [o if o is NULL else _checked_json(o) for o in out]
            return out
        return [NULL if v is None else fmt(v) for v in raw]

    def _one_by_one(self, raw: list[Any], failed: dict[int, str]) -> list[str]:
        out = []
        for i, v in enumerate(raw):
            if v is None:
                out.append(NULL)
                continue
            try:
                out.append(self.fmt(v))
            except (ConversionError, ValueError, TypeError, OverflowError, OSError) as exc:
                detail = f": {exc.args[0]}" if isinstance(exc, ConversionError) and exc.args else ""
                failed.setdefault(
                    i,
                    f"column '{self.name}': cannot store {describe_value(v)} from "
                    f"'{self.spec.path}' as {self.spec.type}{detail}",
                )
                out.append(NULL)
        return out

    def _escaped(self, out: list[str], failed: dict[int, str]) -> list[str]:
        escaped = []
        for i, text in enumerate(out):
            if text is NULL:  # the marker object itself, not a payload string that reads "\N"
                escaped.append(NULL)
                continue
            try:
                escaped.append(escape(text))
            except ConversionError as exc:
                failed.setdefault(
                    i, f"column '{self.name}': value from '{self.spec.path}' {exc.args[0]}"
                )
                escaped.append(NULL)
        return escaped


class CopyRowBuilder:
    """Turns events into COPY text lines in column order, or a reason why an event cannot be stored."""

    def __init__(
        self,
        columns: dict[str, ColumnSpec],
        *,
        key_column: str | None = None,
        key_length: int = 10,
        bounds: tuple[int | None, int | None] = (None, None),
    ):
        # event_id first, so that sorting the lines sorts the rows by key (see CopyRows.encode).
        if "event_id" in columns:
            columns = {"event_id": columns["event_id"], **columns}
        self.names = list(columns)
        self._columns = [_Column(name, spec) for name, spec in columns.items()]
        self._key_index = self.names.index(key_column) if key_column else None
        self._key_length = key_length
        self._bounds = bounds

    def build(self, events: list[Event], reject: Callable[[Event, str], None]) -> CopyRows:
        payloads = [v if isinstance(v := ev.value, dict) else _EMPTY for ev in events]
        failed: dict[int, str] = {}
        objects: dict[str, list[dict]] = {}
        texts = [col.format(col.read(events, payloads, objects), failed) for col in self._columns]
        if self._key_index is not None and self._bounds != (None, None):
            self._check_days(events, texts[self._key_index], failed)
        lines = list(map("\t".join, zip(*texts, strict=True)))
        kept = events
        if failed:
            for i in sorted(failed):
                reject(events[i], failed[i])
            lines = [line for i, line in enumerate(lines) if i not in failed]
            kept = [ev for i, ev in enumerate(events) if i not in failed]
        keys: set[str] = set()
        if self._key_index is not None:
            n = self._key_length
            keys = {t[:n] for i, t in enumerate(texts[self._key_index]) if i not in failed}
        return CopyRows(lines, list(kept), keys)

    def _check_days(self, events: list[Event], days: list[str], failed: dict[int, str]) -> None:
        """Fail the rows whose day is beyond ``partition_by``'s bounds around their record's
        arrival: each new day is a new partition (a table), and a client's event times — one
        producer request of 500 events stamped on 500 days — made as many."""
        max_age, max_future = self._bounds
        for i, (ev, text) in enumerate(zip(events, days, strict=True)):
            arrival = ev.meta.arrival_time
            if i in failed or arrival is None or text == NULL:
                continue
            day = date.fromisoformat(text[:10])
            ms = (day - arrival.astimezone(UTC).date()).days * 86_400_000
            if max_future is not None and ms > max_future:
                failed[i] = (
                    f"partition_by: the row's day {day} is more than max_future after its "
                    f"record's arrival ({arrival.astimezone(UTC).date()})"
                )
            elif max_age is not None and -ms > max_age:
                failed[i] = (
                    f"partition_by: the row's day {day} is more than max_age before its "
                    f"record's arrival ({arrival.astimezone(UTC).date()})"
                )


def partition_key_date(key: str) -> date:
    """The first day of the partition a key (``YYYY-MM-DD`` or ``YYYY-MM``) names."""
    return date.fromisoformat(key if len(key) == 10 else key + "-01")
