"""examples/kiosk as its files say. topology.yaml says how soon a kiosk changed in the registry
is seen: the bounds its comment states must be those of its caches' TTLs.

Before: the comment promised 5 minutes (1 for a new kiosk), but with ``KIOSK_CACHE_URL`` set the
shared cache held each record for an hour (``ttl: 3600``, ``missing_ttl: 300``) on top of the
in-process 5 minutes (docs/lookup.md, "Caches and freshness": the two add up) — a retired kiosk's
orders were queued for the kitchen for up to 65 minutes, a new kiosk's dead-lettered for 6.
"""

from __future__ import annotations

import re

from squall.topology.loader import load
from tests.conftest import EXAMPLES


def minutes(text: str) -> int:
    return 1 if text in ("a", "one") else int(text)


def test_the_kiosk_examples_stated_freshness_is_its_caches():
    path = EXAMPLES / "kiosk" / "topology.yaml"
    [lookup] = [b for b in load(path).bolts if b.id == "kiosk"]
    cache, shared = lookup.cache, lookup.shared_cache
    comment = " ".join(
        line.strip().lstrip("#").strip()
        for line in path.read_text().splitlines()
        if line.strip().startswith("#")
    )
    memory = re.search(r"is seen within (\w+) minutes?, a new one within (\w+) minutes?", comment)
    assert memory, comment
    assert (minutes(memory[1]) * 60, minutes(memory[2]) * 60) == (cache.ttl, cache.missing_ttl)
    fleet = re.search(
        r"With KIOSK_CACHE_URL set, .*? within (\w+) minutes?, and (\w+) for", comment
    )
    assert fleet, "the comment says nothing of the shared cache's TTLs"
    assert (minutes(fleet[1]) * 60, minutes(fleet[2]) * 60) == (
        cache.ttl + shared.ttl,
        cache.missing_ttl + shared.missing_ttl,
    )


def test_the_kiosk_seed_script_takes_a_postgres_url_as_squall_run_does(
    monkeypatch, pg_url, unique_name
):
    """KIOSK_REGISTRY_URL is one variable "for both commands": `postgres://…` (Heroku's, Render's
    DATABASE_URL), which `squall run` reads as PostgreSQL, made kiosks.py fail with SQLAlchemy's
    "Can't load plugin: sqlalchemy.dialects:postgres"."""
    import sqlalchemy as sa

    from tests.sinks.test_sqs_sink import seed_kiosk_registry

    url = "postgres://" + pg_url.split("://", 1)[1]
    seed_kiosk_registry(monkeypatch, url, unique_name)
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql(f'SELECT count(*) FROM "{unique_name}"').scalar() == 5
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')
        engine.dispose()
