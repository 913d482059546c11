"""Secret references as an adversary uses them: values that break a URL, references in what
``squall package`` writes into a template or a fleet's files, the grants of partial ARNs."""

from __future__ import annotations

import pytest

from squall import redact
from squall.errors import TopologyError
from squall.topology.loader import load_text

REDIS = """
name: refs
resources:
  state: {{url: "{url}"}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}, {{id: sub, type: subscription, store: state}}]
sinks: [{{id: out, type: stdout}}]
"""


@pytest.fixture(autouse=True)
def _forget_remembered_values(monkeypatch):
    """Values resolved here are masked process-wide (``redact.remember``): forgotten after each test."""
    monkeypatch.setattr(redact, "_known", redact._known)


PASSWORDS = [
    "S3cret#Rest",
    "S3cret/Rest",
    "S3cret?Rest",
    "S3cret@h2#Rest",
    "S3cret%41Rest",
    "a:b c+d&e",
]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    "url",
    [
        "redis://:${ssm:/p}@10.1.2.3:6380/3",
        "postgresql://app:${ssm:/p}@db.internal:5432/x",
        "postgresql+psycopg2://${secretsmanager:db#username}:${ssm:/p}@db.internal/x",
    ],
)
def test_a_password_a_reference_gives_reaches_the_driver_whole_whatever_it_holds(url, password):
    """The value is the password itself — Secrets Manager generates and rotates RDS passwords with
    '%', '#', '?', ':' in them; it cannot be stored URL-encoded. Written raw into the URL, a
    Redis URL's host part ended at a '/', '?' or '#' (the password's start was quoted as the port
    by the error, and after an '@' another host was connected to), and '%41' was decoded to 'A'
    by every driver: a wrong password. Now it is encoded as user info is, and decoded back."""
    import redis
    import sqlalchemy as sa

    from squall.topology import pg_url

    text = REDIS.format(url=url)
    if url.startswith("postgresql"):
        text = text.replace("sub, type: subscription, store: state", "sub, type: json")
    values = {"/p": password, "db": "app"}  # the source gives the key's value
    topo = load_text(text, file="t.yaml", env={}, secrets=lambda ref: values[ref.name])
    written = topo.resources["state"].url
    if url.startswith("redis"):
        kwargs = redis.ConnectionPool.from_url(written).connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["password"]) == ("10.1.2.3", 6380, password)
    else:
        parsed = sa.make_url(written)
        assert (parsed.username, parsed.password, parsed.host) == ("app", password, "db.internal")
        assert pg_url.connect_args(written)["password"] == password
    shown = redact.redact_text(f"cannot connect with {written}")
    assert "S3cret" not in shown and "c+d" not in shown


def test_a_whole_user_info_reference_keeps_its_colon():
    """``postgresql://${ssm:/userinfo}@host/db`` holding ``user:pass``: the first ':' stays."""
    import sqlalchemy as sa

    topo = load_text(
        REDIS.format(url="postgresql://${ssm:/ui}@h/x").replace(
            "sub, type: subscription, store: state", "sub, type: json"
        ),
        env={},
        secrets=lambda ref: "app:p@ss:w/rd",
    )
    parsed = sa.make_url(topo.resources["state"].url)
    assert (parsed.username, parsed.password) == ("app", "p@ss:w/rd")


@pytest.mark.parametrize("cut", ["#", "/", "?", "@h2#"])
def test_a_redis_password_from_a_variable_holding_a_url_delimiter_is_refused_unquoted(cut):
    """A ``${VAR}`` is written as it is (its value may be encoded already): a '/', '?' or '#' in
    its password ended the host part, and the URL parser's error quoted the password's start
    ("Port could not be cast to integer value as 'S3cretStart'")."""
    with pytest.raises(TopologyError) as err:
        load_text(
            REDIS.format(url="redis://:${PW}@10.1.2.3:6380/3"),
            file="t.yaml",
            env={"PW": f"S3cretStart{cut}Rest0fIt"},
        )
    [problem] = err.value.problems
    assert (problem.line, problem.path) == (4, "resources.state.url")
    assert "URL-encode the password" in problem.message
    for part in ("S3cretStart", "Rest0fIt", "h2"):
        assert part not in str(err.value)


def test_a_redis_url_from_a_variable_with_a_hash_in_its_password_is_refused_unquoted():
    with pytest.raises(TopologyError) as err:
        load_text(REDIS.format(url="${STATE_URL}"), env={"STATE_URL": "redis://:Pw1#x@h:6379/0"})
    assert "Pw1" not in str(err.value) and "contains a '/', '?' or '#'" in str(err.value)


def test_an_encoded_redis_password_and_an_at_in_a_sqlite_path_still_load():
    topo = load_text(REDIS.format(url="redis://:a%23b%2Fc%3Fd@h:6379/0"), env={})
    assert topo.resources["state"].url.endswith("@h:6379/0")
    text = REDIS.replace("sub, type: subscription, store: state", "sub, type: json")
    load_text(text.format(url="sqlite:///tmp/a@b/x.db"), env={})


# --- squall package reads no reference: none may stand where it writes a name --------------

PACKAGED = """
name: secret-names
spout: {type: kinesis, stream: "${ssm:/pistats/stream}"}
bolts: [{id: decode, type: json}]
sinks:
  - {id: out, type: kinesis, stream: "${ssm:/pistats/out_stream}"}
  - id: hook
    type: http
    url: "https://hooks.example.com/x"
    headers: {Authorization: "Bearer ${secretsmanager:pistats/api#token}"}
"""


def test_the_template_refuses_a_reference_where_it_writes_a_granted_or_triggering_name(tmp_path):
    """The packager loads with stand-ins: the role was granted PutRecords on
    ``stream/SQUALLSECRETssmpistatsoutstream`` and the trigger read a stream of that name, the
    deployed function was denied. Now each such reference is a located error; one in a header
    (the function reads it, the template never names it) is not."""
    from squall.deploy.template import TemplateOptions, sam_template
    from squall.topology.loader import load
    from squall.topology.references import PLACEHOLDER, placeholder

    problems = template_refusal(tmp_path, PACKAGED)
    assert [
        (p.line, p.message.split(":")[0] + ":" + p.message.split(":")[1]) for p in problems
    ] == [
        (3, "${ssm:/pistats/stream}"),
        (6, "${ssm:/pistats/out_stream}"),
    ]
    assert "would be written into the template" in problems[0].message
    # The same names written plainly: the header's reference stays the function's to read.
    text = PACKAGED.replace("${ssm:/pistats/stream}", "clicks").replace(
        "${ssm:/pistats/out_stream}", "enriched"
    )
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    template = sam_template(
        load(path, secrets=placeholder),
        text,
        handler="consumer",
        code_uri="c.zip",
        options=TemplateOptions(),
    )
    assert PLACEHOLDER not in str(template)


def test_the_fleet_refuses_a_reference_as_the_stream_its_unit_reads(tmp_path):
    from squall.deploy import fleet
    from squall.topology.loader import load
    from squall.topology.references import placeholder

    text = PACKAGED.replace("${ssm:/pistats/out_stream}", "enriched")
    path = tmp_path / "app" / "topology.yaml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(TopologyError) as err:
        fleet.write_fleet(load(path, secrets=placeholder), path, tmp_path / "out")
    [problem] = err.value.problems
    assert (problem.line, problem.column) == (3, 32)
    assert problem.message.startswith("${ssm:/pistats/stream}: this value would be written into")
    assert not (tmp_path / "out" / "instance-role.yaml").exists()
    # --stream names it: nothing written holds the stand-in
    fleet.write_fleet(load(path, secrets=placeholder), path, tmp_path / "out", stream="clicks")
    assert "SQUALLSECRET" not in (tmp_path / "out" / "instance-role.yaml").read_text()


def test_dashboards_refuse_a_reference_as_a_name_they_show(tmp_path):
    from click.testing import CliRunner

    from squall.cli import main

    path = tmp_path / "topology.yaml"
    path.write_text(PACKAGED.replace("name: secret-names", "name: ${ssm:/pistats/name}"))
    result = CliRunner().invoke(main, ["dashboards", str(path), "-o", str(tmp_path / "d")])
    assert result.exit_code == 2, result.output
    assert (
        ":2:7: ${ssm:/pistats/name}: this value would be written into the dashboards"
        in result.output
    )
    assert not list((tmp_path / "d").glob("*.json"))


def test_local_aws_refuses_a_reference_as_a_stream_it_would_create(tmp_path):
    """It loads without reading references: it created a stream named by the stand-in, and the
    run (which reads the reference) found none of its name."""
    from click.testing import CliRunner

    from squall.cli import main

    path = tmp_path / "topology.yaml"
    path.write_text(PACKAGED)
    result = CliRunner().invoke(main, ["local-aws", str(path), "--node-modules", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert ":3:32: ${ssm:/pistats/stream}: this value would be written into the streams" in (
        result.output
    )


# --- loads that read no reference (package, graph, validate --skip-secrets) ------------------

URLS = """
name: t
resources:
  db: {{url: "{db}"}}
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: rows, type: warehouse, resource: db, table: t, columns: {{a: a}}}}
  - {{id: hook, type: http, url: "{hook}"}}
"""


@pytest.mark.parametrize(
    "db, hook",
    [
        ("${ssm:/pistats/db_url}?sslmode=require", "https://h.example/x"),
        ("sqlite:///x.db", "${ssm:/pistats/hook_base}/events"),
    ],
)
def test_a_url_a_reference_opens_loads_without_its_value_as_it_runs_with_it(db, hook):
    """The run (the value read: ``postgresql://…``, ``https://…``) takes it; ``squall package``,
    ``graph`` and ``validate --skip-secrets`` refused it: their stand-in opened the URL
    (``'SQUALLSECRETssmpistatsdburl?sslmode=require' is not a URL``, ``url must start with
    http:// or https://``), so a topology that runs could not be packaged."""
    from squall.topology.references import placeholder

    text = URLS.format(db=db, hook=hook)
    load_text(text, env={}, secrets=placeholder)
    values = {
        "/pistats/db_url": "postgresql://u@db.internal:5432/app",
        "/pistats/hook_base": "https://hooks.example.com/v1",
    }
    topo = load_text(text, env={}, secrets=lambda ref: values[ref.name])
    assert topo.sinks[1].url.startswith("https://h")


# --- grants ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arn, granted",
    [
        (  # a partial ARN (GetSecretValue takes one): the secret's real ARN ends in -XXXXXX
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pistats/db",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pistats/db-??????",
        ),
        (
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:pistats/db-AbCdEf",
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:pistats/db-AbCdEf",
        ),
    ],
)
def test_a_secret_arn_is_granted_so_that_it_matches_the_secrets_arn(arn, granted):
    """Granted as written, a partial ARN matched no secret (every ARN ends in six random
    characters): the function was denied the read its reference names."""
    from squall import iam
    from squall.topology.references import SecretRef

    [perm] = iam.reference_permissions([SecretRef("secretsmanager", arn, "password")])
    assert perm.resource == granted


# --- a value as messages quote it -------------------------------------------------------------

HEADER = """
name: refs
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks:
  - {id: hook, type: http, url: "https://hooks.example.com/x", headers: {X-Key: "${ssm:/t}"}}
"""

MEMORY = """
name: refs
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: 'squall.testing:MemorySink', name: "${ssm:/t}"}]
"""


@pytest.mark.parametrize(
    "stored",
    ["{t}\n", "{t}\r\n", " {t}", 'a"b\\{t}', "{t}é"],
    ids=["newline", "crlf", "space", "quote-backslash", "non-ascii"],
)
def test_a_value_is_masked_as_a_repr_bytes_or_json_quote_it_and_trimmed(stored):
    """A secret stored with its trailing newline (``create-secret --secret-string
    file://token.txt``): h11 refused the header with ``Illegal header value b'<token>\\\\n'``,
    quoted in the failed batch's message and log lines — escaped, so the remembered value was
    not found in it, and the token showed whole."""
    import json
    import uuid

    from squall.topology.references import SecretRef

    token = f"Tk{uuid.uuid4().hex}"
    value = stored.format(t=token)
    ref = SecretRef("ssm", "/t")
    load_text(MEMORY, env={}, secrets=lambda r: value if r == ref else "")
    for message in (
        f"LocalProtocolError: Illegal header value {value.encode()!r}",
        f"headers={ {'X-Key': value}!r}",
        json.dumps({"reason": value}),
        json.dumps({"reason": value}, ensure_ascii=False),
        f"sent {value.strip()} to the server",
    ):
        assert token not in redact.redact_text(message), message


LOOKUP = """
name: refs
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - id: app
    type: lookup
    key: app_id
    target: app
    source: {type: http, url: "https://api.example.com/apps/{key}", headers: {X-Key: "${ssm:/t}"}}
sinks: [{id: out, type: stdout}]
"""


@pytest.mark.parametrize(
    "text, line, path",
    [
        (HEADER, 6, "sinks[0].headers.X-Key"),
        (LOOKUP, 10, "bolts[1].source.headers.X-Key"),
    ],
)
@pytest.mark.parametrize(
    "stored, said",
    [
        ("Tok3nValue\n", "holds a line break or another control character"),
        ("Tok\r\nX-Injected: 1", "holds a line break or another control character"),
        ("Tok3nValue ", "begins or ends with a space or tab"),
        ("\tTok3nValue", "begins or ends with a space or tab"),
    ],
)
def test_a_header_value_with_a_line_break_is_a_located_error_at_load(
    text, line, path, stored, said
):
    """Loaded, every request was refused by the HTTP client (``Illegal header value``) and every
    batch failed again after its retries — a configuration problem found only at run time."""
    with pytest.raises(TopologyError) as err:
        load_text(text, file="t.yaml", env={}, secrets=lambda ref: stored)
    [problem] = err.value.problems
    assert (problem.line, problem.path) == (line, path)
    assert said in problem.message
    assert "Tok" not in str(err.value)


# --- reads ----------------------------------------------------------------------------------


@pytest.fixture
def aws(moto_server, monkeypatch):
    """squall's clients pointed at moto by AWS_ENDPOINT_URL_* (as a user points them at a stand-in)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server.endpoint)
    return moto_server


def test_a_load_makes_one_client_per_service_not_one_per_reference(aws):
    """Each reference made its own client (its own connection pool: a TLS handshake apiece in a
    cold start)."""
    import uuid

    from squall import aws as squall_aws
    from squall.secrets import AwsSecrets

    t = f"t{uuid.uuid4().hex[:10]}"
    for name in ("a", "b", "c"):
        aws.client("ssm").put_parameter(Name=f"/{t}/{name}", Value=f"V-{name}-1", Type="String")
    aws.client("secretsmanager").create_secret(Name=f"{t}/s", SecretString='{"k": "Sm-value"}')
    made: list[str] = []

    def client(service, region):
        made.append(service)
        return squall_aws.client(service, region=region, endpoint_url=None)

    text = HEADER.replace(
        'headers: {X-Key: "${ssm:/t}"}',
        f'headers: {{A: "${{ssm:/{t}/a}}", B: "${{ssm:/{t}/b}}", C: "${{ssm:/{t}/c}}", '
        f'D: "${{secretsmanager:{t}/s#k}}"}}',
    )
    topo = load_text(text, env={}, secrets=AwsSecrets(client))
    values = {k: v.get_secret_value() for k, v in topo.sinks[0].headers.items()}
    assert values == {"A": "V-a-1", "B": "V-b-1", "C": "V-c-1", "D": "Sm-value"}
    assert sorted(made) == ["secretsmanager", "ssm"]


@pytest.mark.parametrize(
    "name, granted",
    [
        (  # Parameter Store's way to a Secrets Manager secret: AWS asks the caller for both rights
            "/aws/reference/secretsmanager/pistats/db",
            {
                (
                    "ssm:GetParameter",
                    "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
                    "parameter/aws/reference/secretsmanager/pistats/db",
                ),
                (
                    "secretsmanager:GetSecretValue",
                    "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:"
                    "secret:pistats/db-??????",
                ),
            },
        ),
        (  # a public parameter is in no account
            "/aws/service/global-infrastructure/regions/eu-west-1/longName",
            {
                (
                    "ssm:GetParameter",
                    "arn:${AWS::Partition}:ssm:${AWS::Region}::"
                    "parameter/aws/service/global-infrastructure/regions/eu-west-1/longName",
                )
            },
        ),
    ],
)
def test_an_ssm_reference_to_a_secret_or_a_public_parameter_is_granted_what_aws_checks(
    name, granted
):
    """Granted only ``ssm:GetParameter`` in the account, the function was denied both reads."""
    from squall import iam
    from squall.topology.references import SecretRef

    perms = iam.reference_permissions([SecretRef("ssm", name)])
    assert {(a, p.resource) for p in perms for a in p.actions} == granted


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_run_authenticates_to_redis_with_a_generated_password_full_of_url_delimiters(
    aws, tmp_path, log_format
):
    """Redis with ``requirepass`` (it checks the password), whose password — as Secrets Manager
    generates one — holds '%41', '#', '/', '?', '@' and ':': a debug run connects with it and
    shows none of it."""
    import json
    import uuid

    from tests.private_redis import private_redis_server
    from tests.topology.test_secret_references import cli_env, run_cli

    password, t = f"Rd%41#{uuid.uuid4().hex[:8]}/?@:x", f"t{uuid.uuid4().hex[:10]}"
    aws.client("secretsmanager").create_secret(
        Name=f"{t}/redis", SecretString=json.dumps({"password": password})
    )
    with private_redis_server(tmp_path, "--requirepass", password) as port:
        (tmp_path / "t.yaml").write_text(f"""
name: secrets-{t}
resources:
  state: {{url: "redis://:${{secretsmanager:{t}/redis#password}}@127.0.0.1:{port}/0"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts: [{{id: decode, type: json}}, {{id: sub, type: subscription, store: state}}]
sinks: [{{id: out, type: stdout}}]
""")
        env = {**cli_env(aws.endpoint), "SQUALL_LOG_FORMAT": log_format}
        result = run_cli("-vv", "run", "t.yaml", cwd=tmp_path, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "DEBUG" in output or '"debug"' in output.lower()  # botocore's answers were logged
    assert password.split("#")[1].split("/")[0] not in output


def test_a_variable_inside_a_reference_name_is_said_so():
    """``${ssm:/pistats/${STAGE}/db}`` (the first thing a team with stages writes) was refused as
    a name holding a character it may not: the name had ended at the variable's '}'."""
    text = MEMORY.replace("${ssm:/t}", "${ssm:/pistats/${STAGE}/db}")
    with pytest.raises(TopologyError) as err:
        load_text(text, file="t.yaml", env={"STAGE": "prod"}, secrets=lambda ref: "v")
    [problem] = err.value.problems
    assert (problem.line, problem.path) == (5, "sinks[0].name")
    assert "a parameter name holds no ${VAR}" in problem.message


def test_a_read_waits_seconds_not_the_clients_30s_read_and_5s_connect_timeouts(aws):
    """With squall's client defaults (3 attempts of a 5 s connect and a 30 s read) an endpoint
    that accepted and never answered held the read 90 s (measured: 90.4 s; now 6.3 s), one with
    no route 15 s: past Lambda's 10 s init, whose timeout showed instead of the located error."""
    import uuid

    from squall.secrets import AwsSecrets
    from squall.topology.references import SecretRef

    name = f"/t{uuid.uuid4().hex[:10]}"
    aws.client("ssm").put_parameter(Name=name, Value="v-1", Type="String")
    source = AwsSecrets()
    assert source(SecretRef("ssm", name)) == "v-1"
    [made] = source._clients.values()
    config = made.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.0, 2.0)
    assert config.retries["total_max_attempts"] == 3  # a throttled burst is still retried


def template_refusal(tmp_path, text: str) -> list:
    """The problems ``sam_template`` refuses ``text`` with, loaded with stand-ins for its secret
    references as ``squall package`` loads it."""
    from squall.deploy.template import TemplateOptions, sam_template
    from squall.topology.loader import load
    from squall.topology.references import placeholder

    path = tmp_path / "topology.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as err:
        sam_template(
            load(path, secrets=placeholder),
            text,
            handler="consumer",
            code_uri="c.zip",
            options=TemplateOptions(),
        )
    return err.value.problems
