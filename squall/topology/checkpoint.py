"""Checkpoints: where a stream's per-shard positions are kept between runs, and who saves them.

Spouts do not own checkpoint stores. A spout says what checkpointing it wants
(``Spout.checkpointing()`` → ``CheckpointSpec``); the runner opens the store with
``open_checkpoint_store`` and hands it to the engine as a ``Checkpointer``. The engine saves the
positions of a batch as the last step of its commit sequence — in the same transaction as the
rows and the staged state when the store lives in the same SQL database — and the runner loads
them once at start (``Spout.resume``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from squall.errors import SquallError
from squall.event import Position

if TYPE_CHECKING:
    import sqlalchemy as sa

    from squall.topology.resources import Resources

log = logging.getLogger("squall.checkpoint")


@runtime_checkable
class CheckpointStore(Protocol):
    """Per-shard positions of one application reading one stream."""

    def load(self, stream: str) -> dict[str, Position]: ...

    def save(self, stream: str, positions: dict[str, Position]) -> None: ...


@runtime_checkable
class TransactionalCheckpointStore(CheckpointStore, Protocol):
    """A store that can write inside a transaction the engine already holds on ``resource``."""

    resource: str

    def save_in(
        self, connection: sa.Connection, stream: str, positions: dict[str, Position]
    ) -> None: ...


@dataclass(frozen=True)
class CheckpointSpec:
    """What checkpointing a spout asks for (from its YAML), before any store is opened.

    ``kind``: ``default`` (the ``warehouse`` SQL resource if there is one, else memory), ``sql``,
    ``dynamodb`` or ``memory``.
    """

    kind: Literal["default", "sql", "dynamodb", "memory"] = "default"
    stream: str = ""  # the stream name the spout's records carry; positions are kept per stream
    application: str | None = None
    resource: str | None = None
    table: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    create_table: bool = True
    owner: str = "spout"  # the component id, for messages


class MemoryCheckpointStore:
    """Checkpoints kept in this process only."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Position]] = {}

    def load(self, stream: str) -> dict[str, Position]:
        return dict(self._data.get(stream, {}))

    def save(self, stream: str, positions: dict[str, Position]) -> None:
        current = self._data.setdefault(stream, {})
        for shard, pos in positions.items():
            if shard not in current or pos > current[shard]:
                current[shard] = pos


class SqlCheckpointStore:
    """Checkpoints in a SQL table (``squall_checkpoints`` by default), via SQLAlchemy Core."""

    def __init__(
        self,
        engine: sa.Engine,
        application: str,
        *,
        resource: str = "",
        table: str = "squall_checkpoints",
    ):
        import sqlalchemy as sa

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
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                server_default=sa.func.now(),
                nullable=False,
            ),
        )
        from squall.topology.sql import create_table

        create_table(engine, self.table)

    def load(self, stream: str) -> dict[str, Position]:
        import sqlalchemy as sa

        t = self.table
        q = sa.select(t.c.shard_id, t.c.sequence_number, t.c.sub_sequence_number).where(
            t.c.application == self.application, t.c.stream == stream
        )
        with self.engine.connect() as conn:
            return {
                r.shard_id: Position(r.sequence_number, r.sub_sequence_number)
                for r in conn.execute(q)
            }

    def save(self, stream: str, positions: dict[str, Position]) -> None:
        from squall.topology.sql import begin

        with begin(self.engine) as conn:  # a transaction also on an autocommit engine
            self.save_in(conn, stream, positions)

    def save_in(
        self, connection: sa.Connection, stream: str, positions: dict[str, Position]
    ) -> None:
        """Upsert positions; a position never moves backwards (a replayed batch is harmless)."""
        import sqlalchemy as sa

        if not positions:
            return
        t = self.table
        query = sa.select(t.c.shard_id, t.c.sequence_number, t.c.sub_sequence_number).where(
            t.c.application == self.application,
            t.c.stream == stream,
            t.c.shard_id.in_(list(positions)),
        )
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        current = {
            r.shard_id: Position(r.sequence_number, r.sub_sequence_number)
            for r in connection.execute(query)
        }
        for shard, pos in positions.items():
            old = current.get(shard)
            values = {
                "sequence_number": pos.sequence_number,
                "sub_sequence_number": pos.sub_sequence_number,
                "updated_at": sa.func.now(),
            }
            if old is None:
                connection.execute(
                    t.insert().values(
                        application=self.application, stream=stream, shard_id=shard, **values
                    )
                )
            elif pos > old:
                connection.execute(
                    t.update()
                    .where(
                        t.c.application == self.application,
                        t.c.stream == stream,
                        t.c.shard_id == shard,
                    )
                    .values(**values)
                )


class Checkpointer:
    """The runner's one handle on a checkpoint store: loads at start, saves per batch (engine)."""

    def __init__(self, store: CheckpointStore):
        self.store = store

    @property
    def resource(self) -> str | None:
        """The SQL resource the store lives in (it can then join a batch's transaction), else None."""
        if isinstance(self.store, TransactionalCheckpointStore):
            return self.store.resource or None
        return None

    def load(self, stream: str) -> dict[str, Position]:
        return self.store.load(stream)

    def save(self, stream: str, positions: dict[str, Position], connection: Any = None) -> None:
        if not positions:
            return
        if connection is not None and isinstance(self.store, TransactionalCheckpointStore):
            self.store.save_in(connection, stream, positions)
        else:
            self.store.save(stream, positions)


def open_checkpoint_store(
    spec: CheckpointSpec, resources: Resources | None, application: str
) -> CheckpointStore:
    """Open the store a spout asked for. Raises ``SquallError`` naming the spout when it cannot."""
    app = spec.application or application
    configs = resources.configs if resources is not None else {}
    if spec.kind == "memory":
        return MemoryCheckpointStore()
    if spec.kind == "default":
        if "warehouse" in configs and resources.kind("warehouse") == "sql":
            return SqlCheckpointStore(resources.sql("warehouse"), app, resource="warehouse")
        log.warning(
            "%s: no checkpoint store configured and no 'warehouse' resource: checkpoints are "
            "kept in memory, a restart reads from `start` again",
            spec.owner,
        )
        return MemoryCheckpointStore()
    if spec.kind == "sql":
        name = spec.resource or "warehouse"
        if name not in configs:
            raise SquallError(
                f"{spec.owner}: checkpoint store 'sql' needs a SQL resource; "
                f"there is no resource named '{name}'"
            )
        return SqlCheckpointStore(
            resources.sql(name), app, resource=name, table=spec.table or "squall_checkpoints"
        )
    from squall import aws
    from squall.topology.dynamodb_checkpoint import DynamoDbCheckpointStore

    return DynamoDbCheckpointStore(
        aws.client(
            "dynamodb", region=aws.resolve_region(spec.region, None), endpoint_url=spec.endpoint_url
        ),
        spec.table or "squall_checkpoints",
        app,
        create_table=spec.create_table,
    )
