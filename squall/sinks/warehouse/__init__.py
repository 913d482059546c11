"""``warehouse`` sink: rows into a SQL table via SQLAlchemy, one transaction per batch, idempotent on event_id.

SQLite is the embedded default (``INSERT … ON CONFLICT(event_id) DO NOTHING`` with executemany).
Other dialects use the writer registered for them (PostgreSQL: COPY into a staging table, then
an idempotent merge). Values that cannot be stored send their event to dead letter with the reason.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from pydantic import Field, field_validator

from squall.component import ComponentConfig
from squall.errors import SinkError, TransientError
from squall.sinks.base import Prepared, Sink, WriteContext
from squall.sinks.warehouse.columns import (
    ColumnSpec,
    ConversionError,
    RowBuilder,
    build_table,
    check_identifier,
    parse_columns,
)
from squall.sinks.warehouse.writers import writer_for

log = logging.getLogger("squall.sinks.warehouse")


class WarehouseConfig(ComponentConfig):
    resource: str = Field(description="Name of a SQL resource (sqlite:///…, postgresql://…).")
    table: str = Field(description="Target table; created from 'columns' if missing.")
    db_schema: str | None = Field(None, alias="schema", description="Database schema of the table (PostgreSQL).")
    columns: dict[str, ColumnSpec | str] = Field(
        description="Column name → dotted path (text column) or {path, type, nullable, index}. "
                    "An 'event_id' column (meta.event_id) is added when absent; it is the table's key.")
    create: bool = Field(True, description="Create the table and add new columns when missing.")

    model_config = {**ComponentConfig.model_config, "populate_by_name": True}

    @field_validator("table", "db_schema")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return check_identifier(v, "table name") if v else v

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, v: Any) -> Any:
        if not isinstance(v, dict) or not v:
            raise ValueError("columns must be a non-empty mapping of column name to path")
        return parse_columns(v)


class WarehouseSink(Sink):
    """Write events as rows; a replayed batch adds no rows (``event_id`` is the primary key)."""

    Config = WarehouseConfig
    summary = "Write events as rows of a SQL table (SQLite, PostgreSQL), idempotent on event_id."
    transactional_checkpoint = True

    def open(self, resources) -> None:
        self.engine: sa.Engine = resources.sql(self.config.resource)
        dialect = self.engine.dialect.name
        self.table = build_table(sa.MetaData(), self.config.table, self.config.columns, dialect,
                                 self.config.db_schema)
        self.rows = RowBuilder(self.config.columns, json_as_text=True)
        self.writer = writer_for(dialect)(self.engine, self.table)
        if self.config.create:
            with _transient(self.id):
                self.writer.ensure_table(self.config.columns)

    def prepare(self, events: list) -> Prepared:
        p = Prepared([], payload=[])
        row = self.rows.row
        for ev in events:
            try:
                p.payload.append(row(ev))
            except ConversionError as exc:
                p.reject(ev, self.id, str(exc))
                continue
            p.events.append(ev)
        return p

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        with _transient(self.id), self.engine.begin() as conn:
            self.writer.write(conn, prepared.payload)
            if ctx.checkpoint is not None and ctx.checkpoint_store is not None:
                ctx.checkpoint_store.save_in(conn, ctx.stream, ctx.checkpoint)


class _transient:
    """Map the driver's connection-level failures to ``TransientError`` (retried by the engine)."""

    def __init__(self, component: str):
        self.component = component

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.DisconnectionError) or (
            isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
        ):
            raise TransientError(f"{self.component}: database unavailable: {_short(exc)}") from exc
        if isinstance(exc, sa.exc.SQLAlchemyError):
            raise SinkError(f"{self.component}: {_short(exc)}") from exc
        return False


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
