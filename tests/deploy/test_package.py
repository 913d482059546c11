"""`squall package`: what goes into a zip (your code, plugins, only the data the topology uses), and the
documented pistats commands, whose consumer zip runs by itself under AWS's runtime client (pip
resolving from the session's wheelhouse: tests/wheelhouse.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from squall.bolts.schema import schema_digest
from squall.deploy import package as pkg
from squall.errors import SquallError
from squall.topology import registry
from squall.topology.loader import load
from tests.conftest import EXAMPLES, ROOT
from tests.deploy.sam import cfn_lint, translate
from tests.factories import kinesis_lambda_event
from tests.lambda_runtime import LambdaFunction, link_runtime

PISTATS = EXAMPLES / "pistats"
TAG_BOLT = """
from squall.bolts import RecordBolt


class TagBolt(RecordBolt):
    summary = "Tag each event."

    def process_event(self, event):
        event.value["tagged"] = True
        return "default"
"""


def topology(tmp_path: Path, bolts: str, name: str = "topology.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"name: t\nspout: {{type: stdin}}\nbolts:\n{bolts}\nsinks:\n  - {{id: out, type: stdout}}\n"
    )
    return path


def test_the_bundled_geolite_goes_in_only_when_a_geo_bolt_uses_it(tmp_path: Path):
    (tmp_path / "city.mmdb").write_bytes(b"")
    assert pkg.uses_bundled_geolite(load(PISTATS / "topology.yaml"))
    assert not pkg.uses_bundled_geolite(load(PISTATS / "producer.yaml"))
    own = topology(tmp_path, "  - {id: geo, type: geo, ip_field: ip, database: city.mmdb}")
    assert not pkg.uses_bundled_geolite(load(own))


@pytest.mark.parametrize(
    ("bolt", "module"),
    [
        # the geo bolt opens the bundled file for an empty `database:` too
        ('  - {id: geo, type: geo, ip_field: ip, database: ""}', None),
        # as packaged (the variable unset) and as deployed so
        ('  - {id: geo, type: geo, ip_field: ip, database: "${GEO_DB:-}"}', None),
        # unquoted, an empty value is YAML's null; a variable without a default may be set empty
        ("  - id: geo\n    type: geo\n    database: ${GEO_DB:-}", None),
        ('  - {id: geo, type: geo, ip_field: ip, database: "${ssm:/geo/db}"}', None),
        # a subclass of yours, beside the topology, without a database
        ('  - {id: geo, type: "my_geo:MyGeo", ip_field: ip}', "my_geo"),
        # a type from a variable may be a geo bolt when deployed
        ('  - {id: geo, type: "${ENRICH:-json}"}', None),
    ],
)
def test_the_bundled_geolite_goes_in_for_every_geo_bolt_that_opens_it(
    tmp_path: Path, bolt: str, module: str | None
):
    """Left out, while the bolt opened it at init: an empty `database:` (the bolt's `open`
    takes it as unset; `${GEO_DB:-}` packaged and deployed with the variable unset) and a
    subclass of the geo bolt in the project kept the GeoLite2 package, or not even that, without
    its 56 MB file; a `type` from a variable kept the package without the file."""
    from squall.deploy.dependencies import needed_packages
    from squall.topology.references import placeholder

    if module:
        (tmp_path / f"{module}.py").write_text(
            "from squall.enrichment.geo import GeoBolt\n\n\nclass MyGeo(GeoBolt):\n    pass\n"
        )
    path = topology(tmp_path, bolt)
    sys.path.insert(0, str(tmp_path))
    try:
        topo = load(path, secrets=placeholder)
        text = path.read_text()
        assert pkg.uses_bundled_geolite(topo, text)
        assert "_maxminddb_geolite2" in needed_packages(topo, text)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module or "", None)


@pytest.mark.parametrize(
    "database",
    [
        # `:-` takes the default for an empty variable too: never empty, never the bundled file
        '"${GEO_DB:-/opt/geo/GeoIP2-City.mmdb}"',
        "${GEO_DB:-/opt/geo/GeoIP2-City.mmdb}",  # unquoted
        '"/opt/geo/${GEO_FILE:-GeoIP2-City.mmdb}"',
        '"/opt/geo/${GEO_FILE}"',
    ],
)
def test_a_geo_database_from_a_variable_that_is_never_empty_leaves_the_geolite_out(
    tmp_path: Path, monkeypatch, database: str
):
    """A real database path from a variable kept the 56 MB GeoLite2-City file (and its
    package): any option from a variable counted as possibly unset (``None``), which a
    ``${VAR:-default}`` or a path around a variable never is."""
    from squall.deploy.dependencies import needed_packages
    from squall.topology.references import placeholder

    monkeypatch.setenv("GEO_FILE", "GeoIP2-City.mmdb")
    path = topology(tmp_path, f"  - id: geo\n    type: geo\n    database: {database}")
    topo = load(path, secrets=placeholder)
    assert not pkg.uses_bundled_geolite(topo, path.read_text())
    assert needed_packages(topo, path.read_text()) == {"maxminddb"}


NEAR_BOLT = """
from squall.bolts import RecordBolt
from squall.enrichment.geo import bundled_database


class Near(RecordBolt):
    def open(self, resources):
        self.path = bundled_database()

    def process_event(self, event):
        return "default"
"""


def test_own_code_opening_the_bundled_geolite_ships_it(tmp_path: Path, monkeypatch):
    """A bolt of yours calling ``squall.enrichment.geo.bundled_database()``: that function
    imports the GeoLite2 package when called (not at module level), so the zip left the
    package out, and its 56 MB file too: the init stopped on "No module named
    '_maxminddb_geolite2'". What a squall function imports when called counts now, and code
    importing the package keeps its file."""
    import zipfile

    from squall.deploy.dependencies import _imports, local_code

    project = tmp_path / "project"
    project.mkdir()
    (project / "near.py").write_text(NEAR_BOLT)
    path = topology(project, '  - {id: near, type: "near:Near"}')

    def installs_geolite(*args: str) -> None:
        if args[:2] == ("install", "--target"):
            (Path(args[2]) / "_maxminddb_geolite2").mkdir(parents=True)
            (Path(args[2]) / "_maxminddb_geolite2" / "GeoLite2-City.mmdb").write_bytes(b"db")

    monkeypatch.setattr(pkg, "project_root", lambda: None)
    monkeypatch.setattr(pkg, "_pip", installs_geolite)
    sys.path.insert(0, str(project))
    try:
        assert "_maxminddb_geolite2" in _imports(local_code(load(path), project))
        report = pkg.build(path, handler="consumer", output=tmp_path / "a.zip", requirement="x")
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("near", None)
    assert report.geolite_included
    names = zipfile.ZipFile(tmp_path / "a.zip").namelist()
    assert "_maxminddb_geolite2/GeoLite2-City.mmdb" in names


@pytest.mark.parametrize("default", ["~", "null", "NULL"])
def test_a_geo_database_whose_default_is_null_keeps_the_geolite(
    tmp_path: Path, monkeypatch, default: str
):
    """``database: ${GEO_DB:-~}`` unquoted is YAML's null when GEO_DB is unset or empty, so the
    bolt opens the bundled GeoLite2; packaged with GEO_DB set, the value counted as never
    empty (a ``${VAR:-default}``), and the zip left the file and its package out: the
    deployed function's init stopped on ImportError."""
    from squall.deploy.dependencies import needed_packages
    from squall.topology.references import placeholder

    monkeypatch.setenv("GEO_DB", "/opt/geo/GeoIP2-City.mmdb")
    path = topology(tmp_path, f"  - id: geo\n    type: geo\n    database: ${{GEO_DB:-{default}}}")
    topo = load(path, secrets=placeholder)
    assert topo.bolts[0].database == "/opt/geo/GeoIP2-City.mmdb"
    assert pkg.uses_bundled_geolite(topo, path.read_text())
    assert "_maxminddb_geolite2" in needed_packages(topo, path.read_text())
    # quoted, the default is the text 'null': never empty
    quoted = topology(
        tmp_path, f'  - id: geo\n    type: geo\n    database: "${{GEO_DB:-{default}}}"'
    )
    assert not pkg.uses_bundled_geolite(load(quoted, secrets=placeholder), quoted.read_text())


def test_a_module_beside_the_topology_imports_from_any_working_directory(tmp_path: Path):
    project = tmp_path / "kiosk"
    project.mkdir()
    (project / "kiosk_tags.py").write_text(TAG_BOLT)
    path = topology(project, '  - {id: tag, type: "kiosk_tags:TagBolt"}')
    squall = Path(sys.executable).with_name(
        "squall"
    )  # the console script: its folder, not cwd, is on sys.path
    r = subprocess.run(
        [str(squall), "validate", str(path)], capture_output=True, text=True, cwd="/", timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "ok (1 bolts" in r.stdout


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch):
    """A plugin distribution installed from a local folder (entry point `squall.bolts: tagger`)."""
    site, source = tmp_path / "site", tmp_path / "my plugins" / "tagpkg"  # a URL quotes the space
    (site / "tagpkg").mkdir(parents=True)
    source.mkdir(parents=True)
    (site / "tagpkg" / "__init__.py").write_text(TAG_BOLT)
    info = site / "tagpkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tagpkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[squall.bolts]\ntagger = tagpkg:TagBolt\n")
    (info / "top_level.txt").write_text("tagpkg\n")
    (info / "RECORD").write_text("tagpkg/__init__.py,,\n")
    (info / "direct_url.json").write_text(json.dumps({"url": source.as_uri(), "dir_info": {}}))
    monkeypatch.syspath_prepend(str(site))
    registry._plugins.cache_clear()
    registry.resolve.cache_clear()
    yield source
    registry._plugins.cache_clear()
    registry.resolve.cache_clear()


def test_plugins_the_topology_uses_are_found_with_their_local_source(
    tmp_path: Path, installed_plugin: Path
):
    by_entry_point = load(topology(tmp_path, "  - {id: tag, type: tagger}", "a.yaml"))
    by_reference = load(topology(tmp_path, '  - {id: tag, type: "tagpkg:TagBolt"}', "b.yaml"))
    for topo in (by_entry_point, by_reference):
        [dist] = pkg.plugin_distributions(topo)
        assert dist.metadata["Name"] == "tagpkg"
        assert pkg._distribution_requirement(dist) == str(installed_plugin)
    builtin_only = load(
        topology(tmp_path, '  - {id: f, type: "squall.testing:FaultyBolt"}', "c.yaml")
    )
    assert pkg.plugin_distributions(builtin_only) == []


def test_pruning_keeps_what_runs_and_drops_tests_caches_scripts_and_unused_data(tmp_path: Path):
    files = [
        "bin/squall",
        "pkg/__init__.py",
        "pkg/tests/test_pkg.py",
        "pkg/__pycache__/m.cpython-312.pyc",
        "pkg/m.pyi",
        "pkg-1.0.dist-info/RECORD",
        "pkg-1.0.dist-info/direct_url.json",  # names the build's temporary folder
        "pkg-1.0.dist-info/METADATA",
        "pkg-1.0.dist-info/LICENSE",
        "_maxminddb_geolite2/GeoLite2-City.mmdb",
        "_maxminddb_geolite2/__init__.py",
        "pygments/lexer.py",
        "botocore/data/kinesis/2013-12-02/service-2.json.gz",
        "botocore/data/s3/2006-03-01/service-2.json.gz",
        "botocore/data/endpoints.json",
        "botocore/__init__.py",
    ]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    pkg._prune(tmp_path, pkg.DEPENDENCY_IGNORED + pkg.CONSOLE_ONLY + (pkg.BUNDLED_GEOLITE,))
    pkg._prune_botocore(tmp_path, pkg.aws_services(load(PISTATS / "producer.yaml")))
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "_maxminddb_geolite2/__init__.py",
        "botocore/__init__.py",
        "botocore/data/endpoints.json",
        "botocore/data/kinesis/2013-12-02/service-2.json.gz",
        "pkg-1.0.dist-info/LICENSE",
        "pkg-1.0.dist-info/METADATA",
        "pkg/__init__.py",
    ]


def _tree(root: Path, mode: int, mtime: int) -> Path:
    for rel, text in (("topology/t.yaml", "name: t\n"), ("topology/my_bolt.py", "X = 1\n")):
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        f.chmod(mode)
        os.utime(f, (mtime, mtime))
    run = root / "topology" / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o700)
    return root


def test_the_same_input_gives_the_same_zip_whatever_its_modes_times_and_build_folder(
    tmp_path: Path,
):
    """sam deploy compares the zip's digest: an unchanged topology must give the same bytes. And
    Lambda runs the code as another user: a file readable by its owner alone would not import."""
    a = _tree(tmp_path / "a" / "build-1", 0o600, 1_700_000_000)
    b = _tree(tmp_path / "b" / "other-build", 0o644, 1_800_000_000)
    for root in (a, b):
        pkg._compile(root, pkg.TASK_ROOT)
        pkg._write_zip(root.parent / "x.zip", [(root, "")])
    assert (a.parent / "x.zip").read_bytes() == (b.parent / "x.zip").read_bytes()
    with zipfile.ZipFile(a.parent / "x.zip") as zf:
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        pyc = zf.read(f"topology/__pycache__/my_bolt.{sys.implementation.cache_tag}.pyc")
    assert modes["topology/my_bolt.py"] == modes["topology/t.yaml"] == 0o100644
    assert modes["topology/run.sh"] == 0o100755
    assert b"/var/task/topology/my_bolt.py" in pyc and str(tmp_path).encode() not in pyc


def _wheel(folder: Path, name: str, tag: str, requires: str = "") -> Path:
    """A one-module wheel with that platform tag, as a C extension's would be."""
    folder.mkdir(parents=True, exist_ok=True)
    python = "py3-none" if tag == "any" else "cp311.cp312.cp313-cp311.cp312.cp313"
    path = folder / f"{name}-1.0-{python}-{tag}.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}.py", "")
        requires = f"Requires-Dist: {requires}\n" if requires else ""
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{requires}"
        )
        zf.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.parametrize(
    ("python", "arch", "tag", "installs"),
    [
        # python3.12 and later run on Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels run there
        ("3.12", "x86_64", "manylinux_2_28_x86_64", True),
        ("3.13", "arm64", "manylinux_2_34_aarch64", True),
        ("3.12", "x86_64", "manylinux2014_x86_64", True),
        ("3.12", "x86_64", "manylinux_2_35_x86_64", False),
        # up to python3.11 on Amazon Linux 2 (glibc 2.26)
        ("3.11", "x86_64", "manylinux_2_24_x86_64", True),
        ("3.11", "arm64", "manylinux2014_aarch64", True),
        ("3.11", "x86_64", "manylinux_2_28_x86_64", False),
        ("3.11", "x86_64", "manylinux2014_aarch64", False),
    ],
)
def test_wheels_are_chosen_for_the_glibc_of_the_lambda_runtime(
    tmp_path: Path, python: str, arch: str, tag: str, installs: bool
):
    wheel = _wheel(tmp_path / "wheels", "cext", tag)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--target",
            str(tmp_path / "t"),
        ]
        + ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
        + [arg for platform in pkg.platforms(python, arch) for arg in ("--platform", platform)]
        + ["--find-links", str(wheel.parent), "cext"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (r.returncode == 0) is installs, r.stderr
    assert (tmp_path / "t" / "cext.py").exists() is installs


def test_the_wheel_is_built_from_the_sources_alone_not_a_stale_build_folder(tmp_path: Path):
    """setuptools reuses a checkout's build/ folder: a module deleted since an earlier build would
    ship. The wheel is built from a copy of the package sources instead."""
    root = tmp_path / "checkout"
    (root / "squall" / "sub" / "__pycache__").mkdir(parents=True)
    (root / "build" / "lib" / "squall").mkdir(parents=True)
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        (root / name).write_text(name)
    (root / "squall" / "__init__.py").write_text("")
    (root / "squall" / "sub" / "kept.py").write_text("")
    (root / "squall" / "sub" / "__pycache__" / "kept.cpython-311.pyc").write_bytes(b"")
    (root / "build" / "lib" / "squall" / "deleted_since.py").write_text("")
    (root / "tests").mkdir()
    source = pkg.source_copy(root, tmp_path / "source")
    files = sorted(str(f.relative_to(source)) for f in source.rglob("*") if f.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "setup.cfg",
        "squall/__init__.py",
        "squall/sub/kept.py",
    ]
    assert pkg.project_root() is not None  # this test runs from a checkout, as squall package does
    assert all((pkg.project_root() / name).is_file() for name in pkg.SOURCE_FILES)


def test_sizes_are_described_largest_first():
    assert pkg.describe_sizes([("botocore", 3 * 2**20), ("sqlalchemy", 2**20)], 8 * 2**20) == (
        "botocore 3.0 MiB (38%), sqlalchemy 1.0 MiB (12%)"
    )


@pytest.mark.e2e
def test_pistats_commands_package_both_functions_and_the_fleet(
    tmp_path: Path, wheelhouse, runtime_client
):
    """The three commands of examples/pistats/README.md; the consumer zip then runs alone under awslambdaric."""
    build = tmp_path / "build"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **wheelhouse}
    commands = [
        [
            "package",
            str(PISTATS / "producer.yaml"),
            "--handler",
            "producer",
            "-o",
            str(build / "producer.zip"),
            "--template",
            str(build / "producer.template.yaml"),
            "--cors-origin",
            "https://app.example.com",
            "--no-compile",
        ],
        [
            "package",
            str(PISTATS / "topology.yaml"),
            "--handler",
            "consumer",
            "--extras",
            "postgres,redis",
            "--stream",
            "pistats-events",
            "-o",
            str(build / "consumer.zip"),
            "--template",
            str(build / "consumer.template.yaml"),
        ],
        [
            "package",
            str(PISTATS / "topology.yaml"),
            "--handler",
            "kcl",
            "--stream",
            "pistats-events",
            "--extras",
            "postgres,redis",
            "-o",
            str(build / "kcl"),
        ],
    ]
    # Independent builds (each its own output and temporary folder): run side by side, they
    # take the time of the slowest instead of the three's sum (pip waits on the index and disk).
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "squall.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in commands
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        outs.append(out)
    assert "bundled GeoLite2: left out" in outs[0] and "bundled GeoLite2: included" in outs[1]
    # what the topology does not use stays out; the consumer below runs without it
    producer_out, consumer_out = (
        {
            name
            for line in out.splitlines()
            if line.startswith("  dependencies left out")
            for name in line.split(": ", 1)[1].split(", ")
        }
        for out in outs[:2]
    )
    assert {"SQLAlchemy", "redis", "ua-parser", "maxminddb", "maxminddb-geolite2"} <= producer_out
    assert {"rich", "click"} <= consumer_out
    # its state may be Redis (${STATE_URL}), its databases SQL URLs on SQLAlchemy's engine
    assert not {"redis", "hiredis", "SQLAlchemy"} & consumer_out
    assert not {"ua-parser", "maxminddb", "psycopg2-binary"} & consumer_out
    # the file spout's sample input: the trigger delivers the records, the zip need not hold it
    assert "  left out: events.jsonl.gz (input of the file spout 'spout'" in outs[1]
    assert "  left out of topology/: events.jsonl.gz" in outs[2]
    assert not (build / "kcl" / "topology" / "events.jsonl.gz").exists()
    for name in ("producer", "consumer"):
        path = build / f"{name}.template.yaml"
        translate(yaml.safe_load(path.read_text()))
        lint = cfn_lint(path)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    assert (build / "kcl" / "squall-pistats.service").is_file() and (
        build / "kcl" / "topology" / "topology.yaml"
    ).is_file()

    root = tmp_path / "task"
    with zipfile.ZipFile(build / "consumer.zip") as zf:
        names = set(zf.namelist())
        assert {
            "squall_lambda.py",
            "topology/topology.yaml",
            "topology/producer.yaml",
            "_maxminddb_geolite2/GeoLite2-City.mmdb",
            "topology/.squall-checked-schemas.json",  # the validate bolt's schema, checked here
        } <= names
        assert not any(n.startswith("topology/out/") for n in names)
        assert {"redis/__init__.py", "ua_parser/__init__.py", "maxminddb/__init__.py"} <= names
        assert "sqlalchemy/__init__.py" in names  # ${WAREHOUSE_URL}, ${STATE_URL}: any SQL URL
        assert not any(n.startswith(("rich/", "click/")) for n in names)
        assert "topology/events.jsonl.gz" not in names
        checked = json.loads(zf.read("topology/.squall-checked-schemas.json"))["schemas"]
        assert checked == [schema_digest(json.loads((PISTATS / "schemas/event.json").read_text()))]
        # the digests the init computes: its squall's checking code is this checkout's, byte for byte
        assert zf.read("squall/bolts/schema.py") == (ROOT / "squall/bolts/schema.py").read_bytes()
        zf.extractall(root)
    link_runtime(runtime_client, root)
    lambda_tmp = tmp_path / "lambda-tmp"
    lambda_tmp.mkdir()
    function = LambdaFunction(
        "squall_lambda.handler",
        root,
        {
            "WAREHOUSE_URL": f"sqlite:///{lambda_tmp}/w.db",
            "STATE_URL": f"sqlite:///{lambda_tmp}/s.db",
        },
        isolated=True,
    )
    try:
        docs = [
            {
                "message_id": "m-00000001",
                "event_type": "page_view",
                "timestamp": "2026-11-03T18:00:00Z",
                "app_id": "app-news",
                "device_token": "t1",
                "ip": "81.2.69.142",
                "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)",
            }
        ]
        assert function.invoke(kinesis_lambda_event(docs)) == {"batchItemFailures": []}
    finally:
        function.stop()
    rows = (
        sqlite3.connect(lambda_tmp / "w.db")
        .execute("select event_id, country, os from events")
        .fetchall()
    )
    assert rows == [("m-00000001", "GB", "iOS")]


def test_over_lambda_s_unzipped_limit_no_zip_is_left_and_the_error_names_what_is_big(
    tmp_path: Path, monkeypatch
):
    project = tmp_path / "project"
    (project / "samples").mkdir(parents=True)
    (project / "samples" / "dump.jsonl").write_bytes(b"x" * 300_000)  # unrelated to the topology
    path = topology(project, "  - {id: decode, type: json}")
    monkeypatch.setattr(pkg, "UNZIPPED_LIMIT", 200_000)
    monkeypatch.setattr(
        pkg, "_pip", lambda *args: None
    )  # no dependency: the topology's folder alone
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    for layer in (None, tmp_path / "layer.zip"):
        with pytest.raises(SquallError, match="exceeds Lambda's 250 MiB limit") as e:
            pkg.build(path, handler="consumer", output=tmp_path / "x.zip", layer=layer)
        assert "largest unzipped: topology 0.3 MiB" in str(e.value)
        assert not (tmp_path / "x.zip").exists() and not (tmp_path / "layer.zip").exists()


def test_a_version_conflict_says_which_requirement_pins_what(tmp_path: Path):
    """pip prints what a conflict is caused by on stdout (and nothing of it with -q)."""
    wheels = tmp_path / "wheels"
    _wheel(wheels, "engine", "any", requires="helper>=2")
    _wheel(wheels, "helper", "any")
    args = ("wheel", "--no-index", "--find-links", str(wheels), "-w", str(tmp_path / "out"))
    with pytest.raises(SquallError) as e:
        pkg._pip(*args, "engine", "helper<2")
    assert "The conflict is caused by:" in str(e.value)
    assert "engine 1.0 depends on helper>=2" in str(e.value)


def test_the_topology_s_own_code_edited_in_the_unzipped_package_runs_as_edited(
    tmp_path: Path, monkeypatch
):
    """Lambda's console edits a small function zip (with --layer, the topology alone) in place:
    bytecode Python never re-checks would run the code as it was built."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_bolt.py").write_text("VERSION = 'built'\n")
    path = topology(project, "  - {id: decode, type: json}")
    monkeypatch.setattr(pkg, "_pip", lambda *args: None)  # no dependency: the topology alone
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    pkg.build(path, handler="consumer", output=tmp_path / "fn.zip", layer=tmp_path / "layer.zip")
    with zipfile.ZipFile(tmp_path / "fn.zip") as zf:
        assert f"topology/__pycache__/my_bolt.{sys.implementation.cache_tag}.pyc" in zf.namelist()
        zf.extractall(tmp_path / "task")
    (tmp_path / "task" / "topology" / "my_bolt.py").write_text("VERSION = 'edited'\n")
    r = subprocess.run(
        [sys.executable, "-S", "-B", "-c", "import my_bolt; print(my_bolt.VERSION)"],
        cwd=tmp_path / "task" / "topology",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stdout.strip() == "edited", r.stderr


def test_a_postgresql_topology_packaged_without_psycopg2_is_told_at_build(
    tmp_path: Path, monkeypatch
):
    """A PostgreSQL resource needs psycopg2, which only the `postgres` extra (or `--with`, a
    requirements file) puts in the zip: built without it, the package said nothing and the
    function stopped at every init with the driver missing. The build now warns, naming the
    resource and the flag; a zip that holds psycopg2 is not warned of."""
    project = tmp_path / "project"
    project.mkdir()
    path = project / "topology.yaml"
    path.write_text(
        "name: t\n"
        "resources:\n"
        "  db: {url: 'postgresql://squall:s3cret@db.example:5432/app'}\n"
        "spout: {type: stdin}\n"
        "bolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: warehouse, resource: db, table: t, columns: {a: a}}]\n"
    )
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    monkeypatch.setattr(pkg, "_pip", lambda *args: None)  # nothing installed: no psycopg2
    from click.testing import CliRunner

    from squall.cli import main

    args = ["package", str(path), "--handler", "consumer", "-o", str(tmp_path / "a.zip")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "resource 'db'" in warning and "--extras postgres" in warning
    assert "s3cret" not in result.output

    def installs_psycopg2(*args: str) -> None:
        if args[0] == "install":
            target = Path(args[args.index("--target") + 1])
            (target / "psycopg2").mkdir(parents=True)
            (target / "psycopg2" / "__init__.py").write_text("")

    monkeypatch.setattr(pkg, "_pip", installs_psycopg2)
    report = pkg.build(
        path,
        handler="consumer",
        output=tmp_path / "b.zip",
        requirement="squall",
        extras=("postgres",),
    )
    assert report.warnings == []


def test_squall_installed_from_a_wheel_goes_in_from_its_installed_files_not_a_name(
    tmp_path: Path, monkeypatch
):
    """Not run from a checkout (squall installed from its wheel), the zip's squall was
    `squall[postgres]==0.1.0`, fetched from an index that has no squall: pip stopped the build.
    The installed squall's files, packed again as its wheel (``installed_wheel``, tested through
    the fleet in tests/deploy/test_fleet.py), are what pip installs."""
    project = tmp_path / "project"
    project.mkdir()
    path = topology(project, "  - {id: decode, type: json}")
    calls: list[tuple[str, ...]] = []

    def packed(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "squall-0.1.0-py3-none-any.whl").write_bytes(b"")
        return folder / "squall-0.1.0-py3-none-any.whl"

    monkeypatch.setattr(pkg, "project_root", lambda: None)
    monkeypatch.setattr(pkg, "installed_wheel", packed)
    monkeypatch.setattr(pkg, "_pip", lambda *args: calls.append(args))
    pkg.build(path, handler="consumer", output=tmp_path / "fn.zip", extras=("postgres",))
    [wheel, install] = calls
    assert wheel[:2] == ("wheel", "-w") and install[0] == "install"
    for args in calls:
        [squall] = [a for a in args if ".whl" in a or a.startswith("squall")]
        assert squall.endswith("/wheels/squall-0.1.0-py3-none-any.whl[postgres]"), squall
