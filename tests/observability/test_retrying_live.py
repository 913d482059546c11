"""A batch retrying a dependency that is down shows on the metrics while it retries.

Found in an on-call rehearsal (docs/operating.md, "A dependency down"): while the engine retried
the warehouse (``settings.retry``), no metric moved — ``squall_retries_total`` was counted when
the batch ended, so a dashboard could not see "stuck retrying the warehouse" until it gave up.
Here the warehouse is the real PostgreSQL behind a loopback forwarder the test takes down and
brings back; the endpoint of ``squall run --metrics-port`` is scraped while the batch retries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.observability.promtool import promtool_test
from tests.observability.test_alert_series import needs_promtool
from tests.observability.test_prometheus_endpoint import scrape, total
from tests.ports import free_port

TOPOLOGY = """
name: retrying
settings: {{retry: {{attempts: 100, initial_backoff: 0.05, max_backoff: 0.2}}}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: {table}, columns: {{n: {{path: n, type: integer}}}}}}
resources:
  db: {{url: "{url}"}}
"""


class Forwarder:
    """127.0.0.1:``port`` → ``target``; ``down()`` closes the listener and every connection
    (the database is unreachable: refused), ``up()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.port = target, free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None

    def up(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen()
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
            except OSError:
                pass
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def wait_for(proc: subprocess.Popen, port: int, what: str, cond) -> dict:
    """Scrape until ``cond(samples)``; fail when the run exits or after 60 s."""
    deadline = time.monotonic() + 60
    samples: dict = {}
    while time.monotonic() < deadline:
        samples = scrape(port)
        if samples and cond(samples):
            return samples
        if proc.poll() is not None:
            pytest.fail(f"the run exited waiting for {what}: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    pytest.fail(f"never {what}: {samples}")


def gauge(samples: dict, name: str) -> float:
    return max((v for (n, _), v in samples.items() if n == name), default=-1.0)


def test_a_batch_retrying_a_warehouse_that_is_down_shows_while_it_retries(
    tmp_path: Path, pg_url: str
):
    import psycopg2

    parts = urlsplit(pg_url)
    forwarder = Forwarder((parts.hostname or "127.0.0.1", parts.port or 5432))
    forwarder.up()
    via = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{forwarder.port}"))
    table = f"retrying_{uuid.uuid4().hex[:8]}"
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY.format(table=table, url=via))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "squall.cli", "run", str(topology), "--input", "-"]
        + ["--batch-size", "1", "--metrics-port", f"127.0.0.1:{port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(b'{"n": 1}\n')
        proc.stdin.flush()
        first = wait_for(
            proc, port, "a first commit", lambda s: total(s, "squall_checkpoints_total") >= 1
        )
        committed_at = gauge(first, "squall_last_checkpoint_timestamp_seconds")
        assert committed_at > 0
        assert gauge(first, "squall_retrying_since_timestamp_seconds") == 0

        forwarder.down()  # the warehouse goes away: its connection breaks, new ones are refused
        proc.stdin.write(b'{"n": 2}\n')
        proc.stdin.flush()
        retrying = wait_for(
            proc,
            port,
            "retries while the batch retries",
            lambda s: total(s, "squall_retries_total", component="rows") >= 3,
        )
        # the batch has not ended: no second checkpoint, no second batch
        assert total(retrying, "squall_checkpoints_total") == 1
        assert total(retrying, "squall_batches_total") == 1
        since = gauge(retrying, "squall_retrying_since_timestamp_seconds")
        assert since >= committed_at
        assert gauge(retrying, "squall_last_checkpoint_timestamp_seconds") == committed_at
        seen = total(retrying, "squall_retries_total", component="rows")
        later = wait_for(  # the counter goes on moving; the gauge keeps the first retry's time
            proc,
            port,
            "more retries",
            lambda s: total(s, "squall_retries_total", component="rows") > seen,
        )
        assert gauge(later, "squall_retrying_since_timestamp_seconds") == since

        forwarder.up()  # the warehouse is back: the batch commits
        done = wait_for(
            proc, port, "the commit", lambda s: total(s, "squall_checkpoints_total") >= 2
        )
        assert gauge(done, "squall_retrying_since_timestamp_seconds") == 0
        assert gauge(done, "squall_last_checkpoint_timestamp_seconds") >= since
        retries = total(done, "squall_retries_total", component="rows")
        reasons = {
            dict(lbl)["reason"]
            for (n, lbl), v in done.items()
            if n == "squall_retry_reasons_total" and dict(lbl)["component"] == "rows" and v
        }
        assert total(done, "squall_retry_reasons_total", component="rows") == retries
        assert reasons == {"OperationalError"}  # psycopg2's, which the warehouse wrapped
        assert retries >= total(later, "squall_retries_total", component="rows")
    finally:
        out, err = proc.communicate(timeout=60)  # closes stdin: the run ends
        forwarder.down()
    assert proc.returncode == 0, err.decode()
    # each retry counted once: the live count, not again when the batch ended
    assert err.decode().count("; retry ") == retries
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(f"select n from {table} order by n")
        assert cur.fetchall() == [(1,), (2,)]
        cur.execute(f"drop table {table}")


def test_retries_counted_live_are_not_counted_again_when_the_batch_ends():
    """The batch's sample carries the retries the engine counted; a backend that counted some
    live adds only the rest (a retry outside ``Recorder.batch`` — a release — comes with the
    sample)."""
    from prometheus_client import CollectorRegistry

    from squall.observability.metrics import BatchSample, ComponentDelta
    from squall.observability.prometheus import PrometheusBackend

    backend = PrometheusBackend(CollectorRegistry(), topology="t")
    backend.record_retry("t", "s1", "rows", "sink", 10.0)
    backend.record_retry("t", "s1", "rows", "sink", 11.0)
    backend.record_retry("t", "s1", "checkpoint", "checkpoint", 12.0)
    value = backend.registry.get_sample_value
    assert value("squall_retries_total", {"topology": "t", "component": "rows"}) == 2
    assert value("squall_checkpoint_retries_total", {"topology": "t"}) == 1
    since = {"topology": "t", "shard": "s1"}
    assert value("squall_retrying_since_timestamp_seconds", since) == 10.0
    sample = BatchSample("t", 1, 1, 0.1, "ok", shard="s1", ended=20.0, checkpoint_retries=1)
    sample.components = [ComponentDelta("rows", "sink", "warehouse", retries=3)]
    backend.record(sample)
    assert value("squall_retries_total", {"topology": "t", "component": "rows"}) == 3
    assert value("squall_checkpoint_retries_total", {"topology": "t"}) == 1
    assert value("squall_retrying_since_timestamp_seconds", since) == 0


def test_under_the_kcl_the_retrying_time_holds_across_failed_batches():
    """The KCL shard runs a failed batch again (its own backoff): the batch is retrying since
    the first retry of its first attempt, until one ends settled."""
    from prometheus_client import CollectorRegistry

    from squall.observability.metrics import BatchSample
    from squall.observability.prometheus import PrometheusBackend

    backend = PrometheusBackend(CollectorRegistry(), topology="t")
    since = {"topology": "t", "shard": "s1"}
    value = backend.registry.get_sample_value
    backend.record_retry("t", "s1", "rows", "sink", 10.0)
    backend.record(BatchSample("t", 1, 1, 5.0, "failed", shard="s1", ended=15.0))
    assert value("squall_retrying_since_timestamp_seconds", since) == 10.0
    backend.record_retry("t", "s1", "rows", "sink", 45.0)
    backend.record(BatchSample("t", 2, 1, 5.0, "failed", shard="s1", ended=50.0))
    assert value("squall_retrying_since_timestamp_seconds", since) == 10.0
    backend.record(BatchSample("t", 3, 1, 0.1, "ok", shard="s1", ended=80.0, checkpointed=True))
    assert value("squall_retrying_since_timestamp_seconds", since) == 0
    assert value("squall_last_checkpoint_timestamp_seconds", since) == 80.0


@needs_promtool
def test_squall_retrying_fires_for_a_batch_retrying_longer_than_the_threshold(tmp_path: Path):
    from squall.observability.dashboards import Thresholds, prometheus_rules
    from squall.topology.loader import load_text

    topo = load_text(TOPOLOGY.format(table="t", url="postgresql://u@127.0.0.1:1/d"))
    rules = prometheus_rules(topo, thresholds=Thresholds(retrying_s=300))
    [rule] = [r for r in rules["groups"][0]["rules"] if r["alert"] == "SquallRetrying"]
    # minute by minute: settled, then retrying since minute 2 (UNIX time 120) until minute 10
    values = ["0", "0"] + ["120"] * 8 + ["0", "0"]
    shard = "shardId-000000000001"  # a KCL shard's series ("" under squall run: no label)
    series = {
        f'squall_retrying_since_timestamp_seconds{{shard="{shard}",topology="retrying"}}': values
    }
    firing = {
        "exp_labels": {**rule["labels"], "shard": shard},
        "exp_annotations": rule["annotations"],
    }
    promtool_test(
        tmp_path,
        rules,
        series,
        [
            {"eval_time": "1m", "alertname": "SquallRetrying", "exp_alerts": []},
            {"eval_time": "6m", "alertname": "SquallRetrying", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "SquallRetrying", "exp_alerts": [firing]},
            {"eval_time": "11m", "alertname": "SquallRetrying", "exp_alerts": []},
        ],
    )


def test_the_kcl_shard_shows_its_batch_retrying_while_it_waits(tmp_path: Path):
    """Under the KCL the engine retries inside an attempt, the shard runs the failed batch again
    after its own backoff: while it waits, the retries so far are on the endpoint and the batch
    is retrying since its first; once the batch commits the gauge is 0 again."""
    from prometheus_client import CollectorRegistry

    from squall.deploy.kcl import RecordProcessor
    from squall.observability.prometheus import PrometheusBackend
    from squall.topology.executor import Engine
    from squall.topology.loader import load_text
    from tests.deploy.test_kcl_processor import TOPOLOGY as KCL_TOPOLOGY
    from tests.factories import KclCheckpointer, kcl_initialize, kcl_process_records

    text = KCL_TOPOLOGY.format(db=tmp_path / "w.db", transient=5, dlq="").replace(
        "attempts: 1", "attempts: 3, initial_backoff: 0, max_backoff: 0"
    )
    backend = PrometheusBackend(CollectorRegistry(), topology="kcl-test")
    value = backend.registry.get_sample_value
    shard = {"topology": "kcl-test", "shard": "shardId-000000000001"}
    seen: list[tuple] = []

    def shard_waits(seconds: float) -> None:  # the shard's backoff between attempts of the batch
        seen.append(
            (
                value("squall_retries_total", {"topology": "kcl-test", "component": "chaos"}),
                value("squall_retrying_since_timestamp_seconds", shard),
            )
        )

    during: list[tuple] = []

    def engine_waits(seconds: float) -> None:  # the engine's backoff inside an attempt
        during.append(
            (
                value("squall_retries_total", {"topology": "kcl-test", "component": "chaos"}),
                value("squall_retrying_since_timestamp_seconds", shard),
            )
        )

    engine = Engine(load_text(text).plan, sleep=engine_waits)
    p = RecordProcessor(engine, stream="s", sleep=shard_waits)
    p.metrics.backends.append(backend)
    kcl_initialize().dispatch(None, p)
    kcl_process_records([{"n": 1}]).dispatch(KclCheckpointer(), p)
    # the first call failed: its retry is counted while the engine waits to make it
    assert during[0][0] == 1 and during[0][1] > 0
    assert [n for n, _ in during] == [1, 2, 3, 4]
    assert len({t for _, t in during}) == 1  # the batch retries since its first retry
    [(retries, since)] = seen  # 3 calls failed in the first attempt: 2 retries, then it failed
    assert retries == 2 and since == during[0][1]
    assert value("squall_retries_total", {"topology": "kcl-test", "component": "chaos"}) == 4
    assert value("squall_retrying_since_timestamp_seconds", shard) == 0
    assert value("squall_last_checkpoint_timestamp_seconds", shard) >= since


def test_the_grafana_overview_plots_how_long_a_batch_retries():
    from squall.observability.dashboards import grafana_dashboard
    from squall.topology.loader import load_text

    dash = grafana_dashboard(load_text(TOPOLOGY.format(table="t", url="postgresql://u@h:1/d")))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert any("squall_retrying_since_timestamp_seconds" in e for e in exprs)


def test_squall_hung_leaves_a_batch_retrying_to_squall_retrying(tmp_path: Path):
    """A batch retrying a dependency that is down moves no heartbeat (it moves when a batch
    ends): SquallHung fired beside SquallRetrying, calling a known outage "a call that never
    returns, a deadlock". A shard hung with no retry still fires SquallHung."""
    from squall.observability.dashboards import Thresholds, prometheus_rules
    from squall.topology.loader import load_text

    topo = load_text(TOPOLOGY.format(table="t", url="postgresql://u@127.0.0.1:1/d"))
    rules = prometheus_rules(topo, thresholds=Thresholds(retrying_s=300, heartbeat_s=300))
    [hung] = [r for r in rules["groups"][0]["rules"] if r["alert"] == "SquallHung"]
    retrying, stuck = "shardId-000000000001", "shardId-000000000002"
    series = {}
    for shard, since in ((retrying, "120"), (stuck, "0")):
        labels = f'shard="{shard}",topology="retrying"'
        # minute by minute: the last batch ended at minute 1; nothing until minute 10
        series[f"squall_last_progress_timestamp_seconds{{{labels}}}"] = ["0"] + ["60"] * 11
        series[f"squall_retrying_since_timestamp_seconds{{{labels}}}"] = (
            ["0", "0"] + [since] * 8 + ["0", "0"]
        )
    only_stuck = {
        "exp_labels": {**hung["labels"], "shard": stuck},
        "exp_annotations": hung["annotations"],
    }
    promtool_test(
        tmp_path,
        rules,
        series,
        [{"eval_time": "8m", "alertname": "SquallHung", "exp_alerts": [only_stuck]}],
    )
