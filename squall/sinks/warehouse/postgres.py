"""The PostgreSQL writer of the warehouse sink: COPY, idempotent on the table's key.

Per batch, in the sink's one transaction:

1. *Fresh rows* (the usual case): ``SAVEPOINT``, then ``COPY`` the rows straight into the table —
   as fast as a plain COPY. If any row's key is already there (a replay), PostgreSQL's unique
   constraint stops the COPY; the writer rolls back to the savepoint and goes to 2.
2. *Merge*: ``COPY`` the rows into a session temporary staging table (``ON COMMIT DELETE ROWS``),
   then ``INSERT … SELECT … ON CONFLICT (event_id) DO NOTHING`` into the table. The writer stays
   in this mode while batches hold rows that are already stored (replays come in runs), and goes
   back to 1 after a batch without any.

With ``mode: upsert`` every batch takes the staging path: the staging table numbers its rows in
COPY order (the batch's order, unsorted), and the merge is ``INSERT … SELECT DISTINCT ON (key) …
ORDER BY key, row number DESC ON CONFLICT (key) DO UPDATE SET column = EXCLUDED.column``, so the
last row of a key in the batch wins and a re-emitted row replaces the stored one. With a
``version`` column the order is ``key, version DESC, row number DESC`` (the greatest version of a
key wins, a tie the last) and the update has ``WHERE squall_stored.version <=
EXCLUDED.version`` (``squall_stored``: the table's alias): an older row than the stored one
changes nothing.

Either way the unique constraint on the key decides, so a replayed batch adds no rows, and the
checkpoint the sink saves afterwards commits or rolls back with them. Rows are COPYed in chunks of
``copy_batch_size`` in the same transaction. Partitions for the days (or months) of a batch are
created beforehand in their own short transaction (``CREATE TABLE … PARTITION OF`` takes a strong
lock on the parent, which must not be held for the whole batch).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors

from squall.errors import SinkError
from squall.event import Event
from squall.sinks.warehouse import pgschema
from squall.sinks.warehouse.copytext import CopyRowBuilder
from squall.sinks.warehouse.writers import (
    WRITERS,
    Reject,
    SqlWriter,
    TableSpec,
    WriteOptions,
    insert_target,
    log_kept_out,
    on_conflict,
    quote,
)
from squall.topology.sql import transaction

log = logging.getLogger("squall.sinks.warehouse")

#: Existing column type (pg_type.typname) -> the type of its staging column: no cast on INSERT … SELECT.
STAGING_TYPES = {
    "text": "text",
    "varchar": "varchar",
    "int4": "integer",
    "int8": "bigint",
    "numeric": "numeric",
    "float8": "double precision",
    "bool": "boolean",
    "timestamptz": "timestamptz",
    "timestamp": "timestamp",
    "date": "date",
    "jsonb": "jsonb",
    "json": "json",
}
_READ_SIZE = 1 << 18  # bytes handed to libpq per PQputCopyData


@dataclass
class CopyPayload:
    """One batch, ready to send: COPY text buffers of at most ``copy_batch_size`` rows each."""

    chunks: list[tuple[bytes, int]]
    partition_keys: set[str] = field(default_factory=set)

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.chunks)


class PostgresWriter(SqlWriter):
    """COPY into the table (fresh rows) or through a staging table (replays), never duplicating."""

    def __init__(self, engine: Any, spec: TableSpec, options: WriteOptions):
        """``engine``: psycopg2's plain engine (``pg_driver``) or SQLAlchemy's on psycopg2."""
        if engine.dialect.driver != "psycopg2":
            raise SinkError(
                f"table {spec.shown}: the PostgreSQL warehouse uses psycopg2's COPY; write the "
                f"resource URL as postgresql+psycopg2://… (driver here: {engine.dialect.driver})"
            )
        self.engine = engine
        self.spec = spec
        self.options = options
        self.builder = CopyRowBuilder(
            spec.columns,
            key_column=spec.partition_column,
            key_length=10 if spec.granularity == "day" else 7,
            bounds=spec.partition_bounds,
        )
        names = ", ".join(quote(c) for c in self.builder.names)  # the order of the COPY lines
        self._names = names
        self._copy_options = "(FORMAT text, ENCODING 'UTF8')"
        self._copy_target = f"COPY {spec.qualified} ({names}) FROM STDIN WITH {self._copy_options}"
        self._upsert = bool(spec.upsert_key)
        self._direct = not self._upsert  # an upsert always merges through the staging table
        self._partitions: set[str] = set()
        self._staging_sql = self._copy_staging = self._merge_sql = ""

    # -- the table -------------------------------------------------------------------------------

    def open(self, *, create: bool) -> None:
        """Check the table against the YAML, create or extend it; refuse what cannot work."""
        spec = self.spec
        with transaction(self.engine) as conn, conn.connection.dbapi_connection.cursor() as cur:
            cur.execute("SELECT version()")
            if pgschema.is_redshift(cur.fetchone()[0]):
                raise SinkError(
                    f"table {spec.shown}: Amazon Redshift is not supported by the warehouse sink "
                    f"(no ON CONFLICT, no COPY from STDIN); see docs/warehouse.md"
                )
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (pgschema.LOCK_CLASS, pgschema.lock_key(spec)),
            )
            table = pgschema.inspect_table(cur, spec)
            if table is None:
                if not create:
                    raise SinkError(f"table {spec.shown} does not exist (create: false)")
                if spec.schema and not pgschema.schema_exists(cur, spec.schema):
                    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(spec.schema)}")
                cur.execute(pgschema.create_table_sql(spec))
                log.info("created table %s", spec.shown)
                table = pgschema.inspect_table(cur, spec)
                assert table is not None
            found = pgschema.problems(spec, table, create=create)
            if found:
                raise SinkError("\n".join(found))
            if create and self._extend(cur, table):
                table = pgschema.inspect_table(cur, spec)
                assert table is not None
            self._partitions = pgschema.partition_keys(spec, table.partitions)
            types = {name: STAGING_TYPES[table.columns[name].typname] for name in spec.columns}
        self._prepare_statements(types)

    def _extend(self, cur, table: pgschema.ExistingTable) -> bool:
        """Add the YAML's new columns and indexes; True when the table changed."""
        spec = self.spec
        changed = False
        for name in spec.columns:
            if name in table.columns:
                continue
            try:
                cur.execute(pgschema.add_column_sql(spec, name))
            except psycopg2.errors.NotNullViolation:
                raise SinkError(
                    f"table {spec.shown}: cannot add column '{name}' as NOT NULL: the table has "
                    f"rows without a value — add it as nullable, fill it, then SET NOT NULL"
                ) from None
            log.info("added column %s to %s", name, spec.shown)
            changed = True
        for name, col in spec.columns.items():
            if col.index and name not in table.leading_index_columns:
                cur.execute(pgschema.index_sql(spec, name))
                changed = True
        return changed

    def _prepare_statements(self, types: dict[str, str]) -> None:
        spec = self.spec
        cols = ", ".join(f"{quote(name)} {types[name]}" for name in self.builder.names)
        if self._upsert:  # rows numbered in COPY order: the last row of a key wins
            cols += ", squall_row bigint GENERATED ALWAYS AS IDENTITY"
        # One staging table per target table and column layout, per session; rows vanish at commit.
        stage = quote(f"squall_stage_{spec.digest(cols)}")
        self._staging_sql = (
            f"SET LOCAL client_min_messages = warning; "
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({cols}) ON COMMIT DELETE ROWS"
        )
        self._copy_staging = f"COPY {stage} ({self._names}) FROM STDIN WITH {self._copy_options}"
        keys = ", ".join(quote(c) for c in spec.conflict_key)
        if self._upsert:
            # With a version: of a key's rows, the greatest version, then the last (never NULL:
            # a version is a required value).
            version = f"{quote(spec.version_column)} DESC, " if spec.version_column else ""
            select = (
                f"SELECT DISTINCT ON ({keys}) {self._names} FROM {stage} "
                f"ORDER BY {keys}, {version}squall_row DESC"
            )
        else:
            select = f"SELECT {self._names} FROM {stage}"
        conflict = on_conflict(spec, lambda c: quote(c)).replace("excluded.", "EXCLUDED.")
        self._merge_sql = (
            f"INSERT INTO {insert_target(spec)} ({self._names}) {select} "
            f"ON CONFLICT ({keys}) {conflict}"
        )

    # -- one batch -------------------------------------------------------------------------------

    def prepare(self, events: list[Event], reject: Reject) -> tuple[list[Event], CopyPayload]:
        rows = self.builder.build(events, reject)
        chunks = rows.encode(self.options.copy_batch_size, reject, sort=not self._upsert)
        return rows.events, CopyPayload(chunks, rows.keys)

    def before_transaction(self, payload: CopyPayload) -> None:
        """Create the partitions this batch needs that are not known to exist, in their own transaction."""
        missing = payload.partition_keys - self._partitions
        if not missing:
            return
        lock = (
            f"SELECT pg_advisory_xact_lock({pgschema.LOCK_CLASS}, {pgschema.lock_key(self.spec)})"
        )
        with transaction(self.engine) as conn, conn.connection.dbapi_connection.cursor() as cur:
            cur.execute(self._setup(lock))
            for key in sorted(missing):
                cur.execute(pgschema.partition_sql(self.spec, key))
        log.info("%s: partitions ready for %s", self.spec.shown, ", ".join(sorted(missing)))
        self._partitions |= missing

    def write(self, conn: Any, payload: CopyPayload) -> int:
        """COPY the rows; returns how many were new (the others were stored already)."""
        with conn.connection.dbapi_connection.cursor() as cur:
            if self._direct:
                cur.execute(self._setup("SAVEPOINT squall_copy"))
                try:
                    self._copy(cur, self._copy_target, payload)
                    return payload.rows
                except psycopg2.errors.UniqueViolation:
                    # Some rows are stored already (a replay, or one event twice in the batch).
                    cur.execute("ROLLBACK TO SAVEPOINT squall_copy")
                    self._direct = False
                cur.execute(self._staging_sql)
            else:
                cur.execute(self._setup(self._staging_sql))
            self._copy(cur, self._copy_staging, payload)
            cur.execute(self._merge_sql)
            inserted = cur.rowcount
        if self._upsert:
            log.debug("%s: upserted %d rows", self.spec.shown, inserted)
            if self.spec.version_column and inserted < payload.rows:
                log_kept_out(self.spec, payload.rows - inserted, payload.rows)
            return None
        log.debug(
            "%s: merged %d rows, %d already stored",
            self.spec.shown,
            inserted,
            payload.rows - inserted,
        )
        self._direct = inserted == payload.rows
        return inserted

    def _setup(self, then: str = "") -> str:
        timeout = self.options.statement_timeout
        first = f"SET LOCAL statement_timeout = {max(1, round(timeout * 1000))}" if timeout else ""
        return "; ".join(s for s in (first, then) if s)

    @staticmethod
    def _copy(cur, sql: str, payload: CopyPayload) -> None:
        for buffer, _ in payload.chunks:
            cur.copy_expert(sql, io.BytesIO(buffer), size=_READ_SIZE)


WRITERS["postgresql"] = PostgresWriter
