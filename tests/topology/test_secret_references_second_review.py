"""Secret references after their first review: what its fixes refused or changed, checked
against the drivers and services squall uses (a password the servers check, header values the
HTTP client sends), and what they left."""

from __future__ import annotations

import pytest

from squall import redact
from squall.errors import TopologyError
from squall.topology.loader import load_text
from tests.topology.test_secret_references_review import template_refusal


@pytest.fixture(autouse=True)
def _forget_remembered_values(monkeypatch):
    """Values resolved here are masked process-wide (``redact.remember``): forgotten after each test."""
    monkeypatch.setattr(redact, "_known", redact._known)


# --- a reference's value in a URL's user info reaches each driver as the password ------------

#: What Secrets Manager may generate and a person may choose: every URL delimiter, an escape that
#: a driver would decode ('%41' is 'A'), spaces inside and at the end, quotes, a backslash and
#: characters that are not ASCII.
PASSWORD = "p%41 @:/#?+&=é€ü;'\"\\ x "

DRIVERS = """
name: e2e
resources:
  app: {{url: "{scheme}://app:${{ssm:/pw}}@127.0.0.1:{port}/{db}"}}
  whole: {{url: "{scheme}://${{ssm:/ui}}@127.0.0.1:{port}/{db}", options: {{{options}}}}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: stdout}}]
"""


def _values(ref):
    return {"/pw": PASSWORD, "/ui": "app:" + PASSWORD}[ref.name]


@pytest.fixture(scope="module")
def checking_pg():
    """A private cluster where role ``app`` signs in with ``PASSWORD`` (the shared one trusts
    loopback: any password would do); the ``hba`` method and the stored hash are set per test."""
    import psycopg2

    from tests.acceptance.services import PrivatePostgres

    pg = PrivatePostgres()
    pg.init()
    pg.start()
    try:
        admin = psycopg2.connect(pg.url)
        admin.autocommit = True
        yield pg, admin
        admin.close()
    finally:
        pg.remove()


@pytest.mark.parametrize("method", ["scram-sha-256", "md5"])
def test_postgresql_checks_the_password_a_reference_gives_through_either_driver(
    checking_pg, method
):
    """Encoded in the URL at load (the first review's fix), decoded by SQLAlchemy's URL and by
    squall's own reading for psycopg2 (``pg_url``): the server, which checks it, lets ``app`` in
    through both engines and both forms (the password alone, the whole user info); a password
    one character short is refused (the check is real)."""
    from squall.topology.resources import Resources

    pg, admin = checking_pg
    with admin.cursor() as cur:
        cur.execute(f"SET password_encryption = '{method}'")
        cur.execute("DROP ROLE IF EXISTS app")
        cur.execute("CREATE ROLE app LOGIN PASSWORD %s", (PASSWORD,))
        hba = pg.dir / "data" / "pg_hba.conf"
        hba.write_text(f"host all app 127.0.0.1/32 {method}\nhost all all 127.0.0.1/32 trust\n")
        cur.execute("SELECT pg_reload_conf()")
    text = DRIVERS.format(scheme="postgresql", port=pg.port, db="postgres", options="")
    resources = Resources(load_text(text, env={}, secrets=_values).resources)
    try:
        for name in ("app", "whole"):
            for engine in (resources.database(name), resources.sql(name)):
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("SELECT current_user").scalar() == "app"
    finally:
        resources.close()
    short = load_text(text, env={}, secrets=lambda ref: _values(ref)[:-1])
    resources = Resources(short.resources)
    try:
        with pytest.raises(Exception, match="authentication failed"):
            resources.database("app").connect().close()
    finally:
        resources.close()


def test_redis_checks_the_password_a_reference_gives_with_or_without_a_user(tmp_path):
    """``requirepass`` and an ACL user with ``PASSWORD``: redis-py decodes the encoded user info."""
    import redis

    from squall.topology.resources import Resources
    from tests.private_redis import private_redis_server

    with private_redis_server(tmp_path, "--requirepass", PASSWORD) as port:
        redis.Redis(port=port, password=PASSWORD).execute_command(
            "ACL", "SETUSER", "app", "on", ">" + PASSWORD, "~*", "+@all"
        )
        text = DRIVERS.format(scheme="redis", port=port, db="0", options="").replace(
            "app:${ssm:/pw}", ":${ssm:/pw}"
        )
        resources = Resources(load_text(text, env={}, secrets=_values).resources)
        try:
            assert resources.redis("app").execute_command("ACL WHOAMI") in ("default", b"default")
            assert resources.redis("whole").execute_command("ACL WHOAMI") in ("app", b"app")
        finally:
            resources.close()


def test_http_basic_auth_in_a_url_sends_the_password_a_reference_gives():
    """An http sink's and an http lookup's URL with a reference in its user info: httpx decodes
    it into the ``Authorization: Basic`` it sends (checked by a local server)."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from squall import testing

    sent: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self._answer()

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer()

        def _answer(self):
            sent.append(base64.b64decode(self.headers["Authorization"].split()[1]).decode())
            body = b'{"v": 1}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        text = f"""
name: e2e
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: look
    type: lookup
    key: k
    target: got
    source: {{type: http, url: "http://app:${{ssm:/pw}}@127.0.0.1:{port}/x/{{key}}"}}
sinks: [{{id: out, type: http, url: "http://${{ssm:/ui}}@127.0.0.1:{port}/in"}}]
"""
        run = testing.run_topology(
            load_text(text, env={}, secrets=_values), testing.records_from([{"k": "a"}])
        )
    finally:
        server.shutdown()
        server.server_close()
    assert [o.outcome.value for o in run.outcomes] == ["committed"]
    assert sent == ["app:" + PASSWORD, "app:" + PASSWORD]


# --- header values ----------------------------------------------------------------------------

SINK = """
name: hdr
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: out, type: http, url: "http://127.0.0.1:9/in", headers: {{Authorization: {value}}}}}
"""


def test_a_header_value_that_is_not_ascii_is_a_located_error_at_load():
    """httpx sends header values as ASCII: loaded, every record of the sink failed alone with a
    ``UnicodeEncodeError`` (each isolated and dead-lettered: a configuration problem made every
    record's), and a lookup's client was never made."""
    with pytest.raises(TopologyError) as err:
        load_text(
            SINK.format(value='"Bearer ${ssm:/t}"'),
            file="t.yaml",
            env={},
            secrets=lambda ref: "tökenSecretXYZ",
        )
    [problem] = err.value.problems
    assert (problem.line, problem.path) == (6, "sinks[0].headers.Authorization")
    assert "not ASCII" in problem.message
    assert "kenSecret" not in str(err.value)


@pytest.mark.parametrize(
    "value, env",
    [
        ('"${TOKEN:-}"', {}),  # empty in this environment: HTTP sends an empty value
        ('"${TOKEN}"', {"TOKEN": ""}),
        ('"Bearer ${TOKEN}"', {"TOKEN": "a\tb c"}),  # a tab or space inside is a header's text
    ],
)
def test_header_values_http_sends_still_load(value, env):
    load_text(SINK.format(value=value), file="t.yaml", env=env)


FOLDED = """
name: hdr
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks:
  - id: out
    type: http
    url: "http://127.0.0.1:9/in"
    headers:
      Authorization: >-
        Bearer
        abc
"""


def test_a_folded_header_value_without_its_final_line_break_still_loads():
    topo = load_text(FOLDED, file="t.yaml", env={})
    assert topo.sinks[0].headers["Authorization"].get_secret_value() == "Bearer abc"


# --- the process's source across AWS_* changes -------------------------------------------------


def test_the_process_source_follows_an_aws_endpoint_changed_after_its_first_read(
    moto_server, moto_in_process, monkeypatch
):
    """One client per service and region was kept for the process, made with the AWS_* settings
    of the first read: a later read after ``AWS_ENDPOINT_URL_SSM`` (or the credentials) changed —
    a test suite's next stand-in, ``squall.testing.run_topology`` in a user's tests — still asked
    the first endpoint (not found, or the other's value). squall's other clients follow such a
    change (``aws.client`` makes its session again); the source now does too."""
    import uuid

    from squall.secrets import AwsSecrets
    from squall.topology.references import SecretRef

    name = f"/t{uuid.uuid4().hex[:10]}"
    moto_server.client("ssm").put_parameter(Name=name, Value="first-1", Type="String")
    moto_in_process.client("ssm").put_parameter(Name=name, Value="second-2", Type="String")
    other = f"/t{uuid.uuid4().hex[:10]}"
    moto_in_process.client("ssm").put_parameter(Name=other, Value="only-there", Type="String")
    source = AwsSecrets()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.endpoint)
    assert source(SecretRef("ssm", name)) == "first-1"
    assert source(SecretRef("ssm", name)) == "first-1"  # read once: the same value, no call
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_in_process.endpoint)
    assert source(SecretRef("ssm", other)) == "only-there"
    assert source(SecretRef("ssm", name)) == "second-2"
    assert len(source._clients) == 2


def test_the_password_of_a_whole_user_info_reference_is_masked_alone_too():
    """``postgresql://${ssm:/userinfo}@host/db`` holding ``user:password``: only the whole value
    (and its encoded form) was remembered, so the password alone — as a driver holds it once the
    URL is read, and may show it — was shown as it is."""
    load_text(
        DRIVERS.format(scheme="postgresql", port=5432, db="x", options=""),
        env={},
        secrets=lambda ref: "app:S3cret/Passw0rd",
    )
    shown = redact.redact_text("refused S3cret/Passw0rd (S3cret%2FPassw0rd) for app")
    assert shown == "refused *** (***) for app"


@pytest.mark.parametrize(
    "value, text",
    [
        ("10\n", repr("retries: 10\n")),  # a short SecureString stored with its line break
        ("ü", repr("München".encode())),  # b'M\xc3\xbcnchen'
        ("ü", '{"city": "M\\u00fcnchen"}'),
    ],
)
def test_a_value_too_short_to_be_remembered_is_not_remembered_escaped_either(value, text):
    """A value under ``MIN_REMEMBERED`` characters is not masked wherever it appears (it would
    mangle ordinary text), but its escaped forms — longer — were: every ``10\\n`` of a repr, every
    ``ü`` of a bytes repr or of a JSON string was masked."""
    redact.remember(value)
    assert redact.redact_text(text) == text


LOOKUP_URL = """
name: lk
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - id: look
    type: lookup
    key: k
    target: got
    source: {type: http, url: "${ssm:/lk/url}"}
sinks: [{id: out, type: stdout}]
"""


def test_a_lookup_url_kept_whole_in_a_secret_loads_without_its_value_as_it_runs_with_it():
    """``squall package``, ``graph`` and ``validate --skip-secrets`` load with stand-ins: a
    lookup's whole URL in a secret (its path holding an API token) became a stand-in without
    ``{key}``, refused ("url needs a {key} placeholder") where the run, which reads the URL,
    loads it."""
    from squall.topology.references import placeholder

    load_text(LOOKUP_URL, file="t.yaml", env={}, secrets=placeholder)
    load_text(LOOKUP_URL, env={}, secrets=lambda ref: "https://api.example/v1/T0ken99/i/{key}")
    with pytest.raises(TopologyError, match=r"url needs a \{key\} placeholder"):
        load_text(LOOKUP_URL, env={}, secrets=lambda ref: "https://api.example/v1/T0ken99/i")
    # the part written in the file is still checked
    with pytest.raises(TopologyError, match=r"url needs a \{key\} placeholder"):
        load_text(
            LOOKUP_URL.replace("${ssm:/lk/url}", "${ssm:/lk/base}/items"),
            env={},
            secrets=placeholder,
        )


# --- a value stored with its trailing newline, in a URL --------------------------------------

RESOURCE = """
name: nl
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: stdout}}]
"""


@pytest.mark.parametrize(
    "url, stored",
    [
        # encoded (%0A), the server said only "password authentication failed for user app"
        ("postgresql://app:${ssm:/pw}@db.internal/x", "S3cretPassw0rd\n"),
        ("redis://:${ssm:/pw}@cache.internal:6379/0", "S3cretPassw0rd\r\n"),
        # the whole URL: database "x\n" does not exist
        ("${ssm:/url}", "postgresql://app:S3cretPassw0rd@db.internal/x\n"),
    ],
)
def test_a_url_value_stored_with_its_trailing_newline_is_a_located_error_at_load(url, stored):
    """A secret stored with its line break (``aws ssm put-parameter --value file://pw.txt``
    keeps it): in a URL's user info it was encoded as part of the password, in a whole URL it
    ended the database's name — every connection refused at run time, saying nothing of it."""
    with pytest.raises(TopologyError) as err:
        load_text(RESOURCE.format(url=url), file="t.yaml", env={}, secrets=lambda ref: stored)
    [problem] = err.value.problems
    assert (problem.line, problem.path) == (4, "resources.db.url")
    assert "line break or another control character" in problem.message
    assert "S3cret" not in str(err.value)


HTTP_URLS = """
name: nl
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: look, type: lookup, key: k, target: got, source: {{type: http, {lookup}}}}}
sinks: [{{id: out, type: http, url: "{hook}"}}]
"""


@pytest.mark.parametrize(
    "lookup, hook, path",
    [
        ('url: "https://api.example/v1/{key}"', "${ssm:/hook}", "sinks[0].url"),
        ('url: "${ssm:/lookup}"', "https://hooks.example/x", "bolts[1].source.url"),
        ('batch_url: "${ssm:/lookup}"', "https://hooks.example/x", "bolts[1].source.batch_url"),
    ],
)
def test_an_http_url_stored_with_its_trailing_newline_is_a_located_error_at_load(
    lookup, hook, path
):
    """A webhook's URL kept in SSM with its line break: httpx refused it at each request
    (``InvalidURL: Invalid non-printable ASCII character in URL``), so every record failed alone
    and was dead-lettered — a configuration problem made every record's."""
    values = {
        "/hook": "https://hooks.example/services/T0/B0/XyzSecretTok\n",
        "/lookup": "https://api.example/v1/XyzSecretTok/{key}\n",
    }
    with pytest.raises(TopologyError) as err:
        load_text(
            HTTP_URLS.format(lookup=lookup, hook=hook),
            file="t.yaml",
            env={},
            secrets=lambda ref: values[ref.name],
        )
    [problem] = err.value.problems
    assert problem.path == path
    assert "line break or another control character" in problem.message
    assert "XyzSecretTok" not in str(err.value)


def test_the_template_names_only_the_reference_it_writes_not_one_its_stand_in_starts(tmp_path):
    """Stand-ins are letters and digits: ``${ssm:/a/stream}``'s starts ``${ssm:/a/streamname}``'s.
    With the latter as a sink's stream, the former — a header's, never in the template — was said
    to be written into the template too (a user rewriting the header for nothing)."""

    text = """
name: pfx
spout: {type: kinesis, stream: clicks}
bolts: [{id: decode, type: json}]
sinks:
  - {id: out, type: kinesis, stream: "${ssm:/a/streamname}"}
  - {id: hook, type: http, url: "https://h.example/x", headers: {X-Key: "${ssm:/a/stream}"}}
"""
    assert [(p.line, p.message.split(":")[:2]) for p in template_refusal(tmp_path, text)] == [
        (6, ["${ssm", "/a/streamname}"])
    ]


def test_references_sharing_a_long_name_start_have_stand_ins_of_their_own(tmp_path):
    """A stand-in was the name's first 40 letters and digits: two parameters of one deep path
    (`/acme/production/analytics-pipeline/secrets/…`) had the same, so where one was written
    into the template (a sink's stream) the other — a header's — was said to be too."""
    from squall.topology.references import SecretRef, placeholder

    base = "/acme/production/analytics-pipeline/secrets"
    assert placeholder(SecretRef("ssm", f"{base}/out")) != placeholder(
        SecretRef("ssm", f"{base}/key")
    )
    text = f"""
name: deep
spout: {{type: kinesis, stream: clicks}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: out, type: kinesis, stream: "${{ssm:{base}/out}}"}}
  - {{id: hook, type: http, url: "https://h.example/x", headers: {{X-Key: "${{ssm:{base}/key}}"}}}}
"""
    assert [p.line for p in template_refusal(tmp_path, text)] == [6]
