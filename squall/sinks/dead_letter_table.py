"""``dead_letter_table`` sink: failed events as rows of a SQL table — durable where local disk is not (Lambda).

One row per (event_id, component), inserted with ``ON CONFLICT DO NOTHING`` in one transaction
per batch, so a replayed batch adds nothing. The engine writes dead letters before committing
sinks and moves the checkpoint only after this transaction committed. A record re-driven by
``squall replay`` (``meta.replay`` > 0) that fails again in the same component replaces its row
(the key is the same): the row holds its latest failure and reason.
"""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import Field, field_validator
from sqlalchemy.dialects import postgresql, sqlite

from squall import safe_json
from squall.component import ComponentConfig
from squall.errors import SinkError
from squall.sinks.base import Prepared, Sink, WriteContext
from squall.sinks.dead_letter import dead_letter_line
from squall.sinks.warehouse.columns import check_identifier
from squall.topology.sql import create_table, sql_errors


class DeadLetterTableConfig(ComponentConfig):
    resource: str = Field(description="SQL resource (SQLite or PostgreSQL) holding the table.")
    table: str = Field("squall_dead_letters", description="Table name; created if missing.")
    include_payload: bool = Field(
        False, description="Also store the decoded payload as it was when it failed."
    )

    @field_validator("table")
    @classmethod
    def _ident(cls, v: str) -> str:
        return check_identifier(v, "table name")


def dead_letters_table(name: str, metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("component", sa.Text, primary_key=True),
        sa.Column("stream", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("failed_at", sa.Text, nullable=False),
        sa.Column("meta", sa.Text, nullable=False),
        sa.Column("record", sa.Text),
        sa.Column("record_base64", sa.Text),
        sa.Column("payload", sa.Text),
    )


class DeadLetterTableSink(Sink):
    """Write failed events with their reason and original bytes to a SQL table."""

    Config = DeadLetterTableConfig
    summary = "Write failed events with their reason and original bytes to a SQL table (durable in Lambda)."
    dead_letter = True

    def open(self, resources) -> None:
        self.engine: sa.Engine = resources.sql(self.config.resource)
        dialect = self.engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise SinkError(f"{self.id}: dead letters go to SQLite or PostgreSQL, not {dialect}")
        self.table = dead_letters_table(self.config.table, sa.MetaData())
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(self.table)
        keys = ["event_id", "component"]
        self._insert = insert.on_conflict_do_nothing(index_elements=keys)
        newer = [c.name for c in self.table.columns if c.name not in keys]
        self._replace = insert.on_conflict_do_update(
            index_elements=keys, set_={name: insert.excluded[name] for name in newer}
        )
        with sql_errors(self.id):
            create_table(self.engine, self.table)

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> None:
        rows, replayed = [], []
        for ev in prepared.events:
            doc = dead_letter_line(ev, include_payload=self.config.include_payload)
            (replayed if ev.meta.replay else rows).append(
                {
                    "event_id": doc["event_id"],
                    "component": doc["component"] or "",
                    "stream": doc["stream"],
                    "reason": doc["reason"],
                    "failed_at": doc["failed_at"],
                    "meta": safe_json.dumps_text(doc["meta"]),
                    "record": doc.get("record"),
                    "record_base64": doc.get("record_base64"),
                    "payload": safe_json.dumps_text(doc["payload"]) if "payload" in doc else None,
                }
            )
        if not rows and not replayed:
            return
        with sql_errors(self.id), self.engine.begin() as conn:
            if rows:
                conn.execute(self._insert, rows)
            if replayed:
                conn.execute(self._replace, replayed)
