"""Mistakes found at start are one located line with the README's exit code, never a traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from squall.errors import TopologyError, cannot_write
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.deploy.test_local_runner import run_cli

BASE = """
name: start-errors
resources: {resources}
spout: {spout}
bolts: [{{id: decode, type: json}}]
sinks: [{sinks}]
"""


def write(
    tmp_path: Path,
    *,
    resources: str = "{}",
    spout: str = "{type: stdin}",
    sinks: str = "{id: out, type: stdout}",
) -> Path:
    t = tmp_path / "t.yaml"
    t.write_text(BASE.format(resources=resources, spout=spout, sinks=sinks))
    return t


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("oracle+cx_nope://u:pw@h/db", "unknown URL scheme 'oracle+cx_nope'"),
        ("postgresql+nosuchdriver://u:pw@h/db", "unknown SQL driver 'postgresql+nosuchdriver'"),
        ("postgresql://u:pw@h:port/db", "is not a valid URL: the port is not a number"),
        ("redis://u:pw@h:port/0", "is not a valid URL: Port could not be cast to integer value"),
        ("redis://h:6379/notadb", "Redis database 'notadb' is not a number"),
        ("redis://h:6379/0?db=x", "Redis database 'x' is not a number"),
        # Without '://' no URL parser finds the password: it was shown in clear.
        ("u:pw@h/db", "'u:***@h/db' is not a URL: write scheme://"),
        ("postgresql:/u:pw@h/db", "'postgresql:***@h/db' is not a URL"),
        ("redis:/:pw@h/x", "'redis:***@h/x' is not a URL"),
        ("sqlite:u:pw@h/db", "'sqlite:***@h/db' is not a URL"),
        # SQLAlchemy knows these, squall does not run on them: refused at load, not at start
        ("mysql://u:pw@h/db", "squall does not support 'mysql' URLs"),
        ("postgresql+pg8000://u:pw@h/db", "squall does not support 'postgresql+pg8000' URLs"),
        ("postgresql+psycopg://u:pw@h/db", "squall does not support 'postgresql+psycopg' URLs"),
        ("sqlite+aiosqlite:///x.db", "squall does not support 'sqlite+aiosqlite' URLs"),
        ("redshift+psycopg2://u:pw@h/db", "Amazon Redshift is not supported yet"),
    ],
)
def test_validate_refuses_a_bad_resource_url_in_one_line(tmp_path: Path, url: str, message: str):
    result = run_cli(["validate", str(write(tmp_path, resources=f'{{db: {{url: "{url}"}}}}'))])
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert (
        line.startswith(f"{tmp_path / 't.yaml'}:3:")
        and "resources.db.url" in line
        and message in line
    )
    assert ":pw@" not in line
    if "does not support" in message or "Redshift" in message:  # and says what is supported
        assert "sqlite:///" in line and "postgresql://" in line and "psycopg2" in line


def test_a_dead_letter_directory_that_cannot_be_written_exits_2_at_start(tmp_path: Path):
    (tmp_path / "file").write_text("not a directory")
    t = write(
        tmp_path,
        sinks=f"{{id: out, type: stdout}}, {{id: dlq, type: dead_letter, path: {tmp_path}/file/dl.jsonl}}",
    )
    result = run_cli(["run", str(t)], input='{"n": 1}\n')
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    # located at its `path:` in the file, as a geo bolt's missing database is (it named only the
    # sink's id)
    line = t.read_text().splitlines()[5]  # BASE starts with a blank line
    assert line.startswith("sinks:")
    assert (
        f"cannot start: {t}:6:{line.index('path:') + 7}: sinks[1].path: sink 'dlq': cannot write dead letters to "
        f"{tmp_path}/file/dl.jsonl: {tmp_path}/file is a file, not a folder" in result.stderr
    )  # not "File exists", which named no file


def test_yaml_nested_50k_deep_is_one_line(tmp_path: Path):
    t = tmp_path / "deep.yaml"
    t.write_text("name: " + "[" * 50_000 + "]" * 50_000 + "\n")
    result = run_cli(["validate", str(t)])
    assert result.returncode == 2
    assert one_error_line(result.stderr).endswith("the YAML is nested too deeply")


def test_a_checkpoint_database_that_does_not_exist_is_one_line(tmp_path: Path, pg_url: str):
    missing = pg_url.rsplit("/", 1)[0] + "/squall_no_such_database"
    t = write(
        tmp_path,
        resources=f'{{cp: {{url: "{missing}"}}}}',
        spout="{type: kinesis, stream: s, endpoint_url: 'http://127.0.0.1:1', "
        "checkpoint: {store: sql, resource: cp}}",
    )
    result = run_cli(["run", str(t)])
    assert result.returncode == 2  # a misconfiguration, not an outage (1)
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) < 15
    assert (
        "cannot start:" in result.stderr
        and 'database "squall_no_such_database" does not exist' in result.stderr.replace("\n", " ")
    )


def test_an_empty_endpoint_url_is_unset_and_a_malformed_one_is_caught_by_validate(tmp_path: Path):
    """Empty (an unset ``${VAR:-}``) means AWS's endpoint, as in every AWS component
    (tests/test_aws_settings.py); text that is not an http(s) URL is one located line."""
    t = write(
        tmp_path,
        spout="{type: kinesis, stream: s, endpoint_url: '${SQUALL_TEST_UNSET:-}', "
        "checkpoint: {store: memory}}",
    )
    assert run_cli(["validate", str(t)]).returncode == 0
    t = write(
        tmp_path,
        spout="{type: kinesis, stream: s, endpoint_url: 'localhost:4566', "
        "checkpoint: {store: memory}}",
    )
    result = run_cli(["validate", str(t)])
    assert result.returncode == 2
    assert "spout.endpoint_url: endpoint URL 'localhost:4566' must be http(s)" in one_error_line(
        result.stderr
    )


def test_a_component_refusing_to_start_is_one_line_without_an_empty_summary(tmp_path: Path):
    """README: "one `cannot start: …` line". It was the log line, then an empty table, zero
    counts and the same message again, wrapped at 80 columns."""
    isp = Path(__file__).resolve().parents[1] / "enrichment/data/maxmind/GeoIP2-ISP-Test.mmdb"
    t = tmp_path / "t.yaml"
    t.write_text(
        "name: start-errors\nspout: {type: stdin}\nbolts:\n  - {id: decode, type: json}\n"
        f"  - {{id: geo, type: geo, database: {isp}}}\nsinks: [{{id: out, type: stdout}}]\n"
    )
    result = run_cli(["run", "--no-progress", str(t)], input='{"ip": "81.2.69.142"}\n')
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert line.endswith(
        f"cannot start: {t}:5:36: bolts[1].database: bolt 'geo': MaxMind DB {isp} is of type "
        "'GeoIP2-ISP'; database "
        "needs a City, Country or Enterprise database (e.g. GeoLite2-City)"
    )
    assert result.stdout == ""


def test_a_resource_of_the_wrong_kind_is_located_at_the_option_naming_it(tmp_path: Path):
    """A warehouse pointed at the Redis resource said "resource 'cache' is not a SQL database",
    naming no file, line or component. It is refused at load now (`squall validate` too), at
    the same place."""
    t = write(
        tmp_path,
        resources='{cache: {url: "redis://:s3cret@127.0.0.1:1/0"}}',
        sinks="{id: rows, type: warehouse, resource: cache, table: t, columns: {a: a}}",
    )
    r = run_cli(["run", str(t)], input="")
    assert r.returncode == 2
    assert one_error_line(r.stderr).endswith(
        f"{t}:6:47: sinks[0].resource: resource 'cache' is not a SQL database "
        "(redis://:***@127.0.0.1:1/0)"
    )


def test_a_sqlite_folder_that_cannot_be_made_is_located_at_the_resource_url(tmp_path: Path):
    """It said only `cannot start: FileNotFoundError: … '/data'`: no file, line or resource."""
    (tmp_path / "file").write_text("not a directory")
    t = write(
        tmp_path,
        resources=f'{{w: {{url: "sqlite:///{tmp_path}/file/sub/w.db"}}}}',
        sinks="{id: out, type: warehouse, resource: w, table: events, columns: {n: n}}",
    )
    result = run_cli(["run", str(t)], input='{"n": 1}\n')
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert line.startswith(f"ERROR squall.local: cannot start: {t}:3:")
    # the file in the way named (mkdir said "Not a directory", naming no file)
    assert line.endswith(
        f": resources.w.url: resource 'w': cannot create the folder {tmp_path}/file/sub of its "
        f"SQLite file: {tmp_path}/file is a file, not a folder"
    )


def test_a_sqlite_file_in_a_folder_it_cannot_write_is_located_at_the_resource_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`sqlite:///state.db` beside a topology mounted read-only (a ConfigMap): the folder exists,
    so none was made, and SQLite said only "unable to open database file" at the sink's first
    connection (`cannot start: out (table ev): …`), naming neither the file nor the resource.
    (The folder is said unwritable as the OS would say it to a user who is not root.)"""
    folder = tmp_path / "cfg"
    folder.mkdir()
    access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: (
            False if Path(p) == folder and mode & os.W_OK else access(p, mode, **kw)
        ),
    )
    topo = load_text(
        "name: t\nspout: {type: stdin}\nresources:\n  w: {url: 'sqlite:///state.db'}\n"
        "sinks: [{id: out, type: warehouse, resource: w, table: ev, columns: {a: a}}]\n",
        file="t.yaml",
        base_dir=folder,
        env={},
    )
    with pytest.raises(TopologyError) as exc:
        Resources.for_topology(topo).database("w")
    assert str(exc.value) == (
        f"t.yaml:4:12: resources.w.url: resource 'w': cannot create its SQLite file in the "
        f"folder {folder}: Permission denied (the relative path state.db is in the topology "
        "file's folder, read-only where the topology is mounted, as a ConfigMap is: write an "
        "absolute path on a writable volume)"
    )
    assert not (folder / "state.db").exists()


def test_a_relative_path_that_cannot_be_written_says_where_it_is():
    """`path: dl.jsonl` beside a topology mounted read-only said only "Read-only file system":
    a relative path is in the topology file's folder, which the user may not know to be it."""
    ro = OSError(errno.EROFS, os.strerror(errno.EROFS), "/cfg/dl.jsonl")
    assert cannot_write(ro, "dl.jsonl") == (
        "Read-only file system (the relative path dl.jsonl is in the topology file's folder, "
        "read-only where the topology is mounted, as a ConfigMap is: write an absolute path on "
        "a writable volume)"
    )
    assert cannot_write(ro, "/cfg/dl.jsonl") == "Read-only file system"
    missing = OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/cfg/x/dl.jsonl")
    assert cannot_write(missing, "x/dl.jsonl") == "No such file or directory"


def test_a_path_a_lambda_function_cannot_write_says_what_to_write_instead(monkeypatch):
    """The pistats consumer deployed with its defaults stopped each init on `cannot write dead
    letters to /var/task/topology/out/rejects.jsonl: Read-only file system (… read-only where
    the topology is mounted, as a ConfigMap is: write an absolute path on a writable volume)`:
    a Lambda function has no volume to mount; its one writable folder is /tmp."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "pistats-consumer")
    ro = OSError(errno.EROFS, os.strerror(errno.EROFS), "/var/task/topology/out/rejects.jsonl")
    hint = (
        "outside /tmp, the only folder a Lambda function may write, which each execution "
        "environment keeps only while it lives: give a SQLite resource a PostgreSQL URL, dead "
        "letters a durable sink such as dead_letter_table)"
    )
    assert cannot_write(ro, "out/rejects.jsonl") == (
        f"Read-only file system (out/rejects.jsonl is in the topology's folder, {hint}"
    )
    assert cannot_write(ro, "/srv/dl.jsonl") == f"Read-only file system (/srv/dl.jsonl is {hint}"
    missing = OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/tmp/x/dl.jsonl")
    assert cannot_write(missing, "/tmp/x/dl.jsonl") == "No such file or directory"


def test_in_lambda_a_tmp_path_that_cannot_be_written_is_not_said_to_be_outside_tmp(monkeypatch):
    """Review of 316efb5: in Lambda, a dead-letter file under /tmp in a folder of another owner
    (`Permission denied`) was said to be `/tmp/shared/dl.jsonl is outside /tmp, the only folder a
    Lambda function may write`, and a `~/dl.jsonl` that could not be written to be `in the
    topology's folder`: /tmp is the writable folder, so the cause is another (said as it is),
    and `~` is the home folder."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "pistats-consumer")
    denied = OSError(errno.EACCES, os.strerror(errno.EACCES), "/tmp/shared/dl.jsonl")
    assert cannot_write(denied, "/tmp/shared/dl.jsonl") == "Permission denied"
    assert cannot_write(denied, "/tmp/../tmp/shared/dl.jsonl") == "Permission denied"
    # a relative path the topology folder resolved into /tmp: where it failed decides
    assert cannot_write(denied, "../../tmp/shared/dl.jsonl") == "Permission denied"
    home = OSError(errno.EROFS, os.strerror(errno.EROFS), "/home/sbx_user1051/dl.jsonl")
    said = cannot_write(home, "~/dl.jsonl")
    assert said.startswith("Read-only file system (~/dl.jsonl is outside /tmp, the only"), said
    escaped = OSError(errno.EROFS, os.strerror(errno.EROFS), "/tmp/../var/dl.jsonl")
    assert "is outside /tmp, the only folder" in cannot_write(escaped, "/tmp/../var/dl.jsonl")
