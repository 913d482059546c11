"""Checkpoint stores: where a spout's per-shard positions are kept between runs.

The SQL store keeps one row per (application, stream, shard). When it lives in the same database
as the topology's only committing warehouse sink, the sink saves positions in the same
transaction as the rows (``save_in``), so a crash can neither lose nor duplicate.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import sqlalchemy as sa

from squall.event import Position


@runtime_checkable
class CheckpointStore(Protocol):
    """Per-shard positions of one application reading one stream."""

    def load(self, stream: str) -> dict[str, Position]: ...

    def save(self, stream: str, positions: dict[str, Position]) -> None: ...


@runtime_checkable
class TransactionalCheckpointStore(CheckpointStore, Protocol):
    """A store that can write inside a transaction a sink already holds."""

    resource: str

    def save_in(self, connection: sa.Connection, stream: str, positions: dict[str, Position]) -> None: ...


class SqlCheckpointStore:
    """Checkpoints in a SQL table (``squall_checkpoints`` by default), via SQLAlchemy Core."""

    def __init__(self, engine: sa.Engine, application: str, *, resource: str = "", table: str = "squall_checkpoints"):
        self.engine = engine
        self.application = application
        self.resource = resource
        meta = sa.MetaData()
        self.table = sa.Table(
            table,
            meta,
            sa.Column("application", sa.String(255), primary_key=True),
            sa.Column("stream", sa.String(255), primary_key=True),
            sa.Column("shard_id", sa.String(255), primary_key=True),
            sa.Column("sequence_number", sa.String(128), nullable=False),
            sa.Column("sub_sequence_number", sa.BigInteger, nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        )
        meta.create_all(engine, checkfirst=True)

    def load(self, stream: str) -> dict[str, Position]:
        t = self.table
        q = sa.select(t.c.shard_id, t.c.sequence_number, t.c.sub_sequence_number).where(
            t.c.application == self.application, t.c.stream == stream
        )
        with self.engine.connect() as conn:
            return {r.shard_id: Position(r.sequence_number, r.sub_sequence_number) for r in conn.execute(q)}

    def save(self, stream: str, positions: dict[str, Position]) -> None:
        with self.engine.begin() as conn:
            self.save_in(conn, stream, positions)

    def save_in(self, connection: sa.Connection, stream: str, positions: dict[str, Position]) -> None:
        """Upsert positions; a position never moves backwards (a replayed batch is harmless)."""
        if not positions:
            return
        t = self.table
        query = sa.select(t.c.shard_id, t.c.sequence_number, t.c.sub_sequence_number).where(
            t.c.application == self.application, t.c.stream == stream, t.c.shard_id.in_(list(positions))
        )
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        current = {r.shard_id: Position(r.sequence_number, r.sub_sequence_number) for r in connection.execute(query)}
        for shard, pos in positions.items():
            old = current.get(shard)
            values = {"sequence_number": pos.sequence_number, "sub_sequence_number": pos.sub_sequence_number,
                      "updated_at": sa.func.now()}
            if old is None:
                connection.execute(t.insert().values(application=self.application, stream=stream, shard_id=shard, **values))
            elif pos > old:
                connection.execute(
                    t.update()
                    .where(t.c.application == self.application, t.c.stream == stream, t.c.shard_id == shard)
                    .values(**values)
                )
