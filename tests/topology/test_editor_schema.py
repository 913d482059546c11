"""`squall schema`: what an editor marks in a topology file is what `squall validate` refuses."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from squall.topology.schema import topology_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOPOLOGIES = sorted(
    p for p in EXAMPLES.rglob("*.yaml") if "spout:" in p.read_text() and "sinks:" in p.read_text()
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = topology_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator: jsonschema.Draft202012Validator, text: str) -> list[str]:
    return [e.message for e in validator.iter_errors(yaml.safe_load(text))]


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_topology_passes_the_editor_schema(validator, path: Path):
    """notify.yaml's `rate_limit: ${FCM_RATE_LIMIT:-500}` was marked: a string, not a number."""
    assert errors(validator, path.read_text()) == []


BASE = "name: t\nspout:\n  type: kinesis\n  stream: s\n  start: %s\nsettings:\n  batch_size: %s\n"
SINKS = "sinks:\n  - id: out\n    type: stdout\n    with_meta: %s\n"


@pytest.mark.parametrize(
    "start, batch, meta",
    [
        ("trim_horizon", "500", "true"),
        ("${START:-latest}", "${BATCH_SIZE:-500}", "${WITH_META:-false}"),
        ("${START}", "${BATCH_SIZE}", "${ssm:/t/with-meta}"),
    ],
)
def test_a_variable_passes_where_a_number_boolean_or_choice_is_wanted(
    validator, start, batch, meta
):
    assert errors(validator, BASE % (start, batch) + SINKS % meta) == []


@pytest.mark.parametrize(
    "start, batch, meta",
    [
        ("trim_horzion", "500", "true"),  # a typo in a choice
        ("latest", "'500 records'", "true"),  # text where a number is wanted
        ("latest", "500", "'${WITH_META'"),  # unclosed: squall refuses it too
        ("latest", "500", "'$WITH_META'"),  # no variable squall replaces
    ],
)
def test_a_wrong_value_is_still_marked(validator, start, batch, meta):
    assert errors(validator, BASE % (start, batch) + SINKS % meta)


def test_a_typo_in_a_type_or_an_option_is_still_marked(validator):
    ok = "name: t\nspout: {type: stdin}\nsinks: [{id: out, type: stdout}]\n"
    assert errors(validator, ok) == []
    assert errors(validator, ok.replace("type: stdout", "type: stdot"))
    assert errors(validator, ok.replace("type: stdout", "type: stdout, with_mta: true"))
