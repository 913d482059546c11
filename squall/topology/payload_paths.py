"""Load-time check of the payload paths a sink reads (a warehouse's columns), or a bolt needs in
every event (a window's key and time field), against what the events reaching it can hold.

A path is refused only when it is certain no event reaching the sink has it: every way from the
spout to the sink passes a bolt that guarantees a JSON Schema (the ``schema`` bolt, on its
``default`` stream), that schema closes the object where the path leaves its declared properties
(``additionalProperties: false``), and every bolt after it says which paths it sets
(``Bolt.payload_writes``: a lookup's ``target``, geo's, device's, subscription's) and none of them
sets the path or a parent or child of it. Anything uncertain passes: a way from the spout with no
schema, a bolt that may change anything (``json``, ``project``, ``window``, a team's own), an open
object, a schema keyword that is not a plain object's (``$ref``, ``allOf``/``anyOf``/``oneOf``,
``if``, ``patternProperties``…). So no topology that can work is refused; a typo in an open
schema's field is left to the warehouse's warning at run time (a column absent from every event
of a batch).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any

from squall.component import DEFAULT
from squall.errors import Problem, TopologyError
from squall.paths import payload_keys
from squall.topology.graph import Plan

#: Keywords a plain object schema may carry without changing which properties it allows.
_PLAIN_OBJECT = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "title",
        "description",
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "minProperties",
        "maxProperties",
    }
)


@dataclass(frozen=True)
class Known:
    """Events valid against ``schema`` (checked by bolt ``by``), then given ``written`` paths."""

    schema: dict[str, Any]
    by: str
    written: frozenset[tuple[str, ...]] = frozenset()


@dataclass(frozen=True)
class Absent:
    """Why a path is certainly absent: the closed object at ``at`` and the fields it allows."""

    by: str
    at: tuple[str, ...]
    allowed: tuple[str, ...]


def absent(known: Known, keys: tuple[str, ...]) -> Absent | None:
    """Where the schema rules ``keys`` out, or None when the path may exist."""
    for w in known.written:  # a bolt sets the path, a parent (whole blocks) or a child of it
        if keys[: len(w)] == w or w[: len(keys)] == keys:
            return None
    node: Any = known.schema
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or set(node) - _PLAIN_OBJECT:
            return None  # `true`, a reference, a combinator: not certain
        props = node.get("properties", {})
        if not isinstance(props, dict):
            return None
        if key in props:
            node = props[key]
            continue
        if node.get("additionalProperties") is False:
            return Absent(known.by, keys[:depth], tuple(props))
        return None
    return None


def check_payload_paths(plan: Plan) -> list[Problem]:
    """Problems of the sinks' and bolts' paths no event reaching them can have (see the module's
    doc)."""
    topo = plan.topology
    loc = topo.locator
    # What is known of the events entering each node: None is "anything".
    incoming: dict[int, list[Known | None]] = {n.index: [] for n in plan.nodes}
    for t in plan.entry:
        incoming[t].append(None)
    problems: list[Problem] = []
    sink_index = {cfg.id: i for i, cfg in enumerate(topo.sinks)}
    bolt_index = {cfg.id: i for i, cfg in enumerate(topo.bolts)}
    for node in plan.nodes:  # in topological order: every feeder before its targets
        ins = incoming[node.index]
        if node.kind == "sink":
            if not node.dead_letter and ins and None not in ins and loc is not None:
                problems.extend(
                    _sink_problems(node, ins, ("sinks", sink_index[node.id]), loc)  # type: ignore[arg-type]
                )
            continue
        if ins and None not in ins and loc is not None and node.id in bolt_index:
            # A bolt's own needs (a window's key and time field): every event without them fails.
            problems.extend(_sink_problems(node, ins, ("bolts", bolt_index[node.id]), loc))  # type: ignore[arg-type]
        # A plugin bolt without the hooks (not a Bolt subclass), or a team's subclass of a
        # built-in one with code of its own, may change anything.
        schema_of = declared(node.cls, "payload_schema")
        writes_of = declared(node.cls, "payload_writes")
        schema = schema_of(node.config) if schema_of is not None else None
        writes = writes_of(node.config) if writes_of is not None else None
        for stream, targets in node.outputs.items():
            if schema is not None and stream == DEFAULT:
                out: list[Known | None] = [Known(schema, node.id)]
            elif writes is None:
                out = [None]
            else:
                added = frozenset(written_keys(w) for w in writes)
                out = [None if k is None else Known(k.schema, k.by, k.written | added) for k in ins]
            for t in targets:
                incoming[t].extend(out)
    return problems


def written_keys(path: str) -> tuple[str, ...]:
    """The payload keys a bolt's target sets (``paths.setter``'s rule): a ``meta.…`` target
    is a payload key ``meta`` too — a target is never the record's metadata."""
    parts = tuple(path.split("."))
    return parts[1:] if parts[0] == "payload" else parts


def declared(cls: type, hook: str) -> Any:
    """``cls``'s ``hook`` (``payload_writes``, ``payload_schema``, ``payload_reads``) when it
    speaks for the class's code: declared by the most derived class with code of its own. A
    team's subclass of a built-in bolt that overrides ``process`` (or ``__init__``, a helper)
    inherits its base's declaration — a filter's "sets nothing", a schema's "every event fits"
    — whatever the new code sets: None then (not known)."""
    for klass in cls.__mro__:
        if hook in vars(klass):
            return getattr(cls, hook)
        if any(
            inspect.isfunction(v) or isinstance(v, classmethod | staticmethod)
            for v in vars(klass).values()
        ):
            return None
    return None


def _sink_problems(node: Any, ins: list[Known], at: tuple, loc: Any) -> list[Problem]:
    problems = []
    reads = declared(node.cls, "payload_reads")
    for option, path in reads(node.config) if reads is not None else []:
        keys = payload_keys(path)
        if keys is None:  # the record's metadata
            continue
        found = [absent(k, keys) for k in ins]
        if not found or any(a is None for a in found):
            continue
        first = found[0]
        assert first is not None
        where = ".".join(first.at) or "the top level"
        missing = keys[len(first.at)]
        close = difflib.get_close_matches(missing, first.allowed, n=1, cutoff=0.6)
        hint = f" (did you mean '{'.'.join((*first.at, close[0]))}'?)" if close else ""
        fields = ", ".join(first.allowed) or "none"
        place = (*at, *option)
        default = ""
        if place not in loc.values:
            if len(option) > 1:  # `name: path` shorthand: no `path` key
                place = place[:-1]
            elif option:  # an option left out (a window's `time_field`): its default's path
                default = f" (the default of '{option[0]}', which is not set)"
        problems.append(
            loc.problem(
                place,
                f"path '{path}'{default} names no field the events reaching '{node.id}' can "
                f"have: the schema of bolt '{first.by}' closes {where} (additionalProperties: "
                f"false; its fields: {fields}) and no bolt after it sets '{path}'{hint}",
            )
        )
    return problems


def check_topology_paths(plan: Plan) -> None:
    """Raise ``TopologyError`` with every sink path no event can have."""
    problems = check_payload_paths(plan)
    if problems:
        raise TopologyError(problems)
