"""Secret references after their first review: what its fixes refused or changed, checked
against the drivers and services squall uses (a password the servers check, header values the
HTTP client sends), and what they left."""

from __future__ import annotations

import pytest

from squall import redact
from squall.errors import TopologyError
from squall.topology.loader import load_text


@pytest.fixture(autouse=True)
def _forget_remembered_values(monkeypatch):
    """Values resolved here are masked process-wide (``redact.remember``): forgotten after each test."""
    monkeypatch.setattr(redact, "_known", redact._known)


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
