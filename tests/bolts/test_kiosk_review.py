"""The kiosk backend's route and lookup bolts, attacked as a production user would use them
(orders routed by priority into queues, with a cached kiosk lookup): each test failed before
its fix.

- A kiosk table keyed by a ``CHAR(n)`` column (PostgreSQL pads ``k1`` to ``k1      ``): every
  order's kiosk was reported missing, since rows were matched back to keys by their text.
- A shared Redis cache that refuses writes (OOM under ``maxmemory``/``noeviction``, MISCONF): the
  raw ``ResponseError`` escaped the bolt as each record's fault, so every order was dead-lettered
  (the reason quoting the cached record) although the table had answered. A private
  redis-server with a full ``maxmemory``; the shared one is not touched.
- The shared cache's default key prefix was ``squall:lookup:<bolt id>:``: another topology's
  lookup with the same id (``kiosk``) on another table read this one's records, for the cache's
  TTL (an hour), and so did this one after its ``columns`` changed (the old record's shape).
- ``route`` with ``default: error`` (or ``""``) was accepted, though refused in ``routes``: each
  unmatched order was dead-lettered as "stream 'error' of 'priority' is not wired".
- A composite key ``[store.id, kiosk.id]`` on a SQL table without ``key_columns``: both paths
  defaulted to the column ``id``, the query was ``(id, id) IN (…)`` and rows were matched back by
  columns shifted by one, so every key was reported missing. Refused at load.
- A key column whose type has no equality (``json``; PostgreSQL: "operator does not exist",
  42883) was taken as every key's own fault: all traffic was dead-lettered, one key at a time,
  instead of the broken source stopping the batch as docs/lookup.md promises.
- A Redis source failing for every key — the default ``data: hash`` over keys holding JSON
  strings (WRONGTYPE for each) — dead-lettered every event: the "a source failing for every key
  is down" rule of the SQL and HTTP sources was missing from the Redis one.
- A Redis running a script past its time limit answers ``BUSY`` to every command (a plain
  ``ResponseError``): the Redis source and the shared cache let it escape as each record's fault,
  so every event was dead-lettered during the outage. A private redis-server again.
- A row holding ``numeric 'Infinity'`` (PostgreSQL 14+): ``int(Decimal('Infinity'))`` raised
  OverflowError, and the events of that key were dead-lettered; NaN and float infinities passed
  into events as Python floats, which JSON writes as null — so a process served from the shared
  cache saw null where the first one saw ``inf``. All are null now, as JSON has them.
- ``squall validate`` passed a lookup whose ``source.resource`` or ``shared_cache.resource``
  names no resource (a typo); ``squall run`` then failed to start, located at ``source`` for both.
- A key that makes the query fail is dead-lettered with the driver's message, which quotes the
  key whole: a 20,000-character key gave a 20,000-character reason, and a key holding a URL with
  its password kept the password — though docs/lookup.md promises keys masked and cut in reasons.
- A Redis ``data: json`` key holding ``null`` (a deleted kiosk's tombstone) was "found": its
  orders passed ``on_missing: fail`` with ``kiosk: null``, where an HTTP source's null is missing.
- docs/sinks.md: "once the cause of a dead letter is fixed — … a missing lookup row — send its
  records through the topology again" with ``squall replay``. With a shared cache the key was
  still cached as missing (``missing_ttl``, 5 minutes by default): the re-driven orders were
  dead-lettered again. Re-driven records ask the source for keys the caches hold as missing.
- A kiosk table keyed by a ``uuid`` column and kiosks sending their ids in capitals (iOS's
  ``UUID().uuidString``): PostgreSQL found each row, returned it in small letters, and the key
  was reported missing — like the CHAR(n) case, rows matched back by their exact text.
- An HTTP source's ``batch_url`` answering 404 (a wrong path) or a redirect: taken as the keys'
  fault, so a batch of one distinct key — a quiet kiosk, a Lambda batch of one order — was
  dead-lettered, while a batch of several was retried as the source being down.
- An empty key (``"kiosk_id": ""``, a kiosk not set up yet) with a per-key ``url``
  ``…/kiosks/{key}`` sent ``GET …/kiosks/``: the collection, every kiosk, became that order's
  record.
- A key ``..`` or ``.`` with a per-key ``url``: httpx resolves dot segments, so ``…/kiosks/..``
  was ``GET /`` (the API's root, or with ``/v1/kiosks/{key}`` the ``/v1`` document) and
  ``…/kiosks/.`` the collection — each taken as that key's record.
- An endpoint whose answers cannot be decoded (``Content-Encoding: gzip`` on a plain body, as a
  misconfigured proxy sends): httpx's ``DecodingError`` is not a ``TransportError``, escaped the
  bolt as each record's fault, and every event was dead-lettered.
- ``squall_cache_lookups_total`` of a lookup counted its found and missing caches apart: a key
  in neither was two misses, a key known to be missing a miss and a hit — a cold batch of two
  keys read five misses, a warm one a hit rate of 2/3 where every key came from memory.
- An HTTP source answering 429 with ``Retry-After: 86400`` (a day's quota) or ``inf``: the
  engine waited that long before the next attempt (``squall run`` parked, a Lambda to its
  timeout); the ``http`` sink bounds it at 60 s by default, the lookup did not bound it at all.
- ``shared_cache: {key_prefix: ""}`` was accepted: the cache's ``SET k1 … EX 3600`` overwrote
  (and expired) the Redis database's own key ``k1`` — the kiosk app's record of that kiosk.
- ``squall validate`` of the kiosk example without its dead-letter sink warned "stream 'default'
  of 'priority' is not wired": a route with ``default: low`` never sends anything there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from squall.bolts.lookup import SHARED_CACHE_PAUSE, LookupBolt
from squall.component import ComponentContext
from squall.errors import TopologyError, TransientError
from squall.testing import memory_stores, records_from, run_topology
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from tests.bolts.test_lookup import RECORDS, Endpoint, FakeClock, create_apps, make_bolt, run
from tests.enrichment.support import make_batch, resources
from tests.private_redis import busy, private_redis_server, scripted_redis_server


@pytest.fixture
def pg_kiosks(pg_url_psycopg2: str, unique_name: str) -> Iterator[str]:
    """A PostgreSQL kiosk table keyed by CHAR(8) (store, kiosk), as older schemas have them."""
    engine = sa.create_engine(pg_url_psycopg2)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE "{unique_name}" (store char(4), kiosk_id char(8), lane integer, '
            "PRIMARY KEY (store, kiosk_id))"
        )
        conn.exec_driver_sql(
            f"INSERT INTO \"{unique_name}\" VALUES ('s1', 'k1', 1), ('s1', 'k2', 2), ('s2', 'k1', 3)"
        )
    yield unique_name
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP TABLE "{unique_name}"')
    engine.dispose()


def test_a_char_n_key_column_finds_its_rows(pg_url_psycopg2, pg_kiosks):
    bolt = make_bolt(
        resources(db=pg_url_psycopg2),
        key="kiosk_id",
        on_missing="fail",
        source={"type": "sql", "resource": "db", "table": pg_kiosks, "columns": ["lane"]},
    )
    found, failed, _ = run(
        bolt, [{"kiosk_id": "k2"}, {"kiosk_id": "k9"}, {"kiosk_id": "k2"}, {"kiosk_id": "k2 "}]
    )
    assert failed == {1: "key 'k9' not found"}  # before: 'k2' not found as well
    # PostgreSQL finds 'k2 ' too: CHAR(n) compares without trailing blanks
    assert found == {0: {"lane": 2}, 2: {"lane": 2}, 3: {"lane": 2}}


def test_a_composite_key_with_char_n_parts(pg_url_psycopg2, pg_kiosks):
    bolt = make_bolt(
        resources(db=pg_url_psycopg2),
        key=["store", "kiosk_id"],
        on_missing="fail",
        source={"type": "sql", "resource": "db", "table": pg_kiosks, "columns": ["lane"]},
    )
    values = [{"store": s, "kiosk_id": k} for s, k in [("s1", "k1"), ("s2", "k1"), ("s2", "k2")]]
    found, failed, _ = run(bolt, values)
    assert found == {0: {"lane": 1}, 1: {"lane": 3}}
    assert failed == {2: "key ['s2', 'k2'] not found"}


@pytest.fixture(scope="module")
def full_redis(tmp_path_factory) -> Iterator[int]:
    """A private redis-server whose memory is over its ``maxmemory`` (``noeviction``): it answers
    reads and refuses every write with ``OOM command not allowed``."""
    directory = tmp_path_factory.mktemp("full-redis")
    with private_redis_server(directory, "--maxmemory-policy", "noeviction") as port:
        admin = redis.Redis(host="127.0.0.1", port=port)
        admin.set("filler", b"x" * 4_000_000)
        admin.config_set("maxmemory", "1mb")
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            admin.set("probe", "1")
        admin.close()
        yield port


SHARED = """
name: kiosk-full-cache
resources:
  db: {{url: "{db}"}}
  cache: {{url: "redis://127.0.0.1:{port}/0"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - id: app
    type: lookup
    key: app_id
    target: app
    source: {{type: sql, resource: db, table: apps, columns: [name]}}
    shared_cache: {{resource: cache}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink'}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}}
"""


def test_a_shared_cache_refusing_writes_serves_the_batch_uncached(full_redis, tmp_path, caplog):
    db = f"sqlite:///{tmp_path / 'apps.db'}"
    create_apps(db, "apps")
    records = records_from([{"app_id": 1}, {"app_id": 3}, {"app_id": 1}])
    with memory_stores() as stores, caplog.at_level(logging.WARNING, logger="squall.bolts"):
        result = run_topology(SHARED.format(db=db, port=full_redis), records)
    assert [o.outcome for o in result.outcomes] == [Outcome.COMMITTED] * 3  # before: dead letters
    assert stores["dlq"] == []
    assert [e.value["app"] for e in stores["out"]] == [
        {"name": "Weather"},
        {"name": "Chess"},
        {"name": "Weather"},
    ]
    logged = [r.getMessage() for r in caplog.records if "shared lookup cache" in r.getMessage()]
    assert logged and all("maxmemory" in m and "Weather" not in m for m in logged)


def shared_lookup(topology: str, db: str, redis_url: str, **source) -> LookupBolt:
    bolt = LookupBolt(
        LookupBolt.Config(
            id="kiosk",
            type="lookup",
            key="kiosk_id",
            target="kiosk",
            source={"type": "sql", "resource": "db", **source},
            shared_cache={"resource": "cache"},
        ),
        ComponentContext(topology),
    )
    bolt.open(resources(db=db, cache=redis_url))
    return bolt


def test_the_default_shared_cache_prefix_is_the_topologys_and_the_sources(
    tmp_path, redis_url, unique_name
):
    db = f"sqlite:///{tmp_path / 'kiosks.db'}"
    with sa.create_engine(db).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE kiosks (kiosk_id text PRIMARY KEY, store text)")
        conn.exec_driver_sql("CREATE TABLE menus (kiosk_id text PRIMARY KEY, menu text)")
        conn.exec_driver_sql("INSERT INTO kiosks VALUES ('k1', 's1')")
        conn.exec_driver_sql("INSERT INTO menus VALUES ('k1', 'breakfast')")

    def enrich(bolt: LookupBolt) -> dict:
        return bolt.process(make_batch([{"kiosk_id": "k1"}])).streams["default"][0].value["kiosk"]

    client = redis.Redis.from_url(redis_url)
    try:
        orders = shared_lookup(f"{unique_name}-orders", db, redis_url, table="kiosks")
        assert enrich(orders) == {"kiosk_id": "k1", "store": "s1"}
        menus = shared_lookup(f"{unique_name}-menus", db, redis_url, table="menus")
        assert enrich(menus) == {"kiosk_id": "k1", "menu": "breakfast"}  # before: the kiosk's
        redeployed = shared_lookup(
            f"{unique_name}-orders", db, redis_url, table="kiosks", columns=["store"]
        )
        assert enrich(redeployed) == {"store": "s1"}  # before: the old shape, kiosk_id with it
        again = shared_lookup(f"{unique_name}-orders", db, redis_url, table="kiosks")
        assert enrich(again) == {"kiosk_id": "k1", "store": "s1"}
        assert again.stats["shared_hits"] == 1  # the same topology and source share the cache
        keys = sorted(k.decode() for k in client.scan_iter(f"squall:lookup:{unique_name}-*"))
        assert len(keys) == 3 and all(k.endswith(":k1") for k in keys)
        assert keys[0].startswith(f"squall:lookup:{unique_name}-menus:kiosk:")
    finally:
        for key in client.scan_iter(f"squall:lookup:{unique_name}-*"):
            client.delete(key)
        client.close()


def test_one_topology_on_two_databases_never_shares_shared_cache_entries(
    tmp_path, redis_url, unique_name
):
    """The kiosk topology deployed twice (staging and production, two regions), each on its own
    registry, with one Redis: the default prefix hashed the resource's name, not its database,
    so the second read the first one's kiosks (a store moved in one registry, not the other)
    for the cache's TTL. The database's address is part of it now; credentials are not."""

    def registry(name: str, store: str) -> str:
        (tmp_path / name).mkdir()
        db = f"sqlite:///{tmp_path / name / 'kiosks.db'}"
        with sa.create_engine(db).begin() as conn:
            conn.exec_driver_sql("CREATE TABLE kiosks (kiosk_id text PRIMARY KEY, store text)")
            conn.exec_driver_sql(f"INSERT INTO kiosks VALUES ('k1', '{store}')")
        return db

    staging, production = registry("staging", "s-staging"), registry("production", "s-prod")
    client = redis.Redis.from_url(redis_url)
    try:
        for db, store in ((staging, "s-staging"), (production, "s-prod"), (staging, "s-staging")):
            bolt = shared_lookup(unique_name, db, redis_url, table="kiosks", columns=["store"])
            out = bolt.process(make_batch([{"kiosk_id": "k1"}]))
            assert out.streams["default"][0].value["kiosk"] == {"store": store}  # before: s-staging
        assert bolt.stats["shared_hits"] == 1  # the same database again: served by Redis
        assert len(list(client.scan_iter(f"squall:lookup:{unique_name}:*"))) == 2
    finally:
        for key in client.scan_iter(f"squall:lookup:{unique_name}:*"):
            client.delete(key)
        client.close()


def test_the_default_prefix_names_a_database_addressed_in_the_urls_query(
    pg_url_psycopg2, pg_kiosks, redis_url, unique_name
):
    """Two Cloud SQL instances (`postgresql://…@/orders?host=/cloudsql/project:region:name`):
    the host is in the URL's query, and the prefix hashed only the URL's own host, port and
    database — both deployments read each other's rows. A spelling of the same address
    (`postgres://`, port 5432 written or not, the host in capitals) keeps the prefix, and a
    password in the query never reaches it."""
    pg = sa.make_url(pg_url_psycopg2)
    base = f"postgresql://{pg.username}@/{pg.database}?port={pg.port or 5432}"

    def prefix(url: str) -> str:
        bolt = shared_lookup(unique_name, url, redis_url, table=pg_kiosks, columns=["store"])
        bolt.close()
        return bolt.shared.prefix

    loopback = prefix(f"{base}&host=127.0.0.1&password=first")
    assert prefix(f"{base}&password=second&host=127.0.0.1") == loopback
    assert prefix(f"{base}&host=localhost") != loopback  # before: equal
    # one database, two schemas an unqualified table is read from (staging, production)
    search = f"{base}&host=127.0.0.1&options=-csearch_path%3D"
    assert prefix(f"{search}public") != prefix(f"{search}other,public") != loopback
    assert "first" not in loopback and "second" not in loopback
    user, db = pg.username, pg.database  # the test server listens on 5432 (tests.conftest)
    assert (
        prefix(f"postgresql://{user}@localhost/{db}")
        == prefix(f"postgres://{user}@LOCALHOST:5432/{db}")  # before: another prefix
        == prefix(f"postgresql+psycopg2://{user}:secret@localhost:5432/{db}")
    )


ROUTE = """
name: kiosk-route
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: priority, type: route, field: priority, routes: {{rush: high}}, default: {default}}}
sinks:
  - {{id: high_queue, type: stdout}}
  - {{id: rejects, type: dead_letter, path: rejects.jsonl}}
streams:
  - {{from: priority, stream: high, to: high_queue}}
"""


@pytest.mark.parametrize("default", ["error", '""'])
def test_a_route_default_stream_is_checked_as_its_routes_are(default):
    with pytest.raises(TopologyError) as refused:
        load_text(ROUTE.format(default=default))
    assert "bolts[1].default" in str(refused.value)
    assert ("reserved for failed events" if default == "error" else "cannot be empty") in str(
        refused.value
    )


COMPOSITE = """
name: kiosk-composite
resources: {{db: {{url: "sqlite:///kiosks.db"}}}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: kiosk
    type: lookup
    key: [store.id, kiosk.id]
    target: kiosk
    source: {{type: sql, resource: db, table: kiosks{extra}}}
sinks:
  - {{id: out, type: stdout}}
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "the key paths end in the same column name (id): name the table's column"),
        (", key_columns: [id, id]", "source.key_columns names id twice"),
    ],
)
def test_a_composite_key_naming_one_column_twice_is_refused(extra, message):
    with pytest.raises(TopologyError) as refused:
        load_text(COMPOSITE.format(extra=extra))
    assert message in str(refused.value) and "bolts[1]" in str(refused.value)
    load_text(COMPOSITE.format(extra=", key_columns: [store_id, kiosk_id]"))  # the way out


@pytest.mark.parametrize("values", [[{"kiosk_id": "k1"}], [{"kiosk_id": "k1"}, {"kiosk_id": 2}]])
def test_a_key_column_without_equality_is_the_sources_failure(pg_url_psycopg2, unique_name, values):
    engine = sa.create_engine(pg_url_psycopg2)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{unique_name}" (kiosk_id json, lane integer)')
    try:
        bolt = make_bolt(
            resources(db=pg_url_psycopg2),
            key="kiosk_id",
            on_missing="fail",
            source={"type": "sql", "resource": "db", "table": unique_name, "columns": ["lane"]},
        )
        batch = make_batch(values)
        with pytest.raises(TransientError, match="operator does not exist"):
            bolt.process(batch)  # before: each event dead-lettered with that reason
        assert [e.value for e in batch] == values
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE "{unique_name}"')
        engine.dispose()


def test_a_redis_source_failing_for_every_key_is_down(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url)
    client.set(f"{redis_prefix}k1", '{"tier": "gold"}')  # JSON strings; the source says hashes
    client.set(f"{redis_prefix}k2", '{"tier": "silver"}')
    client.hset(f"{redis_prefix}k3", mapping={"tier": "bronze"})
    client.close()
    bolt = make_bolt(
        resources(r=redis_url),
        key="kiosk_id",
        on_missing="fail",
        source={"type": "redis", "resource": "r", "key_prefix": redis_prefix},
    )
    values = [{"kiosk_id": "k1"}, {"kiosk_id": "k2"}, {"kiosk_id": "k1"}]
    batch = make_batch(values)
    with pytest.raises(TransientError, match=r"fails for every key \(2 keys\).*WRONGTYPE"):
        bolt.process(batch)  # before: three dead letters
    assert [e.value for e in batch] == values
    # One key of the wrong type among others is still that key's own failure.
    found, failed, _ = run(bolt, [{"kiosk_id": "k3"}, {"kiosk_id": "k2"}, {"kiosk_id": "k9"}])
    assert found == {0: {"tier": "bronze"}} and "WRONGTYPE" in failed[1]
    assert failed[2] == "key 'k9' not found"


def test_redis_values_that_are_not_json_stay_each_keys_failure(redis_url, redis_prefix):
    """Only a type mismatch for every key (the source misread) is an outage: values that are not
    JSON are the keys' own data, dead-lettered, even when every key of a batch holds one — a
    retry would meet them again and stall the shard (found by the review of 6 December's fourth
    session)."""
    client = redis.Redis.from_url(redis_url)
    client.set(f"{redis_prefix}k1", "{not json")
    client.set(f"{redis_prefix}k2", "tier=gold")
    client.close()
    bolt = make_bolt(
        resources(r=redis_url),
        key="kiosk_id",
        on_missing="fail",
        source={"type": "redis", "resource": "r", "key_prefix": redis_prefix, "data": "json"},
    )
    found, failed, _ = run(bolt, [{"kiosk_id": "k1"}, {"kiosk_id": "k2"}])  # before: retried
    assert found == {} and sorted(failed) == [0, 1]
    assert all("does not hold JSON" in reason for reason in failed.values())


@pytest.fixture(scope="module")
def scripted_redis(tmp_path_factory) -> Iterator[int]:
    with scripted_redis_server(tmp_path_factory.mktemp("busy-redis")) as port:
        yield port


@pytest.mark.parametrize("data", ["hash", "json"])
def test_a_busy_redis_is_down_not_every_records_fault(scripted_redis, data):
    """(A busy shared cache: the batch is served from the source alone,
    tests/bolts/test_lookup_shared_cache_down.py.)"""
    url = f"redis://127.0.0.1:{scripted_redis}/0"
    source = {"type": "redis", "resource": "r", "key_prefix": "app:", "data": data}
    bolt = make_bolt(resources(r=url), key="app_id", source=source)
    values = [{"app_id": 1}]  # one key: no "every key failed" rule to fall back on
    batch = make_batch(values)
    with busy(scripted_redis), pytest.raises(TransientError, match="BUSY"):
        bolt.process(batch)  # before: a raw ResponseError (json, shared cache: each record's
        # fault, dead-lettered) or the key's own failure (hash)
    assert [e.value for e in batch] == values


def test_infinite_and_nan_numbers_of_a_row_are_null(
    pg_url_psycopg2, unique_name, redis_url, redis_prefix
):
    engine = sa.create_engine(pg_url_psycopg2)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE "{unique_name}" (kiosk_id text PRIMARY KEY, credit numeric, '
            "rating float8, lane numeric)"
        )
        conn.exec_driver_sql(
            f"INSERT INTO \"{unique_name}\" VALUES ('k1', 'Infinity', '-Infinity', 2), "
            "('k2', 'NaN', 'NaN', 2.5)"
        )
    try:
        options = dict(
            key="kiosk_id",
            on_missing="fail",
            source={"type": "sql", "resource": "db", "table": unique_name},
            shared_cache={"resource": "cache", "key_prefix": redis_prefix},
        )
        first = make_bolt(resources(db=pg_url_psycopg2, cache=redis_url), **options)
        found, failed, _ = run(first, [{"kiosk_id": "k1"}, {"kiosk_id": "k2"}])
        assert failed == {}  # before: 'k1' failed with OverflowError
        assert found == {
            0: {"kiosk_id": "k1", "credit": None, "rating": None, "lane": 2},
            1: {"kiosk_id": "k2", "credit": None, "rating": None, "lane": 2.5},
        }
        second = make_bolt(resources(db=pg_url_psycopg2, cache=redis_url), **options)
        assert run(second, [{"kiosk_id": "k1"}, {"kiosk_id": "k2"}])[0] == found
        assert second.stats["shared_hits"] == 2
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE "{unique_name}"')
        engine.dispose()


def test_validate_finds_a_lookups_unknown_resources():
    text = COMPOSITE.format(extra=", key_columns: [store_id, kiosk_id]").replace(
        "resource: db,", "resource: dbb,"
    )
    text = text.replace(
        "    target: kiosk\n", "    target: kiosk\n    shared_cache: {resource: cahce}\n"
    )
    text = text.replace("resources: {db:", "resources: {cache: {url: 'redis://127.0.0.1:1/0'}, db:")
    with pytest.raises(TopologyError) as refused:
        load_text(text)  # what `squall validate` runs; before: no problem
    assert [str(p) for p in refused.value.problems] == [
        "<string>:12:35: bolts[1].source.resource: unknown resource 'dbb' (did you mean 'db'?)",
        "<string>:11:30: bolts[1].shared_cache.resource: unknown resource 'cahce' "
        "(did you mean 'cache'?)",
    ]


def test_a_shared_cache_on_a_sql_resource_is_located_at_its_resource(tmp_path):
    db = f"sqlite:///{tmp_path / 'apps.db'}"
    create_apps(db, "apps")
    with pytest.raises(TopologyError) as refused:
        make_bolt(
            resources(db=db),
            key="app_id",
            source={"type": "sql", "resource": "db", "table": "apps"},
            shared_cache={"resource": "db"},
        )
    assert "apps.shared_cache.resource" in str(refused.value)  # before: apps.source
    assert "is not Redis" in str(refused.value)


def test_a_drivers_message_quoting_a_key_is_masked_and_cut(pg_url_psycopg2, unique_name):
    create_apps(pg_url_psycopg2, unique_name)  # app_id is an integer column
    try:
        bolt = make_bolt(
            resources(db=pg_url_psycopg2),
            key="app_id",
            source={"type": "sql", "resource": "db", "table": unique_name, "columns": ["name"]},
        )
        secret = "postgresql://kiosk:hunter2-7f3@db.internal/orders"
        found, failed, _ = run(bolt, [{"app_id": "x" * 20_000}, {"app_id": secret}, {"app_id": 1}])
        assert found == {2: {"name": "Weather"}}
        assert failed[0].startswith('invalid input syntax for type integer: "xxx')
        assert len(failed[0]) < 400 and failed[0].endswith("chars] (SQLSTATE 22P02)")
        assert "hunter2" not in failed[1] and "(SQLSTATE 22P02)" in failed[1]
    finally:
        with sa.create_engine(pg_url_psycopg2).begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')


def test_a_redis_json_null_is_missing_as_an_http_null_is(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url)
    client.set(f"{redis_prefix}k1", "null")
    client.set(f"{redis_prefix}k2", '{"tier": "gold"}')
    client.close()
    bolt = make_bolt(
        resources(r=redis_url),
        key="kiosk_id",
        on_missing="fail",
        source={"type": "redis", "resource": "r", "key_prefix": redis_prefix, "data": "json"},
    )
    found, failed, _ = run(bolt, [{"kiosk_id": "k1"}, {"kiosk_id": "k2"}])
    assert failed == {0: "key 'k1' not found"}  # before: passed on with app = None
    assert found == {1: {"tier": "gold"}}


REPLAYED = """
name: kiosk-replay
resources:
  db: {{url: "sqlite:///kiosks.db"}}
  cache: {{url: "{redis_url}"}}
spout: {{type: file, path: orders.jsonl}}
bolts:
  - {{id: decode, type: json, event_id_field: order_id}}
  - id: kiosk
    type: lookup
    key: kiosk_id
    target: kiosk
    source: {{type: sql, resource: db, table: kiosks}}
    shared_cache: {{resource: cache, key_prefix: "{prefix}"}}
    on_missing: fail
sinks:
  - {{id: out, type: stdout}}
  - {{id: rejects, type: dead_letter, path: rejects.jsonl}}
"""


def test_a_replay_after_the_missing_row_was_added_finds_it(tmp_path, redis_url, redis_prefix):
    from tests.deploy.test_local_runner import run_cli

    topology = tmp_path / "kiosk.yaml"
    topology.write_text(REPLAYED.format(redis_url=redis_url, prefix=redis_prefix))
    (tmp_path / "orders.jsonl").write_text(
        '{"order_id": "o1", "kiosk_id": "k1"}\n{"order_id": "o2", "kiosk_id": "k4"}\n'
    )
    db = sa.create_engine(f"sqlite:///{tmp_path / 'kiosks.db'}")
    with db.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE kiosks (kiosk_id text PRIMARY KEY, tier text)")
        conn.exec_driver_sql("INSERT INTO kiosks VALUES ('k1', 'gold')")
    first = run_cli(["run", str(topology)])
    assert "committed 1, dead-lettered 1" in first.stdout + first.stderr
    with db.begin() as conn:  # the cause fixed: the kiosk's row added
        conn.exec_driver_sql("INSERT INTO kiosks VALUES ('k4', 'silver')")
    db.dispose()
    replay = run_cli(["replay", str(topology), str(tmp_path / "rejects.jsonl")])
    assert replay.returncode == 0, replay.stdout + replay.stderr
    out = replay.stdout + replay.stderr
    assert "committed 1, dead-lettered again 0" in out  # before: dead-lettered again 1
    assert '"kiosk":{"kiosk_id":"k4","tier":"silver"}' in replay.stdout


def test_a_uuid_key_column_finds_its_rows_whatever_the_letters(pg_url_psycopg2, unique_name):
    engine = sa.create_engine(pg_url_psycopg2)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{unique_name}" (kiosk_id uuid PRIMARY KEY, lane int)')
        conn.exec_driver_sql(
            f"INSERT INTO \"{unique_name}\" VALUES ('550e8400-e29b-41d4-a716-446655440000', 4)"
        )
    try:
        bolt = make_bolt(
            resources(db=pg_url_psycopg2),
            key="kiosk_id",
            on_missing="fail",
            source={"type": "sql", "resource": "db", "table": unique_name, "columns": ["lane"]},
        )
        ids = [
            "550E8400-E29B-41D4-A716-446655440000",  # iOS
            "550e8400-e29b-41d4-a716-446655440000",
            "{550e8400-e29b-41d4-a716-446655440000}",
            "00000000-0000-0000-0000-000000000000",
        ]
        found, failed, _ = run(bolt, [{"kiosk_id": i} for i in ids])
        assert found == {0: {"lane": 4}, 1: {"lane": 4}, 2: {"lane": 4}}  # before: 1 only
        assert failed == {3: "key '00000000-0000-0000-0000-000000000000' not found"}
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE "{unique_name}"')
        engine.dispose()


@pytest.mark.parametrize("status", [404, 301, 410])
def test_a_batch_url_answering_404_is_down_even_for_one_key(status):
    with Endpoint(RECORDS) as ep:
        ep.status = status
        bolt = make_bolt(
            resources(), key="app_id", source={"type": "http", "batch_url": ep.url + "/nope"}
        )
        for values in ([{"app_id": 1}], [{"app_id": 1}, {"app_id": 2}]):
            batch = make_batch(values)
            with pytest.raises(TransientError, match=f"HTTP {status}"):
                bolt.process(batch)  # before: one key's batch was dead-lettered
            assert [e.value for e in batch] == values
        ep.status = 422  # a status one key may cause is still split to find it
        found, failed, _ = run(bolt, [{"app_id": 1}])
        assert found == {} and "HTTP 422" in failed[0]
        bolt.close()


def test_an_empty_key_is_not_sent_as_a_url_of_another_resource():
    with Endpoint({"": [{"kiosk": "k1"}, {"kiosk": "k2"}], "k1": {"lane": 1}}) as ep:
        bolt = make_bolt(
            resources(),
            key="kiosk_id",
            on_missing="fail",
            source={"type": "http", "url": ep.url + "/kiosks/{key}"},
        )
        values = [{"kiosk_id": k} for k in ("", "k1", "..", ".")]
        found, failed, _ = run(bolt, values)
        assert found == {1: {"lane": 1}}  # before: 0 and 3 got every kiosk, 2 the root's answer
        assert failed == {0: "key '' not found", 2: "key '..' not found", 3: "key '.' not found"}
        assert ep.requests == [("GET", "/kiosks/k1")]
        bolt.close()


def test_an_empty_or_dot_key_in_the_query_string_is_asked_for():
    """In the query string such keys are values like any other: they were reported missing
    without a request (the guard above is for keys in the URL's path)."""
    with Endpoint({"kiosk": {"lane": 9}}) as ep:
        bolt = make_bolt(
            resources(),
            key="kiosk_id",
            on_missing="fail",
            source={"type": "http", "url": ep.url + "/kiosk?id={key}"},
        )
        found, failed, _ = run(bolt, [{"kiosk_id": k} for k in ("", "..", ".")])
        assert failed == {} and found == {0: {"lane": 9}, 1: {"lane": 9}, 2: {"lane": 9}}
        assert sorted(ep.requests) == [
            ("GET", "/kiosk?id="),
            ("GET", "/kiosk?id=."),
            ("GET", "/kiosk?id=.."),
        ]
        bolt.close()


def test_the_default_prefix_hashes_an_http_url_without_its_token_but_with_its_other_parameters():
    def prefix(url: str) -> str:
        config = LookupBolt.Config(
            id="kiosk", type="lookup", key="k", target="t", source={"type": "http", "url": url}
        )
        return LookupBolt(config, ComponentContext("orders"))._default_prefix()

    base = "https://api.example/v1/kiosks/{key}"
    assert prefix(base + "?token=a1") == prefix(base + "?token=b2")  # a rotated token
    assert prefix(base) != prefix("https://api.example/v2/kiosks/{key}")
    assert prefix(base).startswith("squall:lookup:orders:kiosk:")
    # Other query parameters name another source: a cache kept across `?lang=en` → `?lang=fr`
    # served English records for an hour (the whole query string was left out of the hash).
    assert prefix(base + "?lang=en&token=a1") != prefix(base + "?lang=fr&token=a1")
    assert prefix(base + "?lang=en&api_key=a1") == prefix(base + "?lang=en&api_key=b2")
    assert prefix(base + "?lang=en&X-Amz-Credential=a") == prefix(
        base + "?lang=en&X-Amz-Credential=b"
    )


def test_an_http_url_without_other_parameters_keeps_the_prefix_it_had_before_they_counted():
    """Hashing the query parameters changed every http lookup's prefix, those without any too:
    the upgrade started each with a cold shared cache (every key asked of the endpoint at once).
    The prefixes below are those of the release before (1573fb9)."""

    def prefix(url: str) -> str:
        config = LookupBolt.Config(
            id="kiosk", type="lookup", key="k", target="t", source={"type": "http", "url": url}
        )
        return LookupBolt(config, ComponentContext("orders"))._default_prefix()

    api = "https://api.example/v1"
    assert prefix(api + "/kiosks/{key}") == "squall:lookup:orders:kiosk:be083ca334d0:"
    assert prefix(api + "/kiosks/{key}?token=a1") == "squall:lookup:orders:kiosk:be083ca334d0:"
    assert prefix(api + "/kiosk?id={key}") == "squall:lookup:orders:kiosk:46ff4d8b7506:"
    # A parameter that names the source still counts.
    assert prefix(api + "/kiosk?id={key}&lang=en") != prefix(api + "/kiosk?id={key}")
    assert prefix(api + "/kiosk?id={key}&lang=en") != prefix(api + "/kiosk?id={key}&lang=fr")


def test_an_answer_that_cannot_be_decoded_is_the_endpoints_failure():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Gzipless(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b'{"lane": 1}'  # said to be gzip, sent plain
            self.send_response(200)
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gzipless)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/kiosks/{{key}}"
        bolt = make_bolt(resources(), key="kiosk_id", source={"type": "http", "url": url})
        batch = make_batch([{"kiosk_id": "k1"}])
        with pytest.raises(TransientError, match="DecodingError"):
            bolt.process(batch)  # before: a raw DecodingError, each event dead-lettered
        assert batch[0].value == {"kiosk_id": "k1"}
        bolt.close()
    finally:
        server.shutdown()
        server.server_close()


def test_the_cache_metric_counts_one_lookup_per_key(tmp_path):
    from prometheus_client import CollectorRegistry

    from squall.observability.metrics import Recorder
    from squall.observability.prometheus import PrometheusBackend
    from squall.topology.executor import Engine
    from tests.observability.test_metrics import value

    db = f"sqlite:///{tmp_path / 'apps.db'}"
    create_apps(db, "apps")
    topo = load_text(
        f"""
name: kiosk-metrics
resources: {{db: {{url: "{db}"}}}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: app, type: lookup, key: app_id, target: app, source: {{type: sql, resource: db, table: apps}}}}
sinks: [{{id: out, type: stdout}}]
"""
    )
    engine = Engine(topo.plan).open()
    backend = PrometheusBackend(CollectorRegistry())
    recorder = Recorder("kiosk-metrics", [backend])

    def lookups(result: str) -> float:
        labels = dict(topology="kiosk-metrics", component="app", result=result)
        return value(backend.registry, "squall_cache_lookups_total", **labels)

    try:
        for start in (1, 4):  # app 1 exists, 404 does not; the second batch is all memory
            batch = records_from([{"app_id": 1}, {"app_id": 404}, {"app_id": 1}], start=start)
            with recorder.batch(engine, batch) as watch:
                watch.result = engine.process(batch)
            if start == 1:
                assert (lookups("miss"), lookups("hit")) == (2, 0)  # before: 4 misses
        assert (lookups("miss"), lookups("hit")) == (2, 2)  # before: 5 misses, 2 hits
    finally:
        engine.close()


@pytest.mark.parametrize(("header", "wait"), [("86400", 60.0), ("inf", 60.0), ("2", 2.0)])
def test_a_retry_after_is_bounded(header, wait):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Quota(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(429)
            self.send_header("retry-after", header)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quota)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/kiosks/{{key}}"
        bolt = make_bolt(resources(), key="kiosk_id", source={"type": "http", "url": url})
        with pytest.raises(TransientError, match="HTTP 429") as raised:
            bolt.process(make_batch([{"kiosk_id": "k1"}]))
        assert raised.value.retry_after == wait  # before: 86400 and inf
        bolt.close()
    finally:
        server.shutdown()
        server.server_close()


def test_an_empty_shared_cache_prefix_is_refused():
    text = COMPOSITE.format(extra=", key_columns: [store_id, kiosk_id]").replace(
        "    target: kiosk\n",
        '    target: kiosk\n    shared_cache: {resource: db, key_prefix: ""}\n',
    )
    with pytest.raises(TopologyError) as refused:
        load_text(text)  # before: accepted; the cache then SET … EX over the database's own keys
    assert "bolts[1].shared_cache.key_prefix" in str(refused.value)
    assert "at least 1 character" in str(refused.value)


def test_validate_does_not_warn_of_a_route_stream_nothing_is_sent_to(tmp_path):
    from tests.deploy.test_local_runner import run_cli
    from tests.test_doc_links import ROOT

    example = (ROOT / "examples" / "kiosk" / "topology.yaml").read_text()
    # Without the dead-letter sink (an unwired stream would go there) and its three lines: the
    # sink, the validate bolt's and the retired kiosks' streams to it.
    kept = [line for line in example.splitlines() if "rejects" not in line]
    assert len(kept) == len(example.splitlines()) - 3
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "order.json").write_text(
        (ROOT / "examples" / "kiosk" / "schemas" / "order.json").read_text()
    )
    topology = tmp_path / "kiosk.yaml"
    topology.write_text("\n".join(kept) + "\n")
    checked = run_cli(["validate", str(topology)])
    assert checked.returncode == 0, checked.stderr
    # before: stream 'default' of 'priority'; the retired kiosks' stream, unwired now, is warned
    assert "of 'priority'" not in checked.stderr and "'default'" not in checked.stderr
    assert "stream 'inactive_kiosk' of 'active' is not wired" in checked.stderr
    topology.write_text(topology.read_text().replace("vip: high", "vip: vips"))
    unwired = run_cli(["validate", str(topology)])
    assert "stream 'vips' of 'priority' is not wired" in unwired.stderr  # a real one still is
    assert "'default'" not in unwired.stderr


def test_an_explicit_edge_from_a_routes_unused_default_stream_still_loads(tmp_path):
    """A topology wiring `priority`'s `default` stream, although `default: low` sends nothing
    there, loaded before the route declared `default` only when used: it still loads (a dead
    edge), so an upgrade does not break it (found by the review of 6 December's fourth session)."""
    from tests.test_doc_links import ROOT

    example = (ROOT / "examples" / "kiosk" / "topology.yaml").read_text()
    assert "default: low" in example and "\nstreams:\n" in example
    text = example.replace(
        "\nstreams:\n", "\nstreams:\n  - {from: priority, stream: default, to: rejects}\n", 1
    )
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "order.json").write_text(
        (ROOT / "examples" / "kiosk" / "schemas" / "order.json").read_text()
    )
    (tmp_path / "kiosk.yaml").write_text(text)
    from squall.topology.loader import load

    load(tmp_path / "kiosk.yaml")  # before: "'priority' has no stream 'default'"


def test_a_shared_cache_refusing_writes_is_read_but_not_written_for_the_pause(
    full_redis, tmp_path, caplog
):
    """A Redis full under `noeviction` refuses writes until someone frees it: every batch sent
    its writes again and logged a warning (ten a second at ten batches a second). Now the
    cache is still read, not written for the pause, and the refusal said once per pause."""
    db = f"sqlite:///{tmp_path / 'apps.db'}"
    create_apps(db, "apps")
    clock = FakeClock()
    bolt = make_bolt(
        resources(db=db, cache=f"redis://127.0.0.1:{full_redis}/0"),
        clock=clock,
        key="app_id",
        source={"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]},
        shared_cache={"resource": "cache"},
        cache={"size": 0},
    )
    with caplog.at_level(logging.WARNING, logger="squall.bolts.lookup"):
        for app in (1, 3, 1):
            assert run(bolt, [{"app_id": app}])[1] == {}
        assert len(caplog.records) == 1  # before: 3
        assert "maxmemory" in caplog.text and "Weather" not in caplog.text
        clock.now += SHARED_CACHE_PAUSE  # past the pause: written (and refused) again
        run(bolt, [{"app_id": 1}])
    assert len(caplog.records) == 2 and bolt.stats["shared_unwritten"] == 2
    assert bolt.stats["shared_down"] == 0 and bolt.stats["fetched"] == 4
