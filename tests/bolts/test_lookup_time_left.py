"""A lookup source's wait is bounded by the runner's time left (a Lambda invocation's remaining
time less squall's margin, ``ComponentContext.time_left``), not only by its ``timeout``: with a
15 s function and the sql source's 30 s default, a table locked by a migration held the query
until Lambda killed the invocation mid-batch, instead of the batch failing cleanly."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sqlalchemy as sa

from squall.bolts.lookup import LookupBolt
from squall.component import ComponentContext
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.bolts.test_lookup import assert_transient_and_untouched, create_apps, run
from tests.enrichment.support import resources


def make_bolt(res, time_left, **options) -> LookupBolt:
    bolt = LookupBolt(
        LookupBolt.Config(id="apps", type="lookup", target="app", **options),
        ComponentContext("test", time_left=time_left),
    )
    bolt.open(res)
    return bolt


def test_a_locked_table_fails_the_batch_within_the_time_left(pg_url_psycopg2, unique_name):
    """The query is cancelled after the time left (0.3 s), not the `timeout` (30 s). The lock's
    holder is ended by the server after 5 s, so a query bounded by `timeout` alone gets its row
    then instead of failing."""
    create_apps(pg_url_psycopg2, unique_name)
    holder = sa.create_engine(pg_url_psycopg2)
    source = {"type": "sql", "resource": "db", "table": unique_name, "columns": ["name"]}
    try:
        bolt = make_bolt(resources(db=pg_url_psycopg2), lambda: 0.3, key="app_id", source=source)
        assert bolt.config.source.timeout == 30
        lock = holder.raw_connection()
        try:
            cur = lock.cursor()
            cur.execute("SET idle_in_transaction_session_timeout = 5000")
            cur.execute(f'LOCK TABLE "{unique_name}" IN ACCESS EXCLUSIVE MODE')
            assert_transient_and_untouched(bolt, [{"app_id": 1}], match="statement timeout")
        finally:
            lock.invalidate()
        assert run(bolt, [{"app_id": 1}])[0] == {0: {"name": "Weather"}}  # lock released
    finally:
        holder.dispose()
        with sa.create_engine(pg_url_psycopg2).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')


def test_no_time_left_sends_no_query(tmp_path, unique_name):
    url = f"sqlite:///{tmp_path / 'apps.db'}"
    create_apps(url, unique_name)
    left = [5.0]
    source = {"type": "sql", "resource": "db", "table": unique_name, "columns": ["name"]}
    bolt = make_bolt(resources(db=url), lambda: left[0], key="app_id", source=source)
    sent: list[str] = []
    sa.event.listen(bolt.source.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    left[0] = 0.0
    assert_transient_and_untouched(bolt, [{"app_id": 1}], match="no time left")
    assert sent == []
    left[0] = 5.0
    assert run(bolt, [{"app_id": 1}])[0] == {0: {"name": "Weather"}}


class SlowEndpoint:
    """GET answers {"name": "Weather"} after `delay` seconds, or at once when released."""

    def __init__(self, delay: float):
        self.release = threading.Event()
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                endpoint.requests += 1
                endpoint.release.wait(delay)
                body = b'{"name": "Weather"}'
                try:
                    self.send_response(200)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/apps/{{key}}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SlowEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_an_http_request_waits_no_longer_than_the_time_left():
    """The endpoint answers after 3 s, within the source's 5 s `timeout`: bounded by it alone,
    the request got its answer; with 0.3 s left it times out and the batch fails cleanly."""
    left = [0.3]
    with SlowEndpoint(delay=3.0) as ep:
        source = {"type": "http", "url": ep.url, "timeout": 5}
        bolt = make_bolt(resources(), lambda: left[0], key="app_id", source=source)
        assert_transient_and_untouched(bolt, [{"app_id": 1}], match="Timeout")
        left[0] = 0.0
        asked = ep.requests
        assert_transient_and_untouched(bolt, [{"app_id": 1}], match="no time left")
        assert ep.requests == asked  # nothing sent
        ep.release.set()
        left[0] = 5.0
        assert run(bolt, [{"app_id": 1}])[0] == {0: {"name": "Weather"}}


def test_the_components_read_the_engines_time_left_as_it_is_set():
    topo = load_text(
        "name: t\nspout: {type: 'squall.testing:ListSpout'}\n"
        "bolts:\n  - {id: decode, type: json}\n"
        "sinks:\n  - {id: out, type: 'squall.testing:MemorySink', name: tl-out}\n"
    )
    engine = Engine(topo.plan)
    context = engine.components[0].context
    assert context.time_left() is None  # no runner's limit
    engine.time_left = lambda: 1.5  # a Lambda runner sets it per invocation
    assert context.time_left() == 1.5
    engine.time_left = None
    assert context.time_left() is None
