"""Event times: parse ISO-8601 text or epoch seconds/milliseconds to epoch milliseconds, and back.

Shared by every component that reads an event time (the subscription and window bolts).
"""

from __future__ import annotations

import functools
import math
import re
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator

from squall.exact_json import NOT_A_NUMBER, as_number

# Epoch values at or above this are milliseconds: 1e11 seconds is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 100_000_000_000
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
#: (the same, for the hot paths that test a plain number before calling ``read_time``)
MS_THRESHOLD, MAX_MS = _MS_THRESHOLD, _MAX_MS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
#: A text of digits read as an epoch number — but not one of exactly eight digits: that is
#: ISO 8601's basic date (``20240501``, which ``fromisoformat`` reads), not 1970-08-23 in seconds.
_NUMBER = re.compile(r"^\s*(?!\d{8}\s*$)\d+(\.\d+)?\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


class DurationOption:
    """The mark of an option that takes a duration (``Duration``): the topology loader refuses
    there an unquoted ``010`` or ``1:30``, which YAML 1.1 reads in octal (8) or base 60 (90).
    ``whole``: whole seconds only (``WholeSeconds``; the reference offers no ``500ms`` there)."""

    def __init__(self, whole: bool = False) -> None:
        self.whole = whole

    def __repr__(self) -> str:
        return "DurationOption(whole=True)" if self.whole else "DurationOption()"


#: The type of a duration option: seconds as a number, or text like ``30s`` (``duration_ms``).
Duration = Annotated[int | float | str, DurationOption()]


def _text_as_seconds(value: Any) -> Any:
    """A duration's text (``30s``, ``5m``, ``1h``; ``300``) as its seconds; anything else as it
    is, for the option's own type and bounds to check."""
    if isinstance(value, str):
        try:
            return duration_ms(value) / 1000
        except ValueError:
            pass
        try:  # a number's other texts, which the option's number type read: 1e3, .5
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds):
            return seconds
        raise ValueError(f"not a duration: {value!r} (seconds, or e.g. 500ms, 30s, 5m, 1h, 1d)")
    return value


#: An option in seconds that also takes a duration's text, read as seconds (``5m`` is 300.0):
#: ``Seconds`` a number, ``WholeSeconds`` an integer (a Redis TTL; ``1.5s`` is refused).
Seconds = Annotated[float, BeforeValidator(_text_as_seconds), DurationOption()]
WholeSeconds = Annotated[int, BeforeValidator(_text_as_seconds), DurationOption(whole=True)]
#: Default ``max_future`` of the components that order or window by event time: how far after
#: its record's arrival an event time is believed (device clocks a few minutes fast are common).
MAX_FUTURE = "5m"
MAX_FUTURE_DOC = (
    "How far after its record's arrival an event time is believed (seconds, or e.g. 30s, 5m, 1h); "
    "a later one (a device whose clock runs ahead) is taken as the arrival time. Null: no bound. "
    "Records without an arrival time (files, stdin) are not bounded."
)


def parse_time(value: Any) -> int:
    """Epoch milliseconds of an event time: ISO-8601 text (UTC if no offset), epoch seconds or ms,
    or a datetime or date (as ``read_time``).

    A fraction of a millisecond is dropped (floored), whatever the form. Raises ``ValueError``
    with a reason for anything else, including times before 1970.
    """
    if value.__class__ is str and "-" in value:  # ISO-8601 (a number never has a "-")
        return _parse_iso(value)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"not a time: {value!r}")
        ms = value if value >= _MS_THRESHOLD else value * 1000
    elif isinstance(value, float) or (isinstance(value, str) and _NUMBER.match(value)):
        if isinstance(value, float) and (not math.isfinite(value) or value < 0):
            raise ValueError(f"not a time: {value!r}")
        ms = _floor_ms(value)
    elif isinstance(value, str):
        return _parse_iso(value)
    elif isinstance(value, date):  # a Python bolt's datetime (pandas' Timestamp) or date
        return _epoch_ms(read_time(value), "time", _shown(value))
    else:
        number = as_number(value)  # NumPy's int64, float32 (a pandas time in ms): its number
        if number is NOT_A_NUMBER:
            raise ValueError(f"not a time: {type(value).__name__}")
        return parse_time(number)
    if ms > _MAX_MS:
        raise ValueError(f"time after the year 9999: {_shown(value)}")
    return ms


def _shown(value: Any) -> str:
    """``repr(value)``, shortened: a reason names the value, not its thousands of digits."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…{text[-8:]} ({len(text)} characters)"


def _floor_ms(value: float | str) -> int:
    """Epoch milliseconds of a non-negative number with a fraction (a float, or digits with a
    point), floored like an ISO time's fraction: 10:00:59.9996 is in 10:00:59.999, not in the
    next second (rounding put it in the next window). From the number's decimal text (a float's
    shortest repr: 1714557600.1 is 1714557600.0999999… in binary, meant as .1)."""
    # (float.__repr__: a subclass's repr need not be its number, numpy's is "np.float64(…)")
    text = value.strip() if isinstance(value, str) else float.__repr__(value)
    if "e" in text or "E" in text:  # (a float's repr from 1e16 up, or below 1e-4)
        text = format(Decimal(text), "f")
    whole, _, fraction = text.partition(".")
    whole = whole.lstrip("0") or "0"  # (int() refuses over 4,300 digits; float() read them)
    if len(whole) > len(str(_MAX_MS)):
        return _MAX_MS + 1  # after the year 9999 in seconds or milliseconds
    n = int(whole)
    if n >= _MS_THRESHOLD:
        return n
    return n * 1000 + int((fraction + "000")[:3])


def upper_z(text: str) -> str:
    """``text`` with a final lower-case ``z`` after a digit (RFC 3339 allows it: UTC) as ``Z``,
    which is all ``datetime.fromisoformat`` reads; shared by every reader of ISO times (the
    bolts here, the warehouse and S3 sinks' timestamp columns) so that they agree."""
    if text[-1:] == "z" and text[-2:-1].isdigit():
        return text[:-1] + "Z"
    return text


def _parse_iso(value: str) -> int:
    text = upper_z(value.strip())
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {_shown(value)}") from None
    # ``_epoch_ms`` inline: its call, and the ``repr`` of the value it names in an error, made
    # for every time, were a third of this function's instructions.
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = (dt - _EPOCH) // _ONE_MS
    if 0 <= ms <= _MAX_MS:
        return ms
    raise ValueError(f"time {'before 1970' if ms < 0 else 'after the year 9999'}: {_shown(value)}")


def read_time(value: Any, unit: str | None = None) -> datetime:
    """A time as the sinks' typed columns store it: an aware datetime, keeping the offset its
    text was written with (``.astimezone(UTC)`` for the instant; ``.date()`` for the calendar
    date as written). The one reading of a value as a time, shared with ``parse_time``:

    - a datetime: as it is (naive means UTC); a date: its midnight in UTC, as its text;
    - a number (NumPy's too): epoch seconds, or milliseconds from 10^11 (``parse_time``'s
      threshold) — or in ``unit`` (``"s"`` or ``"ms"``) when the component has one; negative,
      NaN, infinite or after the year 9999: refused; a float is its shortest decimal text
      (``repr``), its fraction beyond microseconds dropped, as a digit text's;
    - a text of digits (with a fraction): that number ("1714557600" is epoch seconds, as
      protobuf's JSON writes an int64) — but eight digits alone are ISO 8601's basic date
      ("20240501" is 2024-05-01, not 1970-08-23 in seconds: no event time is from 1970);
    - other text: ISO-8601 (RFC 3339's lower-case ``t``/``z`` too, spaces around ignored), no
      offset means UTC, years 1 … 9999 (a date of birth before 1970 is a time to store);
      fractions beyond microseconds are dropped;
    - anything else (a boolean, null): refused. Raises ``ValueError`` naming the value.
    """
    if value.__class__ is str:
        text = value.strip()
        if not _NUMBER.match(text):
            try:
                dt = datetime.fromisoformat(upper_z(text))
            except ValueError:
                raise ValueError(f"not an ISO-8601 time: {_shown(value)}") from None
            if dt.tzinfo is None:
                return dt.replace(tzinfo=UTC)
            try:
                dt.astimezone(UTC)  # within years 1 … 9999 in UTC too
            except OverflowError:
                when = "after the year 9999" if dt.year == 9999 else "before the year 1"
                raise ValueError(f"time {when}: {_shown(value)}") from None
            return dt
        number: Any = Decimal(text)
    elif value.__class__ is int or value.__class__ is float:  # (the usual numbers, first)
        number = value
    elif isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    elif isinstance(value, date):  # (a Python bolt's): its midnight in UTC, as its text's
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, bool) or value is None:
        raise ValueError(f"not a time: {value!r}")
    elif isinstance(value, int | float):
        number = value
    else:
        number = as_number(value)  # NumPy's int64, float32 (a pandas time in ms): its number
        if number is NOT_A_NUMBER or isinstance(number, bool):
            raise ValueError(f"not a time: {type(value).__name__}")
    if not number >= 0:  # (NaN too)
        raise ValueError(f"not a time: {_shown(value)}")
    in_ms = number >= _MS_THRESHOLD if unit is None else unit == "ms"
    if not (number if in_ms else number * 1000) <= _MAX_MS:  # (infinity too)
        raise ValueError(f"time after the year 9999: {_shown(value)}")
    if isinstance(number, float):
        return _EPOCH + timedelta(microseconds=float_us(number, in_ms))
    # an integer, or a digit text's exact Decimal: its microseconds, the fraction's rest dropped
    # (a float of 9999's milliseconds / 1000 is some microseconds off)
    return _EPOCH + timedelta(microseconds=int(number * (1000 if in_ms else 1_000_000)))


def float_us(number: float, in_ms: bool) -> int:
    """Epoch microseconds of a non-negative float in seconds (or milliseconds): its shortest
    decimal text (``_floor_ms``'s), the fraction beyond microseconds dropped, as a digit text's.
    (timedelta rounded the binary value: 1714607999.9999995 into the next day, which parse_time
    and the text "1714607999.9999995" keep in 23:59:59.999; 99999999999.9 to .899994.)"""
    text = float.__repr__(number)
    if "e" in text:  # (below 1e-4; from 1e16 it is after the year 9999)
        return int(Decimal(text) * (1000 if in_ms else 1_000_000))
    whole, _, fraction = text.partition(".")
    return int(whole + ((fraction + "00")[:3] if in_ms else (fraction + "00000")[:6]))


def _epoch_ms(dt: datetime, what: str, shown: str | None = None) -> int:
    """Epoch milliseconds of ``dt`` (naive means UTC) within 1970 … 9999; the error names
    ``what`` and ``shown`` (default: the UTC-completed time in ISO form)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = (dt - _EPOCH) // _ONE_MS
    if 0 <= ms <= _MAX_MS:
        return ms
    when = "before 1970" if ms < 0 else "after the year 9999"
    raise ValueError(f"{what} {when}: {shown if shown is not None else dt.isoformat()}")


def format_time(ms: int | None) -> str | None:
    """ISO-8601 UTC text with milliseconds, e.g. ``2024-05-01T12:00:00.000Z``."""
    if ms is None:
        return None
    return format_ms(ms)


@functools.lru_cache(maxsize=4_096)  # the same times come again (a key's registration, per event)
def format_ms(ms: int) -> str:
    """``format_time`` of a time that is not None. The date is ``strftime``'s (cached per day), the
    time of day arithmetic: a new time costs about half of ``gmtime`` + ``strftime``."""
    seconds, milli = divmod(ms, 1000)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    # The numbers from tables: %-formatting an int costs ~1.5k instructions a field.
    return f"{_format_day(days)}T{_TWO[hours]}:{_TWO[minutes]}:{_TWO[seconds]}.{_THREE[milli]}Z"


_TWO = tuple([f"{n:02d}" for n in range(100)])
_THREE = tuple([digit + two for digit in "0123456789" for two in _TWO])


@functools.lru_cache(maxsize=1_024)
def _format_day(days: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(days * 86_400))


def duration_ms(value: Any) -> int:
    """Milliseconds of a duration: seconds as a number, or text like ``500ms``, ``30s``, ``1m``, ``2h``, ``1d``."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:  # `.inf`: int() raised OverflowError, a crash
            raise ValueError(f"not a duration: {value!r}")
        return int(round(value * 1000))
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. 500ms, 30s, 1m, 2h, 1d)")
    return int(round(float(match.group(1)) * _UNIT_MS[match.group(2)]))


def not_after_arrival(time_ms: int, arrival: datetime | None, slack_ms: int | None) -> int:
    """An event time bounded by its record's arrival: one more than ``slack_ms`` after the
    arrival time (a device whose clock runs ahead: an event cannot happen after it arrived) is
    taken as the arrival time. Unbounded without an arrival time (files, stdin) or a slack.

    Ordering by such a time would let one event stamped years ahead outrank every later update
    of its key (a subscription bolt would ignore the device's real unsubscribe until then), and
    push a window's watermark so far that every later event is late. The arrival time is the
    record's (Kinesis' approximate arrival), so a replay bounds the same way."""
    if slack_ms is None or arrival is None:
        return time_ms
    arrived = arrival_bound(arrival)
    if arrived is None:
        return time_ms
    return arrived if time_ms > arrived + slack_ms else time_ms


def arrival_bound(arrival: datetime) -> int | None:
    """Epoch milliseconds of an arrival time for ``not_after_arrival``; None when out of range
    (a broken source: it bounds nothing)."""
    try:
        return _arrival_ms(arrival)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4_096)  # records of a batch often share their arrival time
def _arrival_ms(arrival: datetime) -> int:
    return _epoch_ms(arrival, "arrival time")


def arrival_ms(arrival: datetime | None) -> int:
    """Epoch milliseconds of a record's arrival time (naive means UTC); ``ValueError`` when the
    record has none (a file's lines): the component then needs a time field."""
    if arrival is None:
        raise ValueError(
            "the record has no arrival time (a file's, stdin's or an S3 object's records have "
            "none): set time_field to the event's time field"
        )
    return _epoch_ms(arrival, "arrival time")
