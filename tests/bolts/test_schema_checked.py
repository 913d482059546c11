"""Schemas checked when a Lambda package was built are not checked again at its init; any other is,
and jsonschema is imported only when something needs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from squall.bolts import schema as schema_bolt
from squall.errors import TopologyError
from squall.topology.loader import load
from tests.child_env import child_env
from tests.conftest import ROOT

INVALID_SCHEMA = {"type": 12}  # 'type' must be a string or a list of strings


def topology_with_schema(folder: Path, schema: dict) -> Path:
    (folder / "event.json").write_text(json.dumps(schema))
    path = folder / "topology.yaml"
    path.write_text(
        "name: t\nspout: {type: stdin}\n"
        "bolts:\n  - {id: decode, type: json}\n  - {id: v, type: schema, schema: event.json}\n"
        "sinks:\n  - {id: out, type: stdout}\n"
    )
    return path


def test_a_schema_listed_as_checked_is_trusted_and_a_changed_one_is_checked_again(tmp_path: Path):
    path = topology_with_schema(tmp_path, INVALID_SCHEMA)
    with pytest.raises(TopologyError, match="invalid JSON Schema"):
        load(path)
    # Listed (here, falsely: the only way to see the check skipped) → trusted as the packager's word.
    schema_bolt.write_checked([INVALID_SCHEMA], tmp_path)
    assert load(path).bolts[1].schema_ == INVALID_SCHEMA
    # Edited after packaging: another digest, so the list says nothing about it.
    topology_with_schema(tmp_path, {"type": 13})
    with pytest.raises(TopologyError, match="invalid JSON Schema"):
        load(path)


def test_a_list_from_another_squall_version_is_not_trusted(tmp_path: Path, monkeypatch):
    path = topology_with_schema(tmp_path, INVALID_SCHEMA)
    monkeypatch.setattr(schema_bolt, "__version__", "0.0.0-another")
    schema_bolt.write_checked([INVALID_SCHEMA], tmp_path)
    monkeypatch.undo()
    with pytest.raises(TopologyError, match="invalid JSON Schema"):
        load(path)


def test_an_unreadable_list_is_ignored(tmp_path: Path):
    path = topology_with_schema(tmp_path, INVALID_SCHEMA)
    (tmp_path / schema_bolt.CHECKED_FILE).write_text("{not json")
    with pytest.raises(TopologyError, match="invalid JSON Schema"):
        load(path)


CHILD = """
import sys
from squall.testing import records_from
from squall.topology.executor import Engine

engine = Engine.for_topology(sys.argv[1]).open()
before = "jsonschema" in sys.modules
result = engine.process(records_from([{"a": 1}]))
valid_only = "jsonschema" in sys.modules
result = engine.process(records_from([{"a": "x"}]))
[failed] = result.failed
print(before, valid_only, "jsonschema" in sys.modules, failed.reason)
"""


def test_jsonschema_is_imported_at_the_first_invalid_event_of_a_checked_schema(tmp_path: Path):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    path = topology_with_schema(tmp_path, schema)
    schema_bolt.write_checked([schema], tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        env=child_env(PYTHONPATH=str(ROOT)),
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout.strip().splitlines()[-1]
        == "False False True schema: $.a: 'x' is not of type 'integer'"
    )


def test_only_json_values_get_a_digest():
    import datetime

    assert schema_bolt.schema_digest({"const": "2026-12-04"}) is not None
    assert schema_bolt.schema_digest({"const": datetime.date(2026, 12, 4)}) is None
    assert schema_bolt.schema_digest({1: {"type": "string"}}) is None
    assert schema_bolt.schema_digest({"a": 1}) != schema_bolt.schema_digest({"a": 1.0})


def test_a_yaml_schema_file_is_read_as_strictly_as_the_topology(tmp_path: Path):
    """A YAML schema file kept the last of two equal keys and read `enum: [NO, SE]` as
    [False, 'SE'] (Norway's events dead-lettered): silently. Its syntax error was several lines."""
    (tmp_path / "event.yaml").write_text(
        "type: object\nproperties:\n  country: {enum: [NO, SE]}\n  age: {type: integer}\n"
        "  age: {type: string}\n"
    )
    path = tmp_path / "topology.yaml"
    path.write_text(
        "name: t\nspout: {type: stdin}\n"
        "bolts:\n  - {id: decode, type: json}\n  - {id: v, type: schema, schema: event.yaml}\n"
        "sinks:\n  - {id: out, type: stdout}\n"
    )
    with pytest.raises(TopologyError) as exc:
        load(path)
    assert [str(p) for p in exc.value.problems] == [
        f"{path}:5:35: bolts[1].schema: schema file 'event.yaml' is not valid: line 5, column 3: "
        "properties.age: duplicate key (first at line 4, column 3): keep one of them; line 3, "
        "column 20: properties.country.enum[0]: YAML reads "
        "the value NO as the boolean false: write 'NO' in quotes for the text, or false for the "
        "boolean"
    ]
    (tmp_path / "event.yaml").write_text("type: object\nproperties: {a: {type: [integer\n")
    with pytest.raises(TopologyError) as exc:
        load(path)
    assert str(exc.value).count("\n") == 0 and "line 2, column 32: YAML syntax error" in str(
        exc.value
    )
    (tmp_path / "event.yaml").write_text("type: object\nproperties: {c: {enum: ['NO', SE]}}\n")
    assert load(path).bolts[1].schema_["properties"]["c"]["enum"] == ["NO", "SE"]


def test_a_json_schema_file_with_a_key_twice_is_refused(tmp_path: Path):
    """The JSON parser kept the second `age`: the first rule was never checked, silently."""
    path = topology_with_schema(tmp_path, {})
    (tmp_path / "event.json").write_text(
        '{"type": "object", "properties": {"age": {"type": "integer"}, "age": {"type": "string"}}}'
    )
    with pytest.raises(TopologyError, match="schema file 'event.json' has the key 'age' twice"):
        load(path)


def test_a_missing_schema_file_says_where_it_was_looked_for(tmp_path: Path):
    """Run from another folder, `schemas/event.json` is looked for beside the topology, not in the
    working directory: the error gave the path as written only."""
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "topology.yaml"
    path.write_text(
        "name: t\nspout: {type: stdin}\n"
        "bolts:\n  - {id: v, type: schema, schema: schemas/event.json}\n"
        "sinks:\n  - {id: out, type: stdout}\n"
    )
    with pytest.raises(
        TopologyError, match=r"relative to the topology: .*conf/schemas/event\.json"
    ):
        load(path)


def test_a_schema_that_passed_the_check_is_not_checked_again_with_the_same_checker(
    tmp_path: Path, monkeypatch
):
    """A one-event `squall run` spent ~50 ms of CPU importing jsonschema to check a schema that
    passed at every earlier load. Only a passed check is remembered, per content and versions."""
    monkeypatch.setenv("SQUALL_CACHE_DIR", str(tmp_path / "cache"))
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    path = topology_with_schema(tmp_path, schema)
    checked: list[dict] = []
    check = schema_bolt.check_schema
    monkeypatch.setattr(schema_bolt, "check_schema", lambda s: (checked.append(s), check(s)))
    load(path)
    load(path)
    assert checked == [schema]  # the second load trusts the first one's check
    assert len(list((tmp_path / "cache" / "checked-schemas").iterdir())) == 1
    # Another release of the checker or its meta-schemas: checked again (once each).
    import importlib.metadata

    real_version = importlib.metadata.version
    for other in ("jsonschema", "referencing", "jsonschema-specifications"):
        monkeypatch.setattr(
            "importlib.metadata.version",
            lambda name, other=other: "0.0.1" if name == other else real_version(name),
        )
        load(path)
        load(path)
    assert len(checked) == 4
    monkeypatch.setattr("importlib.metadata.version", real_version)
    # Another schema: checked; an invalid one is never remembered.
    topology_with_schema(tmp_path, INVALID_SCHEMA)
    for _ in range(2):
        with pytest.raises(TopologyError, match="invalid JSON Schema"):
            load(path)
    assert checked[4:] == [INVALID_SCHEMA, INVALID_SCHEMA]
    assert len(list((tmp_path / "cache" / "checked-schemas").iterdir())) == 4


def test_without_a_cache_folder_every_load_checks(tmp_path: Path, monkeypatch):
    """`SQUALL_CACHE_DIR=` (empty) keeps no cache; a folder that cannot be written is no error."""
    schema = {"type": "string"}
    path = topology_with_schema(tmp_path, schema)
    checked: list[dict] = []
    check = schema_bolt.check_schema
    monkeypatch.setattr(schema_bolt, "check_schema", lambda s: (checked.append(s), check(s)))
    monkeypatch.setenv("SQUALL_CACHE_DIR", "")
    load(path)
    load(path)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SQUALL_CACHE_DIR", str(tmp_path / "file"))  # a file: no folder in it
    load(path)
    load(path)
    assert checked == [schema] * 4
    monkeypatch.delenv("SQUALL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load(path)
    load(path)
    assert len(checked) == 5
    assert len(list((tmp_path / "xdg" / "squall" / "checked-schemas").iterdir())) == 1


def test_a_cache_folder_that_cannot_be_read_only_means_checking_each_time(
    tmp_path: Path, monkeypatch
):
    """`is_file()` raises for an error other than a missing file: a cache folder of another user
    (mode 700: EACCES) or a name too long for the file system made every topology with a schema
    fail to load ('cannot check the options: PermissionError'), where a folder that cannot be
    written only meant checking each time."""
    schema = {"type": "string"}
    path = topology_with_schema(tmp_path, schema)
    checked: list[dict] = []
    check = schema_bolt.check_schema
    monkeypatch.setattr(schema_bolt, "check_schema", lambda s: (checked.append(s), check(s)))
    monkeypatch.setenv("SQUALL_CACHE_DIR", str(tmp_path / ("x" * 300)))  # ENAMETOOLONG
    load(path)
    load(path)
    assert checked == [schema] * 2
    # Another user's folder (as root here, its EACCES is raised the way is_file raises it).
    monkeypatch.setenv("SQUALL_CACHE_DIR", str(tmp_path / "cache"))

    def denied(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_file", denied)
    load(path)
    assert checked == [schema] * 3


def test_a_change_to_squalls_checking_code_checks_a_remembered_schema_again(
    tmp_path: Path, monkeypatch
):
    """squall's version is the same at every commit of a development checkout: a schema
    remembered (in the cache folder, or in a package's list) before a change to squall's own
    check was not checked by the changed check. The digest covers the checking module's bytes."""
    monkeypatch.setenv("SQUALL_CACHE_DIR", str(tmp_path / "cache"))
    code = tmp_path / "schema.py"
    code.write_bytes(Path(schema_bolt.__file__).read_bytes())
    monkeypatch.setattr(schema_bolt, "_CHECK_MODULE", code)
    monkeypatch.setattr(schema_bolt, "_check_code", None)
    folder = tmp_path / "topology"
    folder.mkdir()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    path = topology_with_schema(folder, schema)
    checked: list[dict] = []
    check = schema_bolt.check_schema
    monkeypatch.setattr(schema_bolt, "check_schema", lambda s: (checked.append(s), check(s)))
    load(path)
    load(path)
    assert len(checked) == 1
    code.write_bytes(code.read_bytes() + b"# another check\n")
    monkeypatch.setattr(schema_bolt, "_check_code", None)  # (read once per process)
    load(path)
    load(path)
    assert len(checked) == 2
    assert len(list((tmp_path / "cache" / "checked-schemas").iterdir())) == 2
    # A package's list written by the check before the change says nothing of the changed one.
    monkeypatch.setenv("SQUALL_CACHE_DIR", "")
    schema_bolt.write_checked([schema], folder)
    load(path)
    assert len(checked) == 2
    code.write_bytes(code.read_bytes() + b"# and another\n")
    monkeypatch.setattr(schema_bolt, "_check_code", None)
    load(path)
    assert len(checked) == 3
    # Without its source (bytecode alone) no digest is trusted: every load checks.
    monkeypatch.setattr(schema_bolt, "_CHECK_MODULE", tmp_path / "gone.py")
    monkeypatch.setattr(schema_bolt, "_check_code", None)
    assert schema_bolt.schema_digest(schema) is None
    monkeypatch.setenv("SQUALL_CACHE_DIR", str(tmp_path / "cache"))
    load(path)
    load(path)
    assert len(checked) == 5


def test_a_copy_of_squall_elsewhere_with_other_timestamps_trusts_the_list_this_one_wrote(
    tmp_path: Path,
):
    """``squall package`` lists the digests its own process computes; the function's init
    computes them with the packaged squall (the same files, in another folder, their times the
    zip's 1980): the same digests, so the init neither checks nor imports jsonschema."""
    import os
    import shutil

    site = tmp_path / "task"
    shutil.copytree(ROOT / "squall", site / "squall", ignore=shutil.ignore_patterns("__pycache__"))
    for f in (site / "squall").rglob("*"):
        os.utime(f, (315532800, 315532800))  # 1980-01-01, as a zip's entries
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    path = topology_with_schema(tmp_path, schema)
    schema_bolt.write_checked([schema], tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", "import squall; print(squall.__file__)\n" + CHILD, str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(PYTHONPATH=str(site)),
        check=False,
    )
    assert r.returncode == 0, r.stderr
    where, result = r.stdout.strip().splitlines()[-2:]
    assert where == str(site / "squall" / "__init__.py")
    assert result == "False False True schema: $.a: 'x' is not of type 'integer'"


def test_an_invalid_schema_file_is_named_with_the_path_of_its_error(tmp_path: Path):
    """`squall validate` pointed at the topology's `schema:` line and said only what was wrong
    (`invalid JSON Schema: 'numbr' is not valid under any of the given schemas`): where, in a
    schema file of dozens of properties, was left to the reader. The file and the JSON path of
    the error in it are now named."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "n": {"type": "numbr"}}}
    path = topology_with_schema(tmp_path, schema)
    with pytest.raises(TopologyError) as err:
        load(path)
    assert (
        "bolts[1].schema: schema file 'event.json': invalid JSON Schema at "
        "$.properties.n.type: 'numbr' is not valid under any of the given schemas"
    ) in str(err.value)
