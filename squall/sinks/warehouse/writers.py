"""Per-dialect writers of the warehouse sink: check/create the table, build rows, write them idempotently.

A writer never commits or rolls back: the sink opens one transaction per batch
(``transactions.transaction``) and hands the connection to ``write``, then saves the checkpoint in
the same transaction when it is asked to.

Size (~445 lines): the table spec, the SQLite writer (table checks, rows, the upsert's SQL with a
``version``'s comparison) and the helpers the PostgreSQL writer shares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from squall.digests import blake2b
from squall.errors import SinkError
from squall.event import Event
from squall.sinks.warehouse.columns import (
    SQLITE_NULL,
    SQLITE_TYPES,
    ColumnSpec,
    ConversionError,
    RowBuilder,
    build_table,
    check_identifier,
    sa_type,
)
from squall.topology import sqlite_driver
from squall.topology.sql import create_indexes, create_table

Reject = Callable[[Event, str], None]

log = logging.getLogger("squall.sinks.warehouse")


def quote(name: str) -> str:
    """A checked identifier, double-quoted (keeps its case; reserved words work)."""
    return f'"{check_identifier(name)}"'


@dataclass(frozen=True)
class TableSpec:
    """The table a sink writes, as the YAML describes it."""

    schema: str | None
    name: str
    columns: dict[str, ColumnSpec]
    partition_column: str | None = None
    granularity: str = "day"
    #: ``mode: upsert``: the columns that identify a row (a new row with the same key replaces it).
    upsert_key: tuple[str, ...] = ()
    #: ``partition_by``'s (max_age, max_future) in ms around a record's arrival, None: unbounded.
    partition_bounds: tuple[int | None, int | None] = (None, None)
    #: ``mode: upsert``'s ``version``: a row replaces its key's stored row only if its value there
    #: is at least the stored one (a stored NULL, from before the column existed, is older).
    version_column: str | None = None

    @property
    def qualified(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}" if self.schema else quote(self.name)

    @property
    def shown(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def conflict_key(self) -> tuple[str, ...]:
        """The table's key: event_id (plus the partition column on a partitioned table), or the
        upsert key (which holds the partition column: checked at load)."""
        if self.upsert_key:
            return self.upsert_key
        return ("event_id", self.partition_column) if self.partition_column else ("event_id",)

    @property
    def updated_columns(self) -> list[str]:
        """Upsert: the columns a conflicting row overwrites (all but the key)."""
        return [c for c in self.columns if c not in self.upsert_key]

    def digest(self, *parts: str) -> str:
        """A short stable hash of the table (and extra parts), for derived object names."""
        text = "\x1f".join((self.schema or "", self.name, *parts))
        return blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class WriteOptions:
    """Tuning of the PostgreSQL writer (ignored by SQLite)."""

    copy_batch_size: int = 10_000
    statement_timeout: float | None = None


class SqlWriter:
    """``INSERT … ON CONFLICT (event_id) DO NOTHING`` with executemany (SQLite).

    With ``mode: upsert``: ``INSERT … ON CONFLICT (key) DO UPDATE SET column = excluded.column``;
    SQLite applies the rows in batch order, so the last row of a key in the batch wins. With a
    ``version``, ``… DO UPDATE SET … WHERE squall_stored.version <= excluded.version``
    (``squall_stored``: the table's alias): a row whose version is older than the stored one
    (stored by an earlier batch or earlier in this one) changes nothing, so the greatest version
    of a key wins, a tie the last.

    ``engine``: a SQLAlchemy engine, or the plain SQLite driver's (``sqlite_driver.SqliteEngine``:
    the table is then checked and created with the same DDL, without SQLAlchemy).
    """

    def __init__(self, engine: Any, spec: TableSpec, options: WriteOptions):
        if spec.partition_column:
            raise SinkError(
                f"table {spec.shown}: partition_by needs PostgreSQL (this is {engine.dialect.name})"
            )
        self.engine = engine
        self.spec = spec
        self.plain = isinstance(engine, sqlite_driver.SqliteEngine)
        self.table = (
            None
            if self.plain
            else build_table(
                _metadata(),
                spec.name,
                spec.columns,
                engine.dialect.name,
                spec.schema,
                key=spec.conflict_key,
            )
        )
        self._stand_ins = _stand_ins()
        self.rows = self._row_builder()
        cols = list(spec.columns)
        marks = ", ".join(["?" if engine.dialect.paramstyle == "qmark" else "%s"] * len(cols))
        keys = ", ".join(quote(c) for c in spec.conflict_key)
        self.insert_sql = (
            f"INSERT INTO {insert_target(spec)} ({', '.join(quote(c) for c in cols)}) VALUES ({marks}) "
            f"ON CONFLICT ({keys}) {on_conflict(spec, quote, sqlite=engine.dialect.name == 'sqlite')}"
        )

    def open(self, *, create: bool) -> None:
        """Create the table if missing; add columns that the YAML has and the table lacks.

        With ``create: false`` the table must already exist with every column: checked here, so a
        missing table is refused at start rather than failing every batch.
        """
        if not create:
            have = self._columns()
            if not have:
                raise SinkError(f"table {self.spec.shown} does not exist (create: false)")
            missing = [name for name in self.spec.columns if name not in have]
            if missing:
                raise SinkError(
                    f"table {self.spec.shown} lacks column(s) {', '.join(missing)} (create: false)"
                )
            self._check_upsert_key()
            self._check_version_type()
            return
        # IF NOT EXISTS: processes start together. Indexes last: one may be on a column that an
        # existing table gets only below.
        if self.plain:
            sqlite_driver.create_table(
                self.engine, self.spec.name, self.sqlite_columns(), indexes=False
            )
        else:
            create_table(self.engine, self.table, indexes=False)
        self._check_upsert_key()
        self._check_version_type()
        existing = self._columns()
        for name, spec in self.spec.columns.items():
            if name in existing:
                continue
            if self.plain:
                col_type = SQLITE_TYPES[spec.type]
            else:
                col_type = sa_type(spec.type, self.engine.dialect.name).compile(
                    dialect=self.engine.dialect
                )
            try:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {self.spec.qualified} ADD COLUMN {quote(name)} {col_type}"
                    )
            except Exception:
                if name not in self._columns():  # not another process adding it at the same time
                    raise
        if self.plain:
            sqlite_driver.create_indexes(self.engine, self.spec.name, self.sqlite_columns())
        else:
            create_indexes(self.engine, self.table)

    def sqlite_columns(self) -> list[sqlite_driver.Column]:
        """The table for the plain SQLite driver, as ``build_table`` describes it to SQLAlchemy."""
        key = self.spec.conflict_key
        return [
            sqlite_driver.Column(
                name,
                SQLITE_TYPES[c.type],
                nullable=c.nullable and name not in key,
                primary_key=name in key,
                index=c.index,
            )
            for name, c in self.spec.columns.items()
        ]

    def _columns(self) -> set[str]:
        """The table's columns as the database has them now (empty: no such table)."""
        if self.plain:
            return set(sqlite_driver.table_columns(self.engine, self.spec.name))
        import sqlalchemy as sa

        inspector = sa.inspect(self.engine)
        if not inspector.has_table(self.spec.name, schema=self.spec.schema):
            return set()
        return {c["name"] for c in inspector.get_columns(self.spec.name, schema=self.spec.schema)}

    def _unique_keys(self) -> list[set[str]]:
        """The column sets the table's primary key and unique constraints or indexes cover."""
        if self.plain:
            return sqlite_driver.unique_keys(self.engine, self.spec.name)
        import sqlalchemy as sa

        inspector = sa.inspect(self.engine)
        name, schema = self.spec.name, self.spec.schema
        keys = [
            set(inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or ())
        ]
        keys += [
            set(u["column_names"]) for u in inspector.get_unique_constraints(name, schema=schema)
        ]
        keys += [
            set(i["column_names"])
            for i in inspector.get_indexes(name, schema=schema)
            if i.get("unique")
        ]
        return keys

    def _check_upsert_key(self) -> None:
        """Upsert: an existing table must have a primary key or unique index on exactly the key, or
        every batch would fail on ``ON CONFLICT``; refused at start instead."""
        if not self.spec.upsert_key:
            return
        if set(self.spec.upsert_key) not in self._unique_keys():
            cols = ", ".join(self.spec.upsert_key)
            raise SinkError(
                f"table {self.spec.shown} has no primary key or unique index on exactly ({cols}), "
                f"which mode: upsert needs — add one (CREATE UNIQUE INDEX … ON {self.spec.name} "
                f"({cols})) or use a new table"
            )

    def _check_version_type(self) -> None:
        """SQLite: an existing numeric ``version`` column must not have TEXT affinity, which
        stores 10 as '10' (before '9' as text): every newer row would be kept out, silently. Nor
        REAL affinity for an integer version: it stores integers as floats, so versions above
        2^53 (a nanosecond time, a log sequence number) round, and an older one ties a newer."""
        version = self.spec.version_column
        if not version or self.engine.dialect.name != "sqlite":
            return
        if self.spec.columns[version].type not in ("integer", "bigint", "float"):
            return  # timestamps and dates are stored as text whatever the affinity
        prefix = f"{quote(self.spec.schema)}." if self.spec.schema else ""
        with self.engine.connect() as conn:
            info = conn.exec_driver_sql(
                f"PRAGMA {prefix}table_info({quote(self.spec.name)})"
            ).fetchall()
        declared = next((row[2] for row in info if row[1] == version), None)
        if declared is not None and sqlite_affinity(declared) == "TEXT":
            raise SinkError(
                f"table {self.spec.shown}: column '{version}' is {declared} in the table (text "
                f"affinity: numbers compare as text, '10' before '9'), but the version is "
                f"{self.spec.columns[version].type} — use a column of a numeric type"
            )
        if declared is not None and sqlite_affinity(declared) == "REAL":
            if self.spec.columns[version].type != "float":
                raise SinkError(
                    f"table {self.spec.shown}: column '{version}' is {declared} in the table (real "
                    f"affinity: integers are stored as floats, above 2^53 rounded, so an older "
                    f"version can equal a newer one), but the version is "
                    f"{self.spec.columns[version].type} — use an INTEGER column"
                )

    def prepare(self, events: list[Event], reject: Reject) -> tuple[list[Event], Any]:
        """Rows for the events that can be stored; the others are rejected with the reason."""
        kept, rows = [], []
        if _stand_ins() != self._stand_ins:  # an adapter registered since (4 look-ups a batch)
            self._stand_ins = _stand_ins()
            self.rows = self._row_builder()
        row = self.rows.row
        for ev in events:
            try:
                rows.append(row(ev))
            except ConversionError as exc:
                reject(ev, str(exc))
                continue
            kept.append(ev)
        return kept, rows

    def _row_builder(self) -> RowBuilder:
        """Values as sqlite3 binds them without adapting: times as text, and where
        ``_stand_ins`` allows, booleans as 1 and 0 and NULL as a NaN (SQLITE_NULL)."""
        bools_as_int, nan_null = self._stand_ins
        return RowBuilder(
            self.spec.columns,
            json_as_text=True,
            times_as_text=True,
            bools_as_int=bools_as_int,
            null=SQLITE_NULL if nan_null else None,
        )

    def before_transaction(self, payload: Any) -> None:
        """Work that must not share the batch's transaction (PostgreSQL: new partitions)."""

    def write(self, conn: Any, rows: list[tuple]) -> int | None:
        """Insert the rows; returns how many were new (the others were stored already), if known."""
        if not rows:
            return 0
        result = conn.exec_driver_sql(self.insert_sql, rows)
        if result.rowcount < 0:
            return None
        if self.spec.version_column and result.rowcount < len(rows):
            # An upsert whose WHERE is false changes no row: sqlite3 counts it 0.
            log_kept_out(self.spec, len(rows) - result.rowcount, len(rows))
        return result.rowcount  # sqlite3 sums executemany's rows


def _stand_ins() -> tuple[bool, bool]:
    """Whether a SQLite row may hold 1 and 0 for a bool, and a NaN for NULL: what sqlite3
    stored for them, unless an application registered its own adapter for bool or None (that
    one is still given them) — or for the stand-in's type, int or float (sqlite3 then adapts
    every int or float: its float adapter would get the NaN, ``repr`` storing the text 'nan'
    for every NULL; its int adapter the booleans' 1 and 0). Read again each batch: an adapter
    registered after the sink opened is given them too."""
    own = sqlite_driver.own_adapter
    return own(bool) and own(int), own(type(None)) and own(float)


def log_kept_out(spec: TableSpec, kept_out: int, rows: int) -> None:
    """One INFO line per batch in which a ``version`` kept rows out (docs/warehouse.md#upserts)."""
    log.info(
        "%s: %d of %d row(s) not written: a row of their key with a greater %s (or an equal one, "
        "later in the batch) is stored or in the batch",
        spec.shown,
        kept_out,
        rows,
        spec.version_column,
    )


def sqlite_affinity(declared: str) -> str:
    """The type affinity SQLite gives a column of this declared type (its rules, in order)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


#: The target table's alias in a versioned upsert: its stored version is ``squall_stored.v``, which
#: is not ``excluded.v`` even in a table named "excluded" (by its own name it would be).
STORED = "squall_stored"


def insert_target(spec: TableSpec) -> str:
    """The table an ``INSERT`` names: with a ``version``, aliased ``STORED`` (``on_conflict``)."""
    return f"{spec.qualified} AS {quote(STORED)}" if spec.version_column else spec.qualified


def on_conflict(spec: TableSpec, quote_name: Callable[[str], str], *, sqlite: bool = False) -> str:
    """What a row whose key is already stored does: nothing (insert), or replace the other columns
    (upsert) — with a ``version``, only where the stored row's version is not greater.

    SQLite timestamps are text: squall's own UTC form (``YYYY-MM-DD HH:MM:SS[.ffffff]+00:00``, six
    digits not all zeros, or none) sorts as the times do and is compared as it is; other text in
    a stored row (an earlier squall kept the event's offset; another writer's ``T`` or ``Z``, or a
    fraction of zeros or of other length: ``.000000`` sorted as text after an equal ``:00+00:00``)
    is compared as ``sqlite_utc_key`` makes it,
    which reads the offset; text SQLite cannot read as a time is older than any version, as NULL
    is (kept, no newer row would ever replace it)."""
    updated = spec.updated_columns if spec.upsert_key else []
    if not updated:
        return "DO NOTHING"
    sql = "DO UPDATE SET " + ", ".join(
        f"{quote_name(c)} = excluded.{quote_name(c)}" for c in updated
    )
    version = spec.version_column
    if version:  # the target by its alias (``insert_target``): a table may be named "excluded"
        stored = f"{quote_name(STORED)}.{quote_name(version)}"
        new = f"excluded.{quote_name(version)}"
        if sqlite and spec.columns[version].type == "timestamp":
            sql += (
                f" WHERE {stored} IS NULL OR CASE WHEN {stored} LIKE '____-__-__ __:__:__+00:00' "
                f"OR {stored} LIKE '____-__-__ __:__:__.______+00:00' "
                f"AND substr({stored}, 20, 7) != '.000000' THEN {stored} <= {new} "
                f"ELSE coalesce({sqlite_utc_key(stored)} <= {sqlite_utc_key(new)}, 1) END"
            )
        else:
            sql += f" WHERE {stored} IS NULL OR {stored} <= {new}"
    return sql


def sqlite_utc_key(text: str) -> str:
    """SQL for a SQLite timestamp's text (any form its date functions read: ``T`` or space,
    ``Z`` or an offset) as UTC text that sorts as the times do, to the digit: SQLite's
    ``strftime`` of the whole seconds, which reads the offset (its ``julianday`` keeps whole
    milliseconds: 0.4 ms apart compared equal), then the fraction's digits as written, without
    trailing zeros (an offset is whole minutes: the fraction is the same in UTC). NULL for text
    it cannot read."""
    rest = f"ltrim(substr({text}, 21), '0123456789')"  # what follows the fraction's digits
    whole = f"substr({text}, 1, 19) || {rest}"
    fraction = f"rtrim(rtrim(substr({text}, 20, length({text}) - 19 - length({rest})), '0'), '.')"
    return (
        f"(CASE WHEN substr({text}, 20, 1) = '.' "
        f"THEN strftime('%Y-%m-%d %H:%M:%S', {whole}) || {fraction} "
        f"ELSE strftime('%Y-%m-%d %H:%M:%S', {text}) END)"
    )


#: dialect name → writer class; the PostgreSQL COPY writer registers itself here.
WRITERS: dict[str, Callable[[Any, TableSpec, WriteOptions], SqlWriter]] = {"sqlite": SqlWriter}


def _metadata() -> Any:
    import sqlalchemy as sa

    return sa.MetaData()


def writer_for(dialect: str) -> Callable[[Any, TableSpec, WriteOptions], SqlWriter]:
    """The writer of a dialect; an unsupported database is refused with the reason."""
    if dialect == "postgresql" and "postgresql" not in WRITERS:
        try:
            import squall.sinks.warehouse.postgres  # noqa: F401 - registers the COPY writer
        except ImportError as exc:
            raise SinkError(
                f"the PostgreSQL warehouse needs psycopg2 (pip install 'squall[postgres]'): {exc}"
            ) from exc
    try:
        return WRITERS[dialect]
    except KeyError:
        hint = " (Redshift: see docs/warehouse.md)" if dialect == "redshift" else ""
        raise SinkError(
            f"the warehouse sink writes to SQLite and PostgreSQL, not {dialect}{hint}"
        ) from None
