"""The lookup bolt against real sources: SQLite and PostgreSQL tables, Redis, a local HTTP endpoint."""

from __future__ import annotations

import copy
import enum
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pydantic
import pytest
import redis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squall.bolts.lookup import LookupBolt
from squall.component import ComponentContext
from squall.errors import BatchFailed, SinkError, TopologyError, TransientError
from squall.testing import MemorySink, records_from, run_topology
from squall.topology.outcomes import Outcome
from tests.enrichment.support import make_batch, resources
from tests.ports import free_port

APPS = [
    (1, "ios", "Weather", "gold"),
    (2, "android", "Weather", "free"),
    (3, "ios", "Chess", "free"),
]


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def create_apps(url: str, table: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
        conn.exec_driver_sql(
            f'CREATE TABLE "{table}" (app_id integer, platform text, name text, tier text, '
            f"PRIMARY KEY (app_id, platform))"
        )
        conn.execute(
            sa.text(f'INSERT INTO "{table}" VALUES (:a, :p, :n, :t)'),
            [dict(a=a, p=p, n=n, t=t) for a, p, n, t in APPS],
        )
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_db(request, tmp_path: Path, unique_name: str) -> Iterator[tuple[str, str]]:
    """(url, table) of an apps table on a real database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'apps.db'}"
    else:
        url = request.getfixturevalue("pg_url_psycopg2")
    create_apps(url, unique_name)
    yield url, unique_name
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')
    engine.dispose()


def make_bolt(res, clock=None, **options) -> LookupBolt:
    options.setdefault("target", "app")
    bolt = LookupBolt(
        LookupBolt.Config(id="apps", type="lookup", **options), ComponentContext("test")
    )
    if clock is not None:
        bolt.use_clock(clock)
    bolt.open(res)
    return bolt


def run(bolt, values, start=1):
    out = bolt.process(make_batch(values, start))
    ok = {e.origin - start: e.value.get("app") for e in out.streams.get("default", [])}
    failed = {e.origin - start: e.failure.reason for e in out.streams.get("error", [])}
    dropped = [e.origin - start for e in out.dropped]
    return ok, failed, dropped


def count_queries(engine: sa.Engine) -> list[str]:
    """The lookup queries sent (not the PostgreSQL source's `SET LOCAL statement_timeout`)."""
    seen: list[str] = []

    def sent(conn, cur, stmt, *args) -> None:
        if not stmt.startswith("SET LOCAL statement_timeout"):
            seen.append(stmt)

    sa.event.listen(engine, "before_cursor_execute", sent)
    return seen


# -- SQL ------------------------------------------------------------------------------------------


def test_sql_lookup_enriches_each_event_and_queries_each_distinct_key_once(sql_db):
    url, table = sql_db
    res = resources(db=url)
    bolt = make_bolt(
        res,
        key="app_id",
        source={"type": "sql", "resource": "db", "table": table, "columns": ["name", "tier"]},
    )
    queries = count_queries(res.sql("db"))
    ok, failed, _ = run(
        bolt, [{"app_id": 1}, {"app_id": "1"}, {"app_id": 3}, {"app_id": 1}, {"app_id": 99}]
    )
    # One SELECT for the distinct keys 1, 3, 99 (99 is missing: kept unchanged by default).
    assert [q for q in queries if "SELECT" in q.upper()] and len(queries) == 1
    assert ok == {
        0: {"name": "Weather", "tier": "gold"},
        1: {"name": "Weather", "tier": "gold"},
        2: {"name": "Chess", "tier": "free"},
        3: {"name": "Weather", "tier": "gold"},
        4: None,
    }
    assert failed == {}
    # Each event has its own copy of the record.
    out = bolt.process(make_batch([{"app_id": 1}, {"app_id": 1}], 10))
    first, second = out.streams["default"]
    first.value["app"]["name"] = "changed"
    assert second.value["app"]["name"] == "Weather"


def test_composite_key_and_key_columns(sql_db):
    url, table = sql_db
    bolt = make_bolt(
        resources(db=url),
        key=["app.id", "os"],
        source={
            "type": "sql",
            "resource": "db",
            "table": table,
            "key_columns": ["app_id", "platform"],
            "columns": ["tier"],
        },
        target="meta_app.tier_info",
    )
    out = bolt.process(
        make_batch(
            [
                {"app": {"id": 1}, "os": "ios"},
                {"app": {"id": 1}, "os": "android"},
                {"app": {"id": 2}, "os": "ios"},
            ]
        )
    )
    got = [e.value.get("meta_app") for e in out.streams["default"]]
    assert got == [{"tier_info": {"tier": "gold"}}, None, None]
    out = bolt.process(make_batch([{"app": {"id": 2}, "os": "android"}], 5))
    assert out.streams["default"][0].value["meta_app"] == {"tier_info": {"tier": "free"}}


@pytest.mark.parametrize("on_missing", ["keep", "fail", "drop"])
def test_on_missing_applies_to_unknown_keys_and_events_without_a_key(tmp_path, on_missing):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    bolt = make_bolt(
        resources(db=url),
        key="app_id",
        on_missing=on_missing,
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
    )
    ok, failed, dropped = run(bolt, [{"app_id": 2}, {"app_id": 42}, {"other": 1}, {"app_id": None}])
    assert ok[0] == {"name": "Weather"}
    if on_missing == "keep":
        assert (
            ok == {0: {"name": "Weather"}, 1: None, 2: None, 3: None} and not failed and not dropped
        )
    elif on_missing == "drop":
        assert list(ok) == [0] and dropped == [1, 2, 3] and not failed
    else:
        assert list(ok) == [0] and not dropped
        assert failed == {1: "key '42' not found", 2: "no key at 'app_id'", 3: "no key at 'app_id'"}


def test_a_key_not_found_is_quoted_masked_and_cut_in_its_reason(tmp_path):
    """A key may be a URL with its password, a token, a pasted blob: its reason (a dead letter, a
    log line) masks what ``redact_text`` masks and keeps at most ``MAX_QUOTED`` characters."""
    from squall.errors import MAX_QUOTED

    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    bolt = make_bolt(
        resources(db=url),
        key=["platform", "name"],
        on_missing="fail",
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["tier"]},
    )
    long = "x" * 5000
    values = [
        {"platform": "postgresql://app:s3cret@db/x", "name": "token=t0ps3cret"},
        {"platform": "ios", "name": long},
        {"platform": "alice@example.com", "name": "Weather"},
    ]
    _, failed, _ = run(bolt, values)
    assert failed[0] == "key ['postgresql://app:***@db/x', 'token=***'] not found"
    assert failed[1] == f"key ['ios', '{'x' * MAX_QUOTED}… [5000 chars]'] not found"
    assert failed[2] == "key ['alice@example.com', 'Weather'] not found"


def test_unusable_keys_and_payloads_fail_only_their_event(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    bolt = make_bolt(
        resources(db=url),
        key="app_id",
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
    )
    batch = make_batch(
        [{"app_id": 1}, {"app_id": {"x": 1}}, {"app_id": True}, [1, 2], {"app_id": 3, "app": 5}]
    )
    out = bolt.process(batch)
    failed = {e.origin: e.failure.reason for e in out.streams["error"]}
    assert failed == {
        2: "key 'app_id' is a dict, not text or an integer",
        3: "key 'app_id' is a bool, not text or an integer",
        4: "payload is not a JSON object",
    }
    # The target's parent is not an object: that event fails, the batch goes on.
    bolt2 = make_bolt(
        resources(db=url),
        key="app_id",
        target="app.details",
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
    )
    out = bolt2.process(make_batch([{"app_id": 1, "app": 5}, {"app_id": 1}]))
    assert [e.origin for e in out.streams["error"]] == [1]
    assert "cannot set 'app.details'" in out.streams["error"][0].failure.reason
    assert out.streams["default"][0].value["app"] == {"details": {"name": "Weather"}}


class Platform(str):
    """Text a user's bolt may set: a str subclass (with a ``__str__`` of its own)."""

    def __str__(self) -> str:
        return f"<platform {self!r}>"


class AppNo(enum.IntEnum):
    WEATHER = 1

    def __str__(self) -> str:
        return self.name


def test_a_str_subclass_or_int_enum_key_is_text_or_an_integer(tmp_path):
    """Before: a str subclass failed its event as "key 'platform' is a Platform, not text or an
    integer", though docs/lookup.md takes text; an IntEnum was looked up as its str()."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    bolt = make_bolt(
        resources(db=url),
        key=["app_id", "platform"],
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
    )
    found, failed, _ = run(
        bolt,
        [
            {"app_id": 3, "platform": Platform("ios")},
            {"app_id": AppNo.WEATHER, "platform": "ios"},
        ],
    )
    assert failed == {} and found == {0: {"name": "Chess"}, 1: {"name": "Weather"}}


def test_a_key_that_makes_the_query_fail_is_isolated_to_its_events(pg_url_psycopg2, unique_name):
    create_apps(pg_url_psycopg2, unique_name)
    try:
        res = resources(db=pg_url_psycopg2)
        bolt = make_bolt(
            res,
            key="app_id",
            on_missing="fail",
            source={"type": "sql", "resource": "db", "table": unique_name, "columns": ["name"]},
        )
        values = [
            {"app_id": 1},
            {"app_id": "not-a-number"},
            {"app_id": 3},
            {"app_id": "not-a-number"},
            {"app_id": 2},
            {"app_id": 77},
        ]
        ok, failed, _ = run(bolt, values)
        assert ok == {0: {"name": "Weather"}, 2: {"name": "Chess"}, 4: {"name": "Weather"}}
        assert set(failed) == {1, 3, 5}
        assert (
            "invalid input syntax for type integer" in failed[1] and "SQLSTATE 22P02" in failed[1]
        )
        assert failed[3] == failed[1] and failed[5] == "key '77' not found"
    finally:
        with sa.create_engine(pg_url_psycopg2).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')


@pytest.mark.parametrize(
    "change, reason",
    [
        ("DROP TABLE apps", "no such table: apps"),
        ("ALTER TABLE apps RENAME COLUMN name TO title", "no such column"),
    ],
)
@pytest.mark.parametrize("values", [[{"app_id": 1}, {"app_id": 2}], [{"app_id": 1}] * 2])
def test_a_source_that_fails_for_every_key_is_transient_not_a_mass_dead_letter(
    tmp_path, change, reason, values
):
    """SQLite has no SQLSTATE: a table dropped or a column renamed after start was taken as the
    key's fault when the batch had one distinct key (a quiet kiosk, a Lambda batch of one
    order), and its events were dead-lettered; with several keys, "fails for every key"."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    bolt = make_bolt(
        resources(db=url),
        key="app_id",
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
    )
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql(change)
    batch = make_batch(values)
    before = copy.deepcopy([e.value for e in batch])
    with pytest.raises(TransientError, match=f"table apps: {reason}"):
        bolt.process(batch)
    assert [e.value for e in batch] == before and all(e.failure is None for e in batch)


def test_a_sqlite_row_that_cannot_be_decoded_fails_only_its_keys_events(tmp_path):
    """Python's sqlite3 cannot decode a row's text (invalid UTF-8, written by another program):
    that row's failure (no SQLite error code), not the table's — the batch goes on."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("UPDATE apps SET name = CAST(X'FF41' AS TEXT) WHERE app_id = 2")
    bolt = make_bolt(
        resources(db=url),
        key="app_id",
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
    )
    found, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 2}])
    assert found == {0: {"name": "Weather"}} and "Could not decode" in failed[1]
    found, failed, _ = run(bolt, [{"app_id": 2}])  # alone in its batch too
    assert found == {} and "Could not decode" in failed[0]


def test_ttl_and_negative_ttl_with_an_injected_clock(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    res = resources(db=url)
    clock = FakeClock()
    bolt = make_bolt(
        res,
        clock,
        key="app_id",
        cache={"size": 100, "ttl": 60, "missing_ttl": 10},
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
    )
    queries = count_queries(res.sql("db"))
    assert run(bolt, [{"app_id": 1}, {"app_id": 50}])[0] == {0: {"name": "Weather"}, 1: None}
    assert len(queries) == 1
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("UPDATE apps SET name = 'Sunny' WHERE app_id = 1")
        conn.exec_driver_sql("INSERT INTO apps VALUES (50, 'web', 'Late', 'free')")
    clock.now += 9
    assert run(bolt, [{"app_id": 1}, {"app_id": 50}])[0] == {0: {"name": "Weather"}, 1: None}
    assert len(queries) == 1  # both served from memory
    clock.now += 2  # 11 s: the missing key expired, the record did not
    assert run(bolt, [{"app_id": 1}, {"app_id": 50}])[0] == {
        0: {"name": "Weather"},
        1: {"name": "Late"},
    }
    assert len(queries) == 2
    clock.now += 50  # 61 s: the record expired too
    assert run(bolt, [{"app_id": 1}])[0] == {0: {"name": "Sunny"}}
    assert len(queries) == 3


def test_the_memory_cache_is_bounded(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    res = resources(db=url)
    bolt = make_bolt(
        res,
        key="app_id",
        cache={"size": 2},
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
    )
    queries = count_queries(res.sql("db"))
    run(bolt, [{"app_id": 1}, {"app_id": 2}, {"app_id": 3}])
    assert len(bolt._found) == 2
    run(bolt, [{"app_id": 2}, {"app_id": 3}])
    assert len(queries) == 1
    run(bolt, [{"app_id": 1}])  # evicted: queried again
    assert len(queries) == 2


def test_shared_redis_cache_serves_other_processes_and_remembers_missing_keys(
    tmp_path, redis_url, redis_prefix
):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    options = dict(
        key="app_id",
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
        shared_cache={
            "resource": "cache",
            "ttl": 120,
            "missing_ttl": 30,
            "key_prefix": redis_prefix,
        },
    )
    first_res = resources(db=url, cache=redis_url)
    first = make_bolt(first_res, **options)
    first_queries = count_queries(first_res.sql("db"))
    assert run(first, [{"app_id": 1}, {"app_id": 404}])[0] == {0: {"name": "Weather"}, 1: None}
    assert len(first_queries) == 1
    client = redis.Redis.from_url(redis_url)
    assert json.loads(client.get(f"{redis_prefix}1")) == [{"name": "Weather"}]
    assert client.get(f"{redis_prefix}404") == b"[]"
    assert (
        110 < client.ttl(f"{redis_prefix}1") <= 120 and 20 < client.ttl(f"{redis_prefix}404") <= 30
    )
    # Another process: empty memory, same Redis — no SQL query at all.
    second_res = resources(db=url, cache=redis_url)
    second = make_bolt(second_res, **options)
    second_queries = count_queries(second_res.sql("db"))
    assert run(second, [{"app_id": 1}, {"app_id": 404}])[0] == {0: {"name": "Weather"}, 1: None}
    assert second_queries == [] and second.stats["shared_hits"] == 2
    client.close()


def test_a_shared_cache_in_front_of_every_reflected_column(sql_db, redis_url, redis_prefix):
    """No ``columns:``: the table's reflected column names (SQLAlchemy's ``quoted_name`` on
    PostgreSQL) become the record's keys, and the shared cache stores them as JSON."""
    url, table = sql_db
    bolt = make_bolt(
        resources(db=url, cache=redis_url),
        key=["app_id", "platform"],
        source={"type": "sql", "resource": "db", "table": table},
        shared_cache={"resource": "cache", "key_prefix": redis_prefix},
    )
    found, failed, _ = run(bolt, [{"app_id": 1, "platform": "ios"}])
    assert failed == {}
    assert found == {0: {"app_id": 1, "platform": "ios", "name": "Weather", "tier": "gold"}}
    client = redis.Redis.from_url(redis_url)
    try:
        [key] = client.keys(f"{redis_prefix}*")
        assert json.loads(client.get(key)) == [found[0]]
    finally:
        client.delete(*client.keys(f"{redis_prefix}*"))
        client.close()


def test_composite_keys_whose_parts_hold_the_separator_never_share_a_shared_cache_entry(
    tmp_path, redis_url, redis_prefix
):
    """`["a\x1fb", "c"]` and `["a", "b\x1fc"]` were one Redis entry (parts joined by \x1f): the
    second write overwrote the first, and another process served one key the other's record.
    A one-part key keeps its entry's name (`<prefix><key>`): an upgrade keeps it warm."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE k (a text, b text, name text)")
        conn.exec_driver_sql(
            "INSERT INTO k VALUES ('a\x1fb', 'c', 'first'), ('a', 'b\x1fc', 'second')"
        )
    engine.dispose()
    options = dict(
        key=["a", "b"],
        source={"type": "sql", "resource": "db", "table": "k", "columns": ["name"]},
        shared_cache={"resource": "cache", "key_prefix": redis_prefix},
    )
    values = [{"a": "a\x1fb", "b": "c"}, {"a": "a", "b": "b\x1fc"}]
    expected = {0: {"name": "first"}, 1: {"name": "second"}}
    first = make_bolt(resources(db=url, cache=redis_url), **options)
    assert run(first, values)[0] == expected
    client = redis.Redis.from_url(redis_url)
    try:
        assert sorted(client.keys(f"{redis_prefix}*")) == sorted(
            [
                f'{redis_prefix}["a\\u001fb","c"]'.encode(),
                f'{redis_prefix}["a","b\\u001fc"]'.encode(),
            ]
        )
        # Another process, memory empty: every record from the shared cache, each its own.
        second_res = resources(db=url, cache=redis_url)
        second = make_bolt(second_res, **options)
        queries = count_queries(second_res.sql("db"))
        assert run(second, values)[0] == expected
        assert queries == [] and second.stats["shared_hits"] == 2
        # One-part keys: named as before.
        single = make_bolt(
            resources(db=url, cache=redis_url),
            key="a",
            source={"type": "sql", "resource": "db", "table": "k", "columns": ["name"]},
            shared_cache={"resource": "cache", "key_prefix": redis_prefix + "one:"},
        )
        run(single, [{"a": "a"}])
        assert client.get(f"{redis_prefix}one:a") == b'[{"name":"second"}]'
    finally:
        client.delete(*client.keys(f"{redis_prefix}*"))
        client.close()


def test_http_batch_keys_that_join_alike_each_get_the_answer():
    """`["1:a", "b"]` and `["1", "a:b"]` are both `1:a:b` to the endpoint (`separator: ":"`):
    asked once, and both get its record, as per-key GETs give — one of them was reported missing."""
    with Endpoint({"1:a:b": {"name": "joined"}}) as ep:
        bolt = make_bolt(
            resources(),
            key=["x", "y"],
            source={"type": "http", "batch_url": ep.url + "/apps:batch"},
        )
        ok, failed, _ = run(bolt, [{"x": "1:a", "y": "b"}, {"x": "1", "y": "a:b"}])
        assert (ok, failed) == ({0: {"name": "joined"}, 1: {"name": "joined"}}, {})
        assert ep.requests == [("POST", "1:a:b")]
        bolt.close()


# -- Redis source ----------------------------------------------------------------------------------


def test_redis_hash_json_and_text_sources(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url)
    client.hset(f"{redis_prefix}h:1", mapping={"name": "Weather", "tier": "gold"})
    client.set(f"{redis_prefix}j:1", json.dumps({"name": "Weather", "ids": [1, 2]}))
    client.set(f"{redis_prefix}j:2", "{not json")
    client.set(f"{redis_prefix}t:1", "plain")
    res = resources(r=redis_url)
    hashes = make_bolt(
        res,
        key="app_id",
        on_missing="fail",
        source={"type": "redis", "resource": "r", "key_prefix": f"{redis_prefix}h:"},
    )
    ok, failed, _ = run(hashes, [{"app_id": 1}, {"app_id": 2}])
    assert ok == {0: {"name": "Weather", "tier": "gold"}} and failed == {1: "key '2' not found"}
    values = make_bolt(
        res,
        key="app_id",
        source={
            "type": "redis",
            "resource": "r",
            "data": "json",
            "key_prefix": f"{redis_prefix}j:",
        },
    )
    ok, failed, _ = run(values, [{"app_id": 1}, {"app_id": 2}, {"app_id": 3}])
    assert ok == {0: {"name": "Weather", "ids": [1, 2]}, 2: None}
    assert failed[1].startswith(f"redis key '{redis_prefix}j:2' does not hold JSON")
    text = make_bolt(
        res,
        key=["a", "b"],
        source={"type": "redis", "resource": "r", "data": "text", "key_prefix": f"{redis_prefix}"},
    )
    assert run(text, [{"a": "t", "b": 1}])[0] == {0: "plain"}
    client.close()


def test_a_redis_key_of_the_wrong_type_fails_only_its_events(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url)
    client.hset(f"{redis_prefix}1", mapping={"name": "Weather"})
    client.set(f"{redis_prefix}2", "a string, not a hash")
    bolt = make_bolt(
        resources(r=redis_url),
        key="app_id",
        source={"type": "redis", "resource": "r", "key_prefix": redis_prefix},
    )
    ok, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 2}])
    assert ok == {0: {"name": "Weather"}} and "WRONGTYPE" in failed[1]
    client.close()


# -- HTTP source ----------------------------------------------------------------------------------


class Endpoint:
    """A real HTTP server on 127.0.0.1: GET /apps/<key>, POST /apps:batch; records every request."""

    def __init__(self, records: dict[str, object]):
        self.records = records
        self.requests: list[tuple[str, str]] = []
        self.keys_sent: list[str | None] = []  # each GET's X-Api-Key header
        self.status: int | None = None  # answer every request with this status when set
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _answer(self, status: int, body: object = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                endpoint.requests.append(("GET", self.path))
                endpoint.keys_sent.append(self.headers.get("x-api-key"))
                key = unquote(self.path.split("?")[0].rsplit("/", 1)[-1])
                if endpoint.status:
                    return self._answer(endpoint.status)
                if key.startswith("bad"):
                    return self._answer(400, {"error": "bad key"})
                if key not in endpoint.records:
                    return self._answer(404, {"error": "not found"})
                return self._answer(200, endpoint.records[key])

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                endpoint.requests.append(("POST", ",".join(body["keys"])))
                if endpoint.status:
                    return self._answer(endpoint.status)
                if "bad" in body["keys"]:
                    return self._answer(422, {"error": "bad key"})
                return self._answer(200, {k: endpoint.records.get(k) for k in body["keys"]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


RECORDS = {"1": {"name": "Weather"}, "2": {"name": "Chess"}, "a b/c": {"name": "Odd key"}}


def test_http_headers_are_sent_and_never_shown_in_the_configuration():
    """An API key in `headers` is a secret, as in the http sink: sent with every request, masked
    in the options' repr (what a log or an error message would show)."""
    with Endpoint(RECORDS) as ep:
        source = {"type": "http", "url": ep.url + "/apps/{key}", "headers": {"X-Api-Key": "k-81"}}
        bolt = make_bolt(resources(), key="app_id", source=source)
        ok, _, _ = run(bolt, [{"app_id": 1}])
        assert ok == {0: {"name": "Weather"}} and ep.keys_sent == ["k-81"]
        assert "k-81" not in repr(bolt.config) and "k-81" not in str(bolt.config.model_dump())


def test_http_per_key_gets_with_missing_and_refused_keys():
    with Endpoint(RECORDS) as ep:
        bolt = make_bolt(
            resources(),
            key="app_id",
            on_missing="fail",
            source={"type": "http", "url": ep.url + "/apps/{key}?token=secret", "concurrency": 4},
        )
        ok, failed, _ = run(
            bolt,
            [
                {"app_id": 1},
                {"app_id": 2},
                {"app_id": 1},
                {"app_id": "a b/c"},
                {"app_id": 9},
                {"app_id": "bad"},
            ],
        )
        assert ok == {
            0: {"name": "Weather"},
            1: {"name": "Chess"},
            2: {"name": "Weather"},
            3: {"name": "Odd key"},
        }
        assert failed == {
            4: "key '9' not found",
            5: "lookup endpoint answered HTTP 400 for key 'bad'",
        }
        assert sorted(p for _, p in ep.requests) == sorted(
            [
                "/apps/1?token=secret",
                "/apps/2?token=secret",
                "/apps/a%20b%2Fc?token=secret",
                "/apps/9?token=secret",
                "/apps/bad?token=secret",
            ]
        )
        bolt.close()


def test_http_batch_endpoint_is_called_in_chunks_and_a_refused_key_is_isolated():
    with Endpoint(RECORDS) as ep:
        bolt = make_bolt(
            resources(),
            key="app_id",
            source={
                "type": "http",
                "url": ep.url + "/apps/{key}",
                "batch_url": ep.url + "/apps:batch",
                "batch_size": 2,
            },
        )
        ok, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 2}, {"app_id": 3}, {"app_id": 1}])
        assert ok == {0: {"name": "Weather"}, 1: {"name": "Chess"}, 2: None, 3: {"name": "Weather"}}
        assert ep.requests == [("POST", "1,2"), ("POST", "3")]
        ep.requests.clear()
        ok, failed, _ = run(bolt, [{"app_id": "bad"}, {"app_id": "a b/c"}], 10)
        assert ok == {1: {"name": "Odd key"}} and "HTTP 422" in failed[0]
        bolt.close()


def test_an_http_source_with_only_a_batch_url_needs_no_per_key_url():
    """The README offers `batch_url` as the alternative to `url`; `url` was required anyway, so a
    service with only a batch endpoint had to invent a per-key URL that was never called."""
    with Endpoint(RECORDS) as ep:
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "batch_url": ep.url + "/apps:batch"}
        )
        ok, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 3}])
        assert (ok, failed) == ({0: {"name": "Weather"}, 1: None}, {})
        assert ep.requests == [("POST", "1,3")]
        bolt.close()


@pytest.mark.parametrize("status", [500, 503, 429])
def test_http_server_errors_are_transient_and_change_no_event(status):
    with Endpoint(RECORDS) as ep:
        ep.status = status
        for extra in ({}, {"batch_url": ep.url + "/apps:batch"}):
            bolt = make_bolt(
                resources(),
                key="app_id",
                source={"type": "http", "url": ep.url + "/apps/{key}?token=secret", **extra},
            )
            assert_transient_and_untouched(
                bolt, [{"app_id": 1}, {"app_id": 2}], match=f"HTTP {status}"
            )
            bolt.close()


@pytest.mark.parametrize("status", [401, 405, 407, 403])
def test_http_refused_credentials_are_a_misconfiguration_not_retried(status):
    """Bad credentials (401, 407), a wrong method (405), or a 403 for every key asked (the
    credentials may read nothing) do not mend by waiting: a ``SinkError`` naming the endpoint
    (no query string, no header), which the engine does not retry — a ``TransientError`` was
    retried for ever and the shard stalled without a word about credentials. No event is changed
    or dead-lettered; no key asked twice."""
    with Endpoint(RECORDS) as ep:
        ep.status = status
        for extra in ({}, {"batch_url": ep.url + "/apps:batch?token=secret"}):
            values = [{"app_id": 1}, {"app_id": 2}]  # a 403 for each of several keys asked
            ep.requests.clear()
            bolt = make_bolt(
                resources(),
                key="app_id",
                source={
                    "type": "http",
                    "url": ep.url + "/apps/{key}?token=secret",
                    "headers": {"Authorization": "Bearer tok-77"},
                    **extra,
                },
            )
            batch = make_batch(values)
            before = copy.deepcopy([e.value for e in batch])
            with pytest.raises(SinkError) as info:
                bolt.process(batch)
            message = str(info.value)
            assert f"HTTP {status}" in message and "not retried" in message
            assert ep.url + ("/apps:batch" if extra else "/apps/") in message
            assert "secret" not in message and "tok-77" not in message
            assert [e.value for e in batch] == before and all(e.failure is None for e in batch)
            # each key asked at most once (the other GETs may be in flight when the first fails)
            sent = [r for r in ep.requests if r[0] == ("POST" if extra else "GET")]
            assert 1 <= len(sent) == len(set(sent)) <= (1 if extra else len(values))
            bolt.close()


def test_http_refused_credentials_stop_the_run_without_retries(unique_name):
    """Through the engine: the batch fails at its first attempt (a ``TransientError`` was
    retried until the attempts ran out, and by a KCL worker for ever), nothing dead-lettered."""
    with Endpoint(RECORDS) as ep:
        ep.status = 401
        yaml = f"""
name: lookup
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: app
    type: lookup
    key: app_id
    target: app
    source: {{type: http, url: "{ep.url}/apps/{{key}}"}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {unique_name}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {unique_name}-dlq}}
"""
        with pytest.raises(BatchFailed) as info:
            run_topology(yaml, records_from([{"app_id": 1}, {"app_id": 2}]))
        assert isinstance(info.value.cause, SinkError) and info.value.attempts == 1
        assert "HTTP 401 Unauthorized" in str(info.value)
        assert 1 <= len(ep.requests) == len(set(ep.requests)) <= 2
        assert not MemorySink.stores.get(unique_name) and not MemorySink.stores.get(
            f"{unique_name}-dlq"
        )


def test_http_403_for_some_keys_fails_only_those_keys():
    """A 403 while other keys are answered is the key's: a record the credentials may not read
    (another tenant's), dead-lettered with its reason; the rest is enriched."""
    with Endpoint(RECORDS) as ep:
        forbidden = {"/apps/2"}
        handler = ep.server.RequestHandlerClass
        plain_get = handler.do_GET

        def do_get(self):
            if self.path in forbidden:
                ep.requests.append(("GET", self.path))
                return self._answer(403, {"message": "Forbidden"})
            return plain_get(self)

        handler.do_GET = do_get
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "url": ep.url + "/apps/{key}"}
        )
        ok, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 2}, {"app_id": 9}])
        assert ok == {0: {"name": "Weather"}, 2: None}
        assert failed == {1: "lookup endpoint answered HTTP 403 for key '2'"}
        bolt.close()


def test_an_endpoint_that_refuses_every_key_is_transient_not_a_mass_dead_letter():
    with Endpoint(RECORDS) as ep:
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "url": ep.url + "/apps/{key}"}
        )
        assert_transient_and_untouched(
            bolt, [{"app_id": "bad1"}, {"app_id": "bad2"}], match="fails for every key"
        )
        bolt.close()


def test_a_batch_of_only_malformed_keys_is_dead_lettered_on_postgresql(
    pg_url_psycopg2, unique_name
):
    """PostgreSQL says the value is the problem (SQLSTATE class 22): the events fail, the pipeline goes on."""
    create_apps(pg_url_psycopg2, unique_name)
    try:
        bolt = make_bolt(
            resources(db=pg_url_psycopg2),
            key="app_id",
            source={"type": "sql", "resource": "db", "table": unique_name, "columns": ["name"]},
        )
        ok, failed, _ = run(bolt, [{"app_id": "x"}, {"app_id": "y"}, {"app_id": "x"}])
        assert ok == {} and set(failed) == {0, 1, 2}
        assert all("SQLSTATE 22P02" in reason for reason in failed.values())
    finally:
        with sa.create_engine(pg_url_psycopg2).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')


# -- dependencies down: TransientError before any event changes -----------------------------------


def assert_transient_and_untouched(bolt, values, match=None):
    batch = make_batch(values)
    before = copy.deepcopy([e.value for e in batch])
    with pytest.raises(TransientError, match=match) as info:
        bolt.process(batch)
    assert "secret" not in str(info.value)
    assert [e.value for e in batch] == before and all(e.failure is None for e in batch)


def test_postgresql_down_after_setup(pg_url_psycopg2, unique_name):
    create_apps(pg_url_psycopg2, unique_name)
    try:
        res = resources(db=pg_url_psycopg2)
        bolt = make_bolt(
            res, key="app_id", source={"type": "sql", "resource": "db", "table": unique_name}
        )
        # The database goes away: point the resource's engine at a closed port.
        res._open["db"] = sa.create_engine(
            f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"
        )
        bolt.source.engine = res._open["db"]
        assert_transient_and_untouched(bolt, [{"app_id": 1}, {"app_id": 2}])
    finally:
        with sa.create_engine(pg_url_psycopg2).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')


def test_a_postgresql_table_locked_for_long_is_an_outage_not_a_hang(pg_url_psycopg2, unique_name):
    """A lookup query waiting behind a lock (a migration's ALTER TABLE, a long transaction) had no
    bound: the batch waited as long as the lock was held, with no log, where the http source
    gives up after its `timeout` and the warehouse after its `statement_timeout`. The source's
    `timeout` (30 s by default) cancels it: an outage, retried by the engine, nothing changed."""
    create_apps(pg_url_psycopg2, unique_name)
    holder = sa.create_engine(pg_url_psycopg2)
    try:
        bolt = make_bolt(
            resources(db=pg_url_psycopg2),
            key="app_id",
            source={
                "type": "sql",
                "resource": "db",
                "table": unique_name,
                "columns": ["name"],
                "timeout": 0.2,
            },
        )
        with holder.connect() as conn:  # holds the lock until the end of the block
            conn.exec_driver_sql(f'LOCK TABLE "{unique_name}" IN ACCESS EXCLUSIVE MODE')
            assert_transient_and_untouched(bolt, [{"app_id": 1}], match="statement timeout")
        assert run(bolt, [{"app_id": 1}])[0] == {0: {"name": "Weather"}}  # lock released
    finally:
        holder.dispose()
        with sa.create_engine(pg_url_psycopg2).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')


def test_the_timeout_holds_on_an_autocommit_engine(pg_url_psycopg2, unique_name):
    """A resource whose `options` make its engine autocommit (`isolation_level: AUTOCOMMIT`,
    passed to SQLAlchemy's create_engine) ran the lookup's `SET LOCAL statement_timeout` outside
    any transaction: PostgreSQL ignores it (a WARNING), and the query waited behind the lock with
    no bound again. The lookup's connection takes a transaction of its own for its query (its
    isolation level set back when it returns to the pool). The lock holder is ended by the
    server after 5 s (`idle_in_transaction_session_timeout`), so a lookup without its bound waits
    for that and gets its row instead of failing, not for ever."""
    from squall.topology.resource_config import ResourceConfig
    from squall.topology.resources import Resources

    create_apps(pg_url_psycopg2, unique_name)
    holder = sa.create_engine(pg_url_psycopg2)
    db = ResourceConfig(
        url=pg_url_psycopg2, connect_timeout=2, options={"isolation_level": "AUTOCOMMIT"}
    )
    try:
        bolt = make_bolt(
            Resources({"db": db}),
            key="app_id",
            source={
                "type": "sql",
                "resource": "db",
                "table": unique_name,
                "columns": ["name"],
                "timeout": 0.2,
            },
        )
        lock = holder.raw_connection()  # holds the lock until closed (or ended by the server)
        try:
            cur = lock.cursor()
            cur.execute("SET idle_in_transaction_session_timeout = 5000")
            cur.execute(f'LOCK TABLE "{unique_name}" IN ACCESS EXCLUSIVE MODE')
            assert_transient_and_untouched(bolt, [{"app_id": 1}], match="statement timeout")
        finally:
            lock.invalidate()  # (closed: the server may have ended it already)
        assert run(bolt, [{"app_id": 1}])[0] == {0: {"name": "Weather"}}  # lock released
        engine = bolt.source.engine
        with engine.connect() as conn:  # the pooled connection is autocommit again
            assert conn.connection.dbapi_connection.autocommit
    finally:
        holder.dispose()
        with sa.create_engine(pg_url_psycopg2).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')


def test_redis_source_down():
    """(A shared cache down is no outage of the batch: tests/bolts/test_lookup_shared_cache_down.py.)"""
    down = f"redis://127.0.0.1:{free_port()}/0"
    bolt = make_bolt(resources(r=down), key="app_id", source={"type": "redis", "resource": "r"})
    assert_transient_and_untouched(bolt, [{"app_id": 1}])


def test_http_endpoint_down():
    bolt = make_bolt(
        resources(),
        key="app_id",
        source={"type": "http", "url": f"http://127.0.0.1:{free_port()}/apps/{{key}}?token=secret"},
    )
    assert_transient_and_untouched(bolt, [{"app_id": 1}], match="ConnectError")
    bolt.close()


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {
                "key": "a",
                "source": {
                    "type": "sql",
                    "resource": "db",
                    "table": "t",
                    "key_columns": ["x", "y"],
                },
            },
            "key_columns names 2 column(s) for 1 key path(s)",
        ),
        (
            {"key": "a", "source": {"type": "http", "url": "http://x/apps"}},
            "url needs a {key} placeholder",
        ),
        (
            {"key": "a", "source": {"type": "http", "batch_size": 10}},
            "an http source needs a url (with {key}) or a batch_url",
        ),
        (  # an option of the other mode did nothing, silently
            {"key": "a", "source": {"type": "http", "url": "http://x/{key}", "batch_size": 10}},
            "batch_size is for batch_url's POSTs",
        ),
        (
            {"key": "a", "source": {"type": "http", "batch_url": "http://x/b", "concurrency": 4}},
            "concurrency is for per-key GETs (url)",
        ),
        (
            {
                "key": "a",
                "source": {"type": "redis", "resource": "r"},
                "shared_cache": {"resource": "r"},
            },
            "the source is Redis already",
        ),
        ({"key": "a", "source": {"type": "ftp"}}, "does not match any of the expected tags"),
        ({"key": [], "source": {"type": "redis", "resource": "r"}}, "name at least one key path"),
        (
            {"key": "a", "target": "meta.shard_id", "source": {"type": "redis", "resource": "r"}},
            "metadata is read-only; name a payload path",
        ),
    ],
)
def test_invalid_options(options, message):
    options.setdefault("target", "app")
    with pytest.raises(
        pydantic.ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        LookupBolt.Config(id="x", type="lookup", **options)


def test_a_missing_table_or_column_is_refused_at_setup(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    with pytest.raises(TopologyError, match="table nope does not exist"):
        make_bolt(
            resources(db=url),
            key="app_id",
            source={"type": "sql", "resource": "db", "table": "nope"},
        )
    with pytest.raises(TopologyError, match="has no column.s. colour"):
        make_bolt(
            resources(db=url),
            key="app_id",
            source={
                "type": "sql",
                "resource": "db",
                "table": "apps",
                "columns": ["name", "colour"],
            },
        )


# -- in a topology --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "source", "where", "message"),
    [
        (
            "app_id",
            "{type: sql, resource: db, table: nope}",
            ":13:46: bolts[1].source.table",
            "table nope does not exist",
        ),
        (
            "app_id",
            "{type: sql, resource: db, table: apps, columns: [name, colour]}",
            ":13:61: bolts[1].source.columns",
            "table apps has no column(s) colour",
        ),
        (
            "app.id",
            "{type: sql, resource: db, table: apps}",
            ":10:10: bolts[1].key",
            "table apps has no column(s) id",
        ),
        (
            "app.id",
            "{type: sql, resource: db, table: apps, key_columns: [ident]}",
            ":13:65: bolts[1].source.key_columns",
            "table apps has no column(s) ident",
        ),
    ],
)
def test_a_missing_table_or_column_is_located_in_the_topology_file(
    tmp_path, key, source, where, message
):
    """As every other start-up error: the file, line and column of the option, and the bolt."""
    from squall.topology.executor import Engine

    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    path = tmp_path / "t.yaml"
    path.write_text(
        f"""
name: lookup
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: app
    type: lookup
    key: {key}
    target: app_record
    on_missing: fail
    source: {source}
sinks: [{{id: out, type: stdout}}]
"""
    )
    engine = Engine.for_topology(path)
    try:
        with pytest.raises(TopologyError) as err:
            engine.open()
    finally:
        engine.close()
    assert str(err.value) == f"{path}{where}: bolt 'app': {message}"


def test_lookup_in_a_topology_dead_letters_missing_keys(tmp_path, unique_name):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    yaml = f"""
name: lookup
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: app
    type: lookup
    key: app_id
    target: app
    on_missing: fail
    source: {{type: sql, resource: db, table: apps, columns: [name, tier]}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {unique_name}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {unique_name}-dlq}}
"""
    run = run_topology(yaml, records_from([{"app_id": 1}, {"app_id": 7}, {"app_id": 3}]))
    assert [o.outcome for o in run.outcomes] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    assert [e.value["app"]["name"] for e in MemorySink.stores[unique_name]] == ["Weather", "Chess"]
    assert run.outcomes[1].component == "app" and run.outcomes[1].reason == "key '7' not found"


def test_a_bad_lookup_in_yaml_is_reported_with_line_and_column():
    from squall.topology.loader import load_text

    yaml = """
name: bad
resources:
  db: {url: "sqlite:///x.db"}
spout: {type: stdin}
bolts:
  - id: app
    type: lookup
    key: app_id
    target: app
    source: {type: sql, table: apps, colums: [a]}
sinks:
  - {id: out, type: stdout}
"""
    with pytest.raises(TopologyError) as info:
        load_text(yaml)
    text = str(info.value)
    assert ":11:13: bolts[0].source: missing required key 'resource'" in text
    assert ":11:38: bolts[0].source.colums: unknown key 'colums' (did you mean 'columns'?)" in text


# -- property: the bolt answers what a per-event lookup answers, whatever the batches and the cache --

key_values = st.one_of(st.integers(0, 12), st.sampled_from(["3", "7", "x", ""]), st.none())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.lists(key_values, max_size=12), min_size=1, max_size=5),
    present=st.sets(st.integers(0, 12)),
    cache_size=st.integers(0, 4),
    data=st.data(),
)
def test_any_batches_match_one_query_per_event(
    tmp_path_factory, batches, present, cache_size, data
):
    db = tmp_path_factory.mktemp("prop") / "t.db"
    table = {i: f"name {i}" for i in present}
    with sa.create_engine(f"sqlite:///{db}").begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id integer PRIMARY KEY, name text)")
        if table:
            conn.execute(
                sa.text("INSERT INTO t VALUES (:i, :n)"),
                [{"i": i, "n": n} for i, n in table.items()],
            )
    clock = FakeClock()
    bolt = make_bolt(
        resources(db=f"sqlite:///{db}"),
        clock,
        key="id",
        on_missing="fail",
        cache={"size": cache_size, "ttl": 10, "missing_ttl": 5},
        source={"type": "sql", "resource": "db", "table": "t", "columns": ["name"]},
    )
    start = 1
    for batch in batches:
        values = [{} if k is None else {"id": k} for k in batch]
        ok, failed, _ = run(bolt, values, start)
        start += len(values) + 1
        for i, k in enumerate(batch):
            if k is None:
                assert failed[i] == "no key at 'id'"
            elif str(k).isdigit() and int(k) in table:
                assert ok[i] == {"name": table[int(k)]}
            else:
                assert failed[i] == f"key {str(k)!r} not found"
        clock.now += data.draw(
            st.sampled_from([0, 6, 11])
        )  # within, past the negative, past both TTLs


def test_http_403_for_the_one_key_a_warm_cache_leaves_fails_that_key_not_the_batch():
    """The keys a fetch asks are the cache's misses: with the others cached, another tenant's
    record is often the only key asked. Its 403 is that record's failure (dead-lettered), as
    when other keys are asked beside it; it failed the whole batch as a misconfiguration, and
    the batch came again to the same one-key fetch — a shard stalled for ever behind one record
    (a shared cache stays warm across restarts), with a message blaming the credentials."""
    with Endpoint(RECORDS) as ep:
        handler = ep.server.RequestHandlerClass
        plain_get = handler.do_GET

        def do_get(self):
            if self.path == "/apps/9":
                ep.requests.append(("GET", self.path))
                return self._answer(403, {"message": "Forbidden"})
            return plain_get(self)

        handler.do_GET = do_get
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "url": ep.url + "/apps/{key}"}
        )
        ok, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 2}])  # now cached
        assert ok == {0: {"name": "Weather"}, 1: {"name": "Chess"}} and not failed
        ep.requests.clear()
        ok, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 9}, {"app_id": 2}])
        assert ep.requests == [("GET", "/apps/9")]  # the only key asked
        assert ok == {0: {"name": "Weather"}, 2: {"name": "Chess"}}
        assert failed == {1: "lookup endpoint answered HTTP 403 for key '9'"}
        bolt.close()


def test_http_batch_post_403_for_the_one_key_a_warm_cache_leaves_fails_that_key():
    """As a per-key GET's: a `batch_url` POST of one key (the cache's only miss) answered 403 is
    that key's refusal — its events dead-lettered — not the credentials' (the batch failed at
    every attempt and restart). A POST of several keys answered 403 still stops the run."""
    with Endpoint(RECORDS) as ep:
        handler = ep.server.RequestHandlerClass
        plain_post = handler.do_POST

        def do_post(self):
            length = int(self.headers["content-length"])
            body = self.rfile.read(length)
            keys = json.loads(body)["keys"]
            if "9" in keys:
                ep.requests.append(("POST", ",".join(keys)))
                return self._answer(403, {"message": "Forbidden"})
            self.rfile = io.BytesIO(body)
            return plain_post(self)

        handler.do_POST = do_post
        bolt = make_bolt(
            resources(),
            key="app_id",
            source={"type": "http", "batch_url": ep.url + "/apps:batch?token=secret"},
        )
        ok, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 2}])  # now cached
        assert ok == {0: {"name": "Weather"}, 1: {"name": "Chess"}} and not failed
        ep.requests.clear()
        ok, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": 9}, {"app_id": 2}])
        assert ep.requests == [("POST", "9")]  # the only key asked
        assert ok == {0: {"name": "Weather"}, 2: {"name": "Chess"}}
        assert failed == {1: "lookup endpoint answered HTTP 403 for key '9'"}
        with pytest.raises(SinkError, match="HTTP 403 Forbidden"):
            run(bolt, [{"app_id": 9}, {"app_id": 3}])
        bolt.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@[::1]:8080/v1/apps?token=s3cret#frag", "http://[::1]:8080/v1/apps"),
        ("https://[2001:db8::7]/x", "https://[2001:db8::7]/x"),
        ("http://user:pw@127.0.0.1:9/apps?key=1", "http://127.0.0.1:9/apps"),
    ],
)
def test_a_url_in_a_message_keeps_an_ipv6_hosts_brackets_and_drops_credentials(url, shown):
    """``shown_url`` (an endpoint named in an error): no query, fragment or user info; an IPv6
    host keeps its brackets — without them ``::1:8080`` reads as one address."""
    from squall.bolts.lookup_sources import shown_url

    assert shown_url(url) == shown
