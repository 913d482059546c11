"""The kiosk backend's route and lookup bolts, attacked as a production user would use them
(orders routed by priority into queues, with a cached kiosk lookup): each test failed before
its fix.

- A kiosk table keyed by a ``CHAR(n)`` column (PostgreSQL pads ``k1`` to ``k1      ``): every
  order's kiosk was reported missing, since rows were matched back to keys by their text.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.bolts.test_lookup import make_bolt, run
from tests.enrichment.support import resources


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
