"""The kiosk case: a data engineer's own bolt and requirement, packaged, deployed offline, run from the zips alone.

A folder holds a producer topology (browser SDK → validate → Kinesis) and a consumer topology
(Kinesis → decode → the engineer's `kiosk_lookup:LookupBolt`, which imports the `humanize`
requirement → PostgreSQL). `squall package` builds both zips and SAM templates; the templates
pass aws-sam-translator and cfn-lint; each zip is unzipped and run alone under AWS's runtime client
(`python -S`, nothing but the zip and awslambdaric on the path) against kinesis-mock and PostgreSQL.
pip resolves from the session's wheelhouse (tests/wheelhouse.py: PyPI's answer, fetched once).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from tests.deploy.sam import cfn_lint, translate
from tests.factories import api_gateway_event
from tests.kinesis.test_lambda_e2e import deliver
from tests.lambda_runtime import LambdaFunction, link_runtime

pytestmark = pytest.mark.e2e

BOLT = """
import click  # noqa: F401  (an optional dependency of squall the topology's own code imports: shipped)
import humanize  # the topology's own requirement (requirements.txt)

from squall.bolts import RecordBolt

KIOSKS = {"k1": "Lisbon airport", "k2": "Porto station"}


class LookupBolt(RecordBolt):
    summary = "Name the kiosk and format the byte count."

    def process_event(self, event):
        event.value["kiosk"] = KIOSKS[event.value["kiosk_id"]]  # an unknown kiosk fails that record
        event.value["size"] = humanize.naturalsize(event.value["bytes"])
        return "default"
"""

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "kiosk-tags"
version = "1.0"

[project.entry-points."squall.bolts"]
kiosk_tag = "kiosk_tags:TagBolt"
"""

PLUGIN = """
from squall.bolts import RecordBolt


class TagBolt(RecordBolt):
    summary = "Mark events that went through the plugin."

    def process_event(self, event):
        event.value["tagged"] = True
        return "default"
"""

PRODUCER = """
name: kiosk-producer
spout: {type: stdin}
bolts:
  - {id: decode, type: json, event_id_field: message_id}
  - {id: validate, type: schema, schema: {type: object, required: [message_id, kiosk_id, bytes]}}
sinks:
  - id: stream
    type: kinesis
    stream: "${KIOSK_STREAM:-kiosk-events}"
    endpoint_url: "{endpoint}"
    partition_key: kiosk_id
"""

CONSUMER = """
name: kiosk-consumer
resources:
  warehouse: {url: "${WAREHOUSE_URL:-sqlite:////tmp/kiosk.db}"}
spout: {type: stdin}
bolts:
  - {id: decode, type: json, event_id_field: message_id}
  - {id: lookup, type: "kiosk_lookup:LookupBolt"}
  - {id: tag, type: kiosk_tag}            # an entry-point plugin installed from a local folder
sinks:
  - id: events
    type: warehouse
    resource: warehouse
    table: "${KIOSK_TABLE:-kiosk_events}"
    columns: {kiosk: kiosk, size: size, tagged: {path: tagged, type: boolean}}
  - id: rejects
    type: dead_letter_table
    resource: warehouse
    table: "${KIOSK_TABLE:-kiosk_events}_rejects"
"""


def package(
    folder: Path, topology: str, handler: str, out: Path, *extra: str, site: Path, pip_env: dict
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "squall.cli",
        "package",
        str(folder / topology),
        "--handler",
        handler,
        "-o",
        str(out / f"{handler}.zip"),
        "--template",
        str(out / "templates" / f"{handler}.yaml"),
        *extra,
    ]
    # The engineer's environment has the bolt's requirement installed (they ran the topology locally).
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).resolve().parents[2])]),
        **pip_env,
    }
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def unzip(zip_path: Path, root: Path, runtime: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root)
    link_runtime(runtime, root)
    return root


def unzip_layer(layer_python: Path, root: Path) -> None:
    """The layer's python/ beside the task root (the runner puts only the task root on the path)."""
    for item in layer_python.iterdir():
        if not (root / item.name).exists():
            (root / item.name).symlink_to(item, target_is_directory=item.is_dir())


def test_kiosk_topologies_package_deploy_offline_and_run_from_their_zips(
    tmp_path: Path,
    kinesis,
    kinesis_mock,
    make_stream,
    pg_url,
    unique_name,
    runtime_client,
    wheelhouse,
):
    folder = tmp_path / "kiosk"
    folder.mkdir()
    (folder / "kiosk_lookup.py").write_text(BOLT)
    (folder / "requirements.txt").write_text("humanize==4.17.0\n")
    (folder / "producer.yaml").write_text(PRODUCER.replace("{endpoint}", kinesis_mock.endpoint))
    (folder / "consumer.yaml").write_text(CONSUMER)
    (folder / "consumer.kcl.properties").write_text("a local KCL run's file: not packaged")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "kiosk_lookup.cpython-311.pyc").write_bytes(b"stale")
    build = tmp_path / "build"
    site = tmp_path / "site-packages"
    plugin = tmp_path / "kiosk-tags"
    plugin.mkdir()
    (plugin / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (plugin / "kiosk_tags.py").write_text(PLUGIN)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(site),
            "humanize==4.17.0",
            str(plugin),
        ],
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, **wheelhouse},
    )

    # The two builds are independent: side by side they take the slower one's time, not the sum.
    with ThreadPoolExecutor(2) as pool:
        consumer_build = pool.submit(
            package,
            folder,
            "consumer.yaml",
            "consumer",
            build,
            "--requirements",
            str(folder / "requirements.txt"),
            "--extras",
            "postgres",
            "--on-failure",
            "sqs",
            site=site,
            pip_env=wheelhouse,
        )
        producer_build = pool.submit(
            package,
            folder,
            "producer.yaml",
            "producer",
            build,
            "--cors-origin",
            "https://kiosk.example.com",
            "--no-compile",
            "--layer",
            str(build / "producer-deps.zip"),
            site=site,
            pip_env=wheelhouse,
        )
        r = consumer_build.result()
        producer_build.result()
    assert "bundled GeoLite2: left out" in r.stdout and "largest:" in r.stdout
    assert "plugins: kiosk-tags" in r.stdout

    # Both templates: SAM → CloudFormation offline, then cfn-lint.
    for handler in ("consumer", "producer"):
        template = yaml.safe_load((build / "templates" / f"{handler}.yaml").read_text())
        assert template["Resources"]["Function"]["Properties"]["CodeUri"] == f"../{handler}.zip"
        translate(template)
        lint = cfn_lint(build / "templates" / f"{handler}.yaml")
        assert lint.returncode == 0, lint.stdout + lint.stderr
    producer_t = yaml.safe_load((build / "templates" / "producer.yaml").read_text())
    assert producer_t["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"][
        "AllowOrigins"
    ] == ["https://kiosk.example.com"]
    assert producer_t["Parameters"]["KioskStream"]["Default"] == "kiosk-events"

    with zipfile.ZipFile(build / "consumer.zip") as zf:
        names = set(zf.namelist())
    assert {
        "squall_lambda.py",
        "topology/kiosk_lookup.py",
        "topology/consumer.yaml",
        "humanize/__init__.py",
        "kiosk_tags.py",
        "kiosk_tags-1.0.dist-info/entry_points.txt",
    } <= names
    assert not any(n.startswith("_maxminddb_geolite2/") and n.endswith(".mmdb") for n in names)
    assert not any(n.endswith(".kcl.properties") for n in names)
    # its warehouse takes SQL only: no redis-py; SQLAlchemy kept, as ${WAREHOUSE_URL} may be a
    # URL that stays on SQLAlchemy's engine when deployed (PostgreSQL on psycopg2 alone, without
    # SQLAlchemy: tests/deploy/test_package_dependencies.py)
    assert "click/__init__.py" in names  # imported by kiosk_lookup.py
    assert "sqlalchemy/__init__.py" in names
    assert not any(n.startswith(("redis/", "ua_parser/", "rich/")) for n in names)
    with zipfile.ZipFile(
        build / "consumer.zip"
    ) as zf:  # the local stale cache was replaced by fresh bytecode
        pyc = zf.read("topology/__pycache__/kiosk_lookup.cpython-311.pyc")
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert not any("/tests/" in n or n.startswith("bin/") for n in names)
    assert not [n for n in names if n.endswith(".pyc") and ".cpython-311." not in n]

    with zipfile.ZipFile(build / "producer.zip") as zf:  # the dependencies went to the layer
        assert {n.split("/", 1)[0] for n in zf.namelist()} == {"squall_lambda.py", "topology"}
    with zipfile.ZipFile(build / "producer-deps.zip") as zf:
        assert "python/squall/deploy/lambda_producer.py" in zf.namelist()
        assert not any(
            n.startswith(("python/sqlalchemy/", "python/redis/", "python/maxminddb/"))
            for n in zf.namelist()
        )
        zf.extractall(tmp_path / "opt")  # Lambda unpacks layers in /opt; /opt/python is on sys.path

    stream = make_stream(1, prefix="kiosk")
    table = unique_name
    env = {"KIOSK_STREAM": stream, "WAREHOUSE_URL": pg_url, "KIOSK_TABLE": table}
    producer_root = unzip(build / "producer.zip", tmp_path / "producer-task", runtime_client)
    unzip_layer(tmp_path / "opt" / "python", producer_root)
    producer = LambdaFunction("squall_lambda.handler", producer_root, env, isolated=True)
    consumer = LambdaFunction(
        "squall_lambda.handler",
        unzip(build / "consumer.zip", tmp_path / "consumer-task", runtime_client),
        env,
        isolated=True,
    )
    try:
        events = [
            {"message_id": f"m{i}", "kiosk_id": "k1" if i % 2 else "k2", "bytes": 1500 * i}
            for i in range(6)
        ]
        events.append({"message_id": "m-bad", "kiosk_id": "k9", "bytes": 1})
        resp = producer.invoke(api_gateway_event(json.dumps(events), version=2))
        assert resp["statusCode"] == 202, resp
        assert json.loads(resp["body"]) == {"accepted": 7, "rejected": []}
        shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
        it = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )
        records = kinesis.get_records(ShardIterator=it["ShardIterator"], Limit=100)["Records"]
        assert len(records) == 7
        assert deliver(consumer, records, shard, stream) == 1
    finally:
        producer.stop()
        consumer.stop()
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"select event_id, kiosk, size from {table} order by event_id")
            ).all()
            tagged = conn.execute(sa.text(f"select count(*) from {table} where tagged")).scalar()
            rejects = conn.execute(sa.text(f"select component from {table}_rejects")).all()
        assert rows[0] == ("m0", "Porto station", "0 Bytes") and rows[2] == (
            "m2",
            "Porto station",
            "3.0 kB",
        )
        assert len(rows) == 6 and tagged == 6 and rejects == [("lookup",)]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop table if exists {table}"))
            conn.execute(sa.text(f"drop table if exists {table}_rejects"))
        engine.dispose()
    assert os.path.getsize(build / "consumer.zip") < 50 * 2**20
