"""A URL's scheme in capitals (`POSTGRESQL://`, `SQLITE:///`): URL schemes are case-insensitive,
`squall validate` takes them and psycopg2's and sqlite3's own engines open them — but the
SQLAlchemy engine of the same resource (a `sql` lookup source, a `sql` checkpoint store, `squall
replay sql://…`) stopped the start with "Can't load plugin: sqlalchemy.dialects:POSTGRESQL"."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from squall.topology.resource_config import ResourceConfig
from squall.topology.resources import Resources


def _upper_scheme(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return scheme.upper() + sep + rest


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_capitalised_scheme_opens_on_sqlalchemy_as_on_the_driver(
    kind: str, tmp_path: Path, pg_url: str
):
    url = _upper_scheme(pg_url if kind == "postgresql" else f"sqlite:///{tmp_path / 'x.db'}")
    resources = Resources({"db": ResourceConfig(url=url)}, tmp_path)
    try:
        with resources.database("db").connect() as conn:  # the driver's engine: always did
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        with resources.sql("db").connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        resources.close()
