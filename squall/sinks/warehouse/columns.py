"""Warehouse columns from YAML: dotted paths into the event, with types and converters.

``columns: {event_id: meta.event_id, country: geo.country_code, at: {path: timestamp, type: timestamp}}``

Size (~515 lines): the column specs, their converters and the row builder (a generated row
function and the loop it falls back to, which tests compare), read by both warehouse writers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from squall import exact_json
from squall.event import Event
from squall.identifiers import check_identifier
from squall.paths import MISSING, DottedPath, getter, payload_keys
from squall.times import MAX_MS, MS_THRESHOLD, float_us, read_time

ColumnType = Literal["text", "integer", "bigint", "float", "boolean", "timestamp", "date", "json"]


class ColumnSpec(BaseModel):
    """One warehouse column."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    path: DottedPath = Field(
        description="Dotted path into the payload, or meta.<field> for record metadata."
    )
    type: ColumnType = Field("text", description="Column type.")
    nullable: bool = Field(True, description="False: events without a value go to dead letter.")
    index: bool = Field(False, description="Create an index on this column.")


def parse_columns(
    raw: dict[str, str | dict | ColumnSpec], *, add_event_id: bool = True
) -> dict[str, ColumnSpec]:
    """Column specs by name; the ``event_id`` key column is added first unless declared (or not wanted:
    an upsert table is keyed by its own columns)."""
    out: dict[str, ColumnSpec] = {}
    for name, spec in raw.items():
        check_identifier(name, "column name")
        if isinstance(spec, str):
            try:
                spec = ColumnSpec(path=spec)
            except ValueError as exc:  # pydantic's error, as one line naming the column
                raise ValueError(
                    f"column '{name}': {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}"
                ) from None
        out[name] = spec if isinstance(spec, ColumnSpec) else ColumnSpec.model_validate(spec)
    if "event_id" not in out:
        if add_event_id:
            out = {"event_id": ColumnSpec(path="meta.event_id", nullable=False), **out}
    elif out["event_id"].nullable:
        out["event_id"] = out["event_id"].model_copy(update={"nullable": False})
    return out


def sa_type(column_type: str, dialect: str) -> Any:  # -> sqlalchemy.types.TypeEngine
    """The SQLAlchemy type of a column type (SQLAlchemy imported only by who builds its tables)."""
    import sqlalchemy as sa

    if column_type == "json":
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return JSONB()
        return sa.Text()
    return {
        "text": sa.Text,
        "integer": sa.Integer,
        "bigint": sa.BigInteger,
        "float": sa.Float,
        "boolean": sa.Boolean,
        "timestamp": lambda: sa.DateTime(timezone=True),
        "date": sa.Date,
    }[column_type]()


#: Each column type as SQLAlchemy compiles ``sa_type`` for SQLite (for the plain SQLite driver's
#: DDL; a test checks the two agree).
SQLITE_TYPES: dict[str, str] = {
    "text": "TEXT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "timestamp": "DATETIME",
    "date": "DATE",
    "json": "TEXT",
}


def build_table(
    metadata: Any,
    name: str,
    columns: dict[str, ColumnSpec],
    dialect: str,
    schema: str | None = None,
    key: tuple[str, ...] = ("event_id",),
) -> Any:  # -> sqlalchemy.Table
    """The table as SQLAlchemy sees it; ``key`` is its primary key (event_id, or an upsert's columns)."""
    import sqlalchemy as sa

    cols = []
    for cname, spec in columns.items():
        cols.append(
            sa.Column(
                cname,
                sa_type(spec.type, dialect),
                primary_key=cname in key,
                nullable=spec.nullable and cname not in key,
                index=spec.index,
            )
        )
    return sa.Table(name, metadata, *cols, schema=schema)


class ConversionError(ValueError):
    """A value cannot be stored in its column; the event goes to dead letter with this reason."""


def json_text(v: Any) -> str:
    """A value as JSON text; an integer beyond 64 bits, which orjson cannot write, as its digits."""
    try:
        return orjson.dumps(v).decode()
    except TypeError:
        return exact_json.dumps(v).decode()


def _to_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, dict | list):
        return json_text(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bool):
        return "true" if v else "false"
    if type(v).__module__ == "numpy" and isinstance(b := exact_json.as_number(v), bool):
        return "true" if b else "false"  # NumPy's bool_, as JSON's (its own text is "True")
    return str(v)  # (a NumPy number: its own text, as before)


def _to_int(v: Any) -> int:
    """An integer: a JSON ``true``/``false`` is refused, as a ``float`` column refuses it (a
    boolean where a count is expected is the sender's mistake, not the number 1 or 0)."""
    if isinstance(v, bool):
        raise ConversionError
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        return int(v.strip())
    return _to_int(_numpy_number(v))


def _numpy_number(v: Any) -> int | float | bool:
    """A NumPy scalar number (``int64``, ``float32``, ``bool_``: no subclass of Python's, which
    a Python bolt computing with NumPy or pandas puts in the payload) as its Python number, as
    the JSON writers and the window bolt read it (``exact_json.as_number``); anything else is
    refused. Only on the converters' rare path: a plain value never gets here."""
    # (a float, a float subclass too, was read as one already: a fraction is refused, not asked
    # again, so the converters' call on the number this gives ends there)
    number = exact_json.NOT_A_NUMBER if isinstance(v, float) else exact_json.as_number(v)
    if number is exact_json.NOT_A_NUMBER:
        raise ConversionError
    return number


def _to_float(v: Any) -> float:
    """A finite float: NaN and infinities are refused (SQLite stores NaN as NULL; neither is a measurement)."""
    if isinstance(v, bool):
        raise ConversionError
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        f = float(v.strip())
    else:
        return _to_float(_numpy_number(v))
    if not math.isfinite(f):
        raise ConversionError
    return f


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.lower() in ("true", "1", "yes")
    if isinstance(v, int | str):
        raise ConversionError
    return _to_bool(_numpy_number(v))


#: A NULL for ``sqlite3``: a float it binds as it is (None it "adapts" first, ~1.3k
#: instructions a value), and SQLite stores a NaN as NULL (``sqlite3VdbeMemSetDouble``). No
#: column's own value is a NaN (``float`` refuses it).
SQLITE_NULL = math.nan


def _bool_int(v: Any) -> int:
    """A boolean column's value as the integer SQLite stores (``_to_bool``'s rules)."""
    return 1 if _to_bool(v) else 0


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH_UTC.toordinal()


def to_datetime(v: Any) -> datetime:
    """A timestamp column's value → aware datetime in UTC: ``squall.times.read_time``'s reading
    (ISO-8601 text, no offset means UTC; epoch seconds, or milliseconds from 10^11, as numbers or
    digit texts; negative numbers refused), the one every time reader shares.

    UTC whatever the offset it came with, as PostgreSQL stores ``timestamptz``: SQLite keeps the
    text it is given, so mixed offsets would neither compare nor sort as times.
    """
    if v.__class__ is str:  # the usual case, ISO-8601 in UTC ("…Z"): one parse, no conversion
        try:
            d = datetime.fromisoformat(v)
        except ValueError:
            pass
        else:
            if d.tzinfo is UTC:
                return d
            if d.tzinfo is not None:  # another offset (digit texts never have one: read_time)
                try:
                    return d.astimezone(UTC)
                except OverflowError:  # the year 10000 (or 0) in UTC
                    raise ConversionError from None
    elif v.__class__ is int and 0 <= v <= MAX_MS:  # epoch seconds, or ms (JavaScript's Date.now())
        return _EPOCH_UTC + (
            timedelta(milliseconds=v) if v >= MS_THRESHOLD else timedelta(seconds=v)
        )
    elif v.__class__ is float and 0 <= v <= MAX_MS:  # (its decimal text floored, as read_time)
        return _EPOCH_UTC + timedelta(microseconds=float_us(v, v >= MS_THRESHOLD))
    d = _read(v)
    return d if d.tzinfo is UTC else d.astimezone(UTC)


def _read(v: Any) -> datetime:
    try:
        return read_time(v)
    except ValueError:  # (the reason names the column, the value and its path)
        raise ConversionError from None


def _to_date(v: Any) -> date:
    """A date column's value: a date's text as it is; a time's calendar date as written (its
    own offset), a number's in UTC (``read_time``)."""
    if isinstance(v, str) and len(t := v.strip()) == 10 and t[4:5] == "-":
        return date.fromisoformat(t)
    if v.__class__ is int and MS_THRESHOLD <= v <= MAX_MS:  # epoch ms: its UTC day, directly
        return date.fromordinal(_EPOCH_ORDINAL + v // 86_400_000)
    return _read(v).date()


def _to_json(v: Any) -> Any:
    return v


def _timestamp_text(v: Any) -> str:
    """A timestamp as ``sqlite3``'s default adapter stores a datetime: ``isoformat(" ")`` — for a
    plain datetime in UTC (all ``to_datetime`` makes of JSON) from its fields and tables, not
    ``isoformat``'s formatting (~8k instructions more; tests/sinks/test_row_builder.py).

    The usual SDK time, ``2024-05-01T12:00:00.123Z`` (JavaScript's ``toISOString``) or with six
    digits or none, is already that text but for its separators: once ``fromisoformat`` has
    accepted it (the date checked), the text is cut from it, without a datetime's fields."""
    if (
        v.__class__ is str
        and (n := len(v)) in _Z_LENGTHS
        and v[10] == "T"
        and v[-1] == "Z"
        and v[4] == "-"
        and v[7] == "-"
        and v[13] == ":"
        and v[16] == ":"
        and (n == 20 or v[19] == ".")
        # (Python 3.11's fromisoformat takes a "Z" then a NUL as the text's end: "12:Z\x00:00Z"
        # reads as 12:00, its text no time — the general path writes the time it reads as.)
        and "\x00" not in v
    ):
        try:
            _fromisoformat(v)
        except ValueError:
            pass  # the located error, or another reading, from the general path below
        else:  # (no NUL: its only "T" is the separator, the rest digits and the marks tested)
            if n == 20 or (v[20] == "0" and v[20:-1] == _ZEROS[n]):
                return v[:19].replace("T", " ") + "+00:00"
            return v[:-1].replace("T", " ") + _PAD[n]
    d = to_datetime(v)
    if d.__class__ is not datetime or d.tzinfo is not UTC:
        return d.isoformat(" ")
    day = d.toordinal()
    text = _DAYS.get(day)
    if text is None:
        if len(_DAYS) >= 4_096:
            _DAYS.clear()
        text = _DAYS[day] = f"{d.date()} "
    us = d.microsecond
    text += _TWO[d.hour] + ":" + _TWO[d.minute] + ":" + _TWO[d.second]
    return text + "." + str(us + 1_000_000)[1:] + "+00:00" if us else text + "+00:00"


#: ``_timestamp_text``'s tables: two-digit numbers, and dates by ordinal ("2024-05-01 ").
_TWO = tuple(f"{n:02d}" for n in range(100))
_DAYS: dict[int, str] = {}
#: Its usual texts, by length: seconds only (20), milliseconds (24), microseconds (27); a
#: fraction of zeros is no fraction, as ``isoformat`` writes it, and milliseconds are padded.
_Z_LENGTHS = frozenset((20, 24, 27))
_ZEROS = {24: "000", 27: "000000"}
_PAD = {24: "000+00:00", 27: "+00:00"}
_fromisoformat = datetime.fromisoformat


def _date_text(v: Any) -> str:
    return _to_date(v).isoformat()


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "text": _to_text,
    "integer": _to_int,
    "bigint": _to_int,
    "float": _to_float,
    "boolean": _to_bool,
    "timestamp": to_datetime,
    "date": _to_date,
    "json": _to_json,
}


def describe_value(v: Any) -> str:
    """A value for a dead-letter reason: its repr, cut to 80 characters."""
    shown = repr(v)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _to_int64(v: Any) -> int:
    n = _to_int(v)
    if -(2**63) <= n < 2**63:
        return n
    raise ConversionError


#: What the generated row function reads a non-dict parent as: its children are all missing.
#: Only ever read (``get``), never changed.
_EMPTY: dict[str, Any] = {}


class _Fallback(Exception):
    """A required value is missing: the generated row function hands the event to the loop
    (raised, not the loop called inside its ``try``, whose handler would run the loop again)."""


class RowBuilder:
    """Turns events into row tuples in column order, or a reason why an event cannot be stored."""

    def __init__(
        self,
        columns: dict[str, ColumnSpec],
        *,
        json_as_text: bool,
        times_as_text: bool = False,
        bools_as_int: bool = False,
        null: Any = None,
    ):
        """``json_as_text``: JSON columns as their text; ``times_as_text``: timestamps and dates
        as the text Python's ``sqlite3`` adapters store for them (``isoformat``, with a space
        between date and time) — the same column values, without an adapter call per value,
        which is a Python function (~2 µs) and deprecated since Python 3.12. ``bools_as_int``:
        booleans as the 1 and 0 ``sqlite3`` binds for them, which it does only after "adapting"
        a bool (no exact int: a tuple built, a registry look-up, the adapter's call, ~1.3k
        instructions a value; docs/performance.md, hJ). ``null``: what a missing or null value
        is in the row — None, or for ``sqlite3`` ``SQLITE_NULL``, which it binds as it is and
        SQLite stores as NULL (None too is adapted first)."""
        self.names = list(columns)
        self.null = null
        self._plan = []
        for name, spec in columns.items():
            # SQL integers are at most 64-bit: a bigger value is that event's failure, not the batch's.
            conv = _to_int64 if spec.type in ("integer", "bigint") else CONVERTERS[spec.type]
            if spec.type == "json" and json_as_text:
                conv = json_text
            elif spec.type == "timestamp" and times_as_text:
                conv = _timestamp_text
            elif spec.type == "date" and times_as_text:
                conv = _date_text
            elif spec.type == "boolean" and bools_as_int:
                conv = _bool_int
            # Payload paths are walked inline (no call per column); text columns take strings as
            # they are. Same values as getter() + conv: tests/sinks check both ways.
            self._plan.append(
                (
                    name,
                    spec,
                    payload_keys(spec.path),
                    getter(spec.path),
                    conv,
                    spec.nullable,
                    conv is _to_text,
                )
            )

        self.row = self._compile()

    def _compile(self) -> Callable[[Event], tuple]:
        """The row function for these columns, generated as straight-line Python.

        The warehouse builds a row per event, 20 columns in the example: a loop over the plan costs
        a tuple unpack, a path walk and a type dispatch per column (7 µs a row, the sink's largest
        own cost). The generated function reads each path with inline ``.get`` calls and converts
        only non-text values, then returns the tuple; any value it cannot store as it is — a
        missing required value, a failed conversion — sends the event to ``row_checked`` (the
        loop), which gives the same values or the located error. Same technique as
        fastjsonschema's generated validators; tests/sinks/test_row_builder.py compares both.
        """
        env: dict[str, Any] = {"MISSING": MISSING, "isinstance": isinstance, "dict": dict}
        env["checked"], env["Fallback"], env["NULL"] = self.row_checked, _Fallback, self.null
        env["str"], env["EMPTY"] = str, _EMPTY
        # A payload that is not a plain dict (rare: a bolt's own mapping) takes the loop.
        lines = ["def row(ev):", "    p = ev.value", "    if p.__class__ is not dict:"]
        lines += ["        return checked(ev)", "    try:"]
        # One variable per distinct path prefix: ``geo.city`` and ``geo.status`` read ``geo``
        # once. A missing key and a null read as None (``.get`` without a default): both are a
        # NULL. A node with children is checked once for being a dict: anything else (a string,
        # a list, None) reads as the empty dict, so its children are None, as ``row_checked``
        # walks (a subclass of dict is read through its own ``get``, as there).
        nodes: dict[tuple[str, ...], str] = {(): "p"}
        parents: dict[str, str] = {"p": "p"}  # a node's variable -> the dict its children read

        def parent_of(var: str) -> str:
            found = parents.get(var)
            if found is None:
                found = parents[var] = "d" + var[1:]
                lines.append(
                    f"        {found} = {var} if {var}.__class__ is dict or "
                    f"isinstance({var}, dict) else EMPTY"
                )
            return found

        def node(keys: tuple[str, ...]) -> str:
            var = nodes.get(keys)
            if var is None:
                parent = parent_of(node(keys[:-1]))
                var = nodes[keys] = f"n{len(nodes)}"
                lines.append(f"        {var} = {parent}.get({keys[-1]!r})")
            return var

        out = []
        for i, (_name, spec, keys, _get, conv, nullable, text) in enumerate(self._plan):
            env[f"conv{i}"] = conv
            c = f"c{i}"
            if keys is None:  # meta.<field>: its attribute, as ``getter`` reads it (no call)
                name = spec.path.split(".")[1]
                lines.append("        v = ev." + (name if name == "event_id" else f"meta.{name}"))
                lines.append("        if v is MISSING:")
                lines.append("            v = None")
                v = "v"
            else:
                v = node(tuple(keys))
            # The usual value first: a text column's string, a boolean column's JSON boolean.
            if text:
                usual = f"{v} if {v}.__class__ is str else "
            elif conv is _to_bool:  # a JSON boolean is stored as it is
                usual = f"{v} if {v}.__class__ is bool else "
            elif conv is _bool_int:  # (True and False: singletons)
                usual = f"1 if {v} is True else 0 if {v} is False else "
            else:
                usual = ""
            if nullable:
                lines.append(f"        {c} = {usual}NULL if {v} is None else conv{i}({v})")
            else:
                lines.append(f"        if {v} is None:")
                lines.append("            raise Fallback")
                lines.append(f"        {c} = {usual}conv{i}({v})")
            out.append(c)
        if not out:
            lines.append("        pass")  # no columns: the empty row
        # The loop runs after the handler, so its error carries no earlier attempt as context.
        lines.append("    except Exception:")
        lines.append("        pass")
        lines.append("    else:")
        lines.append(f"        return ({', '.join(out)}{',' if len(out) == 1 else ''})")
        lines.append("    return checked(ev)")
        exec("\n".join(lines), env)  # noqa: S102 - generated from validated column specs only
        return env["row"]

    def row_checked(self, ev: Event) -> tuple:
        """The row of ``ev``, column by column; raises ``ConversionError`` naming the column."""
        value, null = ev.value, self.null
        values: list[Any] = []
        append = values.append
        for name, spec, keys, get, conv, nullable, text in self._plan:
            if keys is None:
                v = get(ev)
            else:
                v = value
                for k in keys:
                    if not isinstance(v, dict):
                        v = MISSING
                        break
                    v = v.get(k, MISSING)
                    if v is MISSING:
                        break
            if v is None or v is MISSING:
                if not nullable:
                    raise ConversionError(
                        f"column '{name}': required value '{spec.path}' is missing"
                    )
                append(null)
                continue
            if text and v.__class__ is str:
                append(v)
                continue
            try:
                append(conv(v))
            except (ConversionError, ValueError, TypeError, OverflowError, OSError):
                raise ConversionError(
                    f"column '{name}': cannot store {describe_value(v)} from '{spec.path}' "
                    f"as {spec.type}"
                ) from None
        return tuple(values)
