"""`squall package --handler kcl`: the folder an EC2 fleet needs (systemd unit, bootstrap, instance role)."""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from squall import __version__
from squall.deploy import fleet
from squall.errors import SquallError
from squall.topology.loader import load
from tests.conftest import EXAMPLES
from tests.deploy.sam import cfn_lint

PISTATS = EXAMPLES / "pistats" / "topology.yaml"


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keep the keys' case
    parser.read_string(path.read_text())
    return parser


def message(warning: str) -> str:
    """A fleet warning without its place (``file:line:col: option: ``)."""
    return warning.split(": ", 2)[2]


def test_the_unit_stops_the_kcl_gracefully_and_runs_the_squall_kcl_command(tmp_path: Path):
    out = tmp_path / "kcl"
    fleet.write_fleet(load(PISTATS), PISTATS, out, stream="pistats-events", extras=("postgres",))
    service = unit(out / "squall-pistats.service")["Service"]
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) * 1000 > fleet.SHUTDOWN_GRACE_MS
    assert service["ExecStart"].split() == [
        "/opt/squall/venv/bin/squall",
        "kcl",
        "/opt/squall/pistats/topology/topology.yaml",
        "--stream",
        "pistats-events",
        "--application",
        "pistats",
        "--region",
        "${AWS_REGION}",
        "--properties-out",
        "/run/squall-pistats/kcl.properties",
        "--set",
        "retrievalMode=POLLING",
        "--set",
        f"shutdownGraceMillis={fleet.SHUTDOWN_GRACE_MS}",
    ]
    assert service["RuntimeDirectory"] == "squall-pistats" and service["User"] == "squall"
    assert (out / "requirements.txt").read_text().splitlines()[0] == (
        f"./wheels/squall-{__version__}-py3-none-any.whl[kcl,postgres]"
    )
    assert (out / "topology" / "schemas" / "event.json").is_file()
    assert not (out / "topology" / "out").exists()
    bootstrap = (out / "bootstrap.sh").read_text()
    assert (
        "systemctl enable squall-pistats.service\n" in bootstrap
        and "systemctl restart squall-pistats.service\n" in bootstrap
        and (out / "bootstrap.sh").stat().st_mode & 0o100
    )


@pytest.mark.parametrize("retrieval", ["polling", "fanout"])
def test_the_instance_role_grants_the_kcl_and_the_components_on_named_resources(
    tmp_path: Path, retrieval: str
):
    source = tmp_path / "copy.yaml"
    source.write_text("""
name: copier
spout: {type: kinesis, stream: clicks}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: kinesis, stream: "${ARCHIVE_STREAM:-archive}"}]
""")
    out = tmp_path / "kcl"
    fleet.write_fleet(load(source), source, out, retrieval=retrieval)
    path = out / "instance-role.yaml"
    r = cfn_lint(path)
    assert r.returncode == 0, r.stdout + r.stderr
    role = yaml.safe_load(path.read_text())
    assert role["Parameters"]["StreamName"]["Default"] == "clicks"
    assert role["Parameters"]["ArchiveStream"]["Default"] == "archive"
    statements = role["Resources"]["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    by_resource = {
        s["Resource"]["Fn::Sub"] if isinstance(s["Resource"], dict) else s["Resource"]: set(
            s["Action"]
        )
        for s in statements
    }
    stream = "arn:${AWS::Partition}:kinesis:${AWS::Region}:${AWS::AccountId}:stream/"
    reads = set(fleet.KCL_STREAM_READS) | (
        set(fleet.KCL_FANOUT) if retrieval == "fanout" else set()
    )
    assert by_resource[stream + "${StreamName}"] == reads
    assert by_resource[
        "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${ApplicationName}"
    ] == set(fleet.KCL_LEASES)
    assert by_resource[stream + "${ArchiveStream}"] == {
        "kinesis:PutRecords",
        "kinesis:DescribeStreamSummary",
    }
    assert ((stream + "${StreamName}/consumer/${ApplicationName}:*") in by_resource) == (
        retrieval == "fanout"
    )
    [metrics] = [s for s in statements if s["Resource"] == "*"]
    assert metrics["Action"] == ["cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": {"Ref": "ApplicationName"}}
    }
    assert (
        f"retrievalMode={fleet.RETRIEVAL[retrieval]}" in (out / "squall-copier.service").read_text()
    )


def test_the_unit_reads_the_stream_in_the_region_the_spout_names(tmp_path: Path):
    """The unit passed `--region ${AWS_REGION}` (the instance's region) whatever the spout said:
    a spout with `region: eu-central-1` on instances in eu-west-1 read a stream of the same name
    in eu-west-1, and the role granted that one. The unit now leaves the region to `squall kcl`
    (the spout's, else AWS_REGION), and the role grants the spout's stream in its region."""
    source = tmp_path / "copy.yaml"
    source.write_text("""
name: copier
spout: {type: kinesis, stream: clicks, region: eu-central-1}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: "squall.testing:MemorySink"}]
""")
    out = tmp_path / "kcl"
    fleet.write_fleet(load(source), source, out)
    command = unit(out / "squall-copier.service")["Service"]["ExecStart"].split()
    assert "--region" not in command and "${AWS_REGION}" not in command
    role = yaml.safe_load((out / "instance-role.yaml").read_text())
    [reads] = [
        s["Resource"]
        for s in role["Resources"]["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"][
            "Statement"
        ]
        if "kinesis:GetRecords" in s["Action"]
    ]
    assert reads == {
        "Fn::Sub": "arn:${AWS::Partition}:kinesis:eu-central-1:${AWS::AccountId}:stream/${StreamName}"
    }
    [leases] = [
        s["Resource"]
        for s in role["Resources"]["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"][
            "Statement"
        ]
        if "dynamodb:Scan" in s["Action"]
    ]
    assert leases == {  # the KCL's leases are in the region it reads in
        "Fn::Sub": "arn:${AWS::Partition}:dynamodb:eu-central-1:${AWS::AccountId}:table/"
        "${ApplicationName}"
    }


def test_a_fleet_needs_a_stream(tmp_path: Path):
    with pytest.raises(SquallError, match="--stream"):
        fleet.write_fleet(load(PISTATS), PISTATS, tmp_path / "kcl")


def test_the_environment_file_of_secrets_is_readable_by_root_only(tmp_path: Path):
    """The docs put the topology's ${VARS} (a warehouse URL with its password) in `environment`;
    `aws s3 sync` writes it 0644 on the instance. systemd reads an EnvironmentFile as root, so
    the bootstrap makes it root's alone (before: world-readable on every instance)."""
    import subprocess

    out = tmp_path / "kcl"
    fleet.write_fleet(load(PISTATS), PISTATS, out, stream="pistats-events")
    assert (out / "environment").stat().st_mode & 0o077 == 0
    lines = [
        line
        for line in (out / "bootstrap.sh").read_text().splitlines()
        if '"$here/environment"' in line and not line.startswith("grep")
    ]
    host = tmp_path / "instance"
    host.mkdir()
    (host / "environment").write_text("WAREHOUSE_URL=postgresql://u:secret@db/x\n")
    (host / "environment").chmod(0o644)  # as aws s3 sync leaves it
    script = f"set -euo pipefail\nhere={host}\n" + "\n".join(
        line.replace("chown root:root", "true") for line in lines
    )
    subprocess.run(["bash", "-c", script], check=True)
    assert (host / "environment").stat().st_mode & 0o777 == 0o600


def test_the_instance_role_asks_for_no_secret_only_the_variables_its_resources_name(
    tmp_path: Path,
):
    """Every ${VAR} of the topology was a parameter of the role's stack, shown in the console
    (no NoEcho): a deploy of the role asked for the database password and the webhook token."""
    source = tmp_path / "copy.yaml"
    source.write_text("""
name: copier
resources: {db: {url: "postgresql://app:${DB_PASSWORD}@db.internal/x"}}
spout: {type: kinesis, stream: clicks}
bolts: [{id: decode, type: json}]
sinks:
  - {id: out, type: kinesis, stream: "${ARCHIVE_STREAM:-archive}"}
  - {id: rows, type: warehouse, resource: db, table: t, columns: {a: a}}
  - {id: hook, type: http, url: "https://h.example.com/x", headers: {X-Token: "${HOOK_TOKEN}"}}
""")
    out = tmp_path / "kcl"
    env = {"DB_PASSWORD": "pw", "HOOK_TOKEN": "tok"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        fleet.write_fleet(load(source), source, out)
    role = yaml.safe_load((out / "instance-role.yaml").read_text())
    assert set(role["Parameters"]) == {"StreamName", "ApplicationName", "ArchiveStream"}
    r = cfn_lint(out / "instance-role.yaml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_fleet_folder_says_what_a_fleet_cannot_keep_where_the_topology_puts_it(
    tmp_path: Path, monkeypatch
):
    """Found in the fleet walkthrough: `squall package examples/pistats/topology.yaml --handler
    kcl` as the docs write it left `environment` empty and said nothing, while the example's
    defaults (a SQLite warehouse and a dead-letter file under `out/`) write inside `topology/`,
    read-only under the unit (ProtectSystem=strict): every shard process would stop at start,
    restarted every 5 s, and the dead-letter path had no variable to move it with. And a SQLite
    warehouse and state are a file per instance: a shard's subscription state stays behind when
    its lease moves to another worker."""
    for var in ("WAREHOUSE_URL", "STATE_URL", "REJECTS_FILE", "EVENTS_TABLE"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "kcl"
    fleet.write_fleet(load(PISTATS), PISTATS, out, stream="pistats-events")
    env = (out / "environment").read_text()
    for line in (
        "# WAREHOUSE_URL=sqlite:///out/pistats.db\n",
        "# STATE_URL=sqlite:///out/pistats.db\n",
        "# REJECTS_FILE=out/rejects.jsonl\n",
        "# EVENTS_TABLE=events\n",
    ):
        assert line in env
    assert "/var/lib/squall/pistats" in env
    located = fleet.fleet_warnings(load(PISTATS))
    assert located[0].startswith(f"{PISTATS}:7:20: resources.warehouse.url: resource 'warehouse'")
    assert (
        located[-1].startswith(f"{PISTATS}:") and ": sinks[1].path: sink 'rejects'" in located[-1]
    )
    warnings = [message(w) for w in located]
    split = "each instance of the fleet keeps its own"
    read_only = (
        " writes inside topology/, read-only under the unit: every shard process would stop at "
        "start; point it under /var/lib/squall/pistats (a ${VAR} of the topology, set in "
        "environment)"
    )
    assert warnings == [
        f"resource 'warehouse' is a SQLite file (out/pistats.db): {split}, and a shard's rows "
        "and state stay behind on the instance its lease leaves; use PostgreSQL (state: "
        "PostgreSQL or Redis), or a fleet of one instance",
        "resource 'warehouse' (out/pistats.db)" + read_only,
        f"resource 'state' is a SQLite file (out/pistats.db): {split}, and a shard's rows "
        "and state stay behind on the instance its lease leaves; use PostgreSQL (state: "
        "PostgreSQL or Redis), or a fleet of one instance",
        "resource 'state' (out/pistats.db)" + read_only,
        "sink 'rejects' (out/rejects.jsonl)" + read_only,
    ]
    monkeypatch.setenv("WAREHOUSE_URL", "sqlite:////var/lib/squall/pistats/pistats.db")
    monkeypatch.setenv("STATE_URL", "redis://cache.internal:6379/0")
    assert [message(w) for w in fleet.fleet_warnings(load(PISTATS)) if "rejects" not in w] == [
        "resource 'warehouse' is a SQLite file (/var/lib/squall/pistats/pistats.db): "
        f"{split}, and a shard's rows and state stay behind on the instance its lease leaves; "
        "use PostgreSQL (state: PostgreSQL or Redis), or a fleet of one instance"
    ]
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://squall@db.internal/pistats")
    monkeypatch.setenv("REJECTS_FILE", "/var/lib/squall/pistats/rejects.jsonl")
    assert fleet.fleet_warnings(load(PISTATS)) == []


@pytest.mark.parametrize(
    ("rejects", "where"),
    [
        (
            "/srv/squall/rejects.jsonl",
            "outside /var/lib/squall/pistats, read-only under the unit (ProtectSystem=strict): "
            "every shard process would stop at start",
        ),
        (
            "~/rejects.jsonl",
            "in a home folder, hidden from the unit (ProtectHome=true): every shard process "
            "would stop at start",
        ),
        (
            "/tmp/rejects.jsonl",
            "in the unit's private /tmp (PrivateTmp=true), emptied at each restart: what it "
            "keeps is lost",
        ),
        ("/var/lib/squall/pistats/../other/rejects.jsonl", "outside /var/lib/squall/pistats"),
    ],
)
def test_an_absolute_path_the_unit_cannot_keep_is_warned_of_too(
    monkeypatch, rejects: str, where: str
):
    """Only a relative path was warned of; the unit makes the whole system read-only but
    /var/lib/squall/<name> (ProtectSystem=strict), hides home folders (ProtectHome) and gives
    the service a private /tmp: a dead-letter file at /srv/…, ~/… stopped every shard process
    at start without a word, and one under /tmp lost its dead letters at each restart."""
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://squall@db.internal/pistats")
    monkeypatch.setenv("STATE_URL", "redis://cache.internal:6379/0")
    monkeypatch.setenv("REJECTS_FILE", rejects)
    [warning] = map(message, fleet.fleet_warnings(load(PISTATS)))
    assert warning.startswith(f"sink 'rejects' ({rejects}) writes {where}")
    assert warning.endswith(
        "; point it under /var/lib/squall/pistats (a ${VAR} of the topology, set in environment)"
    )
    monkeypatch.setenv("WAREHOUSE_URL", "sqlite:////srv/squall/pistats.db")
    monkeypatch.setenv("REJECTS_FILE", "/var/lib/squall/pistats/rejects.jsonl")
    assert message(fleet.fleet_warnings(load(PISTATS))[1]) == (
        "resource 'warehouse' (/srv/squall/pistats.db) writes outside /var/lib/squall/pistats, "
        "read-only under the unit (ProtectSystem=strict): every shard process would stop at "
        "start; point it under /var/lib/squall/pistats (a ${VAR} of the topology, set in "
        "environment)"
    )


@pytest.mark.parametrize(
    ("warehouse", "rejects", "named"),
    [
        # a file name holding a ':' is a path, not a URL (it was left out)
        (
            "postgresql://squall@db.internal/pistats",
            "/srv/squall/rejects-12:00.jsonl",
            "sink 'rejects' (/srv/squall/rejects-12:00.jsonl) writes outside",
        ),
        # SQLite with its scheme in capitals, and a folder written %2F, as SQLAlchemy opens them
        (
            "SQLITE:///%2Fsrv%2Fsquall%2Fw.db",
            "/var/lib/squall/pistats/rejects.jsonl",
            "resource 'warehouse' is a SQLite file (/srv/squall/w.db)",
        ),
        (
            "SQLite+pysqlite:////srv/squall/w.db",
            "/var/lib/squall/pistats/rejects.jsonl",
            "resource 'warehouse' is a SQLite file (/srv/squall/w.db)",
        ),
    ],
)
def test_a_path_with_a_colon_and_a_sqlite_url_in_capitals_are_warned_of(
    monkeypatch, warehouse: str, rejects: str, named: str
):
    """The same misses the Lambda path warnings had (hG): any value holding a ':' was taken for
    a URL and skipped, and only a lower-case ``sqlite`` scheme was a SQLite file."""
    monkeypatch.setenv("WAREHOUSE_URL", warehouse)
    monkeypatch.setenv("STATE_URL", "redis://cache.internal:6379/0")
    monkeypatch.setenv("REJECTS_FILE", rejects)
    warnings = [message(w) for w in fleet.fleet_warnings(load(PISTATS))]
    assert any(w.startswith(named) for w in warnings), warnings


def test_a_variable_the_unit_sets_is_not_repeated_as_a_hint(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("PISTATS_STREAM", raising=False)
    topology = EXAMPLES / "pistats" / "kinesis_topology.yaml"
    out = tmp_path / "kcl"
    fleet.write_fleet(load(topology), topology, out)
    env = (out / "environment").read_text()
    assert "PISTATS_STREAM=pistats-events\n" in env and "# PISTATS_STREAM" not in env
    assert "# EVENTS_TABLE=events\n" in env


def test_squall_package_prints_the_fleet_warnings(tmp_path: Path, monkeypatch):
    from click.testing import CliRunner

    from squall.cli import main

    for var in ("WAREHOUSE_URL", "STATE_URL", "REJECTS_FILE"):
        monkeypatch.delenv(var, raising=False)
    args = ["package", str(PISTATS), "--handler", "kcl", "--stream", "pistats-events"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "kcl")])
    assert result.exit_code == 0, result.output
    assert (
        "topology.yaml:55:44: sinks[1].path: sink 'rejects' (out/rejects.jsonl) writes inside topology/, read-only under "
        "the unit: every shard process would stop at start; point it under "
        "/var/lib/squall/pistats (a ${VAR} of the topology, set in environment)\n"
    ) in result.output


def test_the_unit_serves_the_prometheus_metrics_when_asked(tmp_path: Path):
    """Found in the fleet walkthrough: the docs' fleet observability (`squall kcl --metrics-port`,
    read by the rules and dashboard of `squall dashboards`) had no way into the packaged unit,
    whose `squall kcl` served no metrics; the unit had to be edited by hand."""
    from click.testing import CliRunner

    from squall.cli import main

    args = ["package", str(PISTATS), "--handler", "kcl", "--stream", "pistats-events"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a"), "--metrics-port", "9108"])
    assert result.exit_code == 0, result.output
    argv = unit(tmp_path / "a" / "squall-pistats.service")["Service"]["ExecStart"].split()
    assert argv[argv.index("--metrics-port") + 1] == "9108"
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b")])
    assert "--metrics-port" not in (tmp_path / "b" / "squall-pistats.service").read_text()
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "c"), "--metrics-port", "x"])
    assert result.exit_code == 2 and "is not [ADDR:]PORT" in result.output
    result = CliRunner().invoke(
        main, ["package", str(PISTATS), "--handler", "consumer", "--metrics-port", "9108"]
    )
    assert result.exit_code == 2 and "--metrics-port is for a KCL fleet" in result.output


@pytest.mark.parametrize(
    ("file_name", "metrics_port", "refused"),
    [
        ("t.yaml", "my host:9108", "--metrics-port 'my host:9108'"),
        ("t.yaml", "%H:9108", "--metrics-port '%H:9108'"),
        ("t%n.yaml", None, "the topology file's name 't%n.yaml'"),
        ("t$X.yaml", None, "the topology file's name 't$X.yaml'"),
    ],
)
def test_a_word_systemd_would_split_or_expand_is_refused_not_written_into_the_unit(
    tmp_path: Path, file_name: str, metrics_port: str | None, refused: str
):
    """`ExecStart` is the command line as words joined by spaces: an address `--metrics-port`
    accepts (`my host:9108`) was split in two, `%H` became the host name, a topology file named
    `t%n.yaml` the unit's name — a unit that failed at each start, restarted every 5 s."""
    source = tmp_path / file_name
    source.write_text(
        "name: copier\nspout: {type: kinesis, stream: clicks}\n"
        "sinks: [{id: out, type: 'squall.testing:MemorySink'}]\n"
    )
    with pytest.raises(SquallError) as refusal:
        fleet.write_fleet(load(source), source, tmp_path / "kcl", metrics_port=metrics_port)
    assert str(refusal.value).startswith(f"{refused}: the unit's command line takes letters")
    assert not (tmp_path / "kcl").exists()
    if metrics_port is not None:  # an address in brackets (IPv6) is written as it is
        fleet.write_fleet(load(source), source, tmp_path / "ok", metrics_port="[::]:9108")
        assert "--metrics-port [::]:9108" in (tmp_path / "ok" / "squall-copier.service").read_text()


LOADS = """
import sys
from squall.topology.loader import load

load(sys.argv[1])
print("checked" if "jsonschema" in sys.modules else "trusted")
"""


def test_the_units_shard_processes_check_a_schema_once_in_the_cache_folder_systemd_makes(
    tmp_path: Path,
):
    """The unit's home folder is read-only (ProtectSystem=strict, ProtectHome): squall's cache of
    checked schemas (~/.cache/squall) could not be written, and every shard process checked its
    topology's schemas again at start (~40 ms of CPU each, jsonschema imported). The unit has a
    cache folder systemd makes writable (CacheDirectory=) and points SQUALL_CACHE_DIR at it.
    Two processes given the unit's environment (systemd's /var/cache here under tmp_path, the
    home folder one nothing can be written under) stand for two shard processes: the second
    trusts the first's check."""
    import shutil
    import subprocess
    import sys

    from tests.child_env import child_env
    from tests.conftest import ROOT

    out = tmp_path / "kcl"
    fleet.write_fleet(load(PISTATS), PISTATS, out, stream="pistats-events")
    service_file = out / "squall-pistats.service"
    service = unit(service_file)["Service"]
    assert service["CacheDirectory"] == "squall-pistats"
    given = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in service_file.read_text().splitlines()
        if line.startswith("Environment=")
    )
    assert given == {"SQUALL_CACHE_DIR": "/var/cache/squall-pistats"}
    if systemd_analyze := shutil.which("systemd-analyze"):  # the directives are systemd's
        r = subprocess.run(
            [systemd_analyze, "verify", service_file.name],
            cwd=out,
            capture_output=True,
            text=True,
            check=False,
        )
        assert "Unknown key" not in r.stderr and "Invalid" not in r.stderr, r.stderr
    var_cache = tmp_path / "var-cache"
    (var_cache / service["CacheDirectory"]).mkdir(parents=True)  # what systemd does at start
    (tmp_path / "home").write_text("")  # a home nothing can be written under (even as root)
    env = child_env(PYTHONPATH=str(ROOT), HOME=str(tmp_path / "home"))
    del env["SQUALL_CACHE_DIR"]  # the unit's, not the suite's
    env.update(
        {k: v.replace("/var/cache", str(var_cache), 1) for k, v in given.items()},
    )
    topology = out / "topology" / "topology.yaml"
    answers = [
        subprocess.run(
            [sys.executable, "-c", LOADS, str(topology)],
            cwd=topology.parent,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        for _ in range(2)
    ]
    assert answers == ["checked", "trusted"]
    assert len(list((var_cache / "squall-pistats" / "checked-schemas").iterdir())) == 1


def test_a_postgresql_fleet_without_the_postgres_extra_is_warned_of(tmp_path: Path):
    """The fleet's requirements.txt installs squall with the extras given: a PostgreSQL resource
    without `--extras postgres` (nor psycopg2 in `--with`, `--requirements`) left every shard
    process to stop at start with its driver missing, and `squall package` said nothing."""
    from click.testing import CliRunner

    from squall.cli import main

    path = tmp_path / "topology.yaml"
    path.write_text(
        "name: pgfleet\n"
        "resources:\n"
        "  db: {url: 'postgresql://squall:s3cret@db.internal:5432/app'}\n"
        "spout: {type: kinesis, stream: events}\n"
        "bolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: warehouse, resource: db, table: t, columns: {a: a}}]\n"
    )
    args = ["package", str(path), "--handler", "kcl"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert (
        "  warning: resource 'db' is PostgreSQL, but requirements.txt installs no psycopg2 (its "
        "driver): every shard process would stop at start; add --extras postgres"
    ) in result.output
    assert "s3cret" not in result.output
    for more in (["--extras", "postgres"], ["--with", "psycopg2-binary==2.9.10"]):
        result = CliRunner().invoke(main, [*args, *more, "-o", str(tmp_path / more[0][2:])])
        assert result.exit_code == 0, result.output
        assert "psycopg2" not in result.output, result.output


def test_a_fleet_without_the_extra_of_a_declared_module_is_warned_of(tmp_path: Path):
    """An s3 sink writing Parquet needs pyarrow, the `s3` extra's: the fleet's requirements.txt
    without it (nor pyarrow in `--with`) left every shard process to stop at start with
    ImportError, unannounced."""
    from click.testing import CliRunner

    from squall.cli import main

    path = tmp_path / "topology.yaml"
    path.write_text(
        "name: lakefleet\n"
        "spout: {type: kinesis, stream: events}\n"
        "bolts: [{id: decode, type: json}]\n"
        "sinks: [{id: lake, type: s3, bucket: b, format: parquet, columns: {a: a}}]\n"
    )
    args = ["package", str(path), "--handler", "kcl"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    warning = (
        "  warning: sink 'lake' (s3) imports pyarrow, but requirements.txt installs "
        "none: every shard process would stop at start; add --extras s3"
    )
    # located (it said "the topology's components"), on stderr as a Lambda build's (stdout)
    assert warning in result.stderr and warning not in result.stdout
    result = CliRunner().invoke(main, [*args, "--strict", "-o", str(tmp_path / "s")])
    assert result.exit_code == 1 and "error: --strict: 1 warning(s)" in result.stderr
    for more in (["--extras", "s3"], ["--with", "pyarrow==25.0.1"]):
        out = ["-o", str(tmp_path / more[0][2:])]
        result = CliRunner().invoke(main, [*args, *more, "--strict", *out])
        assert result.exit_code == 0, result.output
        assert "pyarrow" not in result.output, result.output


def test_a_fleet_with_google_re2_by_name_is_not_warned_of_the_re2_extra(tmp_path: Path):
    """A device bolt with ``engine: re2`` imports ``re2``, which google-re2 installs: named in
    ``--with`` (as ``--extras re2`` installs it) no warning says it is missing (it looked for a
    distribution named re2, and ``--strict`` failed the build)."""
    from click.testing import CliRunner

    from squall.cli import main

    path = tmp_path / "topology.yaml"
    path.write_text(
        "name: re2fleet\n"
        "spout: {type: kinesis, stream: events}\n"
        "bolts: [{id: decode, type: json}, {id: device, type: device, engine: re2}]\n"
        "sinks: [{id: lake, type: s3, bucket: b, format: jsonl}]\n"
    )
    args = ["package", str(path), "--handler", "kcl", "--strict"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a")])
    assert result.exit_code == 1 and "add --extras re2" in result.stderr, result.output
    for more in (["--extras", "re2"], ["--with", "google-re2==1.1.20251105"]):
        out = ["-o", str(tmp_path / more[0][2:])]
        result = CliRunner().invoke(main, [*args, *more, *out])
        assert result.exit_code == 0, result.output
        assert "re2" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("url", "requirements", "warned"),
    [
        # a URL from a variable may be PostgreSQL when deployed, as a Lambda build warns
        ("${WAREHOUSE_URL:-sqlite:///w.db}", "", True),
        # a comment naming the driver installs nothing (the text was searched for it)
        ("postgresql://db.internal/app", "# psycopg2 comes from the AMI\n", True),
        ("${WAREHOUSE_URL:-sqlite:///w.db}", "psycopg2-binary==2.9.10\n", False),
        ("postgresql://db.internal/app", "./wheels/psycopg2_binary-2.9.10-cp311.whl\n", False),
    ],
)
def test_a_fleet_whose_url_may_be_postgresql_without_psycopg2_is_warned_of(
    tmp_path: Path, url: str, requirements: str, warned: bool
):
    from squall.deploy.fleet import driver_warnings
    from squall.topology.loader import load

    path = tmp_path / "topology.yaml"
    path.write_text(
        f"name: pgfleet\nresources:\n  db: {{url: '{url}'}}\n"
        "spout: {type: kinesis, stream: events}\nbolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: warehouse, resource: db, table: t, columns: {a: a}}]\n"
    )
    text = f"squall[kcl]==1.0\n{requirements}"
    found = [w for w in driver_warnings(load(path), text) if "psycopg2" in w]
    assert bool(found) == warned, found
    assert all(w.startswith("resource 'db' ") for w in found)


def test_the_instance_installs_this_squall_from_the_folder_not_a_name_on_pypi(tmp_path: Path):
    """Run from a checkout, squall is on no package index: the folder's requirements.txt named
    `squall[kcl,postgres]==0.1.0`, which bootstrap.sh's `pip install -r` could not find on an
    instance (or, had someone taken the name on PyPI, found their code and ran it as root). The
    folder ships squall's own wheel (as the Lambda zip does) and requirements.txt names it by a
    path relative to the folder, from where bootstrap.sh installs: pip resolves it with no index."""
    out = tmp_path / "kcl"
    written = fleet.write_fleet(
        load(PISTATS), PISTATS, out, stream="pistats-events", extras=("postgres", "redis")
    )
    [wheel] = (out / "wheels").glob("squall-*.whl")
    assert wheel in written
    assert (
        '(cd "$here" && /opt/squall/venv/bin/pip install -q -r requirements.txt)'
        in (out / "bootstrap.sh").read_text()
    )
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index"]
        + ["--ignore-installed", "-q", "--report", "-", "-r", "requirements.txt"],
        cwd=out,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    [installed] = json.loads(report.stdout)["install"]
    assert (installed["metadata"]["name"], installed["metadata"]["version"]) == (
        "squall",
        __version__,
    )
    assert sorted(installed["requested_extras"]) == ["kcl", "postgres", "redis"]
    # the warnings read the extras from the wheel's line as from a name's
    assert fleet.driver_warnings(load(PISTATS), (out / "requirements.txt").read_text()) == []


def _fake_squall_wheel(folder: Path, build: int, version: str = __version__) -> None:
    """A squall wheel (of this version) whose ``squall/__init__.py`` says which build it is."""
    info = f"squall-{version}.dist-info"
    files = {
        "squall/__init__.py": f"BUILD = {build}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: squall\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{name},sha256="
        + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        + f",{len(text.encode())}\n"
        for name, text in files.items()
    )
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"squall-{version}-py3-none-any.whl", "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


@pytest.mark.e2e
def test_bootstrapped_again_an_instance_installs_the_rebuilt_wheel_of_the_same_version(
    tmp_path: Path,
):
    """A checkout's wheel keeps squall's version whatever changed in it (0.1.0 across commits):
    bootstrap.sh run again on an instance after `squall package` rebuilt it found squall 0.1.0
    installed and pip kept it ('squall is already installed with the same version as the provided
    wheel'), so the instance went on running the old squall. The bootstrap's install lines, run
    twice, leave the second wheel installed."""
    root, here = tmp_path / "opt", tmp_path / "opt" / "pistats"
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    wheel = f"wheels/squall-{__version__}-py3-none-any.whl"
    lines = fleet.bootstrap_script("pistats", "3.11", wheel).splitlines()
    start = lines.index(
        "# From the folder: requirements.txt may name squall's wheel in wheels/ by a relative path."
    )
    end = lines.index("# The region of this instance (IMDSv2), for the unit's --region.")
    script = "set -euo pipefail\n" + "\n".join(lines[start:end]).replace(fleet.ROOT, str(root))
    here.mkdir(parents=True)
    # an older version's wheel left by a sync that deletes nothing: not installed
    _fake_squall_wheel(here / "wheels", 0, version="0.0.1")
    (here / "requirements.txt").write_text(fleet.requirements(__version__, (), None, (), wheel))
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    installed = root / "venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for build in (1, 2):
        _fake_squall_wheel(here / "wheels", build)
        done = subprocess.run(
            ["bash", "-c", f"here={here}\n{script}"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        init = installed / "site-packages" / "squall" / "__init__.py"
        assert init.read_text() == f"BUILD = {build}\n"


@pytest.mark.e2e
def test_squall_installed_from_a_wheel_ships_that_wheel_not_a_name_no_index_has(tmp_path: Path):
    """squall installed from its wheel (no checkout: `pip install squall-….whl`, or `pip install
    .`) wrote `squall[kcl]==0.1.0` in requirements.txt, on no index: the original bug, back for
    everyone who did not install from a checkout. Its installed files go in the folder, packed
    again as its wheel, which pip installs from the folder with no index."""
    built = tmp_path / "checkout" / fleet.squall_wheel(tmp_path / "checkout")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        + [str(built)],
        check=True,
    )
    out = tmp_path / "kcl"
    code = (
        "import sys; from pathlib import Path; import squall; from squall.deploy import fleet;"
        "from squall.topology.loader import load;"
        f"assert squall.__file__.startswith({str(site)!r}), squall.__file__;"
        f"fleet.write_fleet(load(Path({str(PISTATS)!r})), Path({str(PISTATS)!r}), Path({str(out)!r}),"
        " stream='pistats-events')"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    line = (out / "requirements.txt").read_text().splitlines()[0]
    assert line == f"./wheels/{built.name}[kcl]"
    with zipfile.ZipFile(built) as a, zipfile.ZipFile(out / "wheels" / built.name) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        assert a.read("squall/deploy/fleet.py") == b.read("squall/deploy/fleet.py")
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index"]
        + ["--ignore-installed", "-q", "--report", "-", "-r", "requirements.txt"],
        cwd=out,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    [installed] = json.loads(report.stdout)["install"]
    assert installed["metadata"]["version"] == __version__


def test_a_wheel_build_that_fails_says_it_was_squall_s_from_the_checkout(
    tmp_path: Path, monkeypatch
):
    """Offline (no index, no find-links holding setuptools), the fleet folder failed with pip's
    words alone: 'pip failed: wheel --no-deps… No matching distribution found for setuptools>=68',
    naming neither squall's wheel nor the checkout nor why a fleet folder needs an index now."""
    from squall.deploy import package

    def offline(*args: str) -> None:
        raise SquallError(
            "pip failed: wheel --no-deps…\nNo matching distribution found for setuptools>=68"
        )

    monkeypatch.setattr(package, "_pip", offline)
    monkeypatch.setattr(fleet, "_WHEELS", {})
    with pytest.raises(SquallError) as e:
        fleet.squall_wheel(tmp_path / "kcl")
    message = str(e.value)
    assert message.startswith(f"building squall's wheel from the checkout {package.project_root()}")
    assert "setuptools>=68" in message and "PIP_FIND_LINKS" in message
