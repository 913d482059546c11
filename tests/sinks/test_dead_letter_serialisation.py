"""Writing a dead letter never fails because of what is in it: deep payloads, odd values, NUL bytes."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from squall import safe_json
from squall.testing import records_from, run_topology
from squall.topology.outcomes import Outcome

YAML = """
name: dls
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, max_depth: 1000}}
  - {{id: validate, type: schema, schema: {{type: object, required: [id]}}}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: {table}-out}}
  - {{id: dlq, {sink}, include_payload: true}}
"""


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


RECORDS = [
    deep(300),
    deep(1000),
    b'{"x": "nul \\u0000 inside"}',
    b'{"s": "\\udc80 lone surrogate"}',
    b'{"n": 18446744073709551616}',
    b'{"x": 1}\x00',
]


@pytest.fixture(params=["file", "sqlite", "postgres"])
def target(request, tmp_path: Path, unique_name: str):
    if request.param == "file":
        yield (
            "file",
            f"type: dead_letter, path: {tmp_path / 'dl.jsonl'}",
            f"sqlite:///{tmp_path / 'unused.db'}",
        )
        return
    url = (
        f"sqlite:///{tmp_path / 'dl.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    yield "table", f"type: dead_letter_table, resource: db, table: {unique_name}", url
    if request.param == "postgres":
        with sa.create_engine(
            url.replace("postgresql://", "postgresql+psycopg2://")
        ).begin() as conn:
            conn.exec_driver_sql(f'drop table if exists "{unique_name}"')


def test_hostile_payloads_reach_the_dead_letter_with_a_marker_instead_of_failing_the_batch(
    target, tmp_path, unique_name
):
    kind, sink, url = target
    run = run_topology(YAML.format(url=url, table=unique_name, sink=sink), records_from(RECORDS))
    assert [o.outcome for o in run.outcomes] == [Outcome.DEAD_LETTERED] * len(RECORDS)
    if kind == "file":
        docs = [orjson.loads(line) for line in (tmp_path / "dl.jsonl").read_bytes().splitlines()]
        payloads = [d.get("payload") for d in docs]
        records = [d.get("record") or d.get("record_base64") for d in docs]
    else:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                f'select payload, coalesce(record, record_base64), meta from "{unique_name}" '
                "order by meta"
            ).fetchall()
        payloads = [json.loads(p) if p else None for p, _, _ in rows]
        records = [r for _, r, _ in rows]
    assert len(payloads) == len(RECORDS) and all(records)
    marked = [p for p in payloads if isinstance(p, dict) and _has_marker(p)]
    assert len(marked) >= 2  # the 300- and 1000-level payloads, cut with the marker


def _has_marker(doc) -> bool:
    while isinstance(doc, dict):
        if doc.get("squall_truncated") == safe_json.TRUNCATED:
            return True
        doc = doc.get("a")
    return False


def test_safe_dumps_keeps_what_serialises_and_marks_the_rest():
    class Odd:
        def __repr__(self):
            raise RuntimeError("no repr")

    nested: dict = {}
    cur = nested
    for _ in range(2000):
        cur["a"] = {}
        cur = cur["a"]
    doc = json.loads(
        safe_json.dumps({"ok": 1, "deep": nested, "odd": Odd(), "big": 2**80, 3: "int key"})
    )
    assert doc["ok"] == 1 and doc["3"] == "int key"
    assert doc["deep"]["squall_truncated"] == safe_json.TRUNCATED and len(doc["deep"]["repr"]) < 500
    assert doc["odd"].startswith("<Odd")
    assert doc["big"] == 2**80  # an integer beyond 64 bits is written exactly, as its digits
    huge = json.loads(safe_json.dumps({"n": [10**5000]}))["n"]  # over Python's digit limit
    assert huge["squall_truncated"] == safe_json.TRUNCATED and "4300" in huge["error"]
    assert _has_marker(orjson.loads(safe_json.dumps(nested)))
    assert safe_json.text("x" * 10_000).endswith("[cut at 4096 of 10000 characters]")
    assert safe_json.text("a\x00b\udc80") == "a\\x00b\\udc80"
