"""``${ssm:…}`` and ``${secretsmanager:…}`` in a topology: read once at load from AWS (moto's
server on loopback here), located errors naming the reference, the value masked everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
from botocore.exceptions import EndpointConnectionError, NoCredentialsError, ProfileNotFound

from squall import redact
from squall.errors import TopologyError
from squall.secrets import AwsSecrets
from squall.topology.loader import load_text
from squall.topology.references import SecretRef, SecretUnavailable
from tests.moto_standin import FlakyClient, client_error
from tests.ports import free_port
from tests.private_redis import private_redis_server

ROOT = Path(__file__).resolve().parents[2]

BASE = """
name: refs
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks:
  - id: hook
    type: http
    url: "https://hooks.example.com/x"
    headers: {{X-Token: "{value}"}}
"""


@pytest.fixture(autouse=True)
def _forget_remembered_values(monkeypatch):
    """The values these tests resolve are masked process-wide from then on (``redact.remember``):
    forgotten after each test, so that no later test of the suite finds its ``0123`` masked."""
    monkeypatch.setattr(redact, "_known", redact._known)


def token_of(topo, name: str = "X-Token") -> str:
    value = topo.sinks[0].headers[name]
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def fixed(value: str):
    calls: list[SecretRef] = []

    def source(ref: SecretRef) -> str:
        calls.append(ref)
        return value

    source.calls = calls  # type: ignore[attr-defined]
    return source


# --- syntax: what was a variable stays one -------------------------------------------------


def test_a_colon_dash_is_still_a_variable_default_and_a_double_dollar_still_literal():
    source = fixed("never")
    topo = load_text(BASE.format(value="${ssm:-plain}"), env={}, secrets=source)
    assert token_of(topo) == "plain"
    topo = load_text(BASE.format(value="$${ssm:/a/b}"), env={}, secrets=source)
    assert token_of(topo) == "${ssm:/a/b}"
    assert source.calls == []  # type: ignore[attr-defined]


def test_a_reference_is_resolved_once_per_name_and_its_value_is_never_retyped():
    source = fixed("0123")  # unquoted, YAML would read an octal number (83)
    text = BASE.format(value="x").replace(
        'headers: {X-Token: "x"}',
        "headers:\n      X-Token: ${ssm:/a/b}\n      X-Other: ${ssm:/a/b}",
    )
    topo = load_text(text, env={}, secrets=source)
    assert (token_of(topo), token_of(topo, "X-Other")) == ("0123", "0123")
    assert [str(r) for r in source.calls] == ["${ssm:/a/b}", "${ssm:/a/b}"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "written, message",
    [
        ("${ssm:}", "'${ssm:…}' names no parameter"),
        ("${secretsmanager:a b}", "a secret name holds only"),
        ("${secretsmanager:a#}", "names no JSON key after '#'"),
    ],
)
def test_a_malformed_reference_is_a_located_problem(written, message):
    with pytest.raises(TopologyError) as err:
        load_text(BASE.format(value=written), file="t.yaml", env={}, secrets=fixed("v"))
    [problem] = err.value.problems
    assert (problem.line, problem.path) == (9, "sinks[0].headers.X-Token")
    assert message in problem.message


def test_a_load_given_no_source_names_the_reference_and_where_it_is():
    with pytest.raises(TopologyError) as err:
        load_text(BASE.format(value="${ssm:/pistats/token}"), file="t.yaml", env={})
    assert str(err.value).startswith("t.yaml:9:24: sinks[0].headers.X-Token: ${ssm:/pistats/token}")


def test_a_resolved_value_is_masked_in_every_message_afterwards():
    secret = f"Zq{uuid.uuid4().hex}"
    load_text(BASE.format(value="${ssm:/a/b}"), env={}, secrets=fixed(secret))
    assert redact.redact_text(f"connect failed: {secret} refused") == "connect failed: *** refused"
    assert secret not in str(TopologyError(_problem(f"bad value {secret}")))


def _problem(message: str):
    from squall.errors import Problem

    return Problem("t.yaml", 1, 1, "x", message)


# --- AWS: moto's server ------------------------------------------------------------------


@pytest.fixture
def aws(moto_server, monkeypatch):
    """squall's clients pointed at moto by AWS_ENDPOINT_URL_* (as a user points them at a stand-in)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server.endpoint)
    return moto_server


def tag() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def test_a_securestring_and_a_json_key_of_a_secret_are_read_from_aws(aws):
    t = tag()
    aws.client("ssm").put_parameter(Name=f"/{t}/token", Value="Tok3n-ssm", Type="SecureString")
    aws.client("secretsmanager").create_secret(
        Name=f"{t}/api", SecretString=json.dumps({"token": "Tok3n-sm", "port": 5432})
    )
    source = AwsSecrets()
    topo = load_text(BASE.format(value="${ssm:/" + t + "/token}"), env={}, secrets=source)
    assert token_of(topo) == "Tok3n-ssm"  # decrypted
    topo = load_text(BASE.format(value="${secretsmanager:" + t + "/api#token}"), secrets=source)
    assert token_of(topo) == "Tok3n-sm"
    assert source(SecretRef("secretsmanager", f"{t}/api", "port")) == "5432"


def test_a_missing_parameter_or_key_is_a_located_problem_naming_the_reference(aws):
    t = tag()
    aws.client("secretsmanager").create_secret(Name=f"{t}/api", SecretString='{"a": "Xx-secret"}')
    text = BASE.format(value="${ssm:/" + t + "/none}").replace(
        "https://hooks.example.com/x", "${secretsmanager:" + t + "/api#token}"
    )
    with pytest.raises(TopologyError) as err:
        load_text(text, file="t.yaml", env={}, secrets=AwsSecrets())
    url, header = err.value.problems
    assert str(url) == (
        f"t.yaml:8:10: sinks[0].url: ${{secretsmanager:{t}/api#token}}: the JSON object has no "
        "key 'token' (its keys: a)"
    )
    assert str(header) == (
        f"t.yaml:9:24: sinks[0].headers.X-Token: ${{ssm:/{t}/none}}: SSM Parameter Store has no "
        f"parameter '/{t}/none' in us-east-1 (not found)"
    )
    assert not err.value.outage
    assert "Xx-secret" not in str(err.value)


@pytest.mark.parametrize(
    "error, outage, said",
    [
        (client_error("AccessDeniedException"), False, "the role needs ssm:GetParameter"),
        (client_error("ThrottlingException"), True, "throttled or failing"),
        (EndpointConnectionError(endpoint_url="http://x"), True, "unreachable in us-east-1"),
        (NoCredentialsError(), False, "no AWS credentials to read SSM Parameter Store with"),
        (ProfileNotFound(profile="prod"), False, "ProfileNotFound: The config profile (prod)"),
    ],
)
def test_a_refused_or_failed_read_says_why_and_whether_it_is_an_outage(aws, error, outage, said):
    def refuse(kwargs, call):
        raise error

    source = AwsSecrets(
        lambda service, region: FlakyClient(aws.client(service), get_parameter=refuse)
    )
    with pytest.raises(SecretUnavailable) as err:
        source(SecretRef("ssm", "/a/b"))
    assert err.value.outage is outage
    assert said in err.value.reason


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "squall.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        input='{"n": 1, "device_token": "d", "event_type": "open"}\n',
        timeout=120,
    )


def cli_env(endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL_SSM": endpoint,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def test_validate_exits_2_on_a_missing_parameter_and_1_when_ssm_is_unreachable(aws, tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text(BASE.format(value="${ssm:/" + tag() + "/none}"))
    missing = run_cli("validate", "t.yaml", cwd=tmp_path, env=cli_env(aws.endpoint))
    assert missing.returncode == 2, missing.stderr
    assert "t.yaml:9:24: sinks[0].headers.X-Token: ${ssm:/" in missing.stderr
    assert "(not found)" in missing.stderr
    down = run_cli(
        "validate", "t.yaml", cwd=tmp_path, env=cli_env(f"http://127.0.0.1:{free_port()}")
    )
    assert down.returncode == 1, down.stderr
    assert "unreachable in us-east-1 (EndpointConnectionError): an outage" in down.stderr
    assert "Traceback" not in down.stderr


@pytest.fixture
def pg_role(pg_url):
    """A login role with a password, dropped after the test (with what it owns)."""
    role, password = f"hs_{uuid.uuid4().hex[:8]}", f"Pg{uuid.uuid4().hex}"
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


def test_a_run_connects_with_referenced_passwords_and_never_shows_them(
    aws, tmp_path, pg_url, pg_role
):
    """PostgreSQL as a role whose password is an SSM SecureString (the shared server trusts
    loopback: the role, not the password, is what it checks — the table is that role's), and a
    Redis with ``requirepass`` whose password is a key of a Secrets Manager secret (checked: a
    wrong one fails the run). A debug run's output holds neither value."""
    role, pg_password = pg_role
    redis_password, t = f"Rd{uuid.uuid4().hex}", tag()
    aws.client("ssm").put_parameter(
        Name=f"/{t}/db_password", Value=pg_password, Type="SecureString"
    )
    aws.client("secretsmanager").create_secret(
        Name=f"{t}/redis", SecretString=json.dumps({"password": redis_password})
    )
    db = pg_url.rsplit("/", 1)[1]
    table = f"t_{t}"
    with private_redis_server(tmp_path, "--requirepass", redis_password) as port:
        (tmp_path / "t.yaml").write_text(f"""
name: secrets-{t}
resources:
  warehouse: {{url: "postgresql://{role}:${{ssm:/{t}/db_password}}@127.0.0.1:5432/{db}"}}
  state: {{url: "redis://:${{secretsmanager:{t}/redis#password}}@127.0.0.1:{port}/0"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts: [{{id: decode, type: json}}, {{id: sub, type: subscription, store: state}}]
sinks: [{{id: out, type: warehouse, resource: warehouse, table: {table}, columns: {{n: n}}}}]
""")
        result = run_cli("-vv", "run", "t.yaml", cwd=tmp_path, env=cli_env(aws.endpoint))
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "DEBUG" in output  # debug logging (botocore's answers too) really was on
        assert pg_password not in output and redis_password not in output
        aws.client("secretsmanager").put_secret_value(
            SecretId=f"{t}/redis", SecretString=json.dumps({"password": "Wrong-one"})
        )
        refused = run_cli("run", "t.yaml", cwd=tmp_path, env=cli_env(aws.endpoint))
        assert refused.returncode != 0  # Redis checks the password it was given
    conn = psycopg2.connect(pg_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", (table,))
        assert cur.fetchall() == [(role,)]
        cur.execute(f"SELECT n FROM {table}")
        assert cur.fetchall() == [("1",)]
    conn.close()


def test_the_lambda_consumer_reads_its_references_at_init(aws, tmp_path, called):
    """The database path is an SSM parameter: read when the handler is made (Lambda's init), and
    the rows of an invocation land there."""
    import sqlite3

    from squall.deploy.lambda_consumer import make_handler
    from tests.factories import kinesis_lambda_event

    t = tag()
    aws.client("ssm").put_parameter(Name=f"/{t}/db", Value=str(tmp_path / "w.db"), Type="String")
    path = tmp_path / "topology.yaml"
    path.write_text(f"""
name: lambda-{t}
resources:
  db: {{url: "sqlite:///${{ssm:/{t}/db}}"}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: rows, type: warehouse, resource: db, table: events, columns: {{n: n}}}}]
""")
    handler = make_handler(path)
    assert "ssm:GetParameter" in called  # at init, before any invocation
    assert handler(kinesis_lambda_event([{"n": 1}]), None) == {"batchItemFailures": []}
    assert sqlite3.connect(tmp_path / "w.db").execute("select n from events").fetchall() == [("1",)]


def test_a_kcl_shard_process_reads_its_references_at_start(aws, tmp_path):
    """``python -m squall.deploy.kcl`` as the MultiLangDaemon starts it, spoken to over its stdio:
    the database path is an SSM parameter read at the process's start; a missing one stops it
    there with the located line (exit 2), as the daemon's log shows it."""
    import base64
    import sqlite3

    t = tag()
    aws.client("ssm").put_parameter(Name=f"/{t}/db", Value=str(tmp_path / "w.db"), Type="String")
    path = tmp_path / "topology.yaml"
    text = f"""
name: kcl-{t}
resources:
  db: {{url: "sqlite:///${{ssm:/{t}/db}}"}}
spout: {{type: kinesis, stream: s}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: rows, type: warehouse, resource: db, table: events, columns: {{n: n}}}}]
"""
    path.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "squall.deploy.kcl", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(aws.endpoint),
    )
    record = {
        "action": "record",
        "data": base64.b64encode(b'{"n": 1}').decode(),
        "partitionKey": "pk",
        "sequenceNumber": "100",
        "subSequenceNumber": 0,
        "approximateArrivalTimestamp": 1762192800123,
    }
    messages = [
        {
            "action": "initialize",
            "shardId": "shardId-0",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        },
        {"action": "processRecords", "millisBehindLatest": 0, "records": [record]},
    ]
    answers = []
    try:
        for message in messages:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            while True:  # a checkpoint asked for is answered as the daemon does, then the status
                line = proc.stdout.readline()
                if not line.strip():  # the protocol writes an empty line before each message
                    assert line, proc.stderr.read()  # no end of output before the status
                    continue
                answer = json.loads(line)
                answers.append(answer["action"])
                if answer["action"] == "checkpoint":
                    proc.stdin.write(json.dumps({**answer, "error": None}) + "\n")
                    proc.stdin.flush()
                    continue
                break
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert answers[-1] == "status", answers
    assert sqlite3.connect(tmp_path / "w.db").execute("select n from events").fetchall() == [("1",)]

    path.write_text(text.replace(f"/{t}/db", f"/{t}/none"))
    missing = subprocess.run(
        [sys.executable, "-m", "squall.deploy.kcl", str(path)],
        capture_output=True,
        text=True,
        env=cli_env(aws.endpoint),
        timeout=120,
    )
    assert missing.returncode == 2
    assert f"topology.yaml:4:13: resources.db.url: ${{ssm:/{t}/none}}: SSM" in missing.stderr
    assert missing.stdout == ""  # the daemon's protocol channel


def test_a_securestring_and_a_secret_are_masked_everywhere_a_string_parameter_and_a_host_not(aws):
    """What the service says is a secret is masked in every text from then on; a String
    parameter and the host, port, username of a database secret are not (every ``postgres``
    and ``5432`` of every log line would be)."""
    t, values = tag(), {k: f"{k}{uuid.uuid4().hex[:12]}" for k in ("secure", "plain", "pw", "host")}
    ssm = aws.client("ssm")
    ssm.put_parameter(Name=f"/{t}/secure", Value=values["secure"], Type="SecureString")
    ssm.put_parameter(Name=f"/{t}/plain", Value=values["plain"], Type="String")
    aws.client("secretsmanager").create_secret(
        Name=f"{t}/db", SecretString=json.dumps({"password": values["pw"], "host": values["host"]})
    )
    source = AwsSecrets()
    for written in (f"ssm:/{t}/secure", f"ssm:/{t}/plain", f"secretsmanager:{t}/db#password"):
        load_text(BASE.format(value="${" + written + "}"), env={}, secrets=source)
    load_text(BASE.format(value="${secretsmanager:" + t + "/db#host}"), env={}, secrets=source)
    shown = redact.redact_text(" ".join(values.values()))
    assert shown == f"*** {values['plain']} *** {values['host']}"


def test_a_service_down_is_asked_once_per_load_not_once_per_reference():
    """Each reference would wait through the same retries again (three connection timeouts)."""
    asked: list[SecretRef] = []

    def down(ref: SecretRef) -> str:
        asked.append(ref)
        if ref.service == "ssm":
            raise SecretUnavailable("SSM Parameter Store unreachable", outage=True)
        return "Other-value"

    text = BASE.format(value="${ssm:/a}").replace(
        "https://hooks.example.com/x", "https://h.example.com/${ssm:/b}/${secretsmanager:c}"
    )
    with pytest.raises(TopologyError) as err:
        load_text(text, file="t.yaml", env={}, secrets=down)
    assert [str(r) for r in asked] == ["${ssm:/b}", "${secretsmanager:c}"]
    assert err.value.outage
    assert [p.message for p in err.value.problems] == [
        "${ssm:/b}: SSM Parameter Store unreachable",
        "${ssm:/a}: not read, as an earlier reference: SSM Parameter Store unreachable",
    ]


def test_validate_skip_secrets_checks_the_file_without_aws(tmp_path):
    """CI without AWS access: the file is checked, its references are not read."""
    t = tmp_path / "t.yaml"
    t.write_text(BASE.format(value="${ssm:/pistats/token}"))
    unreachable = {**cli_env(f"http://127.0.0.1:{free_port()}")}
    result = run_cli("validate", "--skip-secrets", "t.yaml", cwd=tmp_path, env=unreachable)
    assert result.returncode == 0, result.stderr
    assert "t.yaml: ok" in result.stdout
    t.write_text(BASE.format(value="${ssm:/pistats/token}").replace("http", "hhtp"))
    result = run_cli("validate", "--skip-secrets", "t.yaml", cwd=tmp_path, env=unreachable)
    assert result.returncode == 2 and "sinks[0].type: unknown sink type" in result.stderr


def test_the_lambda_producer_reads_its_references_at_init(aws, tmp_path):
    """The sink's name is a Secrets Manager key here: read when the handler is made, used by the
    events of a request."""
    from squall.deploy.lambda_producer import make_handler as producer_handler
    from squall.testing import MemorySink
    from tests.factories import api_gateway_event

    t = tag()
    aws.client("secretsmanager").create_secret(Name=f"{t}/sink", SecretString=json.dumps({"n": t}))
    path = tmp_path / "producer.yaml"
    path.write_text(f"""
name: producer-{t}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: 'squall.testing:MemorySink', name: "${{secretsmanager:{t}/sink#n}}"}}]
""")
    handler = producer_handler(path)
    answer = handler(api_gateway_event(json.dumps([{"a": 1}])), None)
    assert answer["statusCode"] == 202, answer
    assert [e.value["a"] for e in MemorySink.stores[t]] == [1]
