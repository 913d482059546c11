"""The counts an operator reads (the run summary, Prometheus, EMF) agree with what was stored:
when isolation bisects a batch to find a poison record, and when a batch is retried."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from squall.errors import BatchFailed
from squall.observability.metrics import Recorder
from squall.observability.progress import Totals
from squall.observability.prometheus import PrometheusBackend
from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.loader import load_text

CHECKED = """
name: checked
resources: {{db: {{url: "{url}"}}}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: rows, type: warehouse, resource: db, table: {table}, columns: {{n: {{path: n, type: integer}}}}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}}
"""


def _checked_table(database: str, tmp_path: Path, request, table: str) -> str:
    """A warehouse table that refuses n >= 500 (a CHECK constraint): a record's fault at write time."""
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'w.db'}"
        with sqlite3.connect(tmp_path / "w.db") as conn:
            conn.execute(
                f"CREATE TABLE {table} (event_id TEXT PRIMARY KEY, n INTEGER CHECK (n < 500))"
            )
        return url
    import psycopg2

    url = request.getfixturevalue("pg_url")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            f'CREATE TABLE "{table}" (event_id TEXT COLLATE "C" PRIMARY KEY, n INTEGER CHECK (n < 500))'
        )
    conn.close()

    def drop() -> None:
        c = psycopg2.connect(url)
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        c.close()

    request.addfinalizer(drop)
    return url


def _stored(database: str, url: str, table: str) -> int:
    if database == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    import psycopg2

    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{table}"')
        n = cur.fetchone()[0]
    conn.close()
    return n


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_rows_written_while_isolating_a_poison_record_count_as_written_not_present(
    tmp_path: Path, database: str, request, unique_name: str
):
    url = _checked_table(database, tmp_path, request, unique_name)
    topo = load_text(CHECKED.format(url=url, table=unique_name), base_dir=tmp_path)
    engine = Engine(topo.plan).open()
    backend = PrometheusBackend(CollectorRegistry())
    totals = Totals()
    rec = Recorder("checked", [backend, totals])
    # A fresh table: the 9 good rows are new (bisection writes some of them on the way to the
    # poison record, the rest after it); the tenth breaks the CHECK and is dead-lettered.
    batch = records_from([{"n": i} for i in range(9)] + [{"n": 900}])
    with rec.batch(engine, batch) as watch:
        watch.result = engine.process(batch)
    engine.close()
    assert _stored(database, url, unique_name) == 9
    assert totals.outcomes["committed"] == 9 and totals.outcomes["dead_lettered"] == 1
    assert (totals.written, totals.present) == ({"rows": 9}, {"rows": 0})
    r = backend.registry
    labels = {"topology": "checked", "component": "rows"}
    assert r.get_sample_value("squall_sink_rows_total", {**labels, "result": "written"}) == 9
    assert r.get_sample_value("squall_sink_rows_total", {**labels, "result": "present"}) is None
    # The same records again (a replay): every row is found present, none written.
    with rec.batch(engine.open(), batch) as watch:
        watch.result = engine.process(batch)
    engine.close()
    assert (totals.written, totals.present) == ({"rows": 9}, {"rows": 9})


RETRIED = """
name: retried
spout: {type: stdin}
settings: {retry: {attempts: 2, initial_backoff: 0, max_backoff: 0}}
bolts: [{id: decode, type: json}]
sinks:
  - {id: rows, type: 'squall.testing:FaultySink', transient_failures: 3}
  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}
"""


def test_a_batch_retried_after_a_sink_outage_counts_its_records_once(tmp_path: Path, sink_stores):
    """The first delivery fails (the sink is down through both attempts); the second succeeds.
    Per component, each record counts once, as in the topology's outcomes; the retries count all."""
    engine = Engine(load_text(RETRIED, base_dir=tmp_path).plan).open()
    backend = PrometheusBackend(CollectorRegistry())
    totals = Totals()
    rec = Recorder("retried", [backend, totals])
    batch = records_from([{"n": 1}, b"not json", {"n": 3}])
    for attempt in (1, 2):  # a runner delivering the batch again (KCL, Lambda)
        try:
            with rec.batch(engine, batch) as watch:
                watch.result = engine.process(batch)
        except BatchFailed:
            assert attempt == 1
    assert (
        len(sink_stores["rows"]) == 2 and len(sink_stores["dlq"]) == 2
    )  # dead letter written twice
    assert totals.outcomes == {
        "committed": 2,
        "dead_lettered": 1,
        "filtered": 0,
        "failed": 0,
        "held": 0,
    }
    assert totals.failed_batches == 1 and totals.batches == 2

    def count(component: str, outcome: str) -> float | None:
        labels = {"topology": "retried", "component": component, "outcome": outcome}
        return backend.registry.get_sample_value("squall_records_total", labels)

    assert (count("spout", "in"), count("decode", "in"), count("decode", "out")) == (3, 3, 2)
    assert (count("decode", "dead_lettered"), count("dlq", "in"), count("dlq", "out")) == (1, 1, 1)
    assert (count("rows", "in"), count("rows", "out")) == (2, 2)
    retries = backend.registry.get_sample_value(
        "squall_retries_total", {"topology": "retried", "component": "rows"}
    )
    assert retries == 2  # a retry in each delivery: the failed delivery's work still shows here
    by_id = {s.id: s for s in [engine.spout_stats, *engine.stats]}  # what the run summary prints
    assert (by_id["decode"].received, by_id["decode"].dead_lettered, by_id["dlq"].emitted) == (
        3,
        1,
        1,
    )


def test_rows_of_a_sinks_first_write_count_when_earlier_batches_gave_it_nothing(tmp_path: Path):
    """The sink counts rows from its first write on; a batch before that (every record
    dead-lettered upstream) must not make the recorder drop the first write's rows."""
    topo = load_text(CHECKED.format(url=f"sqlite:///{tmp_path / 'w.db'}", table="ev"))
    engine = Engine(topo.plan).open()
    backend = PrometheusBackend(CollectorRegistry())
    totals = Totals()
    rec = Recorder("checked", [backend, totals])
    batches = [
        records_from([b"not json"]),
        records_from([{"n": 1}, {"n": 2}], start=10),
        records_from([{"n": 3}], start=20),
    ]
    for batch in batches:
        with rec.batch(engine, batch) as watch:
            watch.result = engine.process(batch)
    engine.close()
    assert _stored("sqlite", f"sqlite:///{tmp_path / 'w.db'}", "ev") == 3
    assert (totals.written, totals.present) == ({"rows": 3}, {"rows": 0})
    labels = {"topology": "checked", "component": "rows", "result": "written"}
    assert backend.registry.get_sample_value("squall_sink_rows_total", labels) == 3


def test_an_sqs_source_does_not_make_a_time_series_per_message(tmp_path: Path):
    """An SQS message is its own shard (``msg-<id>``): a shard label on the iterator age made one
    time series per message read, for ever (and the console's lag the oldest age ever seen)."""
    import uuid

    from squall.spouts.sqs import Message, message_record

    topo = load_text(RETRIED.replace("transient_failures: 3", "transient_failures: 0"))
    engine = Engine(topo.plan).open()
    backend = PrometheusBackend(CollectorRegistry())
    totals = Totals()
    clock = [1_800_000_000.0]
    rec = Recorder("retried", [backend, totals], clock=lambda: clock[0])
    for sent_ago_s in (600, 5):  # an old message, then a fresh one
        sent_ms = int((clock[0] - sent_ago_s) * 1000)
        batch = [
            message_record("q", Message(str(uuid.uuid4()), "rh", '{"n": 1}', sent_at_ms=sent_ms))
            for _ in range(20)
        ]
        with rec.batch(engine, batch) as watch:
            watch.result = engine.process(batch)
    series = {
        s.name: s
        for m in backend.registry.collect()
        for s in m.samples
        if s.name.startswith("squall_iterator_age_")
    }
    assert series["squall_iterator_age_seconds"].value == 5, series
    assert series["squall_iterator_age_milliseconds"].value == 5000, series  # deprecated
    assert len(series) == 2 and all(s.labels == {"topology": "retried"} for s in series.values())
    assert totals.lag_ms == 5000
