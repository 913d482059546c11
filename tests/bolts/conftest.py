"""Fixtures of the bolt tests: the real-store fixtures the enrichment tests use."""

from tests.enrichment.conftest import pg_url_psycopg2, redis_prefix  # noqa: F401 - fixtures
