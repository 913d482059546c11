"""End to end on kinesis-mock: `squall produce` (plain and KPL-aggregated) into a 4-shard stream,
read by the KinesisSpout with SQLite checkpoints while a shard splits, stopped and restarted:
every event exactly once by event id, in order within each partition key."""

from __future__ import annotations

import gzip
import re
import shutil
import time
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from squall.deploy.produce import produce
from squall.kinesis.shards import is_shard_end
from squall.topology.checkpoint import SqlCheckpointStore
from tests.kinesis.kinesis_helpers import (
    assert_key_order,
    consume,
    event_ids,
    make_spout,
    payloads,
    split_shard,
)

TOTAL = 20_000
KEYS = 97


def lines(tmp_path, name: str, numbers: range):
    path = tmp_path / name
    path.write_bytes(
        b"".join(
            orjson.dumps({"pk": f"user-{n % KEYS}", "n": n, "event_type": "play", "pad": "x" * 60})
            + b"\n"
            for n in numbers
        )
    )
    return path


def send(endpoint: str, stream: str, path, *, aggregate: bool) -> None:
    args = ["--stream", stream, "--endpoint-url", endpoint, "--partition-key", "pk", str(path)]
    result = CliRunner().invoke(produce, [*args, "--aggregate"] if aggregate else args)
    assert result.exit_code == 0, result.output


@pytest.mark.e2e
def test_twenty_thousand_events_exactly_once_across_split_and_restart(
    kinesis, kinesis_mock, make_stream, tmp_path
):
    figures = {}
    stream = make_stream(4, prefix="e2e")
    ep = kinesis_mock.endpoint
    t0 = time.monotonic()
    send(ep, stream, lines(tmp_path, "a-agg.jsonl", range(0, 10_000)), aggregate=True)
    send(ep, stream, lines(tmp_path, "a-plain.jsonl", range(10_000, 12_000)), aggregate=False)
    figures["produce 12k (10k aggregated) s"] = round(time.monotonic() - t0, 2)

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'checkpoints.db'}")
    store = SqlCheckpointStore(engine, "pistats-e2e", resource="warehouse")
    first = make_spout(ep, stream, store=store, idle_exit=2.0)
    parent = "shardId-000000000000"

    def while_reading(i, users):
        if i == 0:  # split a shard while reading, then write to the new children
            split_shard(kinesis, stream, parent)
            send(ep, stream, lines(tmp_path, "b-agg.jsonl", range(12_000, 16_000)), aggregate=True)
            send(
                ep, stream, lines(tmp_path, "b-plain.jsonl", range(16_000, 18_000)), aggregate=False
            )
        if i == 6:
            first.stop()

    t0 = time.monotonic()
    run1 = consume(first, max_records=50, on_batch=while_reading)
    figures["run 1 user records"] = len(run1)
    assert 0 < len(run1) < 18_000, "the first run must stop mid-stream"

    send(ep, stream, lines(tmp_path, "c-agg.jsonl", range(18_000, TOTAL)), aggregate=True)
    t1 = time.monotonic()
    second = make_spout(ep, stream, store=store, idle_exit=2.0)
    run2 = consume(second, max_records=50)
    figures["run 2 user records"] = len(run2)
    figures["run 2 read s (incl. 2 s idle exit)"] = round(time.monotonic() - t1, 2)
    figures["kinesis records read, run 2"] = second.stats.records

    ids = event_ids(run1) + event_ids(run2)
    assert len(ids) == TOTAL, "every event read"
    assert len(set(ids)) == TOTAL, "no event read twice"
    got = payloads(run1 + run2)
    assert sorted(d["n"] for d in got) == list(range(TOTAL))
    assert_key_order(got)

    stored = store.load(stream)
    assert is_shard_end(stored[parent])
    assert len(second.shards()) == 6 and second.shards()[parent] == "finished"
    aggregated = sum(1 for r in run1 + run2 if r.meta.sub_sequence_number > 0)
    assert aggregated > 10_000
    # nothing more to read
    assert consume(make_spout(ep, stream, store=store, idle_exit=0.5)) == []
    engine.dispose()
    print("\ne2e figures:", figures)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pistats"


def pistats_topology(tmp_path, name: str, spout_yaml: str) -> Path:
    """The example topology with another spout (its dead letters go where REJECTS_FILE says)."""
    text = (EXAMPLE / "topology.yaml").read_text()
    text = re.sub(r"^spout:\n(?:  .*\n)+", spout_yaml, text, flags=re.M)
    assert "${REJECTS_FILE:-out/rejects.jsonl}" in text  # the dead letters: REJECTS_FILE below
    folder = tmp_path / name
    shutil.copytree(EXAMPLE / "schemas", folder / "schemas")
    (folder / "topology.yaml").write_text(text)
    return folder / "topology.yaml"


def warehouse_rows(db: Path) -> list[tuple]:
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT event_id, event_type, occurred_at, user_id, page_url, click_target "
                "FROM events ORDER BY event_id"
            )
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


@pytest.mark.e2e
@pytest.mark.skipif(not (EXAMPLE / "topology.yaml").exists(), reason="examples/pistats not present")
def test_pistats_example_runs_from_kinesis_like_from_its_file(kinesis_mock, make_stream, tmp_path):
    from squall.cli import main

    stream = make_stream(4, prefix="pistats")
    lines = gzip.decompress((EXAMPLE / "events.jsonl.gz").read_bytes()).splitlines(keepends=True)
    (tmp_path / "agg.jsonl").write_bytes(b"".join(lines[:2000]))
    (tmp_path / "plain.jsonl").write_bytes(b"".join(lines[2000:]))
    runner = CliRunner()
    for name, extra in (("agg.jsonl", ["--aggregate"]), ("plain.jsonl", [])):
        result = runner.invoke(
            main,
            [
                "produce",
                "--stream",
                stream,
                "--endpoint-url",
                kinesis_mock.endpoint,
                "--partition-key",
                "user_id",
                *extra,
                str(tmp_path / name),
            ],
        )
        assert result.exit_code == 0, result.output

    from_file = pistats_topology(
        tmp_path, "file", f"spout:\n  type: file\n  path: {EXAMPLE / 'events.jsonl.gz'}\n"
    )
    from_kinesis = pistats_topology(
        tmp_path,
        "kinesis",
        (
            f"spout:\n  type: kinesis\n  stream: {stream}\n  endpoint_url: {kinesis_mock.endpoint}\n"
            "  poll_interval: 0.05\n  idle_exit: 1.5\n"
        ),
    )
    for topo, db in ((from_file, "file.db"), (from_kinesis, "kinesis.db")):
        result = runner.invoke(
            main,
            ["run", str(topo), "--no-progress"],
            env={
                "WAREHOUSE_URL": f"sqlite:///{tmp_path / db}",
                "REJECTS_FILE": str(tmp_path / f"{db.removesuffix('.db')}-rejects.jsonl"),
            },
        )
        assert result.exit_code == 0, result.output
        print("\n" + result.output.splitlines()[0])

    expected = warehouse_rows(tmp_path / "file.db")
    assert len(expected) > 2000
    assert warehouse_rows(tmp_path / "kinesis.db") == expected
    rejected = [
        len((tmp_path / f"{n}-rejects.jsonl").read_bytes().splitlines())
        for n in ("file", "kinesis")
    ]
    assert (
        rejected[0] > 0 and rejected[1] == rejected[0]
    )  # the example's bad records, dead-lettered alike

    # checkpoints were written with the rows: a second run reads nothing new
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'kinesis.db'}")
    with engine.connect() as conn:
        shards = conn.execute(
            sa.text("SELECT shard_id FROM squall_checkpoints WHERE application = 'pistats'")
        ).all()
    engine.dispose()
    assert len(shards) == 4
    result = runner.invoke(
        main,
        ["run", str(from_kinesis), "--no-progress"],
        env={"WAREHOUSE_URL": f"sqlite:///{tmp_path / 'kinesis.db'}"},
    )
    assert result.exit_code == 0, result.output
    assert warehouse_rows(tmp_path / "kinesis.db") == expected
    assert result.output.startswith("pistats: 0 records")
