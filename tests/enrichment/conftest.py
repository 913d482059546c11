"""Fixtures for the enrichment bolts: small real MMDB files, real Redis/PostgreSQL/SQLite stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from squall.component import ComponentContext

from .support import ASN_NETWORKS, CITY_NETWORKS, write_mmdb


@pytest.fixture
def context(tmp_path: Path) -> ComponentContext:
    return ComponentContext("test", tmp_path)


@pytest.fixture(scope="session")
def mmdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mmdb")
    write_mmdb(d / "city.mmdb", CITY_NETWORKS, "GeoIP2-City")
    write_mmdb(d / "asn.mmdb", ASN_NETWORKS, "GeoLite2-ASN")
    v4 = {k: v for k, v in CITY_NETWORKS.items() if ":" not in k}
    write_mmdb(d / "city-v4.mmdb", v4, "GeoIP2-City", ip_version=4)
    (d / "broken.mmdb").write_bytes(b"not a maxmind database" * 10)
    return d


# -- real stores --------------------------------------------------------------------------------


@pytest.fixture
def redis_prefix(redis_url: str, unique_name: str) -> Iterator[str]:
    """A key prefix of this test only; its keys are deleted afterwards."""
    prefix = f"squall-test:{unique_name}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def pg_url_psycopg2(pg_url: str) -> str:
    """The PostgreSQL URL with the psycopg2 driver named (SQLAlchemy 2.1 defaults to psycopg 3)."""
    return (
        sa.make_url(pg_url)
        .set(drivername="postgresql+psycopg2")
        .render_as_string(hide_password=False)
    )


@pytest.fixture
def pg_table(pg_url_psycopg2: str, unique_name: str) -> Iterator[str]:
    """A table name of this test only; the table is dropped afterwards."""
    yield unique_name
    engine = sa.create_engine(pg_url_psycopg2)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP TABLE IF EXISTS "{unique_name}"'))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"
