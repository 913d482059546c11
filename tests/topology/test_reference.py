"""The option reference is generated from the code; the checked-in copies must match it."""

from __future__ import annotations

from squall.topology.reference import full_reference, refresh_markers
from tests.conftest import ROOT


def test_docs_reference_is_up_to_date():
    expected = full_reference()
    assert (ROOT / "docs" / "reference.md").read_text() == expected, (
        "run: squall reference -o docs/reference.md"
    )


def test_readme_reference_blocks_are_up_to_date():
    text = (ROOT / "README.md").read_text()
    assert "<!-- reference:bolt/geo -->" in text
    assert refresh_markers(text) == text, (
        "refresh the README's reference blocks (squall.topology.reference)"
    )


def test_every_option_of_every_component_is_described():
    from squall.topology import registry

    undocumented = [
        f"{kind}/{t}.{name}"
        for kind, types_ in registry.BUILTINS.items()
        for t in types_
        for name, f in registry.resolve(kind, t).Config.model_fields.items()
        if name not in ("id", "type") and not f.description
    ]
    assert undocumented == []


def test_every_row_of_the_reference_is_one_line_of_four_cells():
    """A default holding a newline (firehose's `delimiter`) broke its table in two."""
    import re

    for line in full_reference().splitlines():
        if line.startswith("| `"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            assert len(cells) == 4, line


def test_defaults_and_types_read_as_yaml_not_as_python_reprs():
    text = full_reference()
    for python_only in ("<Action.", "{'", "Any", "SecretStr", "mapping to Action"):
        assert python_only not in text, python_only
    assert (
        "| `actions` | mapping to `register` \\| `subscribe` \\| `unsubscribe` | "
        "`{register: register, subscribe: subscribe, unsubscribe: unsubscribe}` |"
    ) in text
    assert '| `delimiter` | text | `"\\n"` |' in text
    assert "| `credentials` | text (secret) | required |" in text


def test_a_duration_option_reads_as_a_duration():
    """``squall.times.Duration`` options (the window's ``size``, the subscription's
    ``max_future``) read "integer or number or text", which says nothing of ``30s``."""
    from squall.topology.reference import DURATION, component_table

    window = component_table("bolt", "window")
    for option in ("size", "hop", "allowed_lateness", "idle_shard_after", "max_future"):
        assert f"| `{option}` | {DURATION} |" in window
    assert f"| `max_future` | {DURATION} |" in component_table("bolt", "subscription")
    assert "| `max_topics` | integer |" in component_table("bolt", "subscription")


def test_a_duration_option_takes_the_texts_its_type_offers():
    """Every option the reference shows as a duration takes ``500ms`` (its bounds aside); an
    option of whole seconds (``WholeSeconds``: ``wait_time``, ``delay_seconds``, ``cache_ttl``)
    offered it too and refused it ("Input should be a valid integer")."""
    import pydantic
    import pytest

    from squall.topology import registry
    from squall.topology.reference import DURATION, WHOLE_DURATION, _field_type

    seen = {DURATION: 0, WHOLE_DURATION: 0}
    for kind in registry.BUILTINS:
        for type_name in registry.BUILTINS[kind]:
            fields = registry.resolve(kind, type_name).Config.model_fields
            for name, field in fields.items():
                shown = _field_type(field)
                if shown not in seen:
                    continue
                seen[shown] += 1
                one = pydantic.create_model("One", x=(field.annotation, field))
                for text in ("30s", "500ms") if shown == DURATION else ("30s", "1m"):
                    try:
                        one(x=text)
                    except pydantic.ValidationError as exc:  # its bounds may refuse it
                        kinds = {e["type"] for e in exc.errors()}
                        assert kinds <= {"greater_than_equal", "less_than_equal"}, (
                            f"{kind} {type_name}.{name}: {text!r} refused: {exc}"
                        )
                if shown == WHOLE_DURATION:
                    with pytest.raises(pydantic.ValidationError):
                        one(x="1500ms")
    assert seen[DURATION] > 10 and seen[WHOLE_DURATION] >= 3
