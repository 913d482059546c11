"""A batch whose records all go elsewhere (dropped) still commits its checkpoint in the SQL
transaction it shares with the warehouse: when the database is down that transaction is retried
with no sink in it. Its retries count as the checkpoint's (``squall_checkpoint_retries_total``).

Found in review: they were told to the retry hook as component ``transaction on 'db'`` (kind "")
but counted in no component's stats: ``squall_retries_total`` grew a series for a component that
does not exist, and the batch's sample never carried those retries (the live count never settled)."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from squall.testing import memory_stores, records_from
from squall.topology.checkpoint import Checkpointer, SqlCheckpointStore
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.observability.test_retrying_live import Forwarder

TOPOLOGY = """
name: txr
spout: {{type: 'squall.testing:ListSpout'}}
settings: {{retry: {{attempts: 5, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: humans, type: filter, action: drop, where: [{{field: bot, equals: true}}]}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: {table}, columns: {{n: {{path: n, type: integer}}}}}}
resources:
  db: {{url: "{url}"}}
"""


def test_a_checkpoint_only_transaction_retried_counts_as_the_checkpoints_retries(
    tmp_path: Path, pg_url: str
):
    import psycopg2

    parts = urlsplit(pg_url)
    forwarder = Forwarder((parts.hostname or "127.0.0.1", parts.port or 5432))
    forwarder.up()
    via = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{forwarder.port}"))
    table = f"txr_{uuid.uuid4().hex[:8]}"
    topo = load_text(TOPOLOGY.format(table=table, url=via))
    resources = Resources(topo.resources)
    store = SqlCheckpointStore(
        resources.sql("db"), topo.name, resource="db", table=f"cp_{uuid.uuid4().hex[:8]}"
    )
    engine = Engine(
        topo.plan, resources=resources, checkpointer=Checkpointer(store), sleep=lambda s: None
    )
    told: list[tuple[str, str]] = []

    def hook(component: str, kind: str, error: BaseException) -> None:
        told.append((component, kind))
        forwarder.up()  # the database is back for the retry

    try:
        with memory_stores({}), engine:
            first = engine.process(records_from([{"n": 1, "bot": False}], start=1))
            assert first.ok and first.checkpoint
            forwarder.down()  # every connection breaks; the next is refused
            engine.on_retry = hook
            second = engine.process(records_from([{"n": 2, "bot": True}], start=2))
            assert second.ok and second.checkpoint  # committed on the retry
        # before: [("transaction on 'db'", "")] and checkpoint_stats.retries == 0
        assert told == [("checkpoint", "checkpoint")]
        assert engine.checkpoint_stats.retries == 1
        assert next(s for s in engine.stats if s.id == "rows").retries == 0
    finally:
        forwarder.down()
        resources.close()
        with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
            cur.execute(f"drop table if exists {table}")
            cur.execute(f"drop table if exists {store.table}")
