"""``DottedPath``/``PayloadPath``: one checked type for every config field that names a path."""

from __future__ import annotations

import pydantic
import pytest

from squall.component import ComponentConfig
from squall.errors import TopologyError
from squall.paths import DottedPath, PayloadPath
from squall.topology.loader import load_text


class _Config(ComponentConfig):
    read: DottedPath
    maybe: DottedPath | None = None
    write: PayloadPath = "out"


@pytest.mark.parametrize("good", ["a", "user.id", "payload.meta.x", "meta.shard_id"])
def test_a_dotted_path_is_kept_as_written(good):
    assert _Config(id="c", type="t", read=good).read == good


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "is not a dotted path"),
        ("a..b", "is not a dotted path"),
        ("a.", "is not a dotted path"),
        ("meta.nope", "metadata fields are meta."),
        ("meta.shard_id.x", "metadata fields are meta."),
    ],
)
def test_a_bad_dotted_path_is_a_config_error_of_that_field(bad, says):
    with pytest.raises(pydantic.ValidationError) as exc:
        _Config(id="c", type="t", read="ok", maybe=bad)
    (err,) = exc.value.errors()
    assert err["loc"] == ("maybe",)
    assert says in err["msg"]


def test_a_payload_path_refuses_metadata():
    with pytest.raises(pydantic.ValidationError, match="metadata is read-only"):
        _Config(id="c", type="t", read="a", write="meta.event_id")
    assert _Config(id="c", type="t", read="a", write="payload.meta").write == "payload.meta"


TOPOLOGY = """\
name: t
spout: {type: file, path: events.jsonl}
bolts:
  - {id: decode, type: json}
  - {id: route, type: route, field: "kind..x", routes: {a: b}}
  - {id: cut, type: project, rename: {a: meta.shard_id}}
sinks:
  - {id: out, type: stdout}
"""


def test_a_components_bad_path_is_reported_at_its_line():
    with pytest.raises(TopologyError) as exc:
        load_text(TOPOLOGY, file="topology.yaml", env={})
    shown = [str(p) for p in exc.value.problems]
    assert any(
        p.startswith("topology.yaml:5:") and "bolts[1].field" in p and "'kind..x'" in p
        for p in shown
    ), shown
    assert any(p.startswith("topology.yaml:6:") and "metadata is read-only" in p for p in shown), (
        shown
    )
