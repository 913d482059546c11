"""A key column the database compares otherwise than by exact text — PostgreSQL ``citext``,
SQLite ``COLLATE NOCASE``, an integer column asked ``"01"``: the database found the row of
``K1`` (stored ``k1``), and the bolt, matching rows back to keys by their exact text, reported
the key missing — with ``on_missing: fail`` the order was dead-lettered as ``key 'K1' not
found``. (``CHAR(n)`` and ``uuid`` columns had this fixed by their known forms; these have none
squall can know.) Keys no row matched by text are now asked one at a time once the table was
seen returning such a row: a row of a one-key query is that key's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.bolts.test_lookup import count_queries, create_apps, make_bolt, run
from tests.enrichment.support import resources


def apps_bolt(tmp_path, **options):
    """A lookup of ``app_id`` in the apps table (tests/bolts/test_lookup.py's rows) of a new SQLite
    file; the bolt and its resources."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    create_apps(url, "apps")
    res = resources(db=url)
    source = {"type": "sql", "resource": "db", "table": "apps", "columns": ["name"]}
    return make_bolt(res, key="app_id", source=source, **options), res


def kiosk_bolt(url: str, table: str):
    res = resources(db=url)
    bolt = make_bolt(
        res,
        key="kiosk_id",
        on_missing="fail",
        source={"type": "sql", "resource": "db", "table": table, "columns": ["site"]},
    )
    return bolt, count_queries(res.sql("db"))


@pytest.fixture(params=["sqlite NOCASE", "postgresql citext"])
def caseless(request, tmp_path, unique_name) -> Iterator[tuple[str, str]]:
    """(url, table) of kiosks whose kiosk_id compares without regard to case."""
    if request.param.startswith("sqlite"):
        url, column = f"sqlite:///{tmp_path / 'k.db'}", "text COLLATE NOCASE"
    else:
        url, column = request.getfixturevalue("pg_url_psycopg2"), "citext"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if column == "citext":
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS citext")
        conn.exec_driver_sql(
            f'CREATE TABLE "{unique_name}" (kiosk_id {column} PRIMARY KEY, site text)'
        )
        conn.exec_driver_sql(
            f"INSERT INTO \"{unique_name}\" VALUES ('k1', 'Lisbon'), ('k2', 'Porto')"
        )
    try:
        yield url, unique_name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')
        engine.dispose()


def test_a_caseless_key_column_finds_its_rows_whatever_the_case(caseless):
    url, table = caseless
    bolt, queries = kiosk_bolt(url, table)
    found, failed, _ = run(bolt, [{"kiosk_id": "K1"}])  # one key: its query's row is its
    assert found == {0: {"site": "Lisbon"}} and failed == {}  # before: "key 'K1' not found"
    bolt, queries = kiosk_bolt(url, table)  # a new process: the table not yet seen so
    values = [{"kiosk_id": k} for k in ("K1", "k1", "K2", "k9", "K9")]
    found, failed, _ = run(bolt, values)
    assert found == {0: {"site": "Lisbon"}, 1: {"site": "Lisbon"}, 2: {"site": "Porto"}}
    assert failed == {3: "key 'k9' not found", 4: "key 'K9' not found"}
    # The batch's query (the row `k2` strays: no key asked reads so), then one UNION ALL of a
    # one-key query per key no row matched by its text (K1, K2, k9, K9: the row `k1` is k1's;
    # whether it is K1's too only K1's own query says). Before: one query per such key.
    assert len(queries) == 2
    found, failed, _ = run(bolt, [{"kiosk_id": "k2"}, {"kiosk_id": "K3"}])
    assert found == {0: {"site": "Porto"}} and failed == {1: "key 'K3' not found"}


def test_an_integer_key_column_asked_with_leading_zeros_finds_its_row(tmp_path):
    bolt, _ = apps_bolt(tmp_path)
    found, failed, _ = run(bolt, [{"app_id": "01"}, {"app_id": "003"}, {"app_id": 2}])
    assert failed == {}
    assert found == {0: {"name": "Weather"}, 1: {"name": "Chess"}, 2: {"name": "Weather"}}


def test_a_table_compared_by_text_asks_each_batch_once(tmp_path):
    """A table whose rows all read as their keys never asks keys one at a time: missing keys
    included, a batch is one query."""
    bolt, res = apps_bolt(tmp_path)
    queries = count_queries(res.sql("db"))
    run(bolt, [{"app_id": k} for k in (1, 2, 7, 8, 9)])
    assert len(queries) == 1 and not bolt.source.loose


def test_two_spellings_of_a_key_in_a_first_batch_both_find_their_row(caseless):
    """`K1` and `k1` asked together of a table not yet seen to stray: the row `k1` comes back
    once, matched to `k1` by its text, and no row strays — `K1` was reported missing (its
    order dead-lettered, `K1` remembered as missing). Keys left that read as a found one but
    for case are asked again."""
    url, table = caseless
    bolt, queries = kiosk_bolt(url, table)
    found, failed, _ = run(bolt, [{"kiosk_id": "K1"}, {"kiosk_id": "k1"}, {"kiosk_id": "k7"}])
    assert failed == {2: "key 'k7' not found"}  # before: {0: "key 'K1' not found", …}
    assert found == {0: {"site": "Lisbon"}, 1: {"site": "Lisbon"}}
    assert len(queries) == 2  # k7 reads as no found key: not asked again


def test_an_integer_asked_in_two_spellings_in_a_first_batch_finds_its_row(tmp_path):
    bolt, _ = apps_bolt(tmp_path, on_missing="fail")
    found, failed, _ = run(bolt, [{"app_id": "01"}, {"app_id": 1}])
    assert failed == {}  # before: {0: "key '01' not found"}
    assert found == {0: {"name": "Weather"}, 1: {"name": "Weather"}}


def test_a_thousand_keys_in_another_case_cost_a_few_queries_not_a_thousand(
    pg_url_psycopg2, unique_name
):
    """1,000 kiosks asked in capitals of a citext table stored in small letters: each a stray.
    Before: the two IN queries, then a query per key (1,002)."""
    engine = sa.create_engine(pg_url_psycopg2)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS citext")
        conn.exec_driver_sql(
            f'CREATE TABLE "{unique_name}" (kiosk_id citext PRIMARY KEY, site text)'
        )
        conn.exec_driver_sql(
            f"INSERT INTO \"{unique_name}\" SELECT 'k' || i, 'site ' || i FROM generate_series(0, 999) i"
        )
    try:
        bolt, queries = kiosk_bolt(pg_url_psycopg2, unique_name)
        values = [{"kiosk_id": f"K{i}"} for i in range(1000)] + [{"kiosk_id": "K1000"}]
        found, failed, _ = run(bolt, values)
        assert failed == {1000: "key 'K1000' not found"}
        assert found == {i: {"site": f"site {i}"} for i in range(1000)}
        # 500 keys per IN query, 100 per UNION ALL of one-key queries: 2 + 11
        assert len(queries) == 13
        run(bolt, values)  # cached: found and missing alike
        assert len(queries) == 13
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')
        engine.dispose()


def test_a_key_that_reads_as_a_huge_number_beside_a_found_one_is_missing(tmp_path):
    """Keys left beside a found one are read as numbers to compare them: `1e9999999` overflowed
    that reading (decimal.Overflow out of the batch) in the second review's first version."""
    bolt, _ = apps_bolt(tmp_path, on_missing="fail")
    found, failed, _ = run(bolt, [{"app_id": 1}, {"app_id": "1e9999999"}, {"app_id": "1e-99"}])
    assert found == {0: {"name": "Weather"}}
    assert failed == {1: "key '1e9999999' not found", 2: "key '1e-99' not found"}
