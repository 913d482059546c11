"""The hand-written option tables of the README and docs/ (each after an
`<!-- options: kind/type -->` marker) name only options the code has, all of them, with the
code's defaults; every option table of the docs is either marked so or generated
(`<!-- reference:… -->`, docs/reference.md)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pydantic
import yaml

from squall.topology import registry
from squall.topology.model import TopologyDocument
from squall.topology.resource_config import ResourceConfig
from tests.test_doc_links import ROOT, without_code_blocks
from tests.test_doc_snippets import squall_commands, user_docs

MARKER = re.compile(r"^<!-- options: ([\w/-]+) -->$")
TABLE_HEAD = re.compile(r"^\| *(key|option) *\|")
CELL = re.compile(r"(?<!\\)\|")
UNSET = {"—", "-", "none", ""}


def option_tables(path: Path) -> list[tuple[int, str | None, list[str], list[list[str]]]]:
    """(line, marked subject or None, header cells, rows) of each option table outside code blocks
    and generated reference blocks."""
    lines = without_code_blocks(path.read_text()).splitlines()
    tables, generated = [], False
    for i, line in enumerate(lines):
        generated = ("<!-- reference:" in line) or (generated and "<!-- /reference" not in line)
        if generated or not TABLE_HEAD.match(line):
            continue
        marker = MARKER.match(lines[i - 1]) if i else None
        rows = []
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            rows.append([c.strip() for c in CELL.split(row)[1:-1]])
        header = [c.strip() for c in CELL.split(line)[1:-1]]
        tables.append((i + 1, marker.group(1) if marker else None, header, rows))
    return tables


def _model(subject: str) -> type[pydantic.BaseModel]:
    if subject == "topology":
        return TopologyDocument
    if subject == "resource":
        return ResourceConfig
    kind, type_name = subject.split("/")
    return registry.resolve(kind, type_name).Config


def _fields(model: type[pydantic.BaseModel]) -> dict[str, pydantic.fields.FieldInfo]:
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _nested(field: pydantic.fields.FieldInfo) -> type[pydantic.BaseModel] | None:
    todo = [field.annotation]
    while todo:
        tp = todo.pop()
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            return tp
        todo.extend(typing.get_args(tp))
    return None


def _field(model: type[pydantic.BaseModel], dotted: str) -> pydantic.fields.FieldInfo | None:
    head, _, rest = dotted.partition(".")
    field = _fields(model).get(head)
    if field is None or not rest:
        return field
    inner = _nested(field)
    return _field(inner, rest) if inner else None


def _plain(value):
    return value.value if hasattr(value, "value") and not isinstance(value, (int, str)) else value


def default_problem(field: pydantic.fields.FieldInfo, cell: str) -> str | None:
    """What is wrong with a documented default; None when it agrees or cannot be read as a value."""
    text = cell.strip()
    literal = re.fullmatch(r"`([^`]*)`|(-?[\d.]+|true|false)", text)
    if text == "required":
        return None if field.is_required() else f"documented as required, default {field.default!r}"
    if text in UNSET:
        if field.is_required():
            return None  # README tables write a required option's default as —
        default = field.get_default(call_default_factory=True)
        return (
            None if default in (None, "", [], {}) else f"documented as unset, default {default!r}"
        )
    if not literal:
        return None  # words ("the file name", "10 MiB"): read by a person
    if field.is_required():
        return f"documented default {text}, but the option is required"
    raw = literal.group(1) if literal.group(1) is not None else literal.group(2)
    try:
        documented = yaml.safe_load(raw)
    except yaml.YAMLError:
        documented = raw
    actual = _plain(field.get_default(call_default_factory=True))
    if isinstance(actual, dict):
        actual = {_plain(k): _plain(v) for k, v in actual.items()}
    if documented == actual or raw == actual:  # `squall:subscription:` is text, not YAML
        return None
    return f"documented default {text}, the code's {actual!r}"


def table_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    commands = squall_commands()
    problems = []
    for path in files:
        if path == root / "docs" / "reference.md":
            continue  # generated from the same models (tests/topology/test_reference.py)
        for line, subject, header, rows in option_tables(path):
            where = f"{path.relative_to(root)}:{line}"
            if subject is None:
                problems.append(
                    f"{where}: option table without an <!-- options: kind/type --> marker"
                )
                continue
            names = [n for row in rows for n in re.findall(r"`([^`]+)`", row[0])]
            if subject.startswith("command/"):
                command = commands[subject.split("/")[1]]
                known = {o for p in command.params for o in p.opts}
                problems += [
                    f"{where}: no option {n.split()[0]}" for n in names if n.split()[0] not in known
                ]
                continue
            model = _model(subject)
            documented = set()
            for row in rows:
                for name in re.findall(r"`([^`]+)`", row[0]):
                    field = _field(model, name)
                    if field is None:
                        problems.append(f"{where}: {subject} has no option {name!r}")
                        continue
                    documented.add(name.split(".")[0])
                    wrong = None
                    if "default" in header:
                        wrong = default_problem(field, row[header.index("default")])
                    elif "required" in header:
                        said = row[header.index("required")] == "yes"
                        if said != field.is_required():
                            wrong = f"documented required: {said}, the code's {field.is_required()}"
                    if wrong:
                        problems.append(f"{where}: {subject}.{name}: {wrong}")
            missing = set(_fields(model)) - documented - {"id", "type"}
            if missing:
                problems.append(
                    f"{where}: {subject}: options missing from the table: {sorted(missing)}"
                )
    return problems


def test_every_option_table_of_the_docs_matches_the_code():
    assert table_problems(user_docs()) == []


def test_the_table_checker_finds_gone_options_wrong_defaults_and_unmarked_tables(tmp_path: Path):
    page = tmp_path / "a.md"
    page.write_text(
        "<!-- options: bolt/dedupe -->\n| option | default | meaning |\n|---|---|---|\n"
        "| `key` | `event_id` | the key |\n| `window` | none | gone |\n| `store` | none | x |\n"
        "| `ttl` | `24h` | x |\n| `table` | `squall_dedupe` | x |\n"
        "| `key_prefix` | `squall:dedupe:` | x |\n\n"
        "<!-- options: bolt/subscription -->\n| option | default | meaning |\n|---|---|---|\n"
        "| `store` | required | x |\n| `actions` | `{register: register, subscribe: subscribe, "
        "unsubscribe: unsubscribe}` | x |\n| `key_prefix` | `squall:subscription:` | x |\n"
        "| `history` | `5` | x |\n\n"
        "| key | default | meaning |\n|---|---|---|\n| `x` | 1 | y |\n"
    )
    problems = table_problems([page], tmp_path)
    assert problems[:3] == [
        "a.md:2: bolt/dedupe.key: documented default `event_id`, the code's 'meta.event_id'",
        "a.md:2: bolt/dedupe has no option 'window'",
        "a.md:12: bolt/subscription.history: documented default `5`, the code's 4",
    ]
    assert problems[3].startswith("a.md:12: bolt/subscription: options missing from the table: ")
    assert problems[4:] == ["a.md:19: option table without an <!-- options: kind/type --> marker"]


def _choices() -> dict[str, set[str] | None]:
    """Option name → the values it takes, over every built-in component (nested models too);
    None when some option of that name is not a fixed set (`store: state` of a window)."""
    found: dict[str, set[str] | None] = {}
    seen: set[type] = set()

    def walk(model: type[pydantic.BaseModel]) -> None:
        seen.add(model)
        for name, field in model.model_fields.items():
            values, todo, free = set(), [field.annotation], False
            while todo:
                tp = todo.pop()
                if typing.get_origin(tp) is typing.Literal:
                    values |= {str(v) for v in typing.get_args(tp)}
                elif isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
                    free = True
                    if tp not in seen:
                        walk(tp)
                elif typing.get_args(tp):
                    todo.extend(typing.get_args(tp))
                elif tp is not type(None):
                    free = True
            key = field.alias or name
            if free or not values or found.get(key, set()) is None:
                found[key] = None
            else:
                found[key] = found.get(key, set()) | values

    for kind, types_ in registry.BUILTINS.items():
        for type_name in types_:
            walk(registry.resolve(kind, type_name).Config)
    return found


def choice_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    """`option: value` quoted in the prose (`mode: upsert`, `start: latest`) for an option whose
    values are a fixed set: the value is one of them."""
    choices = _choices()
    problems = []
    for path in files:
        for number, line in enumerate(without_code_blocks(path.read_text()).splitlines(), 1):
            for name, value in re.findall(r"`(\w+): ([\w-]+)`", line):
                allowed = choices.get(name)
                if allowed and value not in allowed:
                    problems.append(
                        f"{path.relative_to(root)}:{number}: {name}: {value} "
                        f"(one of {', '.join(sorted(allowed))})"
                    )
    return problems


def test_every_quoted_option_value_of_a_fixed_set_exists():
    assert choice_problems(user_docs()) == []


def test_the_value_checker_finds_a_renamed_value(tmp_path: Path):
    page = tmp_path / "a.md"
    page.write_text("`mode: upsert`, `emit: on_each_batch`, `store: state`, `start: latest`\n")
    assert choice_problems([page], tmp_path) == [
        "a.md:1: emit: on_each_batch (one of every_batch, on_close)"
    ]
