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


@pytest.mark.parametrize("cut", ["#", "/", "?", "@h2#"])
def test_a_redis_password_holding_a_url_delimiter_is_refused_without_quoting_any_of_it(cut):
    """``redis://:S3cretStart#rest@10.1.2.3:6380/3``: the URL's host part ended at the '#', the
    password's start was read as the port, and the error quoted it ("Port could not be cast to
    integer value as 'S3cretStart'"); after an '@' in it, the host became part of the password
    (a client connected there, and its errors name the host)."""
    password = f"S3cretStart{cut}Rest0fIt"
    with pytest.raises(TopologyError) as err:
        load_text(
            REDIS.format(url="redis://:${ssm:/p}@10.1.2.3:6380/3"),
            file="t.yaml",
            env={},
            secrets=lambda ref: password,
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
