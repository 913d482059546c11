"""Which of squall's optional dependencies a Lambda zip leaves out (squall/deploy/dependencies.py).

What the example topologies declare, and the pruning of a folder pip installed, on small stand-in
distributions (no pip, no network). The zips of the examples run without what is left out in the
packaging end-to-end tests (tests/deploy/test_package.py, tests/kinesis/test_package_kiosk.py),
and the ETL functions, which no test packages, run here with it blocked from import.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from squall.deploy.dependencies import (
    DISTRIBUTION_OF,
    EXTRA_OF,
    OPTIONAL,
    _imports,
    local_code,
    needed_packages,
    prune_unused,
    requirement_lines,
)
from squall.topology.loader import load
from squall.topology.references import placeholder
from tests.factories import kinesis_lambda_event

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DEVICE = {"ua_parser", "ua_parser_builtins", "ua_parser_rs", "crawleruseragents", "ahocorasick"}


def needs(path: Path) -> frozenset[str]:
    return needed_packages(load(path, secrets=placeholder), path.read_text(encoding="utf-8"))


def test_the_examples_declare_what_their_components_and_resources_import():
    assert needs(EXAMPLES / "pistats/topology.yaml") == {
        *DEVICE,
        "maxminddb",
        "_maxminddb_geolite2",  # its geo bolt has no database:
        "redis",  # the subscription's store: ${STATE_URL}, which may be Redis
        # ${WAREHOUSE_URL} and ${STATE_URL} may be SQL URLs that stay on SQLAlchemy's engine
        "sqlalchemy",
    }
    # its warehouse takes SQL only (no redis-py), from ${WAREHOUSE_URL} (SQLAlchemy)
    assert needs(EXAMPLES / "etl/transform.yaml") == {"pyarrow", "sqlalchemy"}
    # the kiosk registry's lookup: its sql source and its (optional) shared Redis cache
    assert needs(EXAMPLES / "kiosk/topology.yaml") == {"sqlalchemy", "redis"}
    for name in ("pistats/producer.yaml", "etl/ingest.yaml"):
        assert needs(EXAMPLES / name) == set(), name


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


TOPOLOGY = """
name: t
resources:
  db: {{url: "{db}"}}
  cache: {{url: "{cache}"}}
spout: {{type: stdin}}
bolts:
  - {{id: geo, type: geo, ip_field: ip, database: {mmdb}}}
  - {{id: sub, type: subscription, store: db, key: token}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: t, columns: {{k: k}}}}
  - {{id: lake, type: s3, bucket: b, format: jsonl}}
"""


@pytest.mark.parametrize(
    ("db", "cache", "expected"),
    [
        ("sqlite:///x.db", "sqlite:///y.db", {"maxminddb"}),
        # a URL from a variable may be Redis at run time, unless an option taking SQL only names
        # it, and a SQL URL on SQLAlchemy's engine (a query string, `:memory:`)
        ("${DB_URL:-sqlite:///x.db}", "sqlite:///y.db", {"maxminddb", "sqlalchemy"}),
        ("sqlite:///x.db", "${CACHE_URL:-sqlite:///y.db}", {"maxminddb", "redis", "sqlalchemy"}),
        ("sqlite:///x.db", "redis://127.0.0.1:6379/0", {"maxminddb", "redis"}),
    ],
)
def test_needs_come_from_the_components_options_and_the_resources(
    tmp_path: Path, db: str, cache: str, expected: set[str]
):
    # the geo bolt's database outside the package: the reader, not the bundled GeoLite2
    path = write(
        tmp_path / "t.yaml", TOPOLOGY.format(db=db, cache=cache, mmdb=tmp_path / "city.mmdb")
    )
    (tmp_path / "city.mmdb").write_bytes(b"")
    topo = load(path, secrets=placeholder)
    assert needed_packages(topo, path.read_text()) == expected


def dist(deps: Path, name: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> None:
    """A distribution as pip installs it with --target: its files, METADATA and RECORD."""
    info = f"{name.replace('-', '_')}-1.0.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
    meta += [f"Provides-Extra: {e}" for e in ("postgres", "redis") if name == "squall"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    write(deps / info / "METADATA", "\n".join(meta) + "\n")
    for rel, text in files.items():
        write(deps / rel, text)
    record = [*files, f"{info}/METADATA", f"{info}/RECORD"]
    write(deps / info / "RECORD", "".join(f"{r},,\n" for r in record))


@pytest.fixture
def deps(tmp_path: Path) -> Path:
    deps = tmp_path / "deps"
    squall_requires = (
        "pydantic",
        "SQLAlchemy>=2.0",
        "redis>=5.0",
        "rich",
        'psycopg2-binary; extra == "postgres"',
        'redis; extra == "redis"',
        'hiredis; extra == "redis"',
    )
    dist(deps, "squall", {"squall/__init__.py": ""}, squall_requires)
    dist(deps, "pydantic", {"pydantic/__init__.py": ""}, ("typing-extensions",))
    dist(deps, "typing-extensions", {"typing_extensions.py": ""})
    dist(
        deps,
        "SQLAlchemy",
        {"sqlalchemy/__init__.py": "", "sqlalchemy/orm/x.py": ""},
        ('greenlet; platform_machine == "x86_64"', "typing-extensions"),
    )
    dist(deps, "greenlet", {"greenlet/__init__.py": "", "greenlet/_g.cpython-311-x86_64.so": ""})
    dist(deps, "redis", {"redis/__init__.py": ""})
    dist(deps, "hiredis", {"hiredis/__init__.py": ""})
    dist(deps, "rich", {"rich/__init__.py": ""}, ("pygments",))
    dist(deps, "pygments", {"pygments/__init__.py": ""})
    dist(deps, "psycopg2-binary", {"psycopg2/__init__.py": ""})
    return deps


def tops(deps: Path) -> set[str]:
    return {p.name for p in deps.iterdir()}


def test_what_no_component_declares_is_deleted_with_what_it_alone_requires(
    deps: Path, tmp_path: Path
):
    left_out = prune_unused(deps, frozenset(), extras={"postgres"}, asked=[], code=[])
    assert left_out == ["greenlet", "hiredis", "pygments", "redis", "rich", "SQLAlchemy"]
    assert {t for t in tops(deps) if not t.endswith(".dist-info")} == {
        "squall",
        "pydantic",
        "typing_extensions.py",
        "psycopg2",  # the postgres extra's: not optional
    }
    assert not any(t.startswith(("sqlalchemy", "SQLAlchemy", "greenlet")) for t in tops(deps))


def test_a_declared_need_keeps_its_distributions(deps: Path):
    left_out = prune_unused(
        deps, frozenset({"redis", "sqlalchemy"}), extras={"postgres"}, asked=[], code=[]
    )
    assert left_out == ["pygments", "rich"]
    assert {"redis", "hiredis", "sqlalchemy", "greenlet"} <= tops(deps)


def test_each_module_of_an_extra_is_named_by_its_distribution():
    """What the fleet looks for in requirements.txt (``DISTRIBUTION_OF``) is the distribution the
    packager installs (``OPTIONAL``): ``re2`` is google-re2's (a fleet with ``--with google-re2``
    was told to add ``--extras re2``)."""
    for name in EXTRA_OF.keys() & OPTIONAL.keys():
        assert DISTRIBUTION_OF.get(name, name) == OPTIONAL[name][0], name


@pytest.mark.parametrize("needs", [{"ua_parser"}, {"ua_parser", "ua_parser_rs"}])
def test_an_optional_distribution_of_an_extra_squall_asks_for_goes_unless_declared(
    tmp_path: Path, needs: set[str]
):
    """squall requires ``ua-parser[regex]``, whose extra adds only ua-parser-rs: a device bolt
    with ``engine: re2`` does not declare it, and its zip leaves it out (seen: kept, ~5 MB)."""
    deps = tmp_path / "deps"
    dist(deps, "squall", {"squall/__init__.py": ""}, ("ua-parser[regex]>=1.0",))
    dist(
        deps,
        "ua-parser",
        {"ua_parser/__init__.py": ""},
        ("ua-parser-builtins", 'ua-parser-rs; extra == "regex"', 'google-re2; extra == "re2"'),
    )
    dist(deps, "ua-parser-builtins", {"ua_parser_builtins/__init__.py": ""})
    dist(deps, "ua-parser-rs", {"ua_parser_rs/__init__.py": ""})
    left_out = prune_unused(deps, frozenset(needs), extras=set(), asked=[], code=[])
    assert left_out == ([] if "ua_parser_rs" in needs else ["ua-parser-rs"])
    assert ("ua_parser_rs" in tops(deps)) is ("ua_parser_rs" in needs)
    assert {"ua_parser", "ua_parser_builtins"} <= tops(deps)


@pytest.mark.parametrize(
    "how",
    ["with", "requirements path", "own code", "plugin"],
)
def test_what_the_user_asks_for_or_imports_is_kept(deps: Path, tmp_path: Path, how: str):
    asked: list[str] = []
    code: list[Path] = []
    if how == "with":  # --with SQLAlchemy, or a requirements.txt line
        asked = ["SQLAlchemy==2.1.9"]
    elif how == "requirements path":  # a local package pip installed from a path: it requires it
        dist(deps, "shop-tools", {"shop_tools/__init__.py": ""}, ("sqlalchemy",))
        asked = ["./shop-tools"]
    elif how == "plugin":  # a plugin's module imports it (without declaring it)
        dist(deps, "kiosk-tags", {"kiosk_tags.py": "from sqlalchemy import text\n"})
    else:  # the topology's own module imports it
        code = [write(tmp_path / "topo" / "my_bolt.py", "import sqlalchemy.orm\n")]
    left_out = prune_unused(deps, frozenset(), extras=set(), asked=asked, code=code)
    assert "SQLAlchemy" not in left_out and "greenlet" not in left_out
    assert {"sqlalchemy", "greenlet"} <= tops(deps)
    assert "redis" in left_out


def test_own_code_is_what_the_types_name_and_what_that_imports(tmp_path: Path):
    folder = tmp_path / "topo"
    write(folder / "bolts.py", "import helpers\nimport json\n")
    write(folder / "helpers" / "__init__.py", "import redis\n")
    write(folder / "setup_tables.py", "import sqlalchemy\n")  # a script no type names
    path = write(
        folder / "t.yaml",
        "name: t\nspout: {type: stdin}\nbolts:\n  - {id: b, type: 'bolts:Mine'}\n"
        "sinks:\n  - {id: out, type: stdout}\n",
    )
    write(
        folder / "bolts.py",
        "import helpers\nfrom squall.bolts import RecordBolt\n\n\nclass Mine(RecordBolt):\n"
        "    def process_event(self, event):\n        return 'default'\n",
    )
    sys.path.insert(0, str(folder))
    try:
        topo = load(path, secrets=placeholder)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("bolts", None)
        sys.modules.pop("helpers", None)
    files = {p.relative_to(folder).as_posix() for p in local_code(topo, folder)}
    assert files == {"bolts.py", "helpers/__init__.py"}


def test_a_packages_tests_and_environments_are_not_own_code(tmp_path: Path):
    """The folder of a package a type names was read whole: its tests (fixtures on SQLAlchemy,
    a fake's ``resources.sql``) and a virtual environment inside it kept SQLAlchemy (27 MiB
    unzipped) for a function that never imports them. A folder of tests above the project's
    does not count."""
    folder = tmp_path / "tests" / "topo"
    write(folder / "shop" / "__init__.py", "")
    write(folder / "shop" / "bolts.py", "from squall.bolts import RecordBolt\n")
    write(folder / "shop" / "tests" / "test_bolts.py", "import sqlalchemy\n")
    write(folder / "shop" / "conftest.py", "engine = resources.sql('db')\n")
    write(folder / "shop" / "test_more.py", "import redis\n")
    write(folder / "shop" / ".venv" / "lib" / "site-packages" / "x.py", "import pyarrow\n")

    class Cfg:
        def __init__(self, type_: str):
            self.type = type_

    class Topo:
        spout, bolts, sinks = Cfg("stdin"), [Cfg("shop.bolts:B")], [Cfg("stdout")]

    files = local_code(Topo(), folder)  # the types are all it reads
    assert sorted(f.relative_to(folder).as_posix() for f in files) == [
        "shop/__init__.py",
        "shop/bolts.py",
    ]
    assert not _imports(files) & {"sqlalchemy", "redis", "pyarrow"}


def test_a_packages_folders_the_zip_leaves_out_are_not_own_code(tmp_path: Path):
    """A package folder's ``node_modules`` (node-gyp ships Python), a ``build/`` copy or a
    ``venv`` — folders the zip leaves out (``topology_files.IGNORED``) — were read as the
    function's code: their imports kept redis-py, pyarrow or SQLAlchemy for a function that
    never holds those files, and a big ``node_modules`` was walked file by file."""
    folder = tmp_path / "topo"
    write(folder / "shop" / "__init__.py", "")
    write(folder / "shop" / "bolts.py", "from squall.bolts import RecordBolt\n")
    gyp = folder / "shop" / "node_modules" / "node-gyp" / "gyp" / "pylib" / "gyp"
    write(gyp / "input.py", "import redis\nengine = resources.sql('db')\n")
    write(folder / "shop" / "build" / "lib" / "shop" / "old.py", "import pyarrow\n")
    write(folder / "shop" / "venv" / "bin" / "tool.py", "import sqlalchemy\n")

    class Cfg:
        def __init__(self, type_: str):
            self.type = type_

    class Topo:
        spout, bolts, sinks = Cfg("stdin"), [Cfg("shop.bolts:B")], [Cfg("stdout")]

    files = local_code(Topo(), folder)
    assert sorted(f.relative_to(folder).as_posix() for f in files) == [
        "shop/__init__.py",
        "shop/bolts.py",
    ]
    assert not _imports(files) & {"sqlalchemy", "redis", "pyarrow"}


@pytest.mark.parametrize(
    "code",
    [
        "from squall.enrichment import geo\n\ndef path():\n    return geo.bundled_database()\n",
        "import squall.enrichment.geo\n\ndef path():\n"
        "    return squall.enrichment.geo.bundled_database()\n",
        "import squall.enrichment.geo as g\n\nopen_it = g.bundled_database\n",
    ],
)
def test_a_squall_function_reached_through_its_module_counts_with_its_imports(
    tmp_path: Path, code: str
):
    """Only ``from squall.enrichment.geo import bundled_database`` counted the function's
    body's imports: ``geo.bundled_database()`` through the imported module left the GeoLite2
    package (and its 56 MB file) out of the zip, and the call stopped on "No module named
    '_maxminddb_geolite2'"."""
    assert "_maxminddb_geolite2" in _imports([write(tmp_path / "near.py", code)])
    other = write(tmp_path / "other.py", "from squall.enrichment import geo\n\nx = geo.GeoBolt\n")
    assert "_maxminddb_geolite2" not in _imports([other])


def test_every_optional_import_name_is_what_its_distribution_installs():
    """OPTIONAL's import names are real modules of the development environment's distributions."""
    from importlib import metadata, util

    for name, dists in OPTIONAL.items():
        assert util.find_spec(name) is not None, name
        for d in dists:
            metadata.distribution(d)


#: Runs a consumer's init and one event with some modules refused at import, as a zip without
#: them would (a finder first on sys.meta_path); prints the answer and what of them was imported.
BLOCKED_RUN = """
import importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (left out)", name=name)

BLOCKED = set(json.loads(sys.argv[2]))
sys.meta_path.insert(0, Refuse())
from squall.deploy.lambda_consumer import make_handler

handler = make_handler(sys.argv[1])
print(json.dumps(handler(json.load(open(sys.argv[3])), None) if len(sys.argv) > 3 else None))
print(json.dumps(sorted(BLOCKED & {m.split(".")[0] for m in sys.modules})))
"""


def run_blocked(topology: Path, event: dict | None, tmp_path: Path, env: dict[str, str]):
    """The function's init (and ``event``) with every optional module its zip leaves out refused:
    those it does not declare, nor its own code beside it imports."""
    code = local_code(load(topology, secrets=placeholder), topology.parent)
    blocked = sorted(set(OPTIONAL) - needs(topology) - _imports(code))
    args = []
    if event is not None:
        (tmp_path / "event.json").write_text(json.dumps(event))
        args = ["event.json"]
    r = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, str(topology), json.dumps(blocked), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    answer, imported = r.stdout.strip().splitlines()[-2:]
    assert json.loads(imported) == []
    return json.loads(answer)


DEVICE_FUNCTION = """
name: devices
resources:
  db: {url: "sqlite:///w.db"}
spout: {type: kinesis, stream: events}
bolts:
  - {id: decode, type: json}
  - {id: device, type: device, ua_field: ua, engine: ENGINE}
sinks:
  - {id: out, type: warehouse, resource: db, table: devices, columns: {c: device.device_class}}
"""


@pytest.mark.parametrize("engine", ["auto", "re2"])
def test_a_device_function_runs_without_the_regex_engine_its_zip_leaves_out(
    tmp_path: Path, engine: str
):
    """``engine: re2``'s zip holds no ua-parser-rs, ``auto``'s no google-re2: the init and a batch
    with that module absent — as absent, ``sys.modules`` holding None for it: ua-parser asks
    ``importlib.util.find_spec`` which engines there are, which :data:`BLOCKED_RUN`'s finder
    answers with an error, as no missing module does."""
    path = tmp_path / "topology.yaml"
    path.write_text(DEVICE_FUNCTION.replace("ENGINE", engine))
    blocked = sorted(set(OPTIONAL) - needs(path))
    assert ("ua_parser_rs" in blocked, "re2" in blocked) == (engine == "re2", engine == "auto")
    uas = [
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Mobile/15E148",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ]
    (tmp_path / "event.json").write_text(json.dumps(kinesis_lambda_event([{"ua": u} for u in uas])))
    absent = BLOCKED_RUN.replace(
        "sys.meta_path.insert(0, Refuse())", "sys.modules.update(dict.fromkeys(BLOCKED))"
    ).replace("for m in sys.modules}", "for m, v in sys.modules.items() if v is not None}")
    r = subprocess.run(
        [sys.executable, "-c", absent, str(path), json.dumps(blocked), "event.json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    answer, imported = r.stdout.strip().splitlines()[-2:]
    assert json.loads(answer) == {"batchItemFailures": []}, r.stderr[-3000:]
    assert json.loads(imported) == []
    rows = sqlite3.connect(tmp_path / "w.db").execute("select c from devices").fetchall()
    assert sorted(rows) == [("bot",), ("tablet",)]


def example_orders() -> list[dict]:
    docs = []
    for line in (EXAMPLES / "etl/orders.jsonl").read_text().splitlines():
        try:
            docs.append(json.loads(line))
        except ValueError:  # the example's malformed lines: the ingest's to reject
            pass
    return docs


def test_the_etl_functions_run_without_what_their_zips_leave_out(
    tmp_path: Path, moto_server, unique_name: str
):
    """No test packages them: their init and a batch each — the ingest reading an object of the
    landing bucket into Kinesis, the transform writing Kinesis, Parquet to S3, the warehouse
    and its dead letters — with the optional modules they do not declare refused at import."""
    name = unique_name.replace("_", "-")
    landing, lake, raw, curated = (f"{name}-{x}" for x in ("landing", "lake", "raw", "curated"))
    s3, kinesis = moto_server.client("s3"), moto_server.client("kinesis")
    for bucket in (landing, lake):
        s3.create_bucket(Bucket=bucket)
    for stream in (raw, curated):
        kinesis.create_stream(StreamName=stream, ShardCount=1)
    body = (EXAMPLES / "etl/orders.jsonl").read_bytes()
    s3.put_object(Bucket=landing, Key="incoming/orders.jsonl", Body=body)
    env = {
        "AWS_ENDPOINT_URL": moto_server.endpoint,
        "LANDING_BUCKET": landing,
        "LAKE_BUCKET": lake,
        "RAW_STREAM": raw,
        "CURATED_STREAM": curated,
        "WAREHOUSE_URL": f"sqlite:///{tmp_path}/w.db",
    }
    run_blocked(EXAMPLES / "etl/ingest.yaml", s3_lambda_event(landing), tmp_path, env)
    shard = kinesis.list_shards(StreamName=raw)["Shards"][0]["ShardId"]
    it = kinesis.get_shard_iterator(StreamName=raw, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    assert kinesis.get_records(ShardIterator=it["ShardIterator"])["Records"]

    docs = [{**d, "source_event_id": f"e-{i}"} for i, d in enumerate(example_orders())]
    answer = run_blocked(EXAMPLES / "etl/transform.yaml", kinesis_lambda_event(docs), tmp_path, env)
    assert answer == {"batchItemFailures": []}
    rows = sqlite3.connect(tmp_path / "w.db").execute("select count(*) from orders").fetchone()
    assert rows[0] > 0
    assert s3.list_objects_v2(Bucket=lake, Prefix="orders/")["KeyCount"] > 0  # the Parquet


def s3_lambda_event(bucket: str) -> dict:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-28T12:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": "incoming/orders.jsonl", "size": 10, "sequencer": "0A1B2C3D4E5F6789"},
        },
    }
    return {"Records": [record]}


WINDOW_AND_LOOKUP = """
name: wl
resources:
  db: {url: "sqlite:///w.db"}
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - {id: app, type: lookup, key: app_id, target: app, source: {type: http, url: "http://127.0.0.1:9/{key}"}}
  - id: minutely
    type: window
    store: db
    key: [app_id]
    size: 1m
    aggregates: {n: {fn: count}}
sinks:
  - {id: rows, type: warehouse, resource: db, table: minutely, columns: {app_id: app_id, n: n}}
"""


def test_a_lookup_and_a_window_start_without_what_they_do_not_declare(tmp_path: Path):
    """Their modules import SQLAlchemy and redis-py whatever the source or store: an HTTP lookup
    and a window on SQLite declare both (the init imports them)."""
    path = write(tmp_path / "wl.yaml", WINDOW_AND_LOOKUP)
    assert {"sqlalchemy", "redis"} <= needs(path)
    run_blocked(path, None, tmp_path, {})


#: A SQL resource that stays on SQLAlchemy (``options:``, as docs/warehouse.md shows for a lock
#: timeout; a query string or ``:memory:`` on SQLite; a URL form the plain PostgreSQL reader
#: leaves to SQLAlchemy) under components that otherwise write on the plain driver.
ON_SQLALCHEMY = """
name: sa
resources:
  db: {url: "sqlite:///w.db", options: {connect_args: {timeout: 7}}}
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - {id: sub, type: subscription, store: db, key: token}
sinks:
  - {id: rows, type: warehouse, resource: db, table: t, columns: {k: k}}
  - {id: dead, type: dead_letter_table, resource: db}
"""


@pytest.mark.parametrize(
    "resource",
    [
        '{url: "sqlite:///w.db", options: {connect_args: {timeout: 7}}}',
        '{url: "sqlite:///w.db?timeout=7"}',
    ],
)
def test_a_sql_resource_that_stays_on_sqlalchemy_keeps_it(tmp_path: Path, resource: str):
    """The warehouse, the subscription state and the dead-letter table open such a database on
    SQLAlchemy's engine: its init and a batch with SQLAlchemy refused failed with ImportError."""
    text = ON_SQLALCHEMY.replace(
        '{url: "sqlite:///w.db", options: {connect_args: {timeout: 7}}}', resource
    )
    path = write(tmp_path / "sa.yaml", text)
    assert "sqlalchemy" in needs(path)
    answer = run_blocked(path, kinesis_lambda_event([{"k": "a", "token": "t1"}]), tmp_path, {})
    assert answer == {"batchItemFailures": []}
    assert sqlite3.connect(tmp_path / "w.db").execute("select k from t").fetchall() == [("a",)]


def test_a_sql_resource_on_the_plain_driver_leaves_sqlalchemy_out(tmp_path: Path):
    path = write(
        tmp_path / "plain.yaml",
        ON_SQLALCHEMY.replace(", options: {connect_args: {timeout: 7}}", ""),
    )
    assert "sqlalchemy" not in needs(path)
    # a record that is not JSON: its dead letter goes to the table, in the batch's transaction
    event = kinesis_lambda_event([{"k": "a", "token": "t1"}, b"{not json"])
    answer = run_blocked(path, event, tmp_path, {})
    assert answer == {"batchItemFailures": []}
    db = sqlite3.connect(tmp_path / "w.db")
    assert db.execute("select count(*) from squall_dead_letters").fetchone() == (1,)


def test_a_requirements_file_as_pip_compile_writes_it_keeps_what_it_names(
    deps: Path, tmp_path: Path
):
    """Hashes on continuation lines (``pip-compile --generate-hashes``), options after a
    requirement and a nested ``-r`` file: pip installs every line; their names were not read
    (invalid requirements), so SQLAlchemy and redis-py were left out."""
    write(tmp_path / "base.txt", "redis==5.2.1 --hash=sha256:00ff\n")
    path = write(
        tmp_path / "requirements.txt",
        "# via pip-compile\n"
        "sqlalchemy==2.1.9 \\\n"
        "    --hash=sha256:0123456789abcdef \\\n"
        "    --hash=sha256:fedcba9876543210\n"
        "    # via -r requirements.in\n"
        "-r base.txt\n"
        "--index-url https://pypi.example/simple\n",
    )
    asked = requirement_lines(path)
    left_out = prune_unused(deps, frozenset(), extras=set(), asked=asked, code=[])
    assert not {"SQLAlchemy", "greenlet", "redis"} & set(left_out)
    assert asked == ["sqlalchemy==2.1.9", "redis==5.2.1"]


@pytest.mark.parametrize(
    ("source", "kept"),
    [
        # squall's modules that import them at module level, reached from the user's code
        ("from squall.bolts.lookup_sources import HttpSource\n", {"SQLAlchemy", "redis"}),
        ("import squall.bolts.window_store as ws\n", {"SQLAlchemy", "redis"}),
        ("from squall.bolts import lookup\n", {"SQLAlchemy", "redis"}),  # a submodule by name
        ("from squall.bolts import RecordBolt\n", set()),  # its lazy imports do not count
    ],
)
def test_own_code_importing_squall_modules_keeps_what_they_import(
    deps: Path, tmp_path: Path, source: str, kept: set[str]
):
    """A custom bolt reusing one of squall's modules (a lookup source, the window store) imports
    SQLAlchemy and redis-py through it at init: they were left out, and the init failed."""
    code = [write(tmp_path / "topo" / "my_bolt.py", source)]
    left_out = prune_unused(deps, frozenset(), extras=set(), asked=[], code=code)
    assert not kept & set(left_out)
    assert {"SQLAlchemy", "redis"} - kept <= set(left_out)


def test_what_squall_modules_import_at_module_level_is_what_a_blocked_import_refuses():
    """The static reading agrees with Python: each squall module (the CLI's aside) imports at
    module level exactly the optional modules whose refusal makes its import fail."""
    from squall.deploy.dependencies import squall_module_needs

    script = (
        BLOCKED_RUN.split("from squall.deploy.lambda_consumer")[0]
        + "import importlib\nfor name in sys.argv[1].split(','):\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as exc:\n        print(name, exc.name.split('.')[0])\n"
    )
    names = [
        "squall.bolts.lookup",
        "squall.bolts.window",
        "squall.enrichment.geo",
        "squall.enrichment.device",
        "squall.sinks.s3",
        "squall.sinks.warehouse",
        "squall.enrichment.subscription",
        "squall.deploy.lambda_consumer",
    ]
    for name in names:
        needs_ = squall_module_needs({name})
        r = subprocess.run(
            [sys.executable, "-c", script, name, json.dumps(sorted(OPTIONAL))],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        refused = {line.split()[1] for line in r.stdout.splitlines()}
        assert refused <= needs_, name  # the first refusal stops the import: a subset
        assert bool(refused) == bool(needs_), name


def test_a_custom_bolt_reusing_a_lookup_source_starts_and_runs(tmp_path: Path):
    """Its module imports ``squall.bolts.lookup_sources`` (SQLAlchemy and redis-py at module
    level): the init and a batch with what the zip leaves out refused at import."""
    write(
        tmp_path / "tagger.py",
        "from squall.bolts import RecordBolt\n"
        "from squall.bolts.lookup_sources import key_text\n\n\n"
        "class Tagger(RecordBolt):\n"
        "    def process_event(self, event):\n"
        "        event.value['tag'] = key_text(event.value['k'])\n"
        "        return 'default'\n",
    )
    path = write(
        tmp_path / "t.yaml",
        "name: t\nspout: {type: stdin}\nbolts:\n  - {id: decode, type: json}\n"
        "  - {id: tag, type: 'tagger:Tagger'}\nsinks:\n  - {id: out, type: stdout}\n",
    )
    sys.path.insert(0, str(tmp_path))
    try:
        answer = run_blocked(path, kinesis_lambda_event([{"k": "a"}]), tmp_path, {})
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tagger", None)
    assert answer == {"batchItemFailures": []}


@pytest.mark.parametrize(
    "options",
    ["", ', options: {connect_args: {options: "-c lock_timeout=5000"}}'],  # docs/warehouse.md's
)
def test_postgresql_on_psycopg2_alone_or_on_sqlalchemy(
    tmp_path: Path, pg_url: str, unique_name: str, options: str
):
    """The warehouse, subscription state and dead-letter table on PostgreSQL: psycopg2 alone for
    a plain URL; SQLAlchemy kept, and used, for a resource with ``options:``."""
    text = ON_SQLALCHEMY.replace(
        '{url: "sqlite:///w.db", options: {connect_args: {timeout: 7}}}',
        f'{{url: "{pg_url}"{options}}}',
    ).replace("table: t,", f"table: {unique_name},")
    text = text.replace(
        "type: dead_letter_table, resource: db}",
        f"type: dead_letter_table, resource: db, table: {unique_name}_dl}}",
    )
    text = text.replace("key: token}", f"key: token, table: {unique_name}_sub}}")
    path = write(tmp_path / "pg.yaml", text)
    assert ("sqlalchemy" in needs(path)) == bool(options)
    event = kinesis_lambda_event([{"k": "a", "token": "t1"}, b"{not json"])
    assert run_blocked(path, event, tmp_path, {}) == {"batchItemFailures": []}
    import psycopg2

    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(f"select k from {unique_name}")
        assert cur.fetchall() == [("a",)]
        cur.execute(f"select count(*) from {unique_name}_dl")
        assert cur.fetchone() == (1,)
        for t in (unique_name, f"{unique_name}_dl", f"{unique_name}_sub"):
            cur.execute(f"drop table if exists {t}")


#: Options and URLs from variables: packaged with their defaults, deployed with other values.
FROM_VARIABLES = """
name: v
resources:
  db: {url: "${WAREHOUSE_URL:-sqlite:///w.db}"}
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
sinks:
  - {id: rows, type: warehouse, resource: db, table: t, columns: {k: k}}
  - id: lake
    type: s3
    bucket: lake
    format: ${LAKE_FORMAT:-jsonl}
    columns: {k: k}
    endpoint_url: http://127.0.0.1:9
    region: us-east-1
"""


def test_an_option_or_url_from_a_variable_keeps_what_its_deployed_value_needs(tmp_path: Path):
    """Packaged with the defaults (JSON lines, a SQLite URL on the plain driver), deployed with
    Parquet and a SQLite URL with a query string (SQLAlchemy's engine): the init and a batch
    with every module the zip leaves out refused failed with ImportError (pyarrow, SQLAlchemy)."""
    path = write(tmp_path / "v.yaml", FROM_VARIABLES)
    assert needs(path) == {"pyarrow", "sqlalchemy"}  # the warehouse takes SQL only: no redis-py
    env = {"LAKE_FORMAT": "parquet", "WAREHOUSE_URL": "sqlite:///w.db?timeout=7"}
    # the s3 sink imports pyarrow when it opens (the URL as packaged: pyarrow's failure alone)
    run_blocked(path, None, tmp_path, {"LAKE_FORMAT": "parquet"})
    lake_off = FROM_VARIABLES.split("  - id: lake")[0]
    path = write(tmp_path / "w.yaml", lake_off)
    answer = run_blocked(path, kinesis_lambda_event([{"k": "a"}]), tmp_path, env)
    assert answer == {"batchItemFailures": []}
    assert sqlite3.connect(tmp_path / "w.db").execute("select k from t").fetchall() == [("a",)]


WRITTEN_OUT = """
name: w
resources:
  db: {url: "DB"}
  cache: {url: "CACHE"}
spout: {type: stdin}
bolts:
  - {id: sub, type: subscription, store: db, key: k, cache: cache}
sinks:
  - {id: rows, type: warehouse, resource: db, table: "TABLE", columns: {k: k}}
  - {id: lake, type: s3, bucket: lake, format: "FORMAT", columns: {k: k}, region: us-east-1}
"""


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # written out, each counts with its value (the cache is Redis: redis-py)
        ({}, {"redis"}),
        ({"FORMAT": "parquet"}, {"redis", "pyarrow"}),
        ({"FORMAT": "${LAKE_FORMAT:-jsonl}"}, {"redis", "pyarrow"}),
        ({"DB": "${WAREHOUSE_URL:-sqlite:///w.db}"}, {"redis", "sqlalchemy"}),
        # a secret reference is a value from elsewhere too
        ({"DB": "${ssm:/w/db_url}"}, {"redis", "sqlalchemy"}),
        # the cache takes Redis only: the load refuses any other URL there (no SQLAlchemy)
        ({"CACHE": "${CACHE_URL:-redis://127.0.0.1:6379/0}"}, {"redis"}),
        # a name from a variable decides nothing; `$$` is a dollar, no variable
        ({"TABLE": "${TABLE:-t}"}, {"redis"}),
        ({"DB": "sqlite:///w$$x.db"}, {"redis"}),
    ],
)
def test_what_a_value_from_a_variable_keeps(tmp_path: Path, values: dict, expected: set[str]):
    text = WRITTEN_OUT
    defaults = {"DB": "sqlite:///w.db", "CACHE": "redis://127.0.0.1:6379/0", "TABLE": "t"}
    for name, value in {**defaults, "FORMAT": "jsonl", **values}.items():
        text = text.replace(name, value)
    path = write(tmp_path / "w.yaml", text)
    assert needed_packages(load(path, secrets=placeholder), text) == expected


def test_a_lookup_source_type_from_a_variable_declares_what_any_source_imports(tmp_path: Path):
    """``source: {type: "${SOURCE:-sql}"}`` may be an HTTP source when deployed: httpx (the
    ``http`` extra's) was not declared, so a zip without it was not warned of and the init
    stopped on ImportError. Each source the option takes counts now."""
    bolt = "{id: app, type: lookup, key: k, target: app, source: {type: SOURCE, resource: db, table: t}}"
    text = (
        "name: l\nresources:\n  db: {url: 'sqlite:///w.db'}\nspout: {type: stdin}\n"
        f"bolts:\n  - {{id: decode, type: json}}\n  - {bolt}\n"
        "sinks:\n  - {id: out, type: stdout}\n"
    )
    written = write(tmp_path / "written.yaml", text.replace("SOURCE", "sql"))
    assert "httpx" not in needs(written)
    varied = write(tmp_path / "varied.yaml", text.replace("SOURCE", '"${LOOKUP_SOURCE:-sql}"'))
    assert needs(varied) == {"sqlalchemy", "redis", "httpx"}


def test_a_component_type_from_a_variable_keeps_what_any_function_may_import(tmp_path: Path):
    text = WRITTEN_OUT.replace("type: s3", 'type: "${LAKE_SINK:-s3}"')
    for name, value in {"DB": "sqlite:///w.db", "CACHE": "redis://127.0.0.1:6379/0"}.items():
        text = text.replace(name, value)
    path = write(tmp_path / "w.yaml", text.replace("TABLE", "t").replace("FORMAT", "jsonl"))
    assert needed_packages(load(path, secrets=placeholder), text) == set(OPTIONAL) - {
        "rich",
        "click",
    }


#: A sink of the project writing in the batch's SQL transaction with driver SQL alone, but
#: without ``driver_sql = True``: the engine gives it SQLAlchemy's connection (as documented).
AUDIT_SINK = """
from squall.sinks import Sink, WriteResult


class Audit(Sink):
    def transaction_resource(self):
        return "db"

    def write_batch(self, prepared, ctx):
        ctx.connection.exec_driver_sql("create table if not exists audit (id text primary key)")
        ctx.connection.exec_driver_sql(
            "insert or ignore into audit values (?)", [(e.event_id,) for e in prepared.events]
        )
        return WriteResult(written=len(prepared.events))
"""
#: A bolt of the project that asks the resources for SQLAlchemy's engine, without importing it.
COUNT_BOLT = """
from squall.bolts import RecordBolt


class Count(RecordBolt):
    def open(self, resources):
        self.engine = resources.sql("db")

    def process_event(self, event):
        with self.engine.begin() as conn:
            conn.exec_driver_sql("create table if not exists counted (k text)")
            conn.exec_driver_sql("insert into counted values (?)", (event.value["k"],))
        return "default"
"""
OWN_SQL = """
name: own
resources:
  db: {url: "sqlite:///w.db"}
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
BOLTS
sinks:
SINKS
"""


@pytest.mark.parametrize(
    ("module", "source", "bolts", "sinks", "table"),
    [
        ("audit", AUDIT_SINK, "", '  - {id: audit, type: "audit:Audit"}', "audit"),
        (
            "count",
            COUNT_BOLT,
            '  - {id: count, type: "count:Count"}',
            "  - {id: out, type: stdout}",
            "counted",
        ),
    ],
)
def test_own_components_on_sqlalchemys_engine_start_and_run(
    tmp_path: Path, module: str, source: str, bolts: str, sinks: str, table: str
):
    """A sink of the project in the batch's SQL transaction (no ``driver_sql``) gets SQLAlchemy's
    connection, and a bolt calling ``resources.sql`` SQLAlchemy's engine, on a SQLite file the
    warehouse writes on the plain driver: neither imports SQLAlchemy itself, so it was left out
    — the sink failed every batch ("needs the sqlalchemy driver, which cannot be imported"),
    the bolt every init."""
    write(tmp_path / f"{module}.py", source)
    path = write(tmp_path / "own.yaml", OWN_SQL.replace("BOLTS", bolts).replace("SINKS", sinks))
    sys.path.insert(0, str(tmp_path))
    try:
        answer = run_blocked(path, kinesis_lambda_event([{"k": "a"}]), tmp_path, {})
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
    assert answer == {"batchItemFailures": []}
    assert sqlite3.connect(tmp_path / "w.db").execute(
        f"select count(*) from {table}"
    ).fetchone() == (1,)


@pytest.mark.parametrize(
    ("source", "kept"),
    [
        ("from squall.bolts import RecordBolt\nengine = resources.sql('db')\n", True),
        (
            "from squall.bolts import RecordBolt\nstore = resources.open_store('db', w, sql=f, redis=g)\n",
            True,
        ),
        (
            "from squall.bolts import RecordBolt\n"
            "store = resources.open_store('db', w, sql=f, redis=g, driver_sql=True)\n",
            False,
        ),
        ("from squall.bolts import RecordBolt\nengine = resources.database('db')\n", False),
        ("engine = thing.sql('db')\n", False),  # no squall import: not squall's resources
        # taken as a value, or by name: SQLAlchemy's engine all the same
        ("from squall.bolts import RecordBolt\nengine_of = resources.sql\n", True),
        ("from squall.bolts import RecordBolt\nengine = getattr(resources, 'sql')('db')\n", True),
        ("import squall\nopen_store = resources.open_store\n", True),
    ],
)
def test_own_code_asking_for_sqlalchemys_engine_keeps_it(tmp_path: Path, source: str, kept: bool):
    assert ("sqlalchemy" in _imports([write(tmp_path / "mine.py", source)])) == kept


#: A helper module of the project, handed the resources by a bolt: it imports no squall.
ENGINES_HELPER = """
def engine_for(resources):
    return resources.sql("db")
"""


def test_a_helper_of_yours_asking_for_sqlalchemys_engine_keeps_it(tmp_path: Path):
    """The bolt imports squall, its helper (which imports none) calls ``resources.sql``: the
    scan asked each file for both, so SQLAlchemy went out and the init stopped on "resource
    'db' needs the sqlalchemy driver, which cannot be imported here". The project's code is
    one body now (and a distribution's files another: an unrelated library's ``.sql`` does
    not count unless it imports squall)."""
    write(tmp_path / "engines.py", ENGINES_HELPER)
    write(
        tmp_path / "count2.py",
        COUNT_BOLT.replace(
            "from squall.bolts import RecordBolt",
            "from engines import engine_for\n" + "from squall.bolts import RecordBolt",
        ).replace('resources.sql("db")', "engine_for(resources)"),
    )
    path = write(
        tmp_path / "own.yaml",
        OWN_SQL.replace("BOLTS", '  - {id: count, type: "count2:Count"}').replace(
            "SINKS", "  - {id: out, type: stdout}"
        ),
    )
    sys.path.insert(0, str(tmp_path))
    try:
        answer = run_blocked(path, kinesis_lambda_event([{"k": "a"}]), tmp_path, {})
    finally:
        sys.path.remove(str(tmp_path))
        for module in ("count2", "engines"):
            sys.modules.pop(module, None)
    assert answer == {"batchItemFailures": []}
    assert sqlite3.connect(tmp_path / "w.db").execute(
        "select count(*) from counted"
    ).fetchone() == (1,)


def test_sqlalchemy_left_out_of_a_zip_says_how_to_ship_it(tmp_path: Path):
    """What the scan cannot see (the engine asked for through an indirection) is a cold start
    stopping on "needs the sqlalchemy driver …: install it" — advice for a pip install, none
    for the zip. It names the zip's two ways in now: ``--with`` and ``packages(config)``."""
    write(tmp_path / "count.py", COUNT_BOLT)
    path = write(
        tmp_path / "own.yaml",
        OWN_SQL.replace("BOLTS", '  - {id: count, type: "count:Count"}').replace(
            "SINKS", "  - {id: out, type: stdout}"
        ),
    )
    r = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, str(path), json.dumps(["sqlalchemy"])],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode != 0
    assert "needs the sqlalchemy driver" in r.stderr, r.stderr[-2000:]
    assert "--with sqlalchemy" in r.stderr and "packages(config)" in r.stderr, r.stderr[-2000:]


def test_a_distributions_sql_calls_count_only_when_it_imports_squall(deps: Path, tmp_path: Path):
    """A library of ``--with`` calling another object's ``.sql()`` (sqlglot's expressions)
    keeps no SQLAlchemy; a plugin whose helper module asks for the engine does."""
    dist(deps, "sqlglot", {"sqlglot/__init__.py": "def render(e):\n    return e.sql()\n"})
    assert "SQLAlchemy" in prune_unused(deps, frozenset(), extras=set(), asked=[], code=[])
    dist(deps, "SQLAlchemy", {"sqlalchemy/__init__.py": ""})
    dist(
        deps,
        "kiosk-plugin",
        {
            "kiosk_plugin/__init__.py": "from squall.bolts import RecordBolt\n",
            "kiosk_plugin/db.py": ENGINES_HELPER,
        },
    )
    assert "SQLAlchemy" not in prune_unused(deps, frozenset(), extras=set(), asked=[], code=[])


def test_a_sink_writing_driver_sql_in_the_transaction_leaves_sqlalchemy_out(tmp_path: Path):
    """``driver_sql = True``: the transaction runs on the plain driver, SQLAlchemy stays out."""
    write(tmp_path / "audit2.py", AUDIT_SINK + "    driver_sql = True\n")
    path = write(
        tmp_path / "own.yaml",
        OWN_SQL.replace("BOLTS", "").replace("SINKS", '  - {id: audit, type: "audit2:Audit"}'),
    )
    sys.path.insert(0, str(tmp_path))
    try:
        assert "sqlalchemy" not in needs(path)
        answer = run_blocked(path, kinesis_lambda_event([{"k": "a"}]), tmp_path, {})
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("audit2", None)
    assert answer == {"batchItemFailures": []}


#: Components whose modules come with an extra of squall only, and that extra.
EXTRA_USERS = {
    # a format from a variable: Parquet when deployed so
    "s3": "  - {id: lake, type: s3, bucket: lake, format: '${LAKE_FORMAT:-jsonl}', columns: {k: k}}",
    "http": "  - {id: hook, type: http, url: 'http://127.0.0.1:9/hook'}",
    "push": '  - {id: push, type: push, project_id: p, credentials: \'{"type": "x"}\', title: hi}',
}
EXTRA_BOLTS = {
    "http": "  - {id: app, type: lookup, key: k, target: app, source: {type: http, url: 'http://127.0.0.1:9/{key}'}}",
    "windows": "  - {id: w, type: window, store: db, size: 1m, aggregates: {u: {fn: count_distinct, field: k}}}",
}


@pytest.mark.parametrize(
    ("extra", "bolt", "sink"),
    [
        *((extra, "", sink) for extra, sink in EXTRA_USERS.items()),
        *((extra, bolt, "  - {id: out, type: stdout}") for extra, bolt in EXTRA_BOLTS.items()),
    ],
    ids=[*(f"{e}-sink" for e in EXTRA_USERS), *(f"{e}-bolt" for e in EXTRA_BOLTS)],
)
def test_a_module_of_an_extra_the_package_lacks_is_warned_of(
    tmp_path: Path, monkeypatch, extra: str, bolt: str, sink: str
):
    """pyarrow (the ``s3`` extra's), httpx (``http``), google-auth (``push``) and DataSketches
    (``windows``) come with extras only: a Parquet sink (here a format from a variable), an
    http or push sink, an HTTP lookup or a window counting distinct values, packaged without its
    extra, gave a zip without the module, and no word of it; deployed, the init stopped with
    ImportError (a Parquet sink: "sink 'lake': open failed: ModuleNotFoundError: No module named
    'pyarrow'"). The build now warns, naming the extra."""
    from squall.deploy import package as pkg

    path = write(
        tmp_path / "project" / "t.yaml",
        "name: t\nresources:\n  db: {url: 'sqlite:///w.db'}\nspout: {type: stdin}\n"
        f"bolts:\n  - {{id: decode, type: json}}\n{bolt}\nsinks:\n{sink}\n".replace("\n\n", "\n"),
    )
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    monkeypatch.setattr(pkg, "_pip", lambda *args: None)  # nothing installed
    report = pkg.build(path, handler="consumer", output=tmp_path / "a.zip", requirement="squall")
    assert any(f"--extras {extra} " in w for w in report.warnings), report.warnings
    # located: the component that imports it (it said "the topology's components")
    cid = re.search(r"id: (\w+), type: (?!json|stdout)(\w+)", bolt + sink)
    kind = "bolt" if bolt else "sink"
    assert any(w.startswith(f"{kind} '{cid[1]}' ({cid[2]}") for w in report.warnings), (
        report.warnings
    )


def test_a_build_that_warned_fails_with_strict(tmp_path: Path, monkeypatch):
    """The warnings go to stderr and leave the exit code 0; ``--strict`` (for CI) makes a
    build that warned exit 1 — there was no way to fail a pipeline on them."""
    from click.testing import CliRunner

    from squall.cli import main
    from squall.deploy import package as pkg

    path = write(
        tmp_path / "project" / "t.yaml",
        "name: t\nspout: {type: stdin}\nbolts:\n  - {id: decode, type: json}\n"
        f"sinks:\n{EXTRA_USERS['http']}\n",
    )
    monkeypatch.setattr(pkg, "project_root", lambda: None)
    monkeypatch.setattr(pkg, "_pip", lambda *args: None)  # nothing installed: no httpx
    args = ["package", str(path), "--handler", "consumer", "-o", str(tmp_path / "a.zip")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    warning = "warning: sink 'hook' (http) imports httpx, but the package holds none"
    assert warning in result.stderr and warning not in result.stdout
    result = CliRunner().invoke(main, [*args, "--strict"])
    assert result.exit_code == 1, result.output
    assert "error: --strict: 1 warning(s) above" in result.stderr
    (tmp_path / "stub" / "httpx").mkdir(parents=True)  # as if --extras http installed it
    real = pkg.missing_drivers
    monkeypatch.setattr(
        pkg, "missing_drivers", lambda topo, deps, *a: real(topo, tmp_path / "stub", *a)
    )
    result = CliRunner().invoke(main, [*args, "--strict"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


@pytest.mark.parametrize(
    ("db", "cache", "warned"),
    [
        ("${WAREHOUSE_URL:-sqlite:///w.db}", "redis://127.0.0.1:6379/0", {"db"}),
        ("${ssm:/w/db_url}", "redis://127.0.0.1:6379/0", {"db"}),
        # the cache takes Redis only: the load refuses a PostgreSQL URL there
        ("sqlite:///w.db", "${CACHE_URL:-redis://127.0.0.1:6379/0}", set()),
        ("sqlite:///w.db", "redis://127.0.0.1:6379/0", set()),
    ],
)
def test_a_url_from_a_variable_without_psycopg2_is_warned_of(
    tmp_path: Path, db: str, cache: str, warned: set[str]
):
    """A URL from a variable or a secret, packaged without psycopg2 (no ``--extras postgres``):
    deployed with a PostgreSQL URL, the init stopped on "resource 'db' needs the psycopg2
    driver, which cannot be imported here", and the build had said nothing (it warned of a
    PostgreSQL URL written out only)."""
    from squall.deploy.package import missing_drivers

    text = WRITTEN_OUT.replace("DB", db).replace("CACHE", cache)
    text = text.replace("TABLE", "t").replace("FORMAT", "jsonl")
    path = write(tmp_path / "w.yaml", text)
    topo = load(path, secrets=placeholder)
    (tmp_path / "deps").mkdir()
    found = missing_drivers(topo, tmp_path / "deps", frozenset(), text)
    assert {w.split("'")[1] for w in found if "from a variable" in w} == warned
    (tmp_path / "deps" / "psycopg2").mkdir()
    assert missing_drivers(topo, tmp_path / "deps", frozenset(), text) == []


#: A dedupe remembering keys in the warehouse's SQLite file (hH), or in Redis.
DEDUPE = """
name: dd
resources:
  db: {url: "sqlite:///w.db"}
  keys: {url: "redis://127.0.0.1:6379/9"}
spout: {type: stdin}
bolts:
  - {id: decode, type: json, event_id_field: k}
  - {id: dedupe, type: dedupe, store: STORE}
sinks:
  - {id: rows, type: warehouse, resource: db, table: t, columns: {k: k}}
"""


def test_a_dedupe_store_ships_its_driver_and_runs_without_the_rest(tmp_path: Path):
    """On the warehouse's SQLite file the keys are written on the plain driver: no SQLAlchemy,
    and the function runs with it (and redis-py, unused) refused; on Redis, redis-py ships."""
    on_redis = write(tmp_path / "r" / "dd.yaml", DEDUPE.replace("STORE", "keys"))
    assert "redis" in needs(on_redis)
    on_sql = write(
        tmp_path / "dd.yaml",
        DEDUPE.replace("STORE", "db").replace('  keys: {url: "redis://127.0.0.1:6379/9"}\n', ""),
    )
    assert not {"sqlalchemy", "redis"} & needs(on_sql)
    event = kinesis_lambda_event([{"k": "a"}, {"k": "a"}])
    assert run_blocked(on_sql, event, tmp_path, {}) == {"batchItemFailures": []}
    assert run_blocked(on_sql, kinesis_lambda_event([{"k": "a"}]), tmp_path, {}) == {
        "batchItemFailures": []
    }
    db = sqlite3.connect(tmp_path / "w.db")
    assert db.execute("select count(*) from squall_dedupe").fetchone() == (1,)
