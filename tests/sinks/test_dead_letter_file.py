"""The dead-letter file's replay de-duplication is bounded: the last `remember` keys, read from the tail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squall.sinks.dead_letter import tail_lines
from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.graph import compile_plan
from squall.topology.loader import load_text

TOPOLOGY = """
name: dl
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: dl-{name}}}
  - {{id: dlq, type: dead_letter, path: {path}, fsync: false, remember: {remember}}}
"""


def engine(tmp_path: Path, remember: int, name: str) -> Engine:
    topo = load_text(
        TOPOLOGY.format(path=tmp_path / "dlq.jsonl", remember=remember, name=name),
        base_dir=tmp_path,
    )
    return Engine(compile_plan(topo)).open()


def bad(start: int, n: int) -> list:
    return records_from(
        [f"not json {i}".encode() for i in range(start, start + n)], start=start + 1
    )


def lines(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "dlq.jsonl").read_text().splitlines()]


def dlq(e: Engine):
    return next(c for c in e.components if c.id == "dlq")


def test_memory_holds_only_the_last_remember_keys_and_a_replay_of_the_last_batch_is_skipped(
    tmp_path: Path,
):
    e = engine(tmp_path, remember=10, name="a")
    batches = [bad(i * 4, 4) for i in range(5)]  # 20 dead letters, 4 a batch
    for b in batches:
        assert e.process(b).ok
    assert len(dlq(e)._seen) == 10
    assert e.process(batches[-1]).ok  # the replay of the last batch: nothing written again
    assert len(lines(tmp_path)) == 20
    e.close()


def test_on_open_the_keys_come_from_the_files_tail_only(tmp_path: Path):
    e = engine(tmp_path, remember=1000, name="b")
    batches = [bad(i * 4, 4) for i in range(5)]
    for b in batches:
        e.process(b)
    e.close()
    e = engine(tmp_path, remember=6, name="c")
    seen = dlq(e)._seen
    last_six = [(d["event_id"], d["component"], 0) for d in lines(tmp_path)[-6:]]
    assert list(seen) == last_six  # oldest first, nothing older read
    assert e.process(batches[-1]).ok  # a restart replaying from the last checkpoint
    assert len(lines(tmp_path)) == 20
    e.close()


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("count", [1, 3, 10, 50])
def test_tail_lines_reads_the_last_lines_whatever_the_block_size(
    tmp_path: Path, block: int, count: int
):
    f = tmp_path / "f"
    content = [f"line {i} " + "x" * (i % 13) for i in range(30)]
    f.write_text("\n".join(content) + "\n")
    assert tail_lines(f, count, block) == [c.encode() for c in content[-count:]]
    f.write_text("\n".join(content) + "\n" + '{"event_id": "torn')  # a torn last line
    assert tail_lines(f, count, block)[-1] == b'{"event_id": "torn'
    assert len(tail_lines(f, count, block)) == min(count, 31)
    (tmp_path / "empty").write_bytes(b"")
    assert tail_lines(tmp_path / "empty", count, block) == []
