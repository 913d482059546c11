"""The YAML reference of every component, rendered from the registry's config models.

``squall reference`` prints it; ``docs/reference.md`` is this output, and README blocks between
``<!-- reference:KIND/TYPE -->`` markers are too — a test keeps both in sync with the code.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from squall.times import DurationOption
from squall.topology import registry

KIND_TITLES = {"spout": "Spouts", "bolt": "Bolts", "sink": "Sinks"}
#: How a duration option's type reads (``squall.times.Duration``).
DURATION = "duration (seconds, or text: `500ms`, `30s`, `5m`, `2h`, `1d`)"
#: ... and a duration option of whole seconds (``squall.times.WholeSeconds``: ``500ms`` refused).
WHOLE_DURATION = "duration in whole seconds (an integer, or text: `30s`, `5m`, `2h`)"


def _duration(marks: Any) -> str | None:
    """The type of an option marked ``DurationOption`` among ``marks``; None if unmarked."""
    for mark in marks:
        if isinstance(mark, DurationOption):
            return WHOLE_DURATION if mark.whole else DURATION
    return None


MARKER = re.compile(r"<!-- reference:(\w+)/(\w+) -->\n.*?<!-- /reference -->", re.S)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _duration(typing.get_args(annotation)[1:]) or _type_name(
            typing.get_args(annotation)[0]
        )
    if origin in (typing.Union, types.UnionType):
        names = dict.fromkeys(
            _type_name(a) for a in typing.get_args(annotation) if a is not type(None)
        )
        return " or ".join(names)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        args = typing.get_args(annotation)
        return (
            f"mapping to {_type_name(args[1])}"
            if len(args) == 2 and args[1] is not Any
            else "mapping"
        )
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if annotation is Any:
        return "any"
    if annotation is SecretStr:
        return "text (secret)"
    return {str: "text", int: "integer", float: "number", bool: "boolean"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _field_type(field: Any) -> str:
    """An option's type as the reference names it: pydantic keeps a top-level ``Annotated``'s
    marks in ``field.metadata`` (a ``Duration`` option's ``DurationOption``), not the annotation."""
    return _duration(field.metadata) or _type_name(field.annotation)


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is None or value is PydanticUndefined:
        return "—"
    if isinstance(value, BaseModel):
        return "see below" if value.model_fields_set else "defaults"
    if value in ({}, []):
        return "empty"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    """A default as it would be written in the topology file (flow style)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, str) and (not value.isprintable() or "`" in value or "|" in value):
        return json.dumps(value)  # a newline or a pipe would break the table row
    return str(value)


def component_table(kind: str, type_name: str) -> str:
    """A Markdown table of one component's options (without ``id`` and ``type``)."""
    cls = registry.resolve(kind, type_name)
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for name, field in cls.Config.model_fields.items():
        if name in ("id", "type"):
            continue
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(
            f"| `{field.alias or name}` | {_field_type(field)} | {_default(field)} | {description} |"
        )
    return "\n".join(rows) + "\n"


def full_reference() -> str:
    """Every registered component of every kind, as Markdown."""
    out = [
        "# Component reference",
        "",
        "Generated from the code by `squall reference`; every component also takes `id` and `type`.",
        "",
        "In every AWS component (and a nested `checkpoint` or `dead_tokens`), an empty or blank "
        '`region` or `endpoint_url` — `"${LOCAL_ENDPOINT:-}"` with the variable unset, quoted '
        "or not — is unset: AWS's endpoint, the default region. A non-empty `endpoint_url` must be "
        "`http(s)://host[:port]`, else the topology is refused at load time.",
        "",
    ]
    for kind, title in KIND_TITLES.items():
        out += [f"## {title}", ""]
        for type_name in sorted(registry.BUILTINS[kind]):
            cls = registry.resolve(kind, type_name)
            out += [f"### `{type_name}`", "", cls.summary, "", component_table(kind, type_name)]
    return "\n".join(out)


def refresh_markers(text: str) -> str:
    """``text`` with each ``<!-- reference:kind/type -->`` block re-rendered."""
    return MARKER.sub(
        lambda m: (
            f"<!-- reference:{m[1]}/{m[2]} -->\n{component_table(m[1], m[2])}<!-- /reference -->"
        ),
        text,
    )
