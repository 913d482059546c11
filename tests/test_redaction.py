"""No password in any log line or error, at any verbosity: resource URLs, endpoint URLs, driver messages."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from squall import aws
from squall.errors import SquallError, TransientError
from squall.redact import RedactingFilter, redact_text, redact_url
from tests.deploy.test_local_runner import run_cli

SECRET = "S3CRETpw"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:S3CRETpw@h/db", "postgresql://u:***@h/db"),
        ("redis://:S3CRETpw@h:6379/0", "redis://:***@h:6379/0"),
        (
            'Could not connect to the endpoint URL: "http://u:S3CRETpw@127.0.0.1:1/"',
            'Could not connect to the endpoint URL: "http://u:***@127.0.0.1:1/"',
        ),
        ("http://u:S3C@RETpw@host:1/x", "http://u:***@host:1/x"),
        ("host=h password=S3CRETpw dbname=x", "host=h password=*** dbname=x"),
        ("https://h/?a=1&password=S3CRETpw&b=2", "https://h/?a=1&password=***&b=2"),
        ("sqlite:///x.db and no secret", "sqlite:///x.db and no secret"),
        # '/', '#', '?' in a password (SQLAlchemy reads the password to the '@'; urlsplit does not)
        ("postgresql://u:8/S3CRETpw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:S3C#RETpw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:S3C?RETpw@h/db x", "postgresql://u:***@h/db x"),
        ("http://host:8080/no/password", "http://host:8080/no/password"),
        # a team's own bolt: its HTTP client's error quotes the URL it called, key and all
        (
            "401 Client Error: Unauthorized for url: https://api.example.com/score?ip=1.2.3.4"
            "&api_key=S3CRETpw",
            "401 Client Error: Unauthorized for url: https://api.example.com/score?ip=1.2.3.4"
            "&api_key=***",
        ),
        ("https://h/me?access_token=S3CRETpw&f=id", "https://h/me?access_token=***&f=id"),
        ("client_secret=S3CRETpw apikey=S3CRETpw", "client_secret=*** apikey=***"),
        ("?X-Amz-Security-Token=S3CRETpw&X-Amz-Date=1", "?X-Amz-Security-Token=***&X-Amz-Date=1"),
        ("x-api-key=S3CRETpw", "x-api-key=***"),
        # names that are no secret stay: key=, tokens=, a token count
        ("key=events/2026/a.json max_tokens=5", "key=events/2026/a.json max_tokens=5"),
        # a name of many words, or of a long one: its last word is the secret's name
        (
            "SQUALL_PROD_EU_WAREHOUSE_DB_PASSWORD=S3CRETpw",
            "SQUALL_PROD_EU_WAREHOUSE_DB_PASSWORD=***",
        ),
        ("a-b-c-d-e-f-api-key=S3CRETpw", "a-b-c-d-e-f-api-key=***"),
        ("x" * 41 + "_token=S3CRETpw", "x" * 41 + "_token=***"),
        ("mytoken=abc passwords=2", "mytoken=abc passwords=2"),
        # quoted: a Python repr of a config, a libpq value with a space
        ("Lookup(api_key='S3CRETpw', n=1)", "Lookup(api_key='***', n=1)"),
        ("host=h password='S3CRET pw' dbname=x", "host=h password='***' dbname=x"),
        ('password="S3CRETpw" user=u', 'password="***" user=u'),
        ("t(access_token='" + "S3CRETpw" * 200 + "')", "t(access_token=***')"),  # a long JWT
    ],
)
def test_redact_text_masks_every_password_shape(text, expected):
    assert redact_text(text) == expected


def test_redact_url_handles_urls_that_do_not_parse():
    assert redact_url("postgresql://u:S3CRETpw@h:abc/db") == "postgresql://u:***@h:abc/db"
    # urlsplit reads "u:8" as user and port: no password to mask by parsing
    assert redact_url("postgresql://u:8/S3CRETpw@h/db") == "postgresql://u:***@h/db"


def test_every_squall_error_message_is_redacted():
    assert SECRET not in str(SquallError(f"cannot reach redis://:{SECRET}@h/0"))
    assert SECRET not in str(TransientError(f"lost postgresql://u:{SECRET}@h/db"))


def test_botocore_debug_logs_and_errors_of_an_endpoint_with_a_password_are_masked(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        client = aws.client(
            "kinesis",
            region="us-east-1",
            endpoint_url=f"http://u:{SECRET}@127.0.0.1:1",
            botocore_retries=1,
        )
        with pytest.raises(Exception) as caught:  # noqa: B017, PT011 - botocore's EndpointConnectionError
            client.list_streams()
        logging.getLogger("squall.test").exception("failed: %s", caught.value)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logged = out.getvalue()
    assert "http://u:***@127.0.0.1:1" in logged and "Traceback" in logged
    assert SECRET not in logged


def test_a_bad_endpoint_url_is_a_located_error_without_the_password(tmp_path: Path):
    t = tmp_path / "t.yaml"
    t.write_text(f"""
name: t
spout: {{type: kinesis, stream: s, endpoint_url: "http://u:{SECRET}@h:notaport", checkpoint: {{store: memory}}}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: out, type: kinesis, stream: s2, endpoint_url: "https://u:{SECRET}@"}}
""")
    result = run_cli(["-vv", "validate", str(t)])
    assert result.returncode == 2
    assert (
        "spout.endpoint_url: endpoint URL 'http://u:***@h:notaport' is not a valid URL"
        in result.stderr
    )
    assert "sinks[0].endpoint_url: endpoint URL 'https://u:***@' must be http(s)" in result.stderr
    assert SECRET not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_a_run_at_debug_verbosity_never_shows_a_database_or_redis_password(
    tmp_path: Path, pg_url: str, redis_url: str
):
    pg = pg_url.replace(
        "postgresql://postgres@", f"postgresql://postgres:{SECRET}@"
    )  # trust auth: accepted
    redis = redis_url.replace("redis://", f"redis://:{SECRET}@")  # redis-py retries without it
    t = tmp_path / "t.yaml"
    t.write_text(f"""
name: redaction-{tmp_path.name[-8:].replace("_", "-")}
resources:
  warehouse: {{url: "{pg}"}}
  state: {{url: "{redis}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 1}}}}
bolts: [{{id: decode, type: json}}, {{id: sub, type: subscription, store: state}}]
sinks: [{{id: out, type: warehouse, resource: warehouse, table: t_redaction, columns: {{n: n}}}}]
""")
    result = run_cli(
        ["-vv", "run", str(t)], input='{"n": 1, "device_token": "d", "event_type": "open"}\n'
    )
    output = result.stdout + result.stderr
    assert "DEBUG" in output  # debug logging really was on
    assert SECRET not in output
    assert result.returncode == 0, output


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:S3C@RETpw@127.0.0.1:5432/db",
        "postgresql+psycopg2://u:S3C@RETpw@127.0.0.1/db?sslmode=disable",
        "mysql://u:S3C@RETpw@127.0.0.1/db",
    ],
)
def test_an_unescaped_at_in_a_database_password_is_a_load_time_error(url):
    # The password ends at its first '@' (as SQLAlchemy reads it): the rest would be the host
    # name, which libpq quotes in its error ('could not translate host name "RETpw@127.0.0.1"').
    from squall.topology.resource_config import ResourceConfig

    with pytest.raises(ValueError) as exc:  # pydantic's ValidationError
        ResourceConfig(url=url)
    message = exc.value.errors()[0]["msg"]  # what squall shows (pydantic's str adds the input)
    assert "contains an '@': write it as %40" in message
    assert "RETpw" not in message and "S3C" not in message
    if url.startswith("mysql"):  # said before squall's refusal of a database it does not run on
        return
    assert ResourceConfig(url=url.replace("S3C@RETpw", "S3C%40RETpw")).url


LEAKY_TOPOLOGY = """
name: redaction-dead-letter
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - {id: leaky, type: 'tests.test_redaction:LeakyBolt'}
sinks:
  - {id: out, type: 'squall.testing:MemorySink'}
  - {id: dlq, type: 'squall.testing:MemoryDeadLetterSink'}
"""


def _leaky_bolt_class():
    from squall.bolts import Bolt, Output

    class LeakyBolt(Bolt):
        summary = "Raise with a password in the message (tests)."

        def process(self, batch):
            out = Output(self.id)
            for ev in batch:
                if ev.value.get("bad"):
                    raise ValueError(
                        f"cannot reach postgresql://u:{SECRET}@db:5432/x (password={SECRET})"
                    )
                out.emit(ev)
            return out

    return LeakyBolt


LeakyBolt = _leaky_bolt_class()


def test_the_dead_letter_reason_of_a_record_never_shows_a_password():
    """A record's reason goes to the dead letter (a file, a queue, a bucket, a table) and into the
    metrics' first failed record: it used to be the exception's text as is."""
    import json as _json

    from squall.event import Record, RecordMeta
    from squall.testing import memory_stores, run_topology

    records = [
        Record(_json.dumps({"n": n, "bad": n == 2}).encode(), RecordMeta("s", "sh", str(n)))
        for n in range(1, 4)
    ]
    stores: dict = {}
    with memory_stores(stores):
        run = run_topology(LEAKY_TOPOLOGY, records)
    (dead,) = stores["dlq"]
    assert dead.failure.component == "leaky"
    assert SECRET not in dead.failure.reason
    assert "postgresql://u:***@db:5432/x" in dead.failure.reason
    assert [o.outcome.value for o in run.outcomes].count("dead_lettered") == 1


def test_a_long_reason_is_masked_before_it_is_cut():
    from squall.errors import MAX_REASON, describe_exception

    exc = ValueError("x" * (MAX_REASON - 20) + f" postgresql://u:{SECRET}@db/x")
    assert SECRET[:4] not in describe_exception(exc)


def test_json_log_fields_mask_a_password_with_an_at_sign_and_stay_valid_json():
    """The JSON formatter masked the encoded line with a pattern that stopped at the password's
    first '@' ('u:***@rest-of-password@host') and was not the one helper (squall.redact)."""
    import json as _json

    from squall.observability.logs import JsonFormatter

    record = logging.LogRecord(
        "squall.invocation", logging.ERROR, __file__, 1, "failed", None, None
    )
    record.fields = {
        "first_failed": {"reason": f"postgresql://u:xy@{SECRET}@db/x"},
        "user": "someone@example.com",
    }
    line = JsonFormatter().format(record)
    doc = _json.loads(line)
    assert SECRET not in line
    assert doc["first_failed"]["reason"] == "postgresql://u:***@db/x"
    assert doc["user"] == "someone@example.com"


def test_describe_exception_masks_only_a_window_past_the_cut(monkeypatch):
    """The reason was masked over the whole uncut message, and the URL pattern's cost grew with
    the square of a long run without spaces (a 100,000-character payload took seconds per
    record): only a bounded window is masked now, and the password in it still is."""
    import squall.errors as errors

    seen: list[int] = []
    real = errors.redact_text

    def counting(text: str) -> str:
        seen.append(len(text))
        return real(text)

    monkeypatch.setattr(errors, "redact_text", counting)
    exc = ValueError(f"postgresql://u:{SECRET}@db/x " + "x" * 200_000)
    reason = errors.describe_exception(exc)
    assert SECRET not in reason and "***" in reason
    assert len(reason) < errors.MAX_REASON + 40
    assert seen and max(seen) <= 4 * errors.MAX_REASON


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:///db?host=/var/run/pg@main",  # a socket directory holding '@'
        "postgresql://u:pw@/db?host=/run/user@1000/pg",
        "postgresql://u:pw@db.example/db?application_name=a@b",
    ],
)
def test_an_at_sign_outside_the_userinfo_is_no_password_error(url):
    """The '@' check read the host from the query too: a '?host=' socket directory with an '@'
    (valid for libpq and SQLAlchemy) was refused as an unescaped password."""
    from squall.topology.resource_config import ResourceConfig

    assert ResourceConfig(url=url).url


def test_a_url_among_long_runs_without_spaces_is_masked():
    """A base64 blob or a long token around the URL (the pattern once tried a scheme from every
    letter of such a run to its end: quadratic; the scheme is bounded now)."""
    import base64

    blob = base64.b64encode(bytes(range(256)) * 300).decode()  # ~100 KB, letters and digits
    masked = redact_text(f"{blob}postgresql://bob:hunter2@db/x {blob}")
    assert "hunter2" not in masked and "postgresql://bob:***@db/x" in masked


def test_request_urls_in_httpx_log_lines_keep_only_scheme_host_and_port():
    import logging

    from squall.redact import RequestUrlFilter

    def shown(*args: object) -> str:
        record = logging.LogRecord("httpx", logging.INFO, "x", 1, "HTTP Request: %s %s", args, None)
        RequestUrlFilter().filter(record)
        return record.getMessage()

    assert shown("POST", "https://hooks.slack.com/services/T1/B2/sEcReT") == (
        "HTTP Request: POST https://hooks.slack.com/…"
    )
    assert shown("GET", "http://[::1]:8080/x?token=t") == "HTTP Request: GET http://[::1]:8080/…"
    assert shown("GET", "https://example.com") == "HTTP Request: GET https://example.com/"
    assert shown("GET", "https://h:99999/p") == "HTTP Request: GET <url>"  # not a port: nothing
    assert shown("GET", "not a url") == "HTTP Request: GET not a url"
