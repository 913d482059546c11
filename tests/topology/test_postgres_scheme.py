"""``postgres://`` URLs (Heroku's, Render's, Supabase's, many a ``DATABASE_URL``): read as
``postgresql://`` wherever squall reads a SQL resource, on a real PostgreSQL, passwords from SSM
masked as before."""

from __future__ import annotations

import uuid

import psycopg2
import pytest

from squall import redact
from squall.errors import TopologyError
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.topology.test_secret_references import cli_env, run_cli

TOPOLOGY = """
name: pg-alias
resources: {{db: {{url: "{url}"}}}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: warehouse, resource: db, table: t, columns: {{n: n}}}}]
"""


@pytest.fixture(autouse=True)
def _forget_remembered_values(monkeypatch):
    monkeypatch.setattr(redact, "_known", redact._known)


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("postgres://u:pw@db.example.com:5432/app", "postgresql://u:pw@db.example.com:5432/app"),
        ("postgres+psycopg2://u@db/app", "postgresql+psycopg2://u@db/app"),
        ("POSTGRES://u@db/app?sslmode=require", "postgresql://u@db/app?sslmode=require"),
    ],
)
def test_a_postgres_url_loads_as_postgresql(written, read):
    """Before: "unknown SQL driver 'postgres'" at load (SQLAlchemy ≥ 1.4 dropped the alias)."""
    topo = load_text(TOPOLOGY.format(url=written), env={})
    assert topo.resources["db"].url == read
    assert topo.resources["db"].scheme == "postgresql"


def test_a_postgres_url_on_a_driver_squall_does_not_run_on_says_what_it_supports():
    with pytest.raises(TopologyError) as err:
        load_text(TOPOLOGY.format(url="postgres+pg8000://u:pw@db/app"), env={})
    assert "squall does not support 'postgresql+pg8000'" in str(err.value)
    assert "pw" not in str(err.value).replace("psycopg2", "")


def test_a_postgres_url_opens_on_sqlalchemy_and_on_the_plain_driver(pg_url):
    """The lookup's sql source and the checkpoint store open SQLAlchemy's engine, the warehouse
    and the batch's transaction the plain driver: both reach the database."""
    url = pg_url.replace("postgresql://", "postgres://", 1)
    topo = load_text(TOPOLOGY.format(url=url), env={})
    resources = Resources.for_topology(topo)
    try:
        assert resources.sql("db").dialect.driver == "psycopg2"
        with resources.sql("db").connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        resources.close()
        with resources.database("db").connect() as conn:
            assert conn.exec_driver_sql("SELECT 2").scalar() == 2
    finally:
        resources.close()


@pytest.fixture
def aws(moto_server, monkeypatch):
    """SSM at moto's server on loopback."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.endpoint)
    return moto_server


@pytest.fixture
def pg_role(pg_url):
    """A login role with a password, dropped after the test (with what it owns)."""
    role, password = f"hk_{uuid.uuid4().hex[:8]}", f"Pg{uuid.uuid4().hex}"
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (password,))
        cur.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
    yield role, password
    with conn.cursor() as cur:
        cur.execute(f"DROP OWNED BY {role}")
        cur.execute(f"DROP ROLE {role}")
    conn.close()


@pytest.mark.parametrize("whole", [False, True], ids=["password", "whole-url"])
def test_a_run_on_a_postgres_url_with_a_referenced_password_never_shows_it(
    aws, tmp_path, pg_url, pg_role, whole
):
    """A debug run (warehouse sink, lookup with a sql source, checkpoint-free stdin) on a
    ``postgres://`` URL whose password (or whole URL) is an SSM SecureString: rows written as the
    role, neither the password nor the URL in the output."""
    role, password = pg_role
    t = f"t{uuid.uuid4().hex[:10]}"
    db = pg_url.rsplit("/", 1)[1]
    written = f"postgres://{role}:{password}@127.0.0.1:5432/{db}"
    ssm = aws.client("ssm")
    if whole:
        ssm.put_parameter(Name=f"/{t}/url", Value=written, Type="SecureString")
        url = f"${{ssm:/{t}/url}}"
    else:
        ssm.put_parameter(Name=f"/{t}/pw", Value=password, Type="SecureString")
        url = f"postgres://{role}:${{ssm:/{t}/pw}}@127.0.0.1:5432/{db}"
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE apps_{t} (n TEXT PRIMARY KEY, name TEXT)")
        cur.execute(f"INSERT INTO apps_{t} VALUES ('1', 'Weather')")
        cur.execute(f"GRANT SELECT ON apps_{t} TO {role}")
    (tmp_path / "t.yaml").write_text(f"""
name: pg-alias-{t}
resources: {{db: {{url: "{url}"}}}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: app, type: lookup, key: n, target: app, source: {{type: sql, resource: db, table: apps_{t}, columns: [name]}}}}
sinks: [{{id: out, type: warehouse, resource: db, table: out_{t}, columns: {{n: n, app: app.name}}}}]
""")
    try:
        result = run_cli("-vv", "run", "t.yaml", cwd=tmp_path, env=cli_env(aws.endpoint))
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "DEBUG" in output
        assert password not in output and written not in output
        if whole:  # the secret's other parts too (the -vv "run lock: … in <url>" showed them)
            assert role not in output and "127.0.0.1:5432" not in output
        with conn.cursor() as cur:
            cur.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", (f"out_{t}",))
            assert cur.fetchall() == [(role,)]
            cur.execute(f"SELECT n, app FROM out_{t}")
            assert cur.fetchall() == [("1", "Weather")]
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS apps_{t}")
        conn.close()


def test_the_rewritten_url_of_a_secret_is_masked_as_the_written_one():
    written = "postgres://u:S3cret-pw@db.example.com/app"
    redact.remember(written)
    topo = load_text(TOPOLOGY.format(url=written), env={})
    assert redact.redact_text(f"failed: {topo.resources['db'].url}") == "failed: ***"


def test_squall_package_warns_of_a_postgres_url_without_psycopg2(tmp_path):
    """`squall package`'s driver check reads the scheme as the run does."""
    from squall.deploy.package import missing_drivers

    topo = load_text(TOPOLOGY.format(url="postgres://u@db/app"), env={})
    assert missing_drivers(topo, tmp_path) == [
        "resource 'db' is PostgreSQL, but the package holds no psycopg2 (its driver): the "
        "function cannot open it; add --extras postgres (or --with psycopg2-binary)"
    ]


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_secret_opening_the_url_is_masked_after_the_rewrite_as_without_it(scheme):
    """A secret holding the URL's start (a ``DATABASE_URL`` with ``?sslmode=require`` written
    after it): masked as a whole in the rewritten URL too. Before, only a secret that was the
    whole URL was remembered rewritten: a ``postgres://`` one showed its user, host and
    database (``postgresql://u:***@db.internal…/app?sslmode=require``), a ``postgresql://`` one
    did not."""
    secret = f"{scheme}://u:S3cret-pw@db.internal.example.com:5432/app"
    topo = load_text(
        TOPOLOGY.format(url="${ssm:/pg}?sslmode=require"), env={}, secrets=lambda ref: secret
    )
    url = topo.resources["db"].url
    assert url.startswith("postgresql://")
    assert redact.redact_text(f"failed: {url}") == "failed: ***?sslmode=require"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
@pytest.mark.parametrize("tail", ["", "?application_name=squall"], ids=["whole", "head"])
def test_the_run_lock_of_a_secret_url_never_shows_its_user_host_or_database(
    pg_url, unique_name, scheme, tail
):
    """The run lock names its database in ``squall run -vv``'s "run lock: … in <where>" and in
    "already running against <where>": for a URL that was a secret (whole, or its start) that
    was its user, host, port and database with only the password masked — the plain driver's
    rendering of the URL, which no remembered value matched. Now the secret masked whole."""
    from squall.deploy.lock import AlreadyRunning, acquire

    user, at, rest = pg_url.removeprefix("postgresql://").partition("@")
    assert at and ":" not in user, "the test database's URL has a user and no password"
    secret = f"{scheme}://{user}:Lock-pw-0@{rest}"  # the test server trusts 127.0.0.1
    topo = load_text(
        TOPOLOGY.replace("pg-alias", unique_name).format(url="${ssm:/pg}" + tail),
        env={},
        secrets=lambda ref: secret,
    )
    host = rest.split("/", 1)[0]
    first, second = Resources.for_topology(topo), Resources.for_topology(topo)
    held = acquire(topo, first)
    try:
        assert held.where == f"***{tail}"
        with pytest.raises(AlreadyRunning) as err:
            acquire(topo, second)
        assert host not in str(err.value) and "***" in str(err.value)
    finally:
        held.release()
        first.close()
        second.close()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_secret_url_named_as_the_wrong_kind_is_masked_whole_in_the_problem(scheme):
    """`squall validate`'s "resource 'db' is not Redis (<url>)": ``redact_url`` masked the
    password only, and a URL so changed no longer held the secret remembered as a whole: its
    user, host and database showed."""
    secret = f"{scheme}://u:S3cret-pw@db.internal.example.com:5432/app"
    text = TOPOLOGY.replace(
        "bolts: [{{id: decode, type: json}}]",
        "bolts: [{{id: decode, type: json}}, {{id: app, type: lookup, key: n, target: app, "
        "source: {{type: redis, resource: db}}}}]",
    )
    with pytest.raises(TopologyError) as err:
        load_text(text.format(url="${ssm:/pg}"), env={}, secrets=lambda ref: secret)
    message = str(err.value)
    assert "resource 'db' is not Redis (***)" in message
    assert "db.internal" not in message and "u:" not in message
