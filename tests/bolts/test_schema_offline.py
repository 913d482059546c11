"""The schema bolt never fetches a `$ref` over the network: jsonschema (its deprecated default
retrieval) and fastjsonschema (urllib while compiling) each fetched a remote document at load,
and jsonschema again while validating — a schema file made the consumer call any URL, and what
was valid changed with a document outside the topology."""

from __future__ import annotations

import orjson
import pytest

from squall.errors import TopologyError
from tests.bolts.test_builtin_bolts import run
from tests.sinks.local_http import LocalHttp


def remote(req):
    return 200, {"Content-Type": "application/json"}, orjson.dumps({"type": "string"})


def schema_bolt(schema: dict) -> str:
    return (
        "  - {id: decode, type: json}\n"
        f"  - {{id: v, type: schema, schema: {orjson.dumps(schema).decode()}}}"
    )


@pytest.mark.parametrize("at", ["top", "allOf"])
def test_a_remote_ref_is_refused_at_load_without_a_request(at):
    with LocalHttp(remote) as srv:
        ref = {"$ref": f"{srv.url}/remote.json"}
        schema = ref if at == "top" else {"properties": {"a": {"allOf": [ref]}}}
        with pytest.raises(TopologyError) as caught:
            run(schema_bolt(schema), [{"a": "x"}])
    assert srv.requests == []
    assert f"$ref '{srv.url}/remote.json' cannot be resolved" in str(caught.value)


def test_a_ref_under_a_nested_id_is_not_fetched_at_load_nor_while_validating():
    with LocalHttp(remote) as srv:
        schema = {
            "type": "object",
            "properties": {"a": {"$id": f"{srv.url}/dir/a.json", "$ref": "b.json"}},
        }
        outcomes, stores = run(schema_bolt(schema), [{"a": "x"}, {"a": 1}, {"b": 2}])
    assert srv.requests == []
    # Not resolvable without the network: the events reaching it fail, the others go on.
    assert [o.outcome.value for o in outcomes] == ["dead_lettered", "dead_lettered", "committed"]
    assert all("Unresolvable" in ev.failure.reason for ev in stores["dlq"])


def test_references_inside_the_schema_still_resolve_on_both_validators():
    schema = {
        "$id": "https://example.com/event.json",
        "definitions": {"s": {"type": "string"}},
        "properties": {
            "a": {"$ref": "#/definitions/s"},
            "b": {"$ref": "event.json#/definitions/s"},
        },
    }
    outcomes, stores = run(schema_bolt(schema), [{"a": "x", "b": "y"}, {"a": 1}, {"b": 2}])
    assert [o.outcome.value for o in outcomes] == ["committed", "dead_lettered", "dead_lettered"]
