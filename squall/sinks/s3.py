"""``s3`` sink: a data lake of JSON-lines (gzip) or Parquet objects, partitioned by an event time.

Per batch, events are grouped by time partition (``dt=YYYY-MM-DD/hour=HH`` from ``time_field``)
and by source shard; each group becomes one object whose name is derived from the group's first
and last positions (stream, shard, sequence and sub-sequence numbers). The same batch delivered
again (a retry, a replay after a crash) produces the same names and the same bytes, so it
overwrites its objects instead of adding duplicates; a batch that fails after its objects were
put has them deleted (``discard``), so a retry that emits otherwise leaves only its own. Objects
are put with PutObject, one per group; an object that cannot be written fails the call with
``TransientError`` and the engine retries only the objects not yet written. Nothing is
acknowledged before S3 answered.

Rolling (``roll_bytes`` and/or ``roll_seconds``, for the runners that can hold: the local runner
and the KCL): ``write_batch`` appends the batch's rows to a buffer per (partition, stream, shard)
in memory instead, dropping events whose position it already holds (a re-delivery); the sink is
``holding()`` while anything is buffered and ``due()`` when the buffered rows reach ``roll_bytes``
(their JSON size, uncompressed), when the oldest was buffered ``roll_seconds`` ago, or at
``MAX_HELD_BYTES``; ``release()`` puts every buffer as one object, and the engine holds the
checkpoint back until then. A rolled object is named by its *first* position only
(``stream.shard.first``): after a crash the source delivers again from the held checkpoint, the
buffers start at the same first rows, and whatever grouping the replay rolls overwrites the
objects a lost release may already have put — no row is left in two objects. A batch that fails
after the sink took its rows is taken back (``discard``: held rows dropped, objects put with them
deleted or rebuilt without them) before the failure is reported, so before any retry puts its
own; records that come again without the batch failing are dropped before the release
(``held_back``). An object that was in S3 before the batch put it (its conditional PutObject,
``If-None-Match: *``, answered 412: the same records delivered again) is never deleted. What
is left at-least-once: docs/sinks.md, "What a lake reader can rely on". Without roll settings
the sink writes each batch's objects as before (names from the first and last positions).

Size (~835 lines): one sink — the per-batch objects, their rolled variant and the Parquet/JSON row
conversion share the object naming and the body writer, and are read together.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from squall import aws, exact_json, paths
from squall.component import Capabilities, ComponentConfig, ComponentContext
from squall.errors import SinkError, TransientError
from squall.event import Event, RecordMeta
from squall.iam import AwsPermission, s3_objects_arn
from squall.sinks.base import (
    AbsentPaths,
    Prepared,
    Sink,
    WriteContext,
    WriteResult,
    release_time_left,
)
from squall.sinks.batchio import aws_call, time_left_of
from squall.times import Seconds, read_time

log = logging.getLogger("squall.sinks.s3")

ColumnType = Literal["string", "int64", "float64", "bool", "timestamp", "json"]
_SAFE = re.compile(r"[^A-Za-z0-9._=-]")
#: Rolling keeps rows in memory: at this size a buffer is due whatever ``roll_bytes`` says.
MAX_HELD_BYTES = 128 * 1024 * 1024


_DIRECTIVE = re.compile(r"%.")


def _extension(config: S3SinkConfig) -> str:
    """The end of every key the sink writes."""
    if config.format == "parquet":
        return ".parquet"
    return ".jsonl.gz" if config.compression == "gzip" else ".jsonl"


def partition_text(when: datetime, pattern: str) -> str:
    """``when.strftime(pattern)`` with years of four digits, as ISO 8601 writes them: the C
    library writes a year before 1000 as it is (``999-12-31``, ``dt=1-01-01``), a folder no date
    reader parses and that sorts among the year 9999's — in ``%Y``, in ``%F`` (``%Y-%m-%d``) and
    in ``%G`` (the ISO week's year); ``%C`` (the century) has two digits."""
    if when.year > 1000:  # the ISO week's year of 1000-01-01 is 999
        return when.strftime(pattern)
    year = f"{when.year:04d}"
    fixed = {
        "%Y": year,
        "%F": f"{year}-%m-%d",
        "%G": f"{when.isocalendar()[0]:04d}",
        "%C": f"{when.year // 100:02d}",
    }
    return when.strftime(_DIRECTIVE.sub(lambda m: fixed.get(m.group(), m.group()), pattern))


class S3Column(BaseModel):
    """One column of the objects (Parquet) or one key of each JSON line."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    path: paths.DottedPath = Field(description="Dotted path into the payload, or meta.<field>.")
    type: ColumnType = Field(
        "string", description="Column type (Parquet); JSON lines keep JSON values."
    )


class S3SinkConfig(ComponentConfig):
    bucket: str = Field(description="Bucket name.")
    prefix: str = Field(
        "", description="Key prefix, e.g. `events/` (a trailing `/` is added when missing)."
    )
    format: Literal["jsonl", "parquet"] = Field(
        "jsonl",
        description="`jsonl`: gzip-compressed JSON lines; `parquet`: Parquet (needs `columns`).",
    )
    columns: dict[str, str | S3Column] | None = Field(
        None,
        description="Column name → dotted path, or {path, type} with type string, int64, float64, bool, "
        "timestamp or json. Required for parquet; for jsonl each line becomes this object "
        "(default: the whole payload).",
    )
    time_field: paths.DottedPath | None = Field(
        None,
        description="Dotted path of the event time that picks the partition: ISO 8601 text or epoch "
        "seconds (see time_unit); default: the record's arrival time.",
    )
    time_unit: Literal["s", "ms"] = Field("s", description="Unit of numeric event times.")
    partition: str = Field(
        "dt=%Y-%m-%d/hour=%H",
        description="strftime pattern of the partition folders (UTC; `%Y`, `%F`, `%G` have four-digit years).",
    )
    compression: Literal["gzip", "snappy", "zstd", "none"] = Field(
        "gzip", description="jsonl: gzip or none; parquet: snappy, gzip, zstd or none."
    )
    region: aws.OptionalSetting = Field(
        None, description="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)."
    )
    endpoint_url: aws.EndpointUrl = Field(None, description="S3 endpoint (local testing).")
    roll_bytes: int | None = Field(
        None,
        ge=1024,
        le=MAX_HELD_BYTES,
        description="Roll objects across batches: write them when the held rows reach this many bytes "
        "(their JSON size, uncompressed). Local runner and KCL only (Lambda writes every batch); "
        "the checkpoint waits for the objects.",
    )
    roll_seconds: Seconds | None = Field(
        None,
        gt=0,
        le=86400,
        description="Roll objects across batches: write them when the oldest held row was taken this "
        "many seconds ago (checked after each batch and, when the source is idle, between polls).",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return value if not value or value.endswith("/") else value + "/"

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict | None) -> dict | None:
        if value is None:
            return None
        if not value:
            raise ValueError("columns cannot be empty")
        return {
            name: S3Column(path=spec) if isinstance(spec, str) else spec
            for name, spec in value.items()
        }

    @model_validator(mode="after")
    def _format(self) -> S3SinkConfig:
        if self.format == "parquet" and not self.columns:
            raise ValueError("format parquet needs columns (name → path, or {path, type})")
        if self.format == "jsonl" and self.compression not in ("gzip", "none"):
            raise ValueError("jsonl objects are compressed with gzip or none")
        return self


def _timestamp(value: Any, unit: str | None) -> datetime:
    """A time in UTC, read as every time reader reads it (``squall.times.read_time``), numbers in
    the sink's ``time_unit`` (None: seconds, or milliseconds from 10^11, as elsewhere)."""
    return read_time(value, unit).astimezone(UTC)


#: ``_convert``: values taken as they are, and the kinds that read a NumPy scalar as its number.
_PLAIN = frozenset((str, int, float, bool, dict, list))
_NUMBER_KINDS = frozenset(("int64", "float64", "bool", "timestamp"))


def _convert(value: Any, kind: str, unit: str) -> Any:
    """A column value as its Parquet type; ``ValueError`` when it is not one."""
    if value is None or value is paths.MISSING:
        return None
    if value.__class__ not in _PLAIN and kind in _NUMBER_KINDS:
        # NumPy's int64, float32, bool_ (a Python bolt's; no subclass of Python's numbers): its
        # Python number, as the JSON-lines form writes it (a float subclass is one already)
        number = exact_json.as_number(value)
        if number is not exact_json.NOT_A_NUMBER:
            value = number
    if kind == "string":
        if value.__class__ not in _PLAIN and isinstance(
            number := exact_json.as_number(value), bool
        ):
            value = number  # NumPy's bool_: "true", as JSON's (its own text is "True")
        return (
            value
            if isinstance(value, str)
            else exact_json.dumps(value).decode()
            if isinstance(value, dict | list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
    if kind == "int64":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float | str)
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise ValueError(f"{value!r} is not an integer")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        if not -(2**63) <= number < 2**63:
            raise ValueError(f"{number} does not fit in 64 bits")
        return number
    if kind == "float64":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{value!r} is not a number")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        except OverflowError:  # an integer beyond a double's range (the json bolt keeps it exact)
            number = math.inf
        # "NaN", "1e999", a bolt's 0/0: refused, as the warehouse's `float` column refuses them
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if kind == "timestamp":
        return _timestamp(value, unit)
    return exact_json.dumps(value).decode()  # json; an integer beyond 64 bits as its digits


def _line(row: Any) -> bytes:
    """A JSON-lines row, an integer beyond 64 bits written as its digits. What orjson cannot write
    otherwise (a lone surrogate a user bolt put in the payload) raises ``TypeError``: not a
    ``SinkError``, so the engine fails that record alone, not the batch."""
    return exact_json.dumps(row, default=exact_json.text_default) + b"\n"


def _position(meta: RecordMeta) -> str:
    return f"{meta.sequence_number}.{meta.sub_sequence_number}"


class S3Sink(Sink):
    """Write each batch as JSON-lines (gzip) or Parquet objects, one per time partition and shard."""

    Config = S3SinkConfig
    summary = "Write events to S3 as gzip JSON lines or Parquet, partitioned by time, replay-safe object names."

    @classmethod
    def capabilities(cls, config: S3SinkConfig) -> Capabilities:
        """Its objects: ``prefix``, the partition pattern's text up to its first directive, …, a
        digit (a position's or a fingerprint's, hex) and the format's extension."""
        pattern = config.partition
        head = pattern.split("%", 1)[0] if "%" in pattern else f"{pattern}/"
        return Capabilities(
            s3_objects=(
                (config.bucket, config.prefix + head, _extension(config), "0123456789abcdef"),
            )
        )

    @classmethod
    def packages(cls, config: S3SinkConfig) -> frozenset[str]:
        """pyarrow writes Parquet; JSON lines need nothing."""
        return frozenset({"pyarrow"} if config.format == "parquet" else ())

    def __init__(self, config: S3SinkConfig, context: ComponentContext):
        super().__init__(config, context)
        self.client: Any = None
        self._time = paths.getter(config.time_field) if config.time_field else None
        self._columns = [
            (name, spec.type, paths.getter(spec.path))
            for name, spec in (config.columns or {}).items()
        ]
        # A column's path absent from every event fills it with nulls: warned once (a typo the
        # load-time check could not rule out).
        self._absent = AbsentPaths(
            self.id,
            {f"column '{name}'": spec.path for name, spec in (config.columns or {}).items()},
            "their rows have null there",
            log,
        )
        self.puts = 0
        #: Rolling: (partition, stream, shard) -> its held (record metadata, row) pairs; the
        #: positions held (re-deliveries are dropped by them); a release not finished (its objects).
        self.rolling = config.roll_bytes is not None or config.roll_seconds is not None
        # Held rows keep the record's metadata, not the event (its raw bytes and decoded value).
        self._held: dict[tuple[str, str, str], list[tuple[RecordMeta, Any]]] = {}
        self._positions: set[tuple[str, str, str, int, str]] = set()  # and the event id
        self._releasing: list[_Object] = []
        self.held_bytes = 0
        self._since: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.redelivered = 0
        #: The engine's batch the sink last took rows from (``WriteContext.batch``), and what of
        #: them it still holds: per group, how many rows at the end of its buffer, their bytes;
        #: and the positions taken (``discard``).
        self._batch: int | None = None
        self._fresh: dict[tuple[str, str, str], _Fresh] = {}
        #: That batch's rows a release took and has not finished putting: per group, the rows
        #: its object holds of earlier batches, and what the batch added.
        self._in_release: dict[tuple[str, str, str], tuple[list[tuple[RecordMeta, Any]], _Fresh]]
        self._in_release = {}
        #: The objects a finished release put with that batch's rows: per group, the key and
        #: the earlier batches' rows in it. When the batch fails (``discard``) they are taken
        #: back: deleted, or put again with the earlier rows alone.
        self._released: dict[
            tuple[str, str, str], tuple[str, list[tuple[RecordMeta, Any]], bool]
        ] = {}
        #: The engine's time left at that batch's write (``discard`` deletes within it).
        self._time_left: Callable[[], float | None] | None = None
        #: Per-batch objects (no roll settings): the engine's batch last written, and the
        #: objects its writes sent (answered or not), by key, with their (record metadata, row)
        #: pairs: ``discard`` deletes them, ``held_back`` puts them again without some rows.
        self._sent_batch: int | None = None
        self._sent: dict[str, _Object] = {}
        #: Whether S3 (or the endpoint) takes PutObject's If-None-Match (``_put_all``).
        self._conditional = True

    @classmethod
    def payload_reads(cls, config: S3SinkConfig) -> list[tuple[tuple[str | int, ...], str]]:
        """Each column's path and the time field (metadata ones too: the check passes them by)."""
        reads: list[tuple[tuple[str | int, ...], str]] = [
            (("columns", name, "path"), spec.path)
            for name, spec in (config.columns or {}).items()
            if isinstance(spec, S3Column)
        ]
        if config.time_field:
            reads.append((("time_field",), config.time_field))
        return reads

    @classmethod
    def aws_permissions(cls, config: S3SinkConfig) -> list[AwsPermission]:
        """PutObject under its prefix, and DeleteObject (a failed batch's objects, ``discard``)."""
        return [
            AwsPermission(
                ("s3:PutObject", "s3:DeleteObject"),
                s3_objects_arn(config.bucket, config.prefix),
                f"sink {config.id}",
            )
        ]

    def open(self, resources: Any = None) -> None:
        cfg = self.config
        if cfg.format == "parquet":
            import pyarrow  # noqa: F401 - fail at start, not on the first batch, when the extra is missing
        if self.client is None:
            self.client = aws.client("s3", region=cfg.region, endpoint_url=cfg.endpoint_url)

    def prepare(self, events: list[Event]) -> Prepared:
        """Compute each event's partition and row; reject events without a usable time or value."""
        out = Prepared([])
        groups: dict[tuple[str, str, str], list[tuple[Event, Any]]] = {}
        cfg = self.config
        self._absent.check(events)
        for ev in events:
            try:
                when = self._event_time(ev)
                row = self._row(ev)
            except ValueError as exc:
                out.reject(ev, self.id, str(exc))
                continue
            out.events.append(ev)
            key = (partition_text(when, cfg.partition), ev.meta.stream, ev.meta.shard_id)
            groups.setdefault(key, []).append((ev, row))
        for rows in groups.values():  # position order, whatever order the graph delivered them in
            rows.sort(key=lambda pair: pair[0].meta.position.key())
        out.payload = [
            _Object(
                self._key(part, stream, shard, rows[0][0].meta, rows[-1][0].meta),
                rows,
                (part, stream, shard),
            )
            for (part, stream, shard), rows in groups.items()
        ]
        return out

    def _event_time(self, ev: Event) -> datetime:
        if self._time is None:
            if ev.meta.arrival_time is None:
                raise ValueError(
                    "the record has no arrival time: set time_field to the event's time"
                )
            return _timestamp(ev.meta.arrival_time, "s")
        value = self._time(ev)
        if value is paths.MISSING or value is None:
            raise ValueError(f"time field '{self.config.time_field}' is missing")
        try:
            return _timestamp(value, self.config.time_unit)
        except (ValueError, OverflowError, OSError) as exc:
            raise ValueError(
                f"time field '{self.config.time_field}': {str(value)[:60]!r} is not a time ({exc})"
            ) from None

    def _row(self, ev: Event) -> Any:
        if not self._columns:
            if ev.value is None:
                raise ValueError("event has no decoded value: add a decode bolt")
            return ev.value
        row = {}
        for name, kind, get in self._columns:
            try:
                row[name] = _convert(get(ev), kind, self.config.time_unit)
            except (ValueError, OverflowError, OSError) as exc:
                raise ValueError(f"column '{name}': {exc}") from None
        return row

    def _key(
        self,
        partition: str,
        stream: str,
        shard: str,
        first_meta: RecordMeta,
        last_meta: RecordMeta,
        *,
        rolled: bool = False,
    ) -> str:
        """``prefix/partition/stream.shard.first-last.ext``; rolled: ``…stream.shard.first.ext``.
        Sources numbered by line (files, stdin) add the first row's fingerprint to the position:
        two inputs with one name and the same line numbers never share an object, while a
        replay of the same bytes writes the same name."""
        first, last = _position(first_meta), _position(last_meta)
        if first_meta.fingerprint:
            first = f"{first}.{first_meta.fingerprint[:12]}"
        ext = _extension(self.config)
        span = first if rolled else f"{first}-{last}"
        name = f"{_SAFE.sub('_', stream)}.{_SAFE.sub('_', shard)}.{span}{ext}"
        return f"{self.config.prefix}{partition}/{name}"

    def body(self, rows: list[tuple[Any, Any]]) -> bytes:
        """The object's bytes: deterministic for the same rows (gzip without a timestamp)."""
        cfg = self.config
        if cfg.format == "jsonl":
            try:  # a held row is its JSON line already (bytes)
                data = b"".join(
                    row
                    if isinstance(row, bytes)
                    else orjson.dumps(row, default=exact_json.text_default) + b"\n"
                    for _, row in rows
                )
            except TypeError:  # an integer beyond 64 bits: its digits (anything else: the record's)
                data = b"".join(row if isinstance(row, bytes) else _line(row) for _, row in rows)
            return (
                gzip.compress(data, compresslevel=6, mtime=0) if cfg.compression == "gzip" else data
            )
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {
            "string": pa.string(),
            "int64": pa.int64(),
            "float64": pa.float64(),
            "bool": pa.bool_(),
            "timestamp": pa.timestamp("us", tz="UTC"),
            "json": pa.string(),
        }
        schema = pa.schema([(name, types[kind]) for name, kind, _ in self._columns])
        table = pa.Table.from_pylist([row for _, row in rows], schema=schema)
        buf = io.BytesIO()
        pq.write_table(
            table, buf, compression=None if cfg.compression == "none" else cfg.compression
        )
        return buf.getvalue()

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        if self.client is None:
            raise SinkError(f"{self.id}: open() the sink first")
        if self.rolling:
            self._hold(prepared.payload or [], ctx.batch if ctx is not None else None)
            self._time_left = time_left_of(ctx)
            return None
        objects = prepared.payload or []
        batch = ctx.batch if ctx is not None else None
        if batch != self._sent_batch:  # a new batch: the last one's objects are settled
            self._sent_batch, self._sent = batch, {}
        self._time_left = time_left_of(ctx)
        # Every body before the first put: a row no encoder writes (a poison record) fails the
        # write with nothing sent, so its isolation's halves leave no object of the whole batch.
        bodies = {id(obj): self.body(obj.rows) for obj in objects if not obj.done}
        try:
            self._put_all(objects, self._time_left, bodies)
        finally:
            for obj in objects:
                if obj.sent and obj.key not in self._sent:  # its rows' metadata, not the events
                    rows = [(ev.meta, row) for ev, row in obj.rows]
                    self._sent[obj.key] = _Object(obj.key, rows, obj.group)
                    self._sent[obj.key].existed = obj.existed
        return None

    def _put_all(
        self,
        objects: list[_Object],
        time_left: Callable[[], float | None] | None,
        bodies: dict[int, bytes] | None = None,
        conditional: bool = True,
    ) -> None:
        """Put each object not yet written (``done`` survives a failed attempt). With a
        ``time_left`` (a Lambda runner's) each PutObject makes one attempt and reads its answer
        no longer than the time left (``aws.time_bounded``: the engine's time-aware retry
        decides), and none is started with no time left (``TransientError``, ``not sent: …``).

        An object's first PutObject is conditional (``If-None-Match: *``, ``conditional``): S3's
        412 says an object of that name was there before (an earlier run's: the same records
        delivered again, maybe committed), so it is put again unconditionally, as before, and
        marked ``existed``: ``discard`` never deletes it. An endpoint without conditional writes
        (501) is asked without from then on."""
        content_type = (
            "application/vnd.apache.parquet"
            if self.config.format == "parquet"
            else "application/x-ndjson"
        )
        for obj in objects:
            if obj.done:  # written by an earlier attempt
                continue
            if aws.time_spent(time_left):
                raise TransientError(f"{self.id}: PutObject: {aws.NOT_SENT}")
            # Only before the object's first attempt: a 412 after an unanswered one of ours
            # would be our own object.
            only_new = conditional and self._conditional and not obj.sent
            obj.sent = True  # from here it may be in S3, answered or not
            body = bodies[id(obj)] if bodies is not None else self.body(obj.rows)
            name = f"{self.id}: PutObject s3://{self.config.bucket}/{obj.key}"
            put = dict(Bucket=self.config.bucket, Key=obj.key, Body=body, ContentType=content_type)
            with aws.time_bounded(time_left):
                plain = True
                if only_new:
                    try:
                        aws_call(name, self.client.put_object, IfNoneMatch="*", **put)
                        plain = False
                    except SinkError as exc:
                        code = aws.error_code(exc.__cause__) if exc.__cause__ else None
                        if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                            obj.existed = True  # (409: another writer's put of it under way)
                        elif code == "NotImplemented":
                            self._conditional = False
                        else:
                            raise
                if plain:
                    aws_call(name, self.client.put_object, **put)
            obj.done = True
            self.puts += 1

    # -- rolling ----------------------------------------------------------------------------

    def _hold(self, objects: list[_Object], batch: int | None) -> None:
        """Add the batch's rows to the buffers, dropping positions already held (re-deliveries).
        Rows are measured (JSON lines: kept as their line) before anything is added, so a row
        that cannot be serialized fails the call with nothing half-held. What the engine's batch
        ``batch`` added is noted for ``discard``."""
        if batch != self._batch:  # a new batch: the last one's rows are settled
            self._batch = batch
            self._fresh, self._in_release, self._released = {}, {}, {}
        jsonl = self.config.format == "jsonl"
        taken: list[tuple[tuple, tuple[str, str, str], Event, Any, int]] = []
        seen, batch = self._positions, set()
        for obj in objects:
            for ev, row in obj.rows:
                m = ev.meta
                pos = (m.stream, m.shard_id, m.sequence_number, m.sub_sequence_number, ev.event_id)
                if pos in seen or pos in batch:
                    self.redelivered += 1
                    continue
                batch.add(pos)
                try:
                    line = orjson.dumps(row, default=exact_json.text_default) + b"\n"
                except TypeError:
                    line = _line(row)
                taken.append((pos, obj.group, ev, line if jsonl else row, len(line)))
        fresh = self._fresh
        for pos, group, ev, row, size in taken:
            seen.add(pos)
            self._held.setdefault(group, []).append((ev.meta, row))
            self.held_bytes += size
            noted = fresh.setdefault(group, _Fresh())
            noted.rows += 1
            noted.bytes += size
            noted.positions.add(pos)
        if taken and self._since is None:
            self._since = self.clock()

    def discard(self, batch: int, again: bool = False) -> None:
        """The engine's batch ``batch`` failed: take back everything the sink did with its rows,
        whoever runs it again (this process at once, the next run, another Lambda container)
        and whatever that run emits (its first row may be another, a partition may be gone).

        - Rows it added that are still held (the last rows of their buffers: a batch's writes
          all come before its release) are dropped; the earlier batches' stay.
        - Of a release that took them: an object with earlier batches' rows is rebuilt from
          those alone, under the same name (its first row is an earlier batch's), and put again
          at the next release, replacing what went out; an object of the batch's rows alone
          that was sent (answered or not) is deleted now, before the engine reports the failure
          and so before any retry puts its own; one not sent is dropped.

        The batch's next delivery is then taken anew. ``again`` (the engine runs the same records
        at once) changes nothing: the retry starts from a clean slate either way.

        Without roll settings, the objects the batch's writes sent (answered or not) are
        deleted, for the same reason."""
        if not self.rolling:
            if batch == self._sent_batch:
                self._delete([key for key, obj in self._sent.items() if not obj.existed])
            self._sent_batch, self._sent = None, {}
            return
        if batch != self._batch:  # nothing taken from that batch
            return
        for group, noted in self._fresh.items():
            rows = self._held[group]
            del rows[len(rows) - noted.rows :]
            if not rows:
                del self._held[group]
            self._positions -= noted.positions
            self.held_bytes -= noted.bytes
        stale: list[str] = []
        releasing = []
        for obj in self._releasing:  # a release not finished
            entry = self._in_release.get(obj.group)
            if entry is None:  # earlier batches' rows alone: as it was
                releasing.append(obj)
                continue
            earlier, noted = entry
            self._positions -= noted.positions
            self.held_bytes -= noted.bytes
            if earlier:
                releasing.append(self._rolled(obj.group, earlier))
            elif obj.sent and not obj.existed:
                stale.append(obj.key)
        for group, (key, earlier, existed) in self._released.items():  # a release finished
            if earlier:
                releasing.append(self._rolled(group, earlier))
                self.held_bytes += sum(_size(row) for _, row in earlier)
            elif not existed:
                stale.append(key)
        self._releasing = releasing
        self._delete(stale)
        if not self._held:
            self._since = None
        if not self._held and not self._releasing:
            self.held_bytes = 0
        self._batch, self._fresh, self._in_release, self._released = None, {}, {}, {}

    def held_back(self, batch: int, positions: frozenset[tuple[str, str, str, int]]) -> None:
        """Records of the engine's batch ``batch`` come again (a later sink failed one, and
        those after it in its shard are held back): drop their rows from what the batch added
        to the buffers, so the release does not put them beside their next delivery's."""

        def back(meta: RecordMeta) -> bool:
            where = (meta.stream, meta.shard_id, meta.sequence_number, meta.sub_sequence_number)
            return where in positions

        if not self.rolling:
            self._sent_without(batch, back)
            return
        if batch != self._batch:
            return

        for group, noted in list(self._fresh.items()):
            rows = self._held[group]
            tail = rows[len(rows) - noted.rows :]
            gone = [r for r in tail if back(r[0])]
            if not gone:
                continue
            del rows[len(rows) - noted.rows :]
            rows.extend(r for r in tail if not back(r[0]))
            size = sum(_size(row) for _, row in gone)
            dropped = {p for p in noted.positions if p[:4] in positions}
            noted.rows -= len(gone)
            noted.bytes -= size
            noted.positions -= dropped
            self._positions -= dropped
            self.held_bytes -= size
            if not noted.rows:
                del self._fresh[group]
            if not rows:
                del self._held[group]
        if not self._held:
            self._since = None

    def _sent_without(self, batch: int, back: Callable[[RecordMeta], bool]) -> None:
        """Per-batch objects: put again, under the same name, each object of the batch that
        holds rows of records that come again, without them; delete one left with none. A call
        that fails for now raises (``TransientError``): the engine retries, then fails the
        batch, whose ``discard`` deletes its objects. A delete refused for good (a role without
        ``s3:DeleteObject``) leaves the object, logged: the batch is not failed for it."""
        if batch != self._sent_batch:
            return
        for key, obj in list(self._sent.items()):
            kept = [r for r in obj.rows if not back(r[0])]
            if len(kept) == len(obj.rows):
                continue
            if kept:
                again = _Object(key, kept, obj.group)
                again.existed = obj.existed
                self._put_all([again], self._time_left, conditional=False)
                self._sent[key] = again
                continue
            if aws.time_spent(self._time_left):
                raise TransientError(f"{self.id}: DeleteObject: {aws.NOT_SENT}")
            try:
                with aws.time_bounded(self._time_left):
                    aws_call(
                        f"{self.id}: DeleteObject s3://{self.config.bucket}/{key}",
                        self.client.delete_object,
                        Bucket=self.config.bucket,
                        Key=key,
                    )
            except SinkError as exc:  # refused for good (a role without s3:DeleteObject)
                log.warning(
                    "%s: %s stays in S3 with rows of records that come again: %s — they can be "
                    "there twice (deduplicate on event_id)",
                    self.id,
                    key,
                    exc,
                )
            del self._sent[key]

    def _delete(self, keys: list[str]) -> None:
        """Delete a failed batch's objects (within the engine's time left at its write). One
        that cannot be deleted stays: logged, with what a reader then sees."""
        time_left, self._time_left = self._time_left, None
        for i, key in enumerate(keys):
            try:
                if aws.time_spent(time_left):
                    raise TransientError(f"DeleteObject: {aws.NOT_SENT}")
                with aws.time_bounded(time_left):
                    aws_call(
                        f"{self.id}: DeleteObject s3://{self.config.bucket}/{key}",
                        self.client.delete_object,
                        Bucket=self.config.bucket,
                        Key=key,
                    )
            except (TransientError, SinkError) as exc:
                log.warning(
                    "%s: a failed batch's objects stay in S3 beside its retry's (%s): %s — "
                    "their rows can be there twice, or rows the retry does not write "
                    "(deduplicate on event_id)",
                    self.id,
                    ", ".join(keys[i:]),
                    exc,
                )
                return

    def may_hold(self) -> bool:
        return self.rolling

    def holding(self) -> bool:
        return bool(self._held or self._releasing)

    def due(self) -> bool:
        cfg = self.config
        if self._releasing:  # a release that failed: finish it as soon as asked
            return True
        if not self._held:
            return False
        if self.held_bytes >= (cfg.roll_bytes or MAX_HELD_BYTES):
            return True
        age = self.clock() - self._since if self._since is not None else 0.0
        return cfg.roll_seconds is not None and age >= cfg.roll_seconds

    def release(self) -> None:
        """Put every held buffer as one object (named by its first position). A put that fails
        raises ``TransientError``; the next call puts only the objects not yet written. Called by
        a Lambda runner's engine (which releases after every batch), its puts are bounded by the
        engine's time left as a write's (``release_time_left``)."""
        time_left = release_time_left()
        while self._releasing or self._held:
            if not self._releasing:
                self._releasing = [self._rolled(group, rows) for group, rows in self._held.items()]
                # the last batch's rows go with them (``discard``: what else the objects hold)
                for group, noted in self._fresh.items():
                    rows = self._held[group]
                    self._in_release[group] = (rows[: len(rows) - noted.rows], noted)
                self._held, self._fresh = {}, {}
            self._put_all(self._releasing, time_left)
            for obj in self._releasing:  # the last batch's objects: ``discard`` takes them back
                entry = self._in_release.get(obj.group)
                if entry is not None:
                    self._released[obj.group] = (obj.key, entry[0], obj.existed)
            self._releasing = []
            self._in_release = {}
        self._positions.clear()
        self.held_bytes = 0
        self._since = None

    def _rolled(self, group: tuple[str, str, str], held: list[tuple[RecordMeta, Any]]) -> _Object:
        rows = sorted(held, key=lambda r: r[0].position.key())
        part, stream, shard = group
        return _Object(
            self._key(part, stream, shard, rows[0][0], rows[-1][0], rolled=True), rows, group
        )

    def close(self) -> None:
        close: Callable[[], None] | None = getattr(self.client, "close", None)
        if close is not None:
            close()


def _size(row: Any) -> int:
    """The bytes a held row counts: its JSON line."""
    if isinstance(row, bytes):
        return len(row)
    try:
        return len(orjson.dumps(row, default=exact_json.text_default)) + 1
    except TypeError:
        return len(_line(row))


class _Fresh:
    """What the engine's last batch added to one buffer: rows (the last of it), bytes, positions."""

    __slots__ = ("rows", "bytes", "positions")

    def __init__(self) -> None:
        self.rows, self.bytes = 0, 0
        self.positions: set[tuple[str, str, str, int, str]] = set()


class _Object:
    """One object to put: its key, its (event or record metadata, row) pairs and its group."""

    __slots__ = ("key", "rows", "group", "done", "sent", "existed")

    def __init__(self, key: str, rows: list[tuple[Any, Any]], group: tuple[str, str, str]):
        self.key, self.rows, self.group, self.done, self.sent = key, rows, group, False, False
        #: An object of that name was in S3 before this one's first put (``_put_all``).
        self.existed = False
