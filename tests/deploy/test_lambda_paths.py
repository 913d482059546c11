"""`squall package --handler consumer|producer` warns of what the function would write where
Lambda cannot keep it: a SQLite file or a dead-letter file in the read-only topology folder
(every init stops) or in /tmp (lost with the execution environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.deploy.lambda_paths import lambda_path_warnings
from squall.topology.loader import load
from tests.conftest import EXAMPLES

PISTATS = EXAMPLES / "pistats" / "topology.yaml"


def test_the_pistats_consumer_as_shipped_is_warned_of_three_times(monkeypatch):
    """The documented consumer command packaged the example with its defaults (a SQLite
    warehouse and state in out/, the dead-letter file out/rejects.jsonl), which are the
    template's parameter defaults: run as Lambda runs it (the package read-only), the init
    stopped every time (`sinks[1].path: sink 'rejects': cannot write dead letters to
    /var/task/topology/out/rejects.jsonl: Read-only file system`), and the build had said
    nothing (the fleet's command warned). Each is now named, located, with its parameter."""
    for var in ("WAREHOUSE_URL", "STATE_URL", "REJECTS_FILE"):
        monkeypatch.delenv(var, raising=False)
    warnings = lambda_path_warnings(load(PISTATS), PISTATS.read_text())
    assert len(warnings) == 3, warnings
    warehouse, state, rejects = warnings
    assert warehouse.startswith(f"{PISTATS}:7:20: resources.warehouse.url: resource 'warehouse'")
    assert "(out/pistats.db) inside topology/, read-only in Lambda" in warehouse
    assert "every init would stop" in warehouse and "parameter WarehouseUrl" in warehouse
    assert "parameter StateUrl" in state and "PostgreSQL URL (or Redis)" in state
    assert rejects.startswith(f"{PISTATS}:55:44: sinks[1].path: sink 'rejects' writes out/")
    assert "dead_letter_table" in rejects and "parameter RejectsFile" in rejects


def test_values_lambda_keeps_are_not_warned_of_and_tmp_is_said_to_be_lost(monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://squall@db.internal/pistats")
    monkeypatch.setenv("STATE_URL", "redis://cache.internal:6379/0")
    monkeypatch.setenv("REJECTS_FILE", "/tmp/rejects.jsonl")
    [rejects] = lambda_path_warnings(load(PISTATS), PISTATS.read_text())
    assert "writes /tmp/rejects.jsonl in the execution environment's /tmp: lost" in rejects
    assert "parameter" not in rejects  # another /tmp path would be lost the same way
    monkeypatch.setenv("REJECTS_FILE", "/var/lib/squall/rejects.jsonl")
    [rejects] = lambda_path_warnings(load(PISTATS), PISTATS.read_text())
    assert "outside /tmp, read-only in Lambda: every init would stop" in rejects


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("sqlite:////tmp/w.db", "in the execution environment's /tmp: each environment keeps"),
        ("sqlite:////srv/w.db", "(/srv/w.db) outside /tmp, read-only in Lambda"),
        ("sqlite:///:memory:", None),
        ("postgresql://squall@db.internal/app", None),
    ],
)
def test_a_sqlite_resource(tmp_path: Path, url: str, said: str | None):
    path = tmp_path / "t.yaml"
    path.write_text(
        f"name: t\nresources:\n  db: {{url: '{url}'}}\nspout: {{type: stdin}}\n"
        "bolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: warehouse, resource: db, table: t, columns: {a: a}}]\n"
    )
    warnings = lambda_path_warnings(load(path), path.read_text())
    if said is None:
        assert warnings == []
    else:
        [warning] = warnings
        assert warning.startswith(f"{path}:3:") and said in warning, warning
        assert "parameter" not in warning  # written out: no template parameter to set


def test_the_build_warns_and_strict_fails_it(tmp_path: Path, monkeypatch):
    """The warnings are the build's (stderr, exit 0; ``--strict`` exits 1), for the producer
    too."""
    from click.testing import CliRunner

    from squall.cli import main
    from squall.deploy import package as pkg

    path = tmp_path / "project" / "t.yaml"
    path.parent.mkdir()
    path.write_text(
        "name: t\nspout: {type: stdin}\nbolts: [{id: decode, type: json}]\n"
        "sinks:\n  - {id: out, type: stdout}\n"
        "  - {id: rejects, type: dead_letter, path: rejects.jsonl}\n"
    )
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    monkeypatch.setattr(pkg, "_pip", lambda *args: None)
    for handler in ("consumer", "producer"):
        args = ["package", str(path), "--handler", handler, "-o", str(tmp_path / "a.zip")]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert f"{path}:6:" in warning and "sink 'rejects' writes rejects.jsonl inside" in warning
        result = CliRunner().invoke(main, [*args, "--strict"])
        assert result.exit_code == 1 and "--strict: 1 warning(s)" in result.stderr


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        # the template's parameter defaults to the topology's default, not to the value here
        ("${DB_URL:-sqlite:///w.db}", True),
        # no default: the deploy asks for the parameter; the value of now is the one to go by
        ("${DB_URL}", False),
    ],
)
def test_the_build_reads_the_values_the_template_deploys(
    tmp_path: Path, monkeypatch, url: str, warned: bool
):
    """Packaged with `DB_URL=postgresql://…` set (as the fleet's docs have it), the build said
    nothing, while the template's `DbUrl` parameter still defaulted to `sqlite:///w.db`, which
    stops every init when deployed as it is."""
    from squall.deploy import package as pkg

    path = tmp_path / "project" / "t.yaml"
    path.parent.mkdir()
    path.write_text(
        f'name: t\nresources:\n  db: {{url: "{url}"}}\nspout: {{type: stdin}}\n'
        "bolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: warehouse, resource: db, table: t, columns: {a: a}}]\n"
    )
    monkeypatch.setenv("DB_URL", "postgresql://squall@db.internal/app")
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    monkeypatch.setattr(pkg, "_pip", lambda *args: None)
    report = pkg.build(path, handler="consumer", output=tmp_path / "a.zip", requirement="squall")
    found = [w for w in report.warnings if "SQLite file" in w]
    if warned:
        [warning] = found
        assert "(w.db) inside topology/" in warning and "parameter DbUrl" in warning
    else:
        assert found == []


_WAREHOUSE = (
    "spout: {type: stdin}\nbolts: [{id: decode, type: json}]\n"
    "sinks: [{id: out, type: warehouse, resource: db, table: t, columns: {a: a}}]\n"
)
_REJECTS = (
    "spout: {type: stdin}\nbolts: [{id: decode, type: json}]\n"
    "sinks:\n  - {id: out, type: stdout}\n  - {id: rejects, type: dead_letter, path: %s}\n"
)


@pytest.mark.parametrize(
    ("yaml", "parameter"),
    [
        # another value on the line with its own variable: the URL's was not named
        (
            'resources:\n  db: {url: "${DB_URL:-sqlite:///w.db}", pool_size: "${POOL:-5}"}\n',
            "DbUrl",
        ),
        # a folded value: its variable is on the next line, not on the line it starts
        ("resources:\n  db:\n    url: >-\n      ${DB_URL:-sqlite:///w.db}\n", "DbUrl"),
        # only the folder is a variable: no answer to it makes the URL PostgreSQL's
        ('resources:\n  db: {url: "sqlite:///${DB_DIR:-out}/w.db"}\n', None),
    ],
)
def test_the_parameter_named_is_the_values_own(tmp_path: Path, monkeypatch, yaml, parameter):
    """Review of 83beb53: the parameter was found by a regex over the value's first line: one
    with two variables (a flow mapping) named none, a folded value's none, and a URL whose folder
    alone is a variable named that variable's parameter to give "a PostgreSQL URL" in."""
    for var in ("DB_URL", "POOL", "DB_DIR"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\n{yaml}{_WAREHOUSE}")
    [warning] = lambda_path_warnings(load(path), path.read_text())
    assert "every init would stop" in warning
    if parameter is None:
        assert "template" not in warning, warning
    else:
        assert warning.endswith(f"(the template's parameter {parameter}, when you deploy)")


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ('"${REJECTS_DIR:-out}/${REJECTS_NAME:-r}.jsonl"', "parameters RejectsDir and RejectsName"),
        # Lambda sets it: the template has no such parameter (it named LambdaTaskRoot)
        ('"${LAMBDA_TASK_ROOT:-.}/r.jsonl"', None),
    ],
)
def test_a_dead_letter_path_names_each_of_its_parameters(tmp_path: Path, monkeypatch, value, said):
    for var in ("REJECTS_DIR", "REJECTS_NAME", "LAMBDA_TASK_ROOT"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "t.yaml"
    path.write_text("name: t\n" + _REJECTS % value)
    [warning] = lambda_path_warnings(load(path), path.read_text())
    if said is None:
        assert "template" not in warning, warning
    else:
        assert said in warning, warning


@pytest.mark.parametrize(
    ("url", "said"),
    [
        # SQLAlchemy reads %2F as '/': the file is /tmp/w.db, not a folder of the topology
        ("sqlite:///%2Ftmp%2Fw.db", "(/tmp/w.db) in the execution environment's /tmp"),
        # expanded to the home folder, as every path squall writes: not inside topology/
        ("sqlite:///~/w.db", "(~/w.db) in the home folder, outside /tmp, read-only in Lambda"),
    ],
)
def test_a_sqlite_path_is_placed_where_it_opens(tmp_path: Path, url: str, said: str):
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nresources:\n  db: {{url: '{url}'}}\n{_WAREHOUSE}")
    [warning] = lambda_path_warnings(load(path), path.read_text())
    assert said in warning, warning


@pytest.mark.parametrize(
    ("value", "said"),
    [
        # /var/task/topology/../../../tmp is /tmp: it opens, and is lost with the environment
        ("../../../tmp/r.jsonl", "writes ../../../tmp/r.jsonl in the execution environment's /tmp"),
        ("../r.jsonl", "writes ../r.jsonl outside /tmp (/var/task/r.jsonl in Lambda), read-only"),
    ],
)
def test_a_relative_path_is_placed_where_it_resolves_in_lambda(tmp_path: Path, value, said):
    """Review of 83beb53: every relative path was said to be "inside topology/" and to stop every
    init, also one that leaves the folder for /tmp (where it opens) or for /var/task."""
    path = tmp_path / "t.yaml"
    path.write_text("name: t\n" + _REJECTS % value)
    [warning] = lambda_path_warnings(load(path), path.read_text())
    assert said in warning, warning


def test_a_variable_written_with_and_without_its_default_is_its_default_deployed(
    tmp_path: Path, monkeypatch
):
    """Review of e9c4257: `${DB_URL:-sqlite:///w.db}` in one place and `${DB_URL}` in another,
    packaged with DB_URL=postgresql://… set: the template's DbUrl defaults to sqlite:///w.db and
    sets DB_URL for both, but the warnings removed DB_URL to read the default, the `${DB_URL}`
    without one no longer loaded, and they fell back to the values of now: not a word."""
    from squall.deploy.lambda_paths import as_deployed
    from squall.topology.references import placeholder

    path = tmp_path / "t.yaml"
    path.write_text(
        'name: t\nresources:\n  db: {url: "${DB_URL:-sqlite:///w.db}"}\n'
        '  db2: {url: "${DB_URL}"}\n' + _WAREHOUSE
    )
    monkeypatch.setenv("DB_URL", "postgresql://squall@db.internal/app")
    warnings = lambda_path_warnings(
        as_deployed(path, load(path, secrets=placeholder)), path.read_text()
    )
    assert [w.split(": ")[1] for w in warnings] == ["resources.db.url", "resources.db2.url"]
    assert all("(w.db) inside topology/" in w for w in warnings), warnings


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("out/rejects-12:00.jsonl", "inside topology/, read-only in Lambda"),
        ("/tmp/rejects:a.jsonl", "in the execution environment's /tmp: lost"),
    ],
)
def test_a_path_with_a_colon_is_a_path(tmp_path: Path, value: str, said: str):
    """Review of 83beb53: any value with a ':' was taken for a URL and left out: a dead-letter
    file `out/rejects-12:00.jsonl` stopped every init without a warning."""
    path = tmp_path / "t.yaml"
    path.write_text("name: t\n" + _REJECTS % f'"{value}"')
    [warning] = lambda_path_warnings(load(path), path.read_text())
    assert said in warning, warning


@pytest.mark.parametrize("url", ["SQLITE:///w.db", "SQLite+pysqlite:///w.db"])
def test_a_sqlite_scheme_in_capitals_is_sqlite(tmp_path: Path, url: str):
    """Review of 83beb53: a scheme is case-insensitive — squall opens `SQLITE:///w.db` as the
    SQLite file w.db beside the topology (every init stops in Lambda) — but the warnings
    compared it to 'sqlite' as written and said nothing."""
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nresources:\n  db: {{url: '{url}'}}\n{_WAREHOUSE}")
    [warning] = lambda_path_warnings(load(path), path.read_text())
    assert "is a SQLite file (w.db) inside topology/" in warning, warning
