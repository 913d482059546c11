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
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    root["title"] = "squall topology"
    return root
