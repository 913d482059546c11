"""JSON Schema of topology files, rendered from the component registry (for editor completion)."""

from __future__ import annotations

import copy
from typing import Any

from squall.topology import registry
from squall.topology.model import TopologyDocument


def component_schemas(kind: str) -> list[dict[str, Any]]:
    """One schema per registered type of a kind, with ``type`` pinned to its name."""
    out = []
    for type_name in registry.known_types(kind):
        try:
            cls = registry.resolve(kind, type_name)
        except registry.UnknownType:
            continue  # a plugin that does not import is reported by `squall validate`, not here
        schema = cls.Config.model_json_schema(by_alias=True)
        schema["title"] = f"{kind} '{type_name}'"
        if cls.summary:
            schema["description"] = cls.summary
        schema.setdefault("properties", {})["type"] = {
            "const": type_name,
            "description": cls.summary,
        }
        if kind == "spout":
            schema["required"] = [r for r in schema.get("required", []) if r != "id"]
        out.append(schema)
    return out


def _inline_defs(schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    defs = schema.pop("$defs", {})
    return schema, defs


def topology_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a squall topology YAML document."""
    root = copy.deepcopy(TopologyDocument.model_json_schema(by_alias=True))
    defs = root.setdefault("$defs", {})

    def one_of(kind: str) -> dict[str, Any]:
        choices = []
        for s in component_schemas(kind):
            s, sub_defs = _inline_defs(s)
            defs.update(sub_defs)
            choices.append(s)
        return {"oneOf": choices}

    props = root["properties"]
    props["spout"] = {**one_of("spout"), "description": props["spout"].get("description", "")}
    props["bolts"] = {
        "type": "array",
        "items": one_of("bolt"),
        "description": props["bolts"].get("description", ""),
    }
    props["sinks"] = {
        "type": "array",
        "minItems": 1,
        "items": one_of("sink"),
        "description": props["sinks"].get("description", ""),
    }
    _allow_variables(root)
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    root["title"] = "squall topology"
    return root


#: A value holding a ``${VAR}``, ``${VAR:-default}`` or a secret reference: the loader replaces
#: it (and types a plain one again: ``batch_size: ${N:-500}`` is a number), so an editor cannot
#: judge it by the option's type.
VARIABLE = {
    "type": "string",
    "pattern": r"\$\{(?:[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?|(?:ssm|secretsmanager):[^}]*)\}",
    "description": "Replaced when the topology is loaded: ${VAR}, ${VAR:-default}, ${ssm:…}.",
}
_META = ("title", "description", "default", "examples", "deprecated")


def _allow_variables(node: Any, names: bool = False) -> None:
    """Let every option whose schema a variable would fail (a number, a boolean, a choice, a
    text with a pattern) also take a ``${VAR}``: `rate_limit: ${FCM_RATE_LIMIT:-500}` loads, so
    an editor must not mark it. A ``const`` (a component's ``type``, a union's tag) stays as it
    is: it picks the member of a ``oneOf``, which a variable would match every one of.
    ``names``: ``node`` maps names to schemas (``properties``, ``$defs``)."""
    if isinstance(node, list):
        for item in node:
            _allow_variables(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in list(node.items()):
        if names:  # `properties`, `$defs`: each value is a schema, whatever its name
            _allow_variables(value)
        elif key not in ("const", "enum", "default", "examples", "pattern", "required"):
            _allow_variables(value, key in ("properties", "$defs", "patternProperties"))
    if names:
        return
    kind = node.get("type")
    judged = kind in ("integer", "number", "boolean") or (
        kind == "string" and any(k in node for k in ("enum", "pattern", "format", "minLength"))
    )
    if judged and "const" not in node:
        core = {k: v for k, v in node.items() if k not in _META}
        for k in core:
            del node[k]
        node["anyOf"] = [core, VARIABLE]
