"""``endpoint_url`` and ``region`` mean the same in every AWS component: empty or blank (what
``"${LOCAL_ENDPOINT:-}"`` gives with the variable unset, quoted or not) is unset — AWS's endpoint,
the default region — and a non-empty endpoint must be http(s)://host[:port], a located error at
load time otherwise. The Kinesis components and the DynamoDB checkpoint used to refuse an empty
endpoint while SQS, S3 and Firehose took it as unset (and took any text as an endpoint)."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from squall import aws
from squall.errors import TopologyError
from squall.topology.loader import load_text
from squall.topology.registry import BUILTINS, resolve

#: Every built-in AWS component, with the options that make it valid; ``EP``/``REG`` mark where
#: the endpoint and region under test go. ``where`` finds the nested settings in the loaded config.
SPOUTS = {
    "kinesis": "{type: kinesis, stream: s, endpoint_url: EP, region: REG, checkpoint: "
    "{store: dynamodb, table: cps, endpoint_url: EP, region: REG}}",
    "sqs": "{type: sqs, queue: q, endpoint_url: EP, region: REG}",
    "s3": "{type: s3, bucket: b, endpoint_url: EP, region: REG}",
}
SINKS = {
    "kinesis": "{id: x, type: kinesis, stream: s, endpoint_url: EP, region: REG}",
    "sqs": "{id: x, type: sqs, queue: q, endpoint_url: EP, region: REG}",
    "s3": "{id: x, type: s3, bucket: b, endpoint_url: EP, region: REG}",
    "firehose": "{id: x, type: firehose, delivery_stream: f, endpoint_url: EP, region: REG}",
    "dead_letter_sqs": "{id: x, type: dead_letter_sqs, queue: q, endpoint_url: EP, region: REG}",
    "dead_letter_s3": "{id: x, type: dead_letter_s3, bucket: b, endpoint_url: EP, region: REG}",
    "dead_letter_kinesis": "{id: x, type: dead_letter_kinesis, stream: s, endpoint_url: EP, "
    "region: REG}",
    "push": "{id: x, type: push, project_id: p, credentials: key.json, title: t, "
    "dead_tokens: {stream: s, endpoint_url: EP, region: REG}}",
}
NESTED = {"checkpoint", "dead_tokens"}

#: Values for EP/REG as a YAML writer spells them in a flow mapping, all unset (a plain
#: ``${VAR:-}`` becomes null; it cannot be written in a flow mapping: see the block-style test).
UNSET = ["'${SQUALL_TEST_UNSET_ENDPOINT:-}'", '"${SQUALL_TEST_UNSET_ENDPOINT:-}"', "''", "'  '"]


def topology(*, spout: str = "{type: stdin}", sink: str = "{id: out, type: stdout}") -> str:
    # block style: a plain ${VAR:-} is not allowed inside a flow mapping
    return (
        f"name: aws-settings\nspout: {spout}\nbolts: [{{id: decode, type: json}}]\n"
        f"sinks:\n  - {sink}\n"
    )


def settings(config: BaseModel) -> list[tuple[str | None, str | None]]:
    """(endpoint_url, region) of a component config and of its nested AWS settings."""
    found = (
        [(config.endpoint_url, config.region)]
        if "endpoint_url" in type(config).model_fields
        else []
    )
    for name in NESTED:
        inner = getattr(config, name, None)
        if inner is not None and "endpoint_url" in type(inner).model_fields:
            found.append((inner.endpoint_url, inner.region))
    return found


def cases() -> list[tuple[str, str, str]]:
    return [("spout", k, v) for k, v in SPOUTS.items()] + [("sink", k, v) for k, v in SINKS.items()]


def load_component(kind: str, text: str, env: dict[str, str] | None = None) -> BaseModel:
    topo = load_text(
        topology(spout=text) if kind == "spout" else topology(sink=text), env=env or {}
    )
    return topo.spout if kind == "spout" else topo.sinks[0]


def test_the_table_names_every_built_in_component_with_an_aws_endpoint():
    def has_endpoint(annotation: object, seen: set) -> bool:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return False
            seen.add(annotation)
            if "endpoint_url" in annotation.model_fields:
                return True
            return any(has_endpoint(f.annotation, seen) for f in annotation.model_fields.values())
        return any(has_endpoint(a, seen) for a in typing.get_args(annotation))

    found = {
        (kind, name)
        for kind in ("spout", "bolt", "sink")
        for name in BUILTINS[kind]
        if has_endpoint(resolve(kind, name).Config, set())
    }
    assert found == {(kind, name) for kind, name, _ in cases()}


@pytest.mark.parametrize(("kind", "name", "text"), cases(), ids=lambda v: str(v)[:24])
@pytest.mark.parametrize("unset", UNSET)
def test_an_empty_endpoint_and_region_are_unset_in_every_aws_component(kind, name, text, unset):
    config = load_component(kind, text.replace("EP", unset).replace("REG", unset))
    assert settings(config) and all(s == (None, None) for s in settings(config))


@pytest.mark.parametrize(("kind", "name", "text"), cases(), ids=lambda v: str(v)[:24])
def test_a_set_endpoint_is_kept_and_a_malformed_one_is_a_located_error_everywhere(kind, name, text):
    env = {"LOCAL_ENDPOINT": "http://127.0.0.1:4566"}
    config = load_component(
        kind, text.replace("EP", "'${LOCAL_ENDPOINT:-}'").replace("REG", "eu-west-1"), env
    )
    assert all(s == ("http://127.0.0.1:4566", "eu-west-1") for s in settings(config))
    with pytest.raises(TopologyError) as err:
        load_component(kind, text.replace("EP", "'localhost:4566'").replace("REG", "''"))
    problems = err.value.problems
    assert problems and all(
        p.line > 0 and "endpoint_url" in p.path and "must be http(s)://host[:port]" in p.message
        for p in problems
    )


def test_a_plain_unset_variable_in_block_style_is_unset_too():
    spout = "\n  type: kinesis\n  stream: s\n  endpoint_url: ${LOCAL_ENDPOINT:-}\n  region: ${R:-}"
    config = load_component("spout", spout, {"LOCAL_ENDPOINT": ""})
    assert (config.endpoint_url, config.region) == (None, None)


def test_check_endpoint_url_the_one_rule_behind_every_component_and_squall_produce():
    assert aws.check_endpoint_url("") is None and aws.check_endpoint_url(" \t") is None
    assert aws.check_endpoint_url(None) is None
    assert aws.check_endpoint_url("https://kinesis.eu-west-1.amazonaws.com") is not None
    with pytest.raises(ValueError, match="'http://u:\\*\\*\\*@h:x' is not a valid URL"):
        aws.check_endpoint_url("http://u:secret@h:x")
