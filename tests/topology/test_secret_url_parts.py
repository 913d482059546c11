"""A resource URL kept whole in a secret (or its user info or host in one): the drivers' errors
name its user and its host without the rest of the URL — libpq's ``connection to server at
"localhost" (127.0.0.1), port 5432 failed: FATAL: role "app_writer" does not exist``, redis-py's
``Error 111 connecting to localhost:6379`` — so those are masked too, against the real servers
on loopback (the shared PostgreSQL trusts loopback: an unknown role is what it refuses)."""

from __future__ import annotations

import logging
import sys
import uuid

import pytest

from squall import redact
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.ports import free_port
from tests.topology.test_secret_references import cli_env, run_cli


@pytest.fixture(autouse=True)
def _forget_remembered_values(monkeypatch):
    monkeypatch.setattr(redact, "_known", redact._known)


TOPOLOGY = """
name: parts
resources:
  db: {{url: "{db}"}}
  cache: {{url: "{cache}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts: [{{id: decode, type: json}}, {{id: sub, type: subscription, store: cache}}]
sinks: [{{id: out, type: warehouse, resource: db, table: t, columns: {{n: n}}}}]
"""


def _role() -> str:
    return f"app_writer_{uuid.uuid4().hex[:8]}"  # no such role: the shared server refuses it


def _errors(resources: Resources) -> str:
    """The drivers' errors of opening ``db`` and pinging ``cache``, as squall shows them."""
    shown = []
    try:
        resources.database("db").connect().close()
    except Exception as exc:  # noqa: BLE001 - psycopg2's OperationalError, whatever wraps it
        shown.append(redact.redact_text(str(exc)))
    try:
        resources.redis("cache").ping()
    except Exception as exc:  # noqa: BLE001 - redis-py's ConnectionError
        shown.append(redact.redact_text(str(exc)))
    assert len(shown) == 2, shown  # both failed: the checks below are on real errors
    return "\n".join(shown)


def test_the_drivers_errors_show_neither_the_user_nor_the_host_of_a_whole_url_secret(pg_url):
    role, port = _role(), free_port()
    values = {
        "/db": f"postgresql://{role}:S3cret-pw@localhost:5432/{pg_url.rsplit('/', 1)[1]}",
        "/cache": f"redis://cache_user:S3cret-pw@localhost:{port}/0",
    }
    text = TOPOLOGY.format(db="${ssm:/db}", cache="${ssm:/cache}")
    resources = Resources(load_text(text, env={}, secrets=lambda ref: values[ref.name]).resources)
    try:
        shown = _errors(resources)
    finally:
        resources.close()
    assert 'connection to server at "***" (***), port 5432 failed' in shown
    assert 'role "***" does not exist' in shown
    assert f"Error 111 connecting to ***:{port}. Connection refused." in shown
    for part in (role, "cache_user", "localhost", "127.0.0.1", "::1"):
        assert part not in shown, shown


def test_a_url_written_in_the_file_stays_readable_its_password_alone_a_secret(pg_url):
    """Only what a secret holds is masked: a user and host written in the file are no secret."""
    role, port = _role(), free_port()
    db = pg_url.rsplit("/", 1)[1]
    text = TOPOLOGY.format(
        db=f"postgresql://{role}:${{ssm:/pw}}@localhost:5432/{db}",
        cache=f"redis://cache_user:${{ssm:/pw}}@localhost:{port}/0",
    )
    resources = Resources(load_text(text, env={}, secrets=lambda ref: "S3cret-pw").resources)
    try:
        shown = _errors(resources)
    finally:
        resources.close()
    assert f'role "{role}" does not exist' in shown
    assert '"localhost" (127.0.0.1)' in shown
    assert f"connecting to localhost:{port}" in shown


def test_a_user_info_secret_masks_its_user_and_a_host_secret_its_host_and_address(pg_url):
    """``postgresql://${ssm:/userinfo}@…``: the user it holds; ``…@${ssm:/host}:5432/…``: the
    host is the secret's whole value (masked before this fix already), its address now too."""
    role, port = _role(), free_port()
    db = pg_url.rsplit("/", 1)[1]
    values = {"/ui": f"{role}:S3cret-pw", "/host": "localhost", "/pw": "S3cret-pw"}
    text = TOPOLOGY.format(
        db=f"postgresql://${{ssm:/ui}}@${{ssm:/host}}:5432/{db}",
        cache=f"redis://cache_user:${{ssm:/pw}}@${{ssm:/host}}:{port}/0",
    )
    resources = Resources(load_text(text, env={}, secrets=lambda ref: values[ref.name]).resources)
    try:
        shown = _errors(resources)
    finally:
        resources.close()
    assert 'connection to server at "***" (***), port 5432 failed' in shown
    assert f"Error 111 connecting to ***:{port}." in shown
    for part in (role, "localhost", "127.0.0.1"):
        assert part not in shown, shown


@pytest.mark.parametrize(
    ("url", "message", "expected"),
    [
        (  # a libpq multi-host URL, ?host= too
            "postgresql://app_writer:pw@db-a.internal:5432,db-b.internal/x?host=db-c.internal",
            'at "db-b.internal" (10.0.0.6), port 5432 failed: … "db-c.internal" (fe80::1%eth0)',
            'at "***" (***), port 5432 failed: … "***" (***)',
        ),
        (  # whole names only: another host, a longer user, the scheme
            "postgresql://postgres_app:pw@db.internal/x",
            "mydb.internal db.internal.example.com db.internal. postgres_app2 postgresql://h",
            "mydb.internal db.internal.example.com ***. postgres_app2 postgresql://h",
        ),
        (  # under 4 characters and every installation's user names: not remembered
            "redis://default:pw@db:6379/0 postgres://postgres:pw@app/x",
            'user "default" user "postgres" at "db" (10.0.0.5) app',
            'user "default" user "postgres" at "db" (10.0.0.5) app',
        ),
        (  # encoded in the URL, decoded in the driver's error
            "postgresql://app%40corp:pw@[fd00::5]:5432/x",
            'for user "app@corp" at "fd00::5", port 5432',
            'for user "***" at "***", port 5432',
        ),
    ],
)
def test_the_parts_a_secret_url_names_are_masked_as_whole_names(url, message, expected):
    for one in url.split(" "):
        redact.remember_url(one)
    assert redact.redact_text(message) == expected


def test_a_run_and_the_lambda_init_show_neither_the_user_nor_the_host(
    moto_server, monkeypatch, tmp_path, pg_url, caplog
):
    """``squall run`` (SSM at moto's server) and the Lambda consumer's init on a whole-URL secret
    whose role the server refuses: the error names neither the role nor the host."""
    from squall.deploy.lambda_consumer import make_handler

    role, t = _role(), f"t{uuid.uuid4().hex[:10]}"
    db = pg_url.rsplit("/", 1)[1]
    ssm = moto_server.client("ssm")
    url = f"postgresql://{role}:S3cret-pw@localhost:5432/{db}"
    ssm.put_parameter(Name=f"/{t}/db", Value=url, Type="SecureString")
    ssm.put_parameter(
        Name=f"/{t}/cache", Value=f"redis://localhost:{free_port()}/0", Type="SecureString"
    )
    (tmp_path / "t.yaml").write_text(
        TOPOLOGY.format(db=f"${{ssm:/{t}/db}}", cache=f"${{ssm:/{t}/cache}}")
    )
    result = run_cli("-vv", "run", "t.yaml", cwd=tmp_path, env=cli_env(moto_server.endpoint))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "***" in output  # the error was shown, masked
    assert role not in output and "localhost" not in output, output
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.endpoint)
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as err:
        make_handler(tmp_path / "t.yaml")
    shown = str(err.value) + caplog.text
    assert "***" in shown
    assert role not in shown and "localhost" not in shown, shown


def test_validate_shows_neither_the_user_nor_the_host_of_a_secret_url_it_refuses():
    """``squall validate``'s load: libpq's reading of the URL, rebuilt to name the bad port."""
    from squall.errors import TopologyError

    url = "postgresql://app_writer:S3cret-pw@db.internal.example.com:543200/x"
    text = TOPOLOGY.format(db="${ssm:/db}", cache="redis://localhost:6379/0")
    with pytest.raises(TopologyError) as err:
        load_text(text, env={}, secrets=lambda ref: url)
    assert "'postgresql://***:***@***:543200/x' is not a valid URL" in str(err.value)


def test_a_whole_url_secrets_database_query_values_and_password_are_masked_in_the_errors(
    pg_url, tmp_path
):
    """The real server's ``database "…" does not exist`` named the secret's database (only its
    user and host were masked); the query's values and the password alone are masked too, and
    the Redis URL's database index and password say nothing of the secret in redis-py's errors."""
    from tests.private_redis import private_redis_server

    db = f"orders_prod_{uuid.uuid4().hex[:8]}"  # no such database on the shared server
    app = f"billing_writer_{uuid.uuid4().hex[:8]}"
    password = f"S3cret-{uuid.uuid4().hex[:8]}"
    with private_redis_server(tmp_path, "--requirepass", "right-pw") as port:
        values = {
            "/db": f"postgresql://postgres:{password}@localhost:5432/{db}"
            f"?application_name={app}&sslmode=prefer",
            "/cache": f"redis://:{password}@localhost:{port}/7",
        }
        text = TOPOLOGY.format(db="${ssm:/db}", cache="${ssm:/cache}")
        resources = Resources(
            load_text(text, env={}, secrets=lambda ref: values[ref.name]).resources
        )
        try:
            shown = _errors(resources)
        finally:
            resources.close()
    assert 'database "***" does not exist' in shown, shown
    for part in (db, app, password, "localhost"):
        assert part not in shown, shown
    assert redact.redact_text(f"password {password} and {app}") == "password *** and ***"
    assert redact.redact_text("sslmode prefer, database 7") == "sslmode prefer, database 7"


def test_a_secret_urls_query_values_that_are_common_words_stay_readable():
    """``?ssl=true``: masking ``true`` as a name would mask it in every message."""
    redact.remember_url(
        "postgresql://u:pw@db.internal/x?ssl=true&ssl_cert_reqs=required&app=billing_x"
    )
    assert redact.redact_text('"ok": true, required, billing_x') == '"ok": true, required, ***'


def test_a_run_and_the_lambda_init_do_not_name_a_whole_url_secrets_database(
    moto_server, monkeypatch, tmp_path, caplog
):
    """``squall -vv run`` (SSM at moto's server) and the Lambda consumer's init on a whole-URL
    secret whose database the real server does not have: 'cannot take the run lock … database
    "orders_prod_…" does not exist' named it."""
    from squall.deploy.lambda_consumer import make_handler

    t, db = uuid.uuid4().hex[:10], f"orders_prod_{uuid.uuid4().hex[:8]}"
    ssm = moto_server.client("ssm")
    url = f"postgresql://postgres:S3cret-pw@127.0.0.1:5432/{db}?application_name=app_{t}"
    ssm.put_parameter(Name=f"/{t}/db", Value=url, Type="SecureString")
    ssm.put_parameter(
        Name=f"/{t}/cache", Value=f"redis://127.0.0.1:{free_port()}/0", Type="SecureString"
    )
    (tmp_path / "t.yaml").write_text(
        TOPOLOGY.format(db=f"${{ssm:/{t}/db}}", cache=f"${{ssm:/{t}/cache}}")
    )
    result = run_cli("-vv", "run", "t.yaml", cwd=tmp_path, env=cli_env(moto_server.endpoint))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert 'database "***" does not exist' in output, output
    assert db not in output and f"app_{t}" not in output, output
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.endpoint)
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as err:
        make_handler(tmp_path / "t.yaml")
    shown = str(err.value) + caplog.text
    assert 'database "***" does not exist' in shown, shown
    assert db not in shown, shown


def test_a_sqlite_url_secrets_file_is_masked_in_the_run_locks_lines(tmp_path, caplog):
    """A SQLite URL kept whole in a secret: the run lock beside its file (``<file>.<topology>
    .lock``) showed the file's path in ``-vv``'s 'run lock:' line and in the second run's
    'already running (pid …, lock …)' error — as a whole name, the path was not masked inside
    the lock's longer name."""
    from squall.deploy import lock
    from squall.deploy.lock import AlreadyRunning

    directory = tmp_path / f"tenant_{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    values = {"/db": f"sqlite:///{directory}/orders.db", "/cache": "redis://127.0.0.1:6379/8"}
    topo = load_text(
        TOPOLOGY.format(db="${ssm:/db}", cache="${ssm:/cache}"),
        env={},
        secrets=lambda ref: values[ref.name],
    )
    resources = Resources(topo.resources)
    try:
        with caplog.at_level(logging.DEBUG, logger="squall.lock"):
            held = lock.acquire(topo, resources)
        try:
            with pytest.raises(AlreadyRunning) as err:
                lock.acquire(topo, resources)
        finally:
            held.release()
    finally:
        resources.close()
    shown = redact.redact_text(caplog.text) + str(err.value)
    assert "run lock: ***.parts.lock" in shown, shown
    assert "lock ***.parts.lock)" in shown, shown
    assert directory.name not in shown, shown


def test_an_uncaught_drivers_error_of_squall_run_is_printed_masked(moto_server, tmp_path):
    """A component's driver error nothing caught (a team's own spout reading a table): Python's
    own hook printed its traceback raw, naming the secret URL's host and database."""
    t, db = uuid.uuid4().hex[:10], f"orders_prod_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres:S3cret-pw@localhost:5432/{db}"
    moto_server.client("ssm").put_parameter(Name=f"/{t}/db", Value=url, Type="SecureString")
    (tmp_path / "t.yaml").write_text(
        f"""
name: uncaught
resources: {{db: {{url: "${{ssm:/{t}/db}}"}}}}
spout: {{type: "tests.topology.secret_url_spout:TableSpout"}}
sinks: [{{id: out, type: "squall.testing:MemorySink"}}]
"""
    )
    result = run_cli("run", "t.yaml", cwd=tmp_path, env=cli_env(moto_server.endpoint))
    assert result.returncode == 1, result.stderr
    assert 'OperationalError: connection to server at "***"' in result.stderr, result.stderr
    assert 'database "***" does not exist' in result.stderr, result.stderr
    assert db not in result.stderr and "localhost" not in result.stderr, result.stderr


def test_an_uncaught_error_of_a_thread_is_printed_masked(monkeypatch, capsys):
    import threading

    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)  # not pytest's
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    redact.remember_url("redis://cache_user:S3cret-pw@cache.internal.example:6379/0")
    redact.mask_uncaught()

    def fail() -> None:
        raise ConnectionError("Error 111 connecting to cache.internal.example:6379.")

    thread = threading.Thread(target=fail, name="flusher")
    thread.start()
    thread.join()
    shown = capsys.readouterr().err
    assert "Exception in thread flusher:" in shown
    assert "ConnectionError: Error 111 connecting to ***:6379." in shown, shown
    assert "cache.internal.example" not in shown


def test_an_exception_python_cannot_raise_is_printed_masked(monkeypatch, capsys, pg_url):
    """``sys.unraisablehook``: a driver's error in a generator the garbage collector closes (a
    spout's read left suspended, its ``finally`` closing a connection) or in a ``__del__`` —
    Python's own hook printed 'Exception ignored in: …' and the error raw: the real server's
    'database "orders_prod_…" does not exist' and the secret URL's host."""
    import psycopg2

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # not pytest's
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    db = f"orders_prod_{uuid.uuid4().hex[:8]}"  # no such database on the shared server
    url = f"postgresql://postgres:S3cret-pw@localhost:5432/{db}"
    redact.remember_url(url)
    redact.mask_uncaught()

    def read():
        try:
            yield 1
        finally:
            psycopg2.connect(url).close()

    rows = read()
    next(rows)
    del rows  # closed here: its error cannot be raised to anyone
    shown = capsys.readouterr().err
    assert "Exception ignored in: <generator object" in shown, shown
    assert 'OperationalError: connection to server at "***"' in shown, shown
    assert 'database "***" does not exist' in shown, shown
    assert db not in shown and "localhost" not in shown, shown


def test_a_password_within_the_database_name_leaves_no_rest_of_the_name_shown(pg_url):
    """The password was masked first, wherever it appears: in the database ``<pw>_prod`` it left
    ``database "***_prod"`` — the rest of the name shown, the whole name no longer matched."""
    from squall.errors import SquallError

    password = f"orders_{uuid.uuid4().hex[:8]}"
    db = f"{password}_prod"  # no such database on the shared server
    values = {
        "/db": f"postgresql://postgres:{password}@localhost:5432/{db}?application_name={password}_app",
        "/cache": "redis://127.0.0.1:6379/8",
    }
    text = TOPOLOGY.format(db="${ssm:/db}", cache="${ssm:/cache}")
    resources = Resources(load_text(text, env={}, secrets=lambda ref: values[ref.name]).resources)
    try:
        with pytest.raises(Exception) as err:  # noqa: PT011 - psycopg2's, whatever wraps it
            resources.database("db").connect().close()
    finally:
        resources.close()
    shown = redact.redact_text(str(err.value))
    assert 'database "***" does not exist' in shown, shown
    assert "_prod" not in shown and password not in shown, shown
    assert str(SquallError(f'application "{password}_app"')) == 'application "***"'
    assert redact.redact_text(f"{db}_2 {password}x") == "***_prod_2 ***x"  # the value itself still


def test_a_redis_url_secrets_host_written_in_capitals_is_masked_as_redis_py_names_it():
    """redis-py reads the URL with urllib, whose ``hostname`` is lowercased: ``LocalHost`` in the
    secret, ``Error 111 connecting to localhost:…`` in its error (not masked: not the host as
    written)."""
    port = free_port()
    values = {"/db": "sqlite:///:memory:", "/cache": f"redis://cache_user:pw@LocalHost:{port}/0"}
    text = TOPOLOGY.format(db="${ssm:/db}", cache="${ssm:/cache}")
    resources = Resources(load_text(text, env={}, secrets=lambda ref: values[ref.name]).resources)
    try:
        with pytest.raises(Exception) as err:  # noqa: PT011 - redis-py's ConnectionError
            resources.redis("cache").ping()
    finally:
        resources.close()
    shown = redact.redact_text(str(err.value))
    assert f"Error 111 connecting to ***:{port}." in shown, shown
    assert "localhost" not in shown.lower(), shown


def test_a_secret_urls_query_values_that_are_numbers_with_a_point_stay_readable():
    """``?socket_timeout=10.0`` (redis-py's settings are floats): only digits were taken for a
    number, ``10.0`` was masked as a name in every message — the invocation's log line
    ``duration_ms=***``."""
    redact.remember_url(
        "redis://cache.internal:6379/0?socket_timeout=10.0&socket_connect_timeout=2.50"
        "&health_check_interval=-100&retry_jitter=1e-3&client_name=billing_x"
    )
    line = "invocation: duration_ms=10.0 lag_s=2.50 offset=-100 ratio=1e-3 client=billing_x"
    assert redact.redact_text(line) == line.replace("billing_x", "***")


def test_lambdas_json_log_format_writes_a_logged_drivers_error_masked(pg_url):
    """Lambda's JSON log format (``AWS_LAMBDA_LOG_FORMAT=JSON``, the runtime's own formatter)
    writes a logged exception's ``errorMessage`` as ``str(exception)``, not the masked
    traceback text: a stateful bolt's 'error while discarding staged state' logged libpq's
    'database "orders_prod_…" does not exist' and the secret URL's host raw."""
    import io
    import json

    import psycopg2
    from awslambdaric.lambda_runtime_log_utils import JsonFormatter

    db = f"orders_prod_{uuid.uuid4().hex[:8]}"  # no such database on the shared server
    url = f"postgresql://postgres:S3cret-pw@localhost:5432/{db}"
    redact.remember_url(url)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    redact.install(handler)
    records: list[logging.LogRecord] = []
    log = logging.getLogger(f"tests.lambda_json.{uuid.uuid4().hex[:8]}")
    log.propagate = False
    log.addHandler(handler)
    log.addHandler(logging.Handler())  # another handler sees the record after it: still the type
    log.handlers[-1].emit = records.append  # type: ignore[method-assign]
    try:
        try:
            psycopg2.connect(url).close()
        except psycopg2.OperationalError as exc:
            raise RuntimeError("staged state") from exc
    except RuntimeError:
        log.exception("enrich: error while discarding staged state")
    doc = json.loads(stream.getvalue())
    assert doc["errorType"] == "RuntimeError", doc
    assert doc["errorMessage"] == "staged state", doc
    assert db not in stream.getvalue() and "localhost" not in stream.getvalue(), doc
    exc = records[0].exc_info[1]  # type: ignore[index]
    assert isinstance(exc.__cause__, psycopg2.OperationalError)
    assert 'database "***" does not exist' in str(exc.__cause__)
    stream.truncate(0)
    stream.seek(0)
    try:
        psycopg2.connect(url).close()
    except psycopg2.OperationalError:
        log.exception("enrich: error while discarding staged state")
    doc = json.loads(stream.getvalue())
    assert doc["errorType"] == "OperationalError", doc
    assert 'connection to server at "***" (***), port 5432 failed' in doc["errorMessage"], doc
    assert 'database "***" does not exist' in doc["errorMessage"], doc
    assert db not in stream.getvalue() and "localhost" not in stream.getvalue(), doc
    assert isinstance(records[-1].exc_info[1], psycopg2.OperationalError)  # type: ignore[index]


def test_a_log_call_whose_format_fails_prints_its_arguments_masked(capsys):
    """A log call whose format and arguments do not match (a team's bolt): logging's own
    '--- Logging error ---' printed the message and its arguments raw — here a secret URL's
    host and database."""
    import io

    host, db = f"db-{uuid.uuid4().hex[:8]}.internal", f"orders_{uuid.uuid4().hex[:8]}"
    redact.remember_url(f"postgresql://app_writer:S3cret-pw@{host}/{db}")
    handler = logging.StreamHandler(io.StringIO())
    redact.install(handler)
    log = logging.getLogger(f"tests.bad_format.{uuid.uuid4().hex[:8]}")
    log.propagate = False
    log.addHandler(handler)
    log.warning("cannot reach %s: %d", host, {"dbname": db})  # (the call stack shows this line)
    shown = capsys.readouterr().err
    assert "--- Logging error ---" in shown, shown
    assert "Message: 'cannot reach %s: %d'" in shown, shown
    assert "Arguments: ('***', \"{'dbname': '***'}\")" in shown, shown
    assert host not in shown and db not in shown, shown


@pytest.mark.parametrize("kind", ["consumer", "producer"])
def test_a_lambdas_thread_error_nothing_caught_is_logged_masked(
    kind, tmp_path, monkeypatch, capsys
):
    """The Lambda handlers did not install ``mask_uncaught`` (the CLI and the KCL shard process
    did): a thread's uncaught driver error (a team's bolt flushing in the background) went to
    the function's log raw, through Python's own hook."""
    import threading

    from squall.deploy.lambda_consumer import make_handler as consumer
    from squall.deploy.lambda_producer import make_handler as producer

    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)  # not pytest's
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    (tmp_path / "t.yaml").write_text(
        "name: lam\nspout: {type: kinesis, stream: s}\n"
        "sinks: [{id: out, type: 'squall.testing:MemorySink'}]\n"
    )
    (consumer if kind == "consumer" else producer)(tmp_path / "t.yaml")
    redact.remember_url("redis://cache_user:S3cret-pw@cache.internal.example:6379/0")

    def fail() -> None:
        raise ConnectionError("Error 111 connecting to cache.internal.example:6379.")

    thread = threading.Thread(target=fail, name="flusher")
    thread.start()
    thread.join()
    shown = capsys.readouterr().err
    assert "ConnectionError: Error 111 connecting to ***:6379." in shown, shown
    assert "cache.internal.example" not in shown


def test_squalls_json_lines_keep_a_logged_exception_groups_sub_exceptions_masked():
    """With the record's exception a masked stand-in (for Lambda's JSON format), squall's own
    JSON formatter formatted the stand-in: an ExceptionGroup's sub-exceptions were gone. It
    writes the masked text made of the exception itself."""
    import io
    import json

    from squall.observability.logs import JsonFormatter

    redact.remember_url("postgresql://app_writer:S3cret-pw@db.internal.example/orders_prod")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    redact.install(handler)
    log = logging.getLogger(f"tests.json_group.{uuid.uuid4().hex[:8]}")
    log.propagate = False
    log.addHandler(handler)
    host, db = "db.internal" + ".example", "orders" + "_prod"  # (the traceback shows the line)
    try:
        raise ExceptionGroup(f"flush to {host}", [ConnectionError(f"database {db} is gone")])
    except ExceptionGroup:
        log.exception("flush failed")
    shown = json.loads(stream.getvalue())["exception"]
    assert "ExceptionGroup: flush to *** (1 sub-exception)" in shown, shown
    assert "ConnectionError: database *** is gone" in shown, shown
    assert host not in shown and db not in shown, shown
