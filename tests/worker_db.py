"""A PostgreSQL database per pytest-xdist worker: ``test`` → ``test_gw0``, created if missing."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def worker_database(url: str, worker: str) -> str:
    """``url`` with its database named after ``worker``, the database created when missing (no
    PostgreSQL reachable: ``url`` renamed all the same, and the tests that need it fail or skip
    as they would have)."""
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'postgres'}_{worker}"
    try:
        import psycopg2
        from psycopg2 import sql
    except ImportError:
        return urlunsplit(parts._replace(path="/" + name))
    try:
        conn = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")), connect_timeout=5)
    except psycopg2.OperationalError:
        return urlunsplit(parts._replace(path="/" + name))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                try:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except psycopg2.errors.DuplicateDatabase:
                    pass  # another run's worker of the same name made it first
    finally:
        conn.close()
    return urlunsplit(parts._replace(path="/" + name))
