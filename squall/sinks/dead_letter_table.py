"""``dead_letter_table`` sink: failed events as rows of a SQL table — durable where local disk is not (Lambda).

One row per (event_id, component), inserted with ``ON CONFLICT DO NOTHING`` in one transaction
per batch, so a replayed batch adds nothing. The engine writes dead letters before committing
sinks and moves the checkpoint only after this transaction committed. A record re-driven by
``squall replay`` (``meta.replay`` > 0) that fails again in the same component replaces its row
(the key is the same): the row holds its latest failure and reason.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from squall import safe_json
from squall.component import ComponentConfig
from squall.errors import SinkError
from squall.sinks.base import Prepared, Sink, WriteContext
from squall.sinks.dead_letter import dead_letter_line
from squall.sinks.warehouse.columns import check_identifier
from squall.topology.driver_engine import Column, create_table, quote
from squall.topology.resource_config import SqlResource
from squall.topology.sql import sql_errors, transaction

#: The table, as SQLAlchemy types it for SQLite and PostgreSQL (``dead_letters_table``).
COLUMNS = (
    Column("event_id", "TEXT", nullable=False, primary_key=True),
    Column("component", "TEXT", nullable=False, primary_key=True),
    Column("stream", "TEXT"),
    Column("reason", "TEXT", nullable=False),
    Column("failed_at", "TEXT", nullable=False),
    Column("meta", "TEXT", nullable=False),
    Column("record", "TEXT"),
    Column("record_base64", "TEXT"),
    Column("payload", "TEXT"),
)
KEY = tuple(c.name for c in COLUMNS if c.primary_key)


class DeadLetterTableConfig(ComponentConfig):
    resource: SqlResource = Field(
        description="SQL resource (SQLite or PostgreSQL) holding the table."
    )
    table: str = Field("squall_dead_letters", description="Table name; created if missing.")
    include_payload: bool = Field(
        False, description="Also store the decoded payload as it was when it failed."
    )

    @field_validator("table")
    @classmethod
    def _ident(cls, v: str) -> str:
        return check_identifier(v, "table name")


def dead_letters_table(name: str, metadata: Any) -> Any:
    """The table as a SQLAlchemy ``Table`` (``squall replay`` reads it with SQLAlchemy)."""
    import sqlalchemy as sa

    return sa.Table(
        name,
        metadata,
        *(
            sa.Column(c.name, sa.Text, primary_key=c.primary_key, nullable=c.nullable)
            for c in COLUMNS
        ),
    )


class DeadLetterTableSink(Sink):
    """Write failed events with their reason and original bytes to a SQL table."""

    Config = DeadLetterTableConfig
    summary = "Write failed events with their reason and original bytes to a SQL table (durable in Lambda)."
    dead_letter = True

    def open(self, resources) -> None:
        # Driver SQL only: on a database no component opened with SQLAlchemy, the plain driver
        # (a Lambda init then imports no SQLAlchemy: ~100-150 ms of CPU).
        self.engine = resources.database(self.config.resource)
        dialect = self.engine.dialect
        if dialect.name not in ("sqlite", "postgresql"):
            raise SinkError(
                f"{self.id}: dead letters go to SQLite or PostgreSQL, not {dialect.name}"
            )
        table, names = quote(self.config.table), [c.name for c in COLUMNS]
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        insert = (
            f"INSERT INTO {table} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join([mark] * len(names))}) "
            f"ON CONFLICT ({', '.join(quote(k) for k in KEY)}) DO "
        )
        self._insert = insert + "NOTHING"
        newer = [quote(n) for n in names if n not in KEY]
        self._replace = insert + "UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in newer)
        with sql_errors(self.id):
            create_table(self.engine, self.config.table, COLUMNS)

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        rows, replayed = [], []
        for ev in prepared.events:
            doc = dead_letter_line(ev, include_payload=self.config.include_payload)
            (replayed if ev.meta.replay else rows).append(
                (  # in the order of COLUMNS
                    doc["event_id"],
                    doc["component"] or "",
                    doc["stream"],
                    doc["reason"],
                    doc["failed_at"],
                    safe_json.dumps_text(doc["meta"]),
                    doc.get("record"),
                    doc.get("record_base64"),
                    safe_json.dumps_text(doc["payload"]) if "payload" in doc else None,
                )
            )
        if not rows and not replayed:
            return
        with sql_errors(self.id), transaction(self.engine) as conn:
            if rows:
                conn.exec_driver_sql(self._insert, rows)
            if replayed:
                conn.exec_driver_sql(self._replace, replayed)
