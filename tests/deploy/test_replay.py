"""``squall replay``: dead letters run again through the real engine, into a real warehouse."""

from __future__ import annotations

import gzip
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from squall.cli import main
from squall.event import Record
from tests.moto_standin import unique

SCHEMA_V1 = {"type": "object", "properties": {"kind": {"enum": ["a", "b"]}}}
#: The fix: kind "c" is valid now, but n may be 2 at most (so record 3 fails again, differently).
SCHEMA_V2 = {
    "type": "object",
    "properties": {"kind": {"enum": ["a", "b", "c"]}, "n": {"maximum": 2}},
}

TOPOLOGY = """
name: replay-test
resources:
  warehouse: {{url: "{url}"}}
spout: {{type: kinesis, stream: events, endpoint_url: "http://127.0.0.1:9", checkpoint: {{store: sql, resource: warehouse, table: {table}_cp}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: validate, type: schema, schema: schema.json}}
sinks:
  - id: rows
    type: warehouse
    resource: warehouse
    table: {table}
    columns: {{event_id: meta.event_id, n: {{path: n, type: integer}}, kind: kind}}
  - {{id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}}
"""

EVENTS = [b'{"n": 1, "kind": "a"}', b'{"n": 2, "kind": "c"}', b'{"n": 3, "kind": "c"}', b"not json"]


@pytest.fixture(params=["sqlite", "postgresql"])
def topology(request, tmp_path: Path, unique_name: str) -> Path:
    """A topology whose first run dead-lettered records 2 and 3 (validate) and 4 (decode)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'wh.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA_V1))
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(url=url, table=unique_name))
    from squall.testing import records_from, run_topology

    arrived = datetime(2026, 12, 6, 9, 30, 1, 123456, tzinfo=UTC)
    records = [
        Record(r.data, r.meta._replace(arrival_time=arrived, fingerprint="f1", source="s1"))
        for r in records_from(EVENTS, stream="events", shard_id="shardId-000000000001", start=100)
    ]
    run = run_topology(path, records)
    assert [o.outcome.value for o in run.outcomes] == ["committed"] + ["dead_lettered"] * 3
    yield path
    if request.param == "postgresql":
        with sa.create_engine(plain(url)).begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {unique_name}"))
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {unique_name}_cp"))


def plain(url: str) -> str:
    """The URL for SQLAlchemy in the tests (psycopg2, as squall's resources use)."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def where(topology: Path) -> tuple[str, str]:
    """The warehouse URL and table of a test topology."""
    doc = yaml.safe_load(topology.read_text())
    return doc["resources"]["warehouse"]["url"], doc["sinks"][0]["table"]


def rows(topology: Path) -> list[tuple]:
    url, table = where(topology)
    with sa.create_engine(plain(url)).connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.text(f"SELECT event_id, n, kind FROM {table} ORDER BY n"))
        ]


def dead_letters(topology: Path) -> list[dict]:
    return [
        json.loads(line) for line in (topology.parent / "rejects.jsonl").read_text().splitlines()
    ]


def replay(topology: Path, *args: str, input_path: Path | None = None):
    dl = input_path or topology.parent / "rejects.jsonl"
    return CliRunner().invoke(main, ["replay", str(topology), str(dl), *args])


def test_a_record_fixed_by_a_schema_change_is_replayed_with_its_event_id_and_twice_adds_nothing(
    topology: Path,
):
    before = dead_letters(topology)
    by_n = {json.loads(d["record"])["n"]: d for d in before if d["component"] == "validate"}
    (topology.parent / "schema.json").write_text(json.dumps(SCHEMA_V2))

    result = replay(topology, "--component", "validate")

    assert result.exit_code == 4, result.output
    assert "committed 1, dead-lettered again 1, filtered 0, failed 0" in result.output
    assert "not matching the filters 1" in result.output  # the decode failure
    assert [r[:2] for r in rows(topology)] == [(rows(topology)[0][0], 1), (by_n[2]["event_id"], 2)]
    after = dead_letters(topology)
    assert len(after) == len(before) + 1
    again = after[-1]
    assert again["event_id"] == by_n[3]["event_id"] and again["component"] == "validate"
    assert "maximum" in again["reason"] and again["reason"] != by_n[3]["reason"]
    assert again["meta"] == {
        **by_n[3]["meta"],
        "replay": 1,
    }  # the original metadata, re-driven once
    assert again["record"] == by_n[3]["record"]

    twice = replay(topology, "--component", "validate")

    assert twice.exit_code == 4, twice.output
    assert len(rows(topology)) == 2  # the warehouse absorbed the repeat (same event id)
    assert dead_letters(topology) == after  # and the dead letter too (same replay count)


def test_replay_never_reads_the_spout_nor_writes_a_checkpoint(topology: Path):
    # The spout is a Kinesis stream at a port nothing listens on; its checkpoints are in the
    # warehouse's database.
    (topology.parent / "schema.json").write_text(json.dumps(SCHEMA_V2))
    assert replay(topology).exit_code == 4
    url, table = where(topology)
    with sa.create_engine(plain(url)).connect() as conn:
        assert f"{table}_cp" not in sa.inspect(conn).get_table_names()


def test_a_record_failing_again_in_another_component_is_dead_lettered_there(topology: Path):
    result = replay(topology, "--component", "decode")

    assert result.exit_code == 4, result.output
    assert "selected 1," in result.output and "dead-lettered again 1" in result.output
    last = dead_letters(topology)[-1]
    assert (last["component"], last["record"], last["meta"]["replay"]) == ("decode", "not json", 1)


def test_dry_run_counts_per_component_and_reason_and_changes_nothing(topology: Path):
    before = dead_letters(topology)
    rows_before = rows(topology)

    result = replay(topology, "--dry-run")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "dead letters to replay, per component and reason:"
    assert any(line.split()[:2] == ["2", "validate:"] for line in lines[1:3])
    assert any(line.split()[:2] == ["1", "decode:"] for line in lines[1:4])
    assert "selected 3," in result.output
    assert dead_letters(topology) == before and rows(topology) == rows_before


def test_filters_select_by_reason_and_failure_time(topology: Path):
    (topology.parent / "schema.json").write_text(json.dumps(SCHEMA_V2))
    assert "selected 0," in replay(topology, "--dry-run", "--until", "2000-01-01").output
    assert "selected 3," in replay(topology, "--dry-run", "--since", "2000-01-01").output
    since_z = replay(topology, "--dry-run", "--since", "2000-01-01T00:00:00z")  # RFC 3339's z
    assert "selected 3," in since_z.output, since_z.output
    result = replay(topology, "--reason-contains", "JSON", "--dry-run")
    assert "selected 1," in result.output and "decode:" in result.output
    bad = replay(topology, "--since", "yesterday")
    assert bad.exit_code == 2 and "not an ISO-8601 time" in bad.output
    endpoint = replay(topology, "--endpoint-url", "ftp://user:secret@host")
    assert endpoint.exit_code == 2 and "http(s)://host" in endpoint.output
    assert "secret" not in endpoint.output


def test_a_gzip_file_with_bad_lines_is_replayed_and_each_bad_line_is_named_and_counted(
    topology: Path, tmp_path: Path
):
    (topology.parent / "schema.json").write_text(json.dumps(SCHEMA_V2))
    good = (topology.parent / "rejects.jsonl").read_bytes().splitlines()
    no_meta = json.dumps({"event_id": "x", "component": "c", "reason": "r", "record": "{}"})
    lines = [good[0], b"{torn", no_meta.encode(), *good[1:]]
    gz = tmp_path / "old-rejects.jsonl.gz"
    gz.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))

    result = replay(topology, input_path=gz)

    assert result.exit_code == 3, result.output
    assert "selected 3," in result.output and "unreadable 2" in result.output
    assert f"unreadable: {gz}:2: not JSON" in result.output
    assert f"unreadable: {gz}:3: meta is not an object" in result.output
    assert "committed 1, dead-lettered again 2" in result.output


def test_a_missing_input_is_one_line_and_exit_2(topology: Path, tmp_path: Path):
    result = replay(topology, input_path=tmp_path / "nope.jsonl")
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"cannot read dead letters from {tmp_path / 'nope.jsonl'}: no such file"
    )


def test_a_corrupt_s3_object_pointer_is_reported_not_replayed(topology: Path, tmp_path: Path):
    pointer = {
        "bucket": "in",
        "key": "2026/12/06/a.jsonl.gz",
        "version_id": None,
        "etag": '"abc"',
        "size": 10,
        "error": "CRC check failed",
    }
    doc = {
        "event_id": "e1",
        "component": "spout",
        "stream": "error",
        "reason": "s3://in/2026/12/06/a.jsonl.gz is corrupt",
        "failed_at": "2026-12-06T10:00:00+00:00",
        "meta": {"stream": "in", "shard_id": "2026/12/06/a.jsonl.gz", "sequence_number": "0"},
        "record": json.dumps(pointer),
    }
    path = tmp_path / "s3-rejects.jsonl"
    path.write_text(json.dumps(doc) + "\n")

    result = replay(topology, input_path=path)

    assert result.exit_code == 3, result.output
    assert "unreplayable 1" in result.output and "committed 0" in result.output
    assert "corrupt S3 object s3://in/2026/12/06/a.jsonl.gz" in result.output


def test_a_table_input_is_read_by_resource_and_table(tmp_path: Path, unique_name: str):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA_V1))
    text = TOPOLOGY.format(url=url, table=unique_name).replace(
        "{id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}",
        "{id: rejects, type: dead_letter_table, resource: warehouse}",
    )
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    from squall.testing import records_from, run_topology

    run_topology(path, records_from(EVENTS, stream="events", start=100))
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA_V2))

    result = replay(path, input_path="sql://warehouse")  # type: ignore[arg-type]

    assert result.exit_code == 4, result.output
    assert "selected 3," in result.output and "committed 1" in result.output
    with sqlite3.connect(tmp_path / "wh.db") as db:
        assert db.execute(f"SELECT count(*) FROM {unique_name}").fetchone() == (2,)
        # record 3 failed again in validate: its row now holds the new reason and replay count
        (reason, meta), *others = db.execute(
            "SELECT reason, meta FROM squall_dead_letters WHERE record LIKE '%\"n\": 3%'"
        ).fetchall()
        assert not others and "maximum" in reason and json.loads(meta)["replay"] == 1
    again = replay(path, input_path="sql://warehouse/squall_dead_letters")  # type: ignore[arg-type]
    assert again.exit_code == 4, again.output
    with sqlite3.connect(tmp_path / "wh.db") as db:  # replaced, not added: one row per key
        assert db.execute(f"SELECT count(*) FROM {unique_name}").fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM squall_dead_letters").fetchone() == (3,)
    missing = replay(path, input_path="sql://nowhere")  # type: ignore[arg-type]
    assert missing.exit_code == 2 and "no resource 'nowhere'" in missing.output


def test_dead_letter_s3_objects_are_replayed_from_their_prefix(moto_server, tmp_path: Path):  # noqa: F811
    s3 = moto_server.client("s3")
    bucket = unique("dl")
    s3.create_bucket(Bucket=bucket)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA_V1))
    text = TOPOLOGY.format(url=f"sqlite:///{tmp_path / 'wh.db'}", table="events").replace(
        "{id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}",
        f'{{id: rejects, type: dead_letter_s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}"}}',
    )
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    from squall.testing import records_from, run_topology

    run_topology(path, records_from(EVENTS, stream="events", start=100))
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA_V2))
    url = f"s3://{bucket}/dead-letters/"
    args = ["--endpoint-url", moto_server.endpoint, "--component", "validate"]

    result = replay(path, *args, input_path=url)  # type: ignore[arg-type]

    assert result.exit_code == 4, result.output
    assert "selected 2," in result.output
    assert "committed 1, dead-lettered again 1" in result.output
    with sqlite3.connect(tmp_path / "wh.db") as db:
        assert db.execute("SELECT n FROM events ORDER BY n").fetchall() == [(1,), (2,)]
    # the new failure is an object of its own beside the first (its replay count is in its name)
    assert len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == 2
    missing = replay(path, *args, input_path=f"s3://{unique('none')}/x")  # type: ignore[arg-type]
    assert missing.exit_code == 2 and "NoSuchBucket" in missing.output


def test_records_failing_with_no_dead_letter_sink_exit_1_and_the_rest_are_committed(
    tmp_path: Path,
):
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA_V2))
    path = tmp_path / "topology.yaml"
    path.write_text(
        TOPOLOGY.format(url=f"sqlite:///{tmp_path / 'wh.db'}", table="events").replace(
            "  - {id: rejects, type: dead_letter, path: rejects.jsonl, fsync: false}\n", ""
        )
    )
    meta = {"stream": "events", "shard_id": "s", "sequence_number": "1"}
    docs = [
        {
            "event_id": "a",
            "component": "validate",
            "reason": "r",
            "meta": meta,
            "record": '{"n": 1}',
        },
        {
            "event_id": "b",
            "component": "validate",
            "reason": "r",
            "meta": {**meta, "sequence_number": "2"},
            "record": '{"n": 9}',
        },
    ]
    dl = tmp_path / "dl.jsonl"
    dl.write_text("".join(json.dumps(d) + "\n" for d in docs))

    result = replay(path, input_path=dl)

    assert result.exit_code == 1, result.output
    assert "committed 1, dead-lettered again 0, filtered 0, failed 1" in result.output
    assert "failed: record" in result.output and "in validate" in result.output


def test_ctrl_c_while_a_dry_run_counts_exits_130_as_an_interrupted_run(topology: Path, monkeypatch):
    """README: 130 for an interrupted run. A dry run interrupted while it counts went through
    click's "Aborted!" with exit 1."""
    import squall.deploy.replay as replay_module

    def interrupted(source, selection, report):
        yield from ()
        raise KeyboardInterrupt

    monkeypatch.setattr(replay_module, "select", interrupted)
    result = replay(topology, "--dry-run")
    assert result.exit_code == 130 and "Aborted" not in result.output


@pytest.mark.parametrize("topology", ["sqlite"], indirect=True)
def test_the_s3_spouts_dead_letters_of_whole_objects_are_named_by_their_pointer(
    topology: Path, tmp_path: Path
):
    """As the spout writes them: the record is the pointer, and ``meta.defect`` holds the reason.
    The defect was read first, so a corrupt object was reported as a record "the source kept only
    part of" (its pointer never listed), and an object deleted after its notification as well —
    nothing to repair there: it is gone."""
    from squall.event import Event, Failure
    from squall.sinks.dead_letter import dead_letter_line
    from squall.spouts.s3 import S3Object, corrupt_object_record, missing_object_record

    corrupt = corrupt_object_record(
        S3Object.of_bytes("in", "a.jsonl.gz", b"\x1f\x8b"), EOFError("ended early"), "f" * 32
    )
    gone = missing_object_record("in", "b.jsonl", "v7", "NoSuchVersion")
    path = tmp_path / "s3-rejects.jsonl"
    with path.open("w") as out:
        for n, record in enumerate((corrupt, gone)):
            ev = Event(record.data, record.meta, None, n)
            ev.failure = Failure("spout", record.meta.defect or "")
            out.write(json.dumps(dead_letter_line(ev)) + "\n")

    result = replay(topology, input_path=path)

    assert result.exit_code == 3, result.output
    assert "unreplayable 2" in result.output and "committed 0" in result.output
    assert "kept only part" not in result.output
    assert (
        f"{path}:1: corrupt S3 object s3://in/a.jsonl.gz (truncated or corrupt gzip): re-drive "
        "the repaired object itself" in result.output
    )
    assert (
        f"{path}:2: S3 object s3://in/b.jsonl?versionId=v7 was not there (NoSuchVersion): "
        "nothing of it was read; an upload of it again is a new object, read by its own "
        "notification" in result.output
    )


@pytest.mark.parametrize("topology", ["sqlite"], indirect=True)
def test_the_dead_letter_of_an_s3_object_replaced_while_read_is_not_called_corrupt(
    topology: Path, tmp_path: Path
):
    """A gzip object replaced between its two GETs (``PreconditionFailed``) is not corrupt and
    there is nothing to repair: its bytes are gone and its replacement is read as its own object.
    Its dead letter was reported as "corrupt S3 object ...: re-drive the repaired object"."""
    from squall.event import Event, Failure
    from squall.sinks.dead_letter import dead_letter_line
    from squall.spouts.s3 import REPLACED, missing_object_record

    record = missing_object_record("in", "c.jsonl.gz", None, REPLACED, "seq1", etag='"e1"')
    path = tmp_path / "s3-rejects.jsonl"
    ev = Event(record.data, record.meta, None, 0)
    ev.failure = Failure("spout", record.meta.defect or "")
    path.write_text(json.dumps(dead_letter_line(ev)) + "\n")

    result = replay(topology, input_path=path)

    assert result.exit_code == 3, result.output
    assert "unreplayable 1" in result.output and "committed 0" in result.output
    assert "corrupt" not in result.output and "repaired" not in result.output
    assert (
        f"{path}:1: S3 object s3://in/c.jsonl.gz was replaced by another upload while it was "
        "read (PreconditionFailed): nothing of it was read; its replacement is another object, "
        "read by its own notification (or the next squall run)" in result.output
    )
