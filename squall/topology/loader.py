"""Load a topology YAML file into a validated ``Topology``, reporting every problem with its place.

Size (~590 lines): the loading steps (YAML, environment variables, component configs, the graph,
resource names and kinds, payload paths) and the locating of pydantic's errors in the YAML.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydantic

from squall.component import ComponentConfig
from squall.errors import Problem, TopologyError, describe_exception
from squall.redact import redact_url
from squall.times import DurationOption
from squall.topology import registry
from squall.topology.model import Topology, TopologyDocument
from squall.topology.payload_paths import check_topology_paths
from squall.topology.references import SecretSource, is_placeholder
from squall.topology.resource_config import EMPTY, ResourceKind
from squall.topology.yamlsource import Locator, Path_, read_yaml

KINDS = (("spout", "spout"), ("bolts", "bolt"), ("sinks", "sink"))
_NOT_A_MAPPING = "a topology is a mapping with name, spout, bolts, sinks"


def load(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    secrets: SecretSource | None = None,
) -> Topology:
    """Read, substitute, validate and compile a topology file; ``TopologyError`` lists all problems.

    ``secrets`` resolves ``${ssm:…}`` and ``${secretsmanager:…}`` references (the runners pass
    ``squall.secrets.aws_secrets()``); without it a reference is a problem.

    Returns the validated model with its compiled graph in ``.plan`` (made here, once). The two
    stay one object rather than ``load`` returning the ``Plan``: runners and deploy read the
    model's settings, resources and files long before (or without) running the graph, and the
    ``Plan`` keeps a reference back to it (``plan.topology``). To run a file:
    ``Engine.for_topology(path)``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(
            Problem(str(path), 0, 0, "", f"cannot read topology: {exc.strerror}")
        ) from None
    except UnicodeDecodeError as exc:
        raw = p.read_bytes()
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # PowerShell 5's `>`, Notepad's "Unicode"
            raise TopologyError(
                Problem(str(path), 1, 1, "", "the file is UTF-16 text, not UTF-8: save it as UTF-8")
            ) from None
        before = raw[: exc.start]
        start_of_line = before.rfind(b"\n") + 1  # the column counts characters, as YAML's do
        line = before.count(b"\n") + 1
        column = len(before[start_of_line:].decode("utf-8", "replace")) + 1
        raise TopologyError(
            Problem(str(path), line, column, "", "the file is not UTF-8 text")
        ) from None
    return load_text(text, file=str(path), base_dir=p.resolve().parent, env=env, secrets=secrets)


def load_text(
    text: str,
    *,
    file: str = "<string>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    secrets: SecretSource | None = None,
) -> Topology:
    """Like ``load`` for YAML text; relative paths resolve against ``base_dir`` (default: cwd)."""
    env = os.environ if env is None else env
    base_dir = base_dir or Path.cwd()
    data, loc, problems = read_yaml(text, file, env, secrets)
    if data is None:
        # A document of only `---`, `~` or `null` reads as None without a syntax problem.
        raise TopologyError(problems or [loc.problem((), _NOT_A_MAPPING)])
    # A value that could not be read (an unset ${VAR}) is reported once: not again by validation.
    unreadable, read = {p.path for p in problems if p.path}, len(problems)
    if not isinstance(data, dict):
        raise TopologyError([*problems, loc.problem((), _NOT_A_MAPPING)])
    if isinstance(data.get("spout"), dict) and "id" not in data["spout"]:
        data["spout"] = {"id": "spout", **data["spout"]}

    doc: TopologyDocument | None = None
    try:
        doc = TopologyDocument.model_validate(data)
    except pydantic.ValidationError as exc:
        problems.extend(pydantic_problems(exc, (), loc, TopologyDocument))
    # `settings: {batch_size: 0500}`, a resource's `pool_size: 010`: said with the document's
    # other problems (once: a value pydantic refused too is said in these words, deduplicated)
    problems.extend(_other_numbers((), loc, TopologyDocument, tuple((k,) for k, _ in KINDS)))

    components: dict[str, Any] = {"spout": None, "bolts": [], "sinks": []}
    vctx = {"base_dir": base_dir}
    for key, kind in KINDS:
        raw = data.get(key)
        items = [raw] if key == "spout" else raw
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            path: Path_ = (key,) if key == "spout" else (key, i)
            if not isinstance(item, dict):
                continue  # reported by TopologyDocument
            cfg = _component(kind, item, path, loc, problems, vctx)
            if key == "spout":
                components["spout"] = cfg
            else:
                components[key].append(cfg)

    if problems or doc is None:
        problems[read:] = [p for p in problems[read:] if p.path not in unreadable]
        raise TopologyError(_dedupe(problems))
    topo = Topology(
        name=doc.name,
        description=doc.description,
        resources=doc.resources,
        spout=components["spout"],
        bolts=tuple(components["bolts"]),
        sinks=tuple(components["sinks"]),
        streams=tuple(doc.streams),
        settings=doc.settings,
        file=file,
        base_dir=base_dir,
        locator=loc,
    )
    _check_resources(topo, loc)
    _check_input_not_written(topo, loc)
    _check_s3_input_not_written(topo, loc)
    check_topology_paths(topo.plan)  # compiled here, once: graph problems are load-time problems
    return topo


def _component(
    kind: str, item: dict, path: Path_, loc: Locator, problems: list[Problem], vctx: dict
) -> ComponentConfig | None:
    type_name = item.get("type")
    if not isinstance(type_name, str) or not type_name:
        problems.append(
            loc.problem(
                (*path, "type") if "type" in item else path,
                f"a {kind} needs a 'type' (one of: {', '.join(registry.known_types(kind))})",
            )
        )
        return None
    if ":" in type_name:
        _topology_modules_importable(vctx["base_dir"], type_name)
    try:
        cls = registry.resolve(kind, type_name)
    except registry.UnknownType as exc:
        problems.append(loc.problem((*path, "type"), exc.message))
        return None
    try:
        config = cls.Config.model_validate(item, context=vctx)
    except pydantic.ValidationError as exc:
        problems.extend(pydantic_problems(exc, path, loc, cls.Config))
        problems.extend(_other_numbers(path, loc, cls.Config))  # with the others, not after
        return None
    except Exception as exc:  # noqa: BLE001 - a validator raising what pydantic does not wrap
        # (an OverflowError, a plugin's KeyError): the component's problem, not a traceback
        problems.append(loc.problem(path, f"cannot check the options: {describe_exception(exc)}"))
        return None
    problems.extend(_surprises(path, loc, cls.Config))
    problems.extend(_other_numbers(path, loc, cls.Config))
    return config


def _surprises(prefix: Path_, loc: Locator, model: type[pydantic.BaseModel]) -> list[Problem]:
    """An unquoted ``NO``, ``2024-01-05``, ``12:30`` or ``01234`` where the option takes any
    value (a filter's ``in``, a project's ``defaults``, an inline schema): YAML 1.1 read a
    boolean, a date or another number than the text, and no event's JSON text equals it.
    Where the option wants a boolean, a date or a number, that reading is what was meant."""
    out = []
    for path, message in loc.surprises.items():
        if path[: len(prefix)] != prefix:
            continue
        if _type_at(model, path[len(prefix) :]) in (None, Any, object):
            out.append(loc.problem(path, message))
    return out


def _other_numbers(
    prefix: Path_, loc: Locator, model: type[pydantic.BaseModel], skip: tuple[str, ...] = ()
) -> list[Problem]:
    """An unquoted ``0100`` or ``8:20`` where the option wants a number: YAML 1.1 read it in
    octal (64) or base 60 (500), which few mean (``batch_size: 0500`` ran batches of 320); or a
    boolean, which pydantic takes as 1 or 0 (``attempts: on``, ``initial_backoff: off``)."""
    out = []
    for path, message in loc.numbers.items():
        if path[: len(prefix)] != prefix or path[len(prefix) : len(prefix) + 1] in skip:
            continue
        tp = _annotation_at(model, path[len(prefix) :])
        if _is_duration(tp):  # `max_future: 010` was 8s (also an option in seconds: `ttl: 010`)
            out.append(loc.problem(path, _or_null(loc.durations[path], loc, path, tp)))
        elif _is_number(tp):
            out.append(loc.problem(path, _or_null(message, loc, path, tp)))
    return out


def _or_null(message: str, loc: Locator, path: Path_, tp: Any) -> str:
    """A boolean where the option takes a number or null: ``max_future: off`` or
    ``statement_timeout: off`` likely meant none (no bound, no timeout): null there, not a number."""
    if loc.typed.get(path) != "a boolean":
        return message
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return (
        f"{message}, or null for no value"
        if union and type(None) in typing.get_args(tp)
        else message
    )


def _is_number(tp: Any) -> bool:
    """Whether an option of type ``tp`` takes only numbers (and null)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return bool(members) and all(_is_number(m) for m in members)
    return tp in (int, float)


def _is_duration(tp: Any) -> bool:
    """Whether an option of type ``tp`` takes a duration (``squall.times.Duration``, or null),
    where a number is seconds."""
    if typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        return any(isinstance(m, DurationOption) for m in args[1:]) or _is_duration(args[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return bool(members) and all(_is_duration(m) for m in members)
    return False


def _topology_modules_importable(base_dir: Path, type_name: str) -> None:
    """``type: kiosk_lookup:LookupBolt`` finds ``kiosk_lookup.py`` beside the topology, in every runner.

    The folder is appended to ``sys.path`` (never before the standard library or installed
    packages) only when the module is there; the Lambda package does the same with its copy.
    """
    top = type_name.split(":", 1)[0].split(".", 1)[0]
    folder = str(base_dir)
    if folder not in sys.path and (
        (base_dir / f"{top}.py").is_file() or (base_dir / top / "__init__.py").is_file()
    ):
        sys.path.append(folder)


def pydantic_problems(
    exc: pydantic.ValidationError, prefix: Path_, loc: Locator, model: type[pydantic.BaseModel]
) -> list[Problem]:
    """Turn pydantic errors into located problems with messages a data engineer can act on.

    Pydantic's error locations name the member of a union they tried (``source.sql.table``,
    ``key.list[str]``): such a segment is no key of the document, so it is left out of the path
    shown (and of the place looked up), and the errors of a union's members at one place become
    one problem. The full location still picks the model whose keys a typo is compared with.
    """
    out: list[Problem] = []
    merged: dict[tuple[Path_, str], int] = {}  # (path, kind) of a union's errors -> index in out
    for err in exc.errors(include_url=False):
        raw = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        kind = err["type"]
        rel = _in_document(loc, prefix, raw, keep_last=kind in ("missing", "extra_forbidden"))
        path = (*prefix, *rel)
        if kind == "extra_forbidden":
            key = str(raw[-1]) if raw else "?"
            fields = _fields_at(model, raw[:-1])
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else (f" (allowed: {', '.join(fields)})" if fields else "")
            )
            out.append(loc.problem(path, f"unknown key '{key}'{hint}", key=True))
        elif kind == "missing":
            out.append(
                loc.problem(
                    path[:-1], f"missing required key '{rel[-1]}'" if rel else "missing value"
                )
            )
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            if kind in ("union_tag_not_found", "union_tag_invalid"):
                # "Unable to extract tag using discriminator 'store'": `checkpoint: {resource: x}`
                kinds = _tagged_kinds(model, raw)  # "'store' (sql, dynamodb or memory)"
                ctx = err.get("ctx") or {}
                if kinds and kind == "union_tag_not_found":
                    msg = f"missing required key {kinds}: it picks the kind of options"
                elif kinds:
                    tag, listed = kinds.split(" ", 1)  # "'store'", "(sql, dynamodb or memory)"
                    msg = f"{tag[1:-1]} '{ctx.get('tag')}' is unknown: expected {listed[1:-1]}"
            if kind in ("model_type", "model_attributes_type"):  # "… or instance of RetryConfig"
                keys = _fields_at(model, raw)
                kinds = _tagged_kinds(model, raw)  # a `store: sql | dynamodb | memory` union
                msg = (
                    f"expected a mapping of options ({', '.join(keys)})"
                    if keys
                    else f"expected a mapping of options with {kinds} and that kind's options"
                    if kinds
                    else "expected a mapping of options (key: value)"
                )
            if (
                kind in _COLLECTIONS
                and loc.typed.get(path) == "null"
                and path
                and (isinstance(path[-1], int))
            ):  # `bolts:` then `  -` with nothing after it
                msg = "is an empty list entry (a '-' with nothing after it): remove it, or write the entry"
            elif kind in _COLLECTIONS and loc.typed.get(path) == "null":  # `bolts:` all commented
                empty = "[]" if kind == "list_type" else "{}"
                fix = (
                    "it is required"
                    if _required(model, raw)
                    else f"remove the key, or write {empty}"
                )
                msg = f"has no value (its entries commented out?): {fix}"
            elif kind in ("list_type", "dict_type") and rel == raw:
                msg = _collection_message(kind, path, err.get("input"))
            elif kind == "string_type" and rel == raw and isinstance(err.get("input"), list | dict):
                # `table: [events]`, `path: {file: x}`
                msg = f"{msg}, not {_read_as(err.get('input'))}: write the text alone"
            elif path in loc.durations and _is_duration(_annotation_at(model, raw)):
                # `size: 0:00` was "size must be positive"
                msg = _or_null(loc.durations[path], loc, path, _annotation_at(model, raw))
            elif path in loc.numbers and _is_number(_type_at(model, raw)):
                # `cache_size: off` was "greater than or equal to 1"
                msg = _or_null(loc.numbers[path], loc, path, _annotation_at(model, raw))
            elif loc.typed.get(path) == "null" and path in loc.variables and rel == raw:
                # `table: ${EVENTS_TABLE}` with EVENTS_TABLE="": "Input should be a valid string"
                msg = (
                    f"{msg}: the variable here is empty (set to '', or an empty default), which "
                    "YAML reads as null: set it, or give it a default (${VAR:-value})"
                )
            elif kind == "int_parsing" and _EXPONENT.fullmatch(str(err.get("input", ""))):
                # `batch_size: 1e3`: YAML 1.1 reads it as text, which no integer parses
                msg = (
                    f"{msg}: YAML reads {err['input']} as text (its exponent needs a '.' and a "
                    "sign, 1.0e+3): write the number in digits"
                )
            if rel != raw:  # one member of a union: "… a valid string or a valid list"
                first = merged.setdefault((path, "union"), len(out))
                if first < len(out):
                    prev = out[first]
                    more = msg.removeprefix("Input should be ")
                    if more not in prev.message:
                        out[first] = replace(prev, message=f"{prev.message} or {more}")
                    continue
            if kind == "string_type" and rel == raw and loc.typed.get(path, "null") != "null":
                # `table: 2024`, `bucket: 123456`, `id: yes`
                msg = f"{msg}: YAML reads this unquoted value as {loc.typed[path]}; write it in quotes"
            out.append(loc.problem(path, msg))
    return out


_COLLECTIONS = ("list_type", "dict_type", "model_type", "model_attributes_type")
#: A number in exponent form that YAML 1.1 reads as text (`1e3`: no '.', no sign).
_EXPONENT = re.compile(r"[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+")


def _read_as(value: Any) -> str:
    """What YAML read, in words (never the value: it may be a secret)."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "text" if isinstance(value, str) else "a value"


def _collection_message(kind: str, path: Path_, value: Any) -> str:
    """ "Input should be a valid list / dictionary" in words: what YAML read there and what to
    write instead."""
    read = _read_as(value)
    if kind == "list_type":
        return f"expected a list (an entry per line, each after '- '; or [a, b]), not {read}"
    component = {
        ("spout",): ("the spout", "{type: file, path: events.jsonl}"),
        ("bolts",): ("a bolt", "{id: decode, type: json}"),
        ("sinks",): ("a sink", "{id: out, type: stdout}"),
    }.get(tuple(p for p in path if not isinstance(p, int)))
    if component is not None and (path == ("spout",) or len(path) == 2):
        return (
            f"{component[0]} is a mapping of its id, type and options ({component[1]}), not {read}"
        )
    return f"expected a mapping (key: value on each line; or {{key: value}}), not {read}"


def _required(model: type[pydantic.BaseModel], raw: tuple) -> bool:
    """Whether the option at pydantic's location ``raw`` must be given."""
    parent = _type_at(model, raw[:-1]) if raw else None
    if not (isinstance(parent, type) and issubclass(parent, pydantic.BaseModel)):
        return False
    return any(
        raw[-1] in (name, f.alias) and f.is_required() for name, f in parent.model_fields.items()
    )


def _in_document(loc: Locator, prefix: Path_, raw: tuple, *, keep_last: bool) -> Path_:
    """``raw`` without the segments that are no key or index of the document (union members).

    A segment is dropped only where the document is known (its parent was read); the last one is
    kept for a missing or unknown key (a missing key is, by definition, not in the document)."""
    kept: list[str | int] = []
    for i, part in enumerate(raw):
        here = (*prefix, *kept, part)
        known = here in loc.values or here in loc.keys
        parent_known = (*prefix, *kept) in loc.values
        if known or not parent_known or (keep_last and i == len(raw) - 1):
            kept.append(part)
    return tuple(kept)


def _fields_at(model: type[pydantic.BaseModel], rel: tuple) -> list[str]:
    """Keys of the (nested) model at pydantic's location ``rel``, for did-you-mean hints: through
    nested models, lists, mappings (``resources.<name>``) and unions (by the member's tag)."""
    current = _type_at(model, rel)  # `dict[str, Annotated[ColumnSpec, …]]`: the model inside
    if not (isinstance(current, type) and issubclass(current, pydantic.BaseModel)):
        return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _tagged_kinds(model: type[pydantic.BaseModel], rel: tuple) -> str:
    """``'store' (sql, dynamodb or memory)`` when the option at ``rel`` is a union of models told
    apart by a tag (the kinesis spout's `checkpoint`), else empty: which key picks the kind."""
    tp = _annotation_at(model, rel)
    parent = _type_at(model, rel[:-1]) if rel else None
    if isinstance(parent, type) and issubclass(parent, pydantic.BaseModel):
        field = next((f for n, f in parent.model_fields.items() if rel[-1] in (n, f.alias)), None)
        if field is not None and isinstance(field.discriminator, str):  # pydantic merged the mark
            tp = typing.Annotated[field.annotation, field]
    while tp is not None:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            tag = next((getattr(m, "discriminator", None) for m in args[1:]), None)
            if isinstance(tag, str):
                values = []
                for member in typing.get_args(args[0]):
                    f = getattr(member, "model_fields", {}).get(tag)
                    if f is not None and typing.get_origin(f.annotation) is typing.Literal:
                        values.extend(str(v) for v in typing.get_args(f.annotation))
                if values:
                    listed = (
                        ", ".join(values[:-1]) + f" or {values[-1]}"
                        if len(values) > 1
                        else values[0]
                    )
                    return f"'{tag}' ({listed})"
            tp = args[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            tp = members[0] if len(members) == 1 else None
        else:
            return ""
    return ""


def _type_at(model: type[pydantic.BaseModel], rel: tuple) -> Any:
    """The type an option takes at ``rel`` inside ``model`` (None when it cannot tell)."""
    current = _annotation_at(model, rel)
    while typing.get_origin(current) is typing.Annotated:
        current = typing.get_args(current)[0]
    return current


def _annotation_at(model: type[pydantic.BaseModel], rel: tuple) -> Any:
    """``_type_at`` with its ``Annotated`` marks (``squall.times.Duration``'s)."""
    current: Any = model
    for part in rel:
        current = _step(current, part)
        if current is None:
            return None
    return current


def _step(tp: Any, part: str | int) -> Any:
    """The type found at ``part`` inside ``tp`` (None when it cannot tell)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _step(args[0], part)
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        for name, f in tp.model_fields.items():
            if part in (name, f.alias):  # (pydantic keeps an Annotated's marks apart)
                return typing.Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        return None
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        for m in members:  # pydantic names the member it tried: its tag, or its class name
            if part in _member_names(m):
                return m
        for m in members:
            found = _step(m, part)
            if found is not None:
                return found
        return None
    if origin in (list, tuple, set, frozenset) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _member_names(member: Any) -> set[str]:
    names = {getattr(member, "__name__", ""), str(member)}
    if isinstance(member, type) and issubclass(member, pydantic.BaseModel):
        for f in member.model_fields.values():
            if typing.get_origin(f.annotation) is typing.Literal:
                names.update(str(a) for a in typing.get_args(f.annotation))
    return names


def _check_resources(topo: Topology, loc: Locator) -> None:
    problems = []
    off, used = set(), set()  # names an option that may be off names; names another option does
    for key, configs in (("spout", [topo.spout]), ("bolts", topo.bolts), ("sinks", topo.sinks)):
        for i, cfg in enumerate(configs):
            kinds = resource_kinds(cfg, (key,) if key == "spout" else (key, i))
            optional = {path for path, _, kind in kinds if kind.optional}
            for path, name in resource_names(cfg, (key,) if key == "spout" else (key, i)):
                (off if path in optional else used).add(name)
                if name not in topo.resources:
                    close = difflib.get_close_matches(name, list(topo.resources), n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    problems.append(loc.problem(path, f"unknown resource '{name}'{hint}"))
            for path, name, kind in kinds:
                found = topo.resources.get(name)
                if found is None or is_placeholder(found.url) or not found.url:  # unknown kind
                    continue
                if not kind.accepts(found.scheme):
                    wanted = "a SQL database" if kind.kind == "sql" else "Redis"
                    problems.append(  # the words of Resources.sql / redis at start
                        loc.problem(
                            path, f"resource '{name}' is not {wanted} ({redact_url(found.url)})"
                        )
                    )
    # An empty URL (`"${KIOSK_CACHE_URL:-}"` unset): an option that may be off (a lookup's
    # shared_cache) is off; every other use, a Kinesis spout's default checkpoint on it, or no use
    # at all, is refused at the URL (it stopped the start without a line: "is not a SQL database ()").
    for name, found in topo.resources.items():
        if not found.url and (name not in off or name in used or name == "warehouse"):
            problems.append(loc.problem(("resources", name, "url"), EMPTY))
    if problems:
        raise TopologyError(problems)


def resource_kinds(model: pydantic.BaseModel, path: Path_) -> list[tuple[Path_, str, ResourceKind]]:
    """(path, name, kind) of every resource a config names in a field marked with its kind
    (``SqlResource``, ``RedisResource``), nested options included: `squall validate` checks the
    resource's URL as `squall run` does at start."""
    out = []
    for name, f in type(model).model_fields.items():
        value, here = getattr(model, name), (*path, f.alias or name)
        if isinstance(value, str):
            kind = _kind_of(f)
            if kind is not None:
                out.append((here, value, kind))
        elif isinstance(value, pydantic.BaseModel):
            out.extend(resource_kinds(value, here))
    return out


def _kind_of(f: Any) -> ResourceKind | None:
    """The ``ResourceKind`` marking a field, in its metadata or in an ``X | None`` member."""
    marks = list(f.metadata)
    for member in typing.get_args(f.annotation):
        if typing.get_origin(member) is typing.Annotated:
            marks.extend(typing.get_args(member)[1:])
    return next((m for m in marks if isinstance(m, ResourceKind)), None)


def _check_input_not_written(topo: Topology, loc: Locator) -> None:
    """A component writing files (a dead-letter file) must not name the spout's input file: its
    lines were appended to the records being read, and read back as records by the next run."""
    spout_files = registry.capabilities("spout", topo.spout).input_files
    inputs = {_on_disk(topo.base_dir, f) for f in spout_files}
    problems = []
    for key, kind, configs in (("bolts", "bolt", topo.bolts), ("sinks", "sink", topo.sinks)):
        for i, cfg in enumerate(configs):
            if not inputs or not registry.capabilities(kind, cfg).writes_local_files:
                continue
            for name, f in type(cfg).model_fields.items():
                value = getattr(cfg, name)
                if name not in ("id", "type") and isinstance(value, str) and value:
                    if _on_disk(topo.base_dir, value) in inputs:
                        problems.append(
                            loc.problem(
                                (key, i, f.alias or name),
                                f"{kind} '{cfg.id}' would write into the spout's input file "
                                f"'{value}': name another file",
                            )
                        )
    if problems:
        raise TopologyError(problems)


def _check_s3_input_not_written(topo: Topology, loc: Locator) -> None:
    """A sink writing S3 objects the ``s3`` spout reads (its bucket, a key under its prefix with
    its suffix) feeds the topology its own output: in Lambda each object put is a new
    notification that invokes the function again, without end; locally each run reads the last
    one's objects (a lake's rows, dead letters) as input records."""
    from squall.component import TriggerSource

    trigger = registry.capabilities("spout", topo.spout).lambda_trigger
    if trigger is None or trigger.source is not TriggerSource.S3:
        return
    problems = []
    for i, cfg in enumerate(topo.sinks):
        for bucket, prefix, suffix, before in registry.capabilities("sink", cfg).s3_objects:
            if bucket != trigger.name or not _may_overlap(prefix, trigger.prefix):
                continue
            if not _may_end_alike(suffix, before, trigger.suffix):
                continue
            scope = f"s3://{bucket}/{trigger.prefix}" + (
                f"*{trigger.suffix}" if trigger.suffix else ""
            )
            problems.append(
                loc.problem(
                    ("sinks", i, "prefix"),
                    f"sink '{cfg.id}' would write s3://{bucket}/{prefix}*{suffix} objects where "
                    f"the spout reads its input ({scope}): each would be read back as input "
                    "(in Lambda, each object put invokes the function again, without end); "
                    "write to another bucket or to a prefix outside the spout's",
                )
            )
    if problems:
        raise TopologyError(problems)


def _may_overlap(written: str, read: str) -> bool:
    """Whether keys starting with ``written`` can start with ``read``."""
    return written.startswith(read) or read.startswith(written)


def _may_end_alike(written: str, before: str, read: str) -> bool:
    """Whether keys ending with one of the characters ``before`` (any, if empty) and ``written``
    can end with ``read`` (a spout's ``-export.jsonl.gz`` is no lake object's ending)."""
    if written.endswith(read):
        return True
    if not read.endswith(written):
        return False
    return not before or read[-len(written) - 1] in before


def _on_disk(base_dir: Path, value: str) -> str:
    path = Path(value).expanduser()
    return os.path.realpath(path if path.is_absolute() else base_dir / path)


def resource_names(
    model: pydantic.BaseModel, path: Path_, fields: tuple[str, ...] = ("resource", "store", "cache")
) -> list[tuple[Path_, str]]:
    """(path, name) of every resource a config names: its own ``resource``, ``store`` or
    ``cache``, and a nested option's ``resource`` (a lookup's ``source`` and ``shared_cache``, a
    Kinesis spout's ``checkpoint``), which `squall validate` passed and `squall run` refused."""
    out = []
    for name, f in type(model).model_fields.items():
        value, here = getattr(model, name), (*path, f.alias or name)
        if name in fields and isinstance(value, str):
            out.append((here, value))
        elif isinstance(value, pydantic.BaseModel):  # nested, `store` is a kind (`store: sql`)
            out.extend(resource_names(value, here, ("resource",)))
    return out


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out
