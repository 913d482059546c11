"""``warehouse`` sink: rows into a SQL table, one transaction per batch, idempotent on event_id
(``mode: insert``) or on declared key columns whose rows a later event replaces (``mode: upsert``).

SQLite is the embedded default (``INSERT … ON CONFLICT(event_id) DO NOTHING`` with executemany).
PostgreSQL uses COPY, straight into the table or through a staging table and an idempotent merge
(``postgres.py``), with the table checked and created from the YAML (``pgschema.py``). Values that
cannot be stored send their event to dead letter with the reason. See docs/warehouse.md.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from squall.component import ComponentConfig
from squall.errors import SinkError
from squall.sinks.base import AbsentPaths, Prepared, Sink, WriteContext, WriteResult
from squall.sinks.warehouse.columns import ColumnSpec, check_identifier, parse_columns
from squall.sinks.warehouse.writers import TableSpec, WriteOptions, writer_for
from squall.times import Duration, Seconds, duration_ms
from squall.topology.resource_config import SqlResource
from squall.topology.sql import sql_errors, transaction

log = logging.getLogger("squall.sinks.warehouse")

_PARTITION_SUFFIX = len("_p20260101")
#: Column types a ``version`` may have: they compare the same on SQLite and PostgreSQL (SQLite
#: stores timestamps as UTC text of one fixed form, which sorts as the times do).
VERSION_TYPES = ("integer", "bigint", "float", "timestamp", "date")


class PartitionBy(BaseModel):
    """Declarative range partitioning of a PostgreSQL table by a timestamp or date column."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    column: str = Field(
        description="A timestamp or date column of 'columns'; it joins event_id in the key."
    )
    granularity: Literal["day", "month"] = Field(
        "day", description="One partition per UTC day or month."
    )
    max_future: Duration | None = Field(
        "1d",
        description="How far after its record's arrival a row's day may be (seconds, or e.g. 12h, "
        "1d); a later one is that event's failure, not a new partition. Null: no bound.",
    )
    max_age: Duration | None = Field(
        "366d",
        description="How far before its record's arrival a row's day may be; an older one is that "
        "event's failure (raise it, or null, to backfill older days). Records without an arrival "
        "time (files, stdin, S3 objects) are not bounded.",
    )

    @field_validator("max_future", "max_age")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v is not None:
            duration_ms(v)  # ValueError: "not a duration"
        return v


def _column_shorthand(v: Any) -> Any:
    """``country: geo.country_code`` is ``country: {path: geo.country_code}`` (a text column)."""
    return {"path": v} if isinstance(v, str) else v


class WarehouseConfig(ComponentConfig):
    resource: SqlResource = Field(
        description="Name of a SQL resource (sqlite:///…, postgresql://…)."
    )
    table: str = Field(description="Target table; created from 'columns' if missing.")
    db_schema: str | None = Field(
        None, alias="schema", description="Database schema of the table (PostgreSQL)."
    )
    mode: Literal["insert", "upsert"] = Field(
        "insert",
        description="insert: one row per event, keyed by event_id (a replay adds nothing); upsert: one "
        "row per `key`, a later event with the same key replaces the row (the last in a "
        "batch wins; with `version`, the newest), e.g. re-emitted window results.",
    )
    key: list[str] | None = Field(
        None,
        description="upsert: the columns identifying a row (the table's primary key; required values). "
        "No event_id column is added in this mode unless listed in columns.",
    )
    columns: dict[
        str,
        Annotated[
            ColumnSpec, BeforeValidator(_column_shorthand, json_schema_input_type=ColumnSpec | str)
        ],
    ] = Field(
        description="Column name → dotted path (text column) or {path, type, nullable, index}. "
        "In insert mode an 'event_id' column (meta.event_id) is added when absent; it is the "
        "table's key."
    )
    version: str | None = Field(
        None,
        description="upsert: a column (integer, bigint, float, timestamp or date; not a key column) "
        "whose greater value wins: a row replaces its key's stored row only if its version is at "
        "least the stored one (an older row is not written), and of a key's rows in a batch the "
        "greatest version wins (a tie: the last). Required values.",
    )
    create: bool = Field(True, description="Create the table and add new columns when missing.")
    partition_by: PartitionBy | None = Field(
        None,
        description="PostgreSQL: range-partition the new table by day or month of a timestamp/date "
        "column; partitions are created for the days a batch holds.",
    )
    copy_batch_size: int = Field(
        10_000,
        ge=1,
        description="PostgreSQL: rows per COPY; a larger batch is "
        "sent in several COPYs in the same transaction.",
    )
    statement_timeout: Seconds | None = Field(
        None,
        gt=0,
        description="PostgreSQL: seconds a statement of the batch may take; longer is a "
        "transient error (retried).",
    )

    model_config = {**ComponentConfig.model_config, "populate_by_name": True}

    @field_validator("table", "db_schema")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return check_identifier(v, "table name") if v else v

    @field_validator("columns", mode="before")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if not isinstance(v, dict) or not v:
            raise ValueError("columns must be a non-empty mapping of column name to path")
        return v

    @field_validator("columns")
    @classmethod
    def _columns(
        cls, v: dict[str, ColumnSpec], info: Any
    ) -> dict[str, ColumnSpec]:  # info: ValidationInfo
        # Each column was validated in place above (errors name columns.<name>.<key>); now the
        # shorthand becomes a spec and the event_id key is added (insert mode: it is the key).
        return parse_columns(v, add_event_id=info.data.get("mode", "insert") == "insert")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None, info: Any) -> str | None:  # info: ValidationInfo
        """A non-key column of a type that compares alike on SQLite and PostgreSQL (checked here,
        after ``mode``, ``key`` and ``columns``, so the error names the ``version`` line)."""
        if v is None:
            return v
        if info.data.get("mode", "insert") != "upsert":
            raise ValueError("only with mode: upsert (insert mode never replaces a row)")
        columns = info.data.get("columns")
        if columns is None:  # columns were refused: that error says it
            return v
        col = columns.get(v)
        if col is None:
            raise ValueError(f"'{v}' is not one of the columns")
        if v in (info.data.get("key") or ()):
            raise ValueError(f"'{v}' is a key column; the version must be another column")
        if col.type not in VERSION_TYPES:
            raise ValueError(
                f"column '{v}' is {col.type}; a version must be of type "
                f"{', '.join(VERSION_TYPES)} (text compares by collation, which differs per database)"
            )
        return v

    @model_validator(mode="after")
    def _upsert(self) -> WarehouseConfig:
        if self.mode == "insert":
            if self.key is not None:
                raise ValueError("key: only with mode: upsert (insert mode is keyed by event_id)")
            return self
        if not self.key:
            raise ValueError("mode: upsert needs key: [the columns identifying a row]")
        unknown = [c for c in self.key if c not in self.columns]
        if unknown:
            raise ValueError(f"key: {', '.join(unknown)} not among the columns")
        if len(set(self.key)) != len(self.key):
            raise ValueError("key: a column is listed twice")
        unkeyable = [c for c in self.key if self.columns[c].type == "json"]
        if unkeyable:
            raise ValueError(
                f"key: {', '.join(unkeyable)} is a json column; a key needs scalar columns"
            )
        part = self.partition_by
        if part is not None and part.column not in self.key:
            raise ValueError(
                f"key: a partitioned table's key must hold the partition column '{part.column}'"
            )
        return self

    @model_validator(mode="after")
    def _partitioning(self) -> WarehouseConfig:
        part = self.partition_by
        if part is None:
            return self
        col = self.columns.get(part.column)
        if col is None:
            raise ValueError(f"partition_by: '{part.column}' is not one of the columns")
        if part.column == "event_id" or col.type not in ("timestamp", "date"):
            raise ValueError(
                f"partition_by: column '{part.column}' must be of type timestamp or date"
            )
        if len(self.table) > 63 - _PARTITION_SUFFIX:
            raise ValueError(
                f"partition_by: table name '{self.table}' is too long for its partition names "
                f"(at most {63 - _PARTITION_SUFFIX} characters)"
            )
        return self

    def table_spec(self) -> TableSpec:
        """The table as the writers see it: key columns (the partition column, an upsert's key) are required."""
        columns = dict(self.columns)
        part = self.partition_by
        required = [
            *(self.key or ()),
            *([part.column] if part else []),
            *([self.version] if self.version else []),
        ]
        for name in required:
            if columns[name].nullable:
                columns[name] = columns[name].model_copy(update={"nullable": False})
        return TableSpec(
            self.db_schema,
            self.table,
            columns,
            part.column if part else None,
            part.granularity if part else "day",
            tuple(self.key or ()),
            _bounds(part),
            self.version,
        )


def _bounds(part: PartitionBy | None) -> tuple[int | None, int | None]:
    """(max_age, max_future) in milliseconds, None where unbounded."""
    if part is None:
        return None, None
    return tuple(None if v is None else duration_ms(v) for v in (part.max_age, part.max_future))  # type: ignore[return-value]


class WarehouseSink(Sink):
    """Write events as rows; a replayed batch adds no rows (``event_id`` is the key)."""

    Config = WarehouseConfig
    summary = "Write events as rows of a SQL table (SQLite, PostgreSQL), idempotent on event_id."
    driver_sql = True  # rows by executemany (SQLite) or COPY on the driver's connection

    @classmethod
    def packages(cls, config: WarehouseConfig) -> frozenset[str]:
        """SQLAlchemy for a table in an attached SQLite schema (``open``); else the plain driver."""
        return frozenset({"sqlalchemy"} if config.db_schema else ())

    @classmethod
    def payload_reads(cls, config: WarehouseConfig) -> list[tuple[tuple[str | int, ...], str]]:
        """Each column's path (metadata ones too: the check passes them by)."""
        return [(("columns", name, "path"), spec.path) for name, spec in config.columns.items()]

    def open(self, resources) -> None:
        cfg = self.config
        # A typo in a path the load-time check could not rule out (no closed schema upstream)
        # fills the column with NULLs: one WARNING at the first batch where no event has it. A
        # required column's (a key, the version, nullable: false) dead-letters each event instead.
        self._absent = AbsentPaths(
            self.id,
            {
                f"column '{name}'": spec.path
                for name, spec in cfg.table_spec().columns.items()
                if spec.nullable
            },
            "their rows have NULL there",
            log,
        )
        # Driver SQL only: the database opens on its plain driver (no SQLAlchemy import), unless
        # the table lives in an attached SQLite schema (SQLAlchemy's inspector knows those).
        attached = cfg.db_schema and resources.config(cfg.resource).scheme == "sqlite"
        self.engine = resources.sql(cfg.resource) if attached else resources.database(cfg.resource)
        self.spec = cfg.table_spec()
        self.where = f"{self.id} (table {self.spec.shown})"
        try:
            with sql_errors(self.where):
                writer_cls = writer_for(self.engine.dialect.name)
                self.writer = writer_cls(
                    self.engine, self.spec, WriteOptions(cfg.copy_batch_size, cfg.statement_timeout)
                )
                self.writer.open(create=cfg.create)
        except SinkError as exc:
            if str(exc).startswith(self.where):
                raise
            # One line per problem, each naming the sink: "events: table events: column 'n' is …".
            raise SinkError(
                "\n".join(f"{self.id}: {line}" for line in str(exc).splitlines())
            ) from exc

    def prepare(self, events: list) -> Prepared:
        self._absent.check(events)
        p = Prepared([])
        p.events, p.payload = self.writer.prepare(
            events, lambda ev, reason: p.reject(ev, self.id, reason)
        )
        return p

    def transaction_resource(self) -> str | None:
        return self.config.resource

    def before_transaction(self, prepared: Prepared) -> None:
        """New partitions, in a transaction of their own, before the batch's transaction opens."""
        if prepared.events:
            with sql_errors(self.where):
                self.writer.before_transaction(prepared.payload)

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        """Write the rows: in the engine's transaction when it gives one (``ctx.connection``: the
        staged state and the checkpoint follow in it), else in a transaction of its own."""
        if not prepared.events:
            return None
        with sql_errors(self.where):
            self.writer.before_transaction(prepared.payload)
            if ctx.connection is not None:
                written = self.writer.write(ctx.connection, prepared.payload)
            else:
                with transaction(self.engine) as conn:
                    written = self.writer.write(conn, prepared.payload)
        # Rows added (a replay adds 0); the engine counts them once the transaction committed.
        return WriteResult(written=written)
