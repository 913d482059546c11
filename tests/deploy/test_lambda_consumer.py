"""The Lambda consumer adapter: Lambda event in, batchItemFailures out, same engine."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from squall.deploy.lambda_consumer import make_handler
from tests.factories import kinesis_lambda_event

TOPOLOGY = """
name: lambda-test
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}, lambda_batch_size: {size}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: chaos, type: 'squall.testing:FaultyBolt'}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
{dlq}
"""


def topology_for(tmp_path: Path, *, dlq: bool, size: int = 2500) -> Path:
    dl = f"  - {{id: dlq, type: dead_letter, path: {tmp_path / 'dlq.jsonl'}}}" if dlq else ""
    t = tmp_path / "topology.yaml"
    t.write_text(TOPOLOGY.format(db=tmp_path / "w.db", dlq=dl, size=size))
    return t


def handler_for(tmp_path: Path, *, dlq: bool, size: int = 2500):
    return make_handler(topology_for(tmp_path, dlq=dlq, size=size))


def test_lambda_consumer_commits_and_reports_no_failures(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=True)
    event = kinesis_lambda_event([{"n": 1}, b"not json", {"n": 2, "fail": "bad"}, {"n": 3}])
    assert handler(event, None) == {"batchItemFailures": []}
    assert sqlite3.connect(tmp_path / "w.db").execute("select sum(n) from events").fetchone() == (
        4,
    )
    assert handler(event, None) == {"batchItemFailures": []}  # a Lambda retry adds no rows
    assert sqlite3.connect(tmp_path / "w.db").execute("select count(*) from events").fetchone() == (
        2,
    )
    assert len((tmp_path / "dlq.jsonl").read_text().splitlines()) == 2


def test_lambda_consumer_reports_first_failure_per_shard(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=False)
    event = kinesis_lambda_event(
        [{"n": 1}, {"n": 2, "fail": "bad"}, {"n": 3, "fail": "worse"}, {"n": 4}]
    )
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": seqs[1]}]}


def test_lambda_consumer_reports_the_whole_batch_when_a_dependency_stays_down(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=True)
    [chaos] = [c for c in handler.engine.components if c.id == "chaos"]
    chaos.config = chaos.config.model_copy(update={"transient_failures": 5})
    event = kinesis_lambda_event([{"n": 1}, {"n": 2}])
    first = event["Records"][0]["kinesis"]["sequenceNumber"]
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": first}]}
    assert sqlite3.connect(tmp_path / "w.db").execute("select count(*) from events").fetchone() == (
        0,
    )


def rows(tmp_path: Path) -> list[int]:
    db = sqlite3.connect(tmp_path / "w.db")
    return [n for (n,) in db.execute("select n from events order by n")]


def batches_of(handler) -> list[int]:
    """Wrap the engine's process: the size of each batch it is given, in order."""
    sizes: list[int] = []
    process = handler.engine.process

    def spy(records):
        sizes.append(len(records))
        return process(records)

    handler.engine.process = spy
    return sizes


def test_an_invocation_runs_in_slices_of_lambda_batch_size(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=True, size=2)
    sizes = batches_of(handler)
    event = kinesis_lambda_event([{"n": i} for i in range(1, 6)])
    assert handler(event, None) == {"batchItemFailures": []}
    assert sizes == [2, 2, 1] and rows(tmp_path) == [1, 2, 3, 4, 5]


def test_a_failed_record_ends_the_invocation_at_its_slice(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=False, size=2)
    sizes = batches_of(handler)
    event = kinesis_lambda_event([{"n": 1}, {"n": 2}, {"n": 3, "fail": "bad"}, {"n": 4}, {"n": 5}])
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": seqs[2]}]}
    # the first slice is committed, the last one never ran (Lambda retries from record 3); 4,
    # after 3 in its slice, is held: it comes again with it
    assert sizes == [2, 2] and rows(tmp_path) == [1, 2]


def test_a_slice_whose_dependency_stays_down_is_reported_from_its_first_record(tmp_path: Path):
    handler = handler_for(tmp_path, dlq=True, size=2)
    [chaos] = [c for c in handler.engine.components if c.id == "chaos"]
    process = handler.engine.process

    def down_after_the_first_slice(records):
        result = process(records)
        chaos.config = chaos.config.model_copy(update={"transient_failures": 5})
        return result

    handler.engine.process = down_after_the_first_slice
    event = kinesis_lambda_event([{"n": i} for i in range(1, 6)])
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": seqs[2]}]}
    assert rows(tmp_path) == [1, 2]


def test_init_runs_no_garbage_collection_and_leaves_the_collector_as_it_was(tmp_path: Path):
    import gc

    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    again = tmp_path / "again"
    again.mkdir()
    # Only make_handler is watched: the test's own allocations before it (writing the file)
    # may trigger a collection of their own; gc.collect() resets the counters first.
    first, second = topology_for(tmp_path, dlq=True), topology_for(again, dlq=True)
    gc.collect()
    gc.callbacks.append(count)
    try:
        handler = make_handler(first)
        during_init = list(collections)
        assert gc.isenabled()
        gc.disable()
        make_handler(second)
        assert not gc.isenabled()  # a caller that paused it keeps it paused
    finally:
        gc.enable()
        gc.callbacks.remove(count)
    assert during_init == []
    assert handler(kinesis_lambda_event([{"n": 1}]), None) == {"batchItemFailures": []}


def test_committed_slices_leave_the_invocations_list_before_the_next_slice_runs(tmp_path: Path):
    """Memory holds one slice: when a slice runs, the records of the slices before it are gone
    from the list the invocation decoded; a failed slice leaves itself and the rest, reported."""
    from squall.deploy.lambda_consumer import process_in_slices, records_from_event
    from squall.observability.runners import lambda_observer

    handler = handler_for(tmp_path, dlq=False, size=2)
    event = kinesis_lambda_event([{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4, "fail": "bad"}, {"n": 5}])
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    records = records_from_event(event)
    held: list[list[str]] = []
    process = handler.engine.process

    def spy(part):
        held.append([r.meta.sequence_number for r in records])
        return process(part)

    handler.engine.process = spy
    answer = process_in_slices(handler.engine, lambda_observer("lambda-test"), records, 2)
    assert answer == {"batchItemFailures": [{"itemIdentifier": seqs[3]}]}
    assert held == [seqs, seqs[2:]]
    assert [r.meta.sequence_number for r in records] == seqs[2:]  # not committed: kept
    assert rows(tmp_path) == [1, 2, 3]


def test_the_young_collection_after_a_slice_does_not_scan_its_events(tmp_path: Path):
    """Between slices the process's own thresholds apply; the young collection then due ran
    right after ``Engine.process`` returned, while the slice's result still held its events —
    it scanned them all and collected nothing. A slice is now let go first."""
    import gc

    from squall.deploy.lambda_consumer import process_in_slices, records_from_event
    from squall.observability.runners import lambda_observer
    from tests.deploy.gc_census import young_collections_between_slices

    handler = handler_for(tmp_path, dlq=False, size=3)
    event = kinesis_lambda_event([{"n": i, "pad": ["x"] * 20} for i in range(12)])
    records = records_from_event(event)
    saved = gc.get_threshold()
    with young_collections_between_slices() as seen:
        answer = process_in_slices(handler.engine, lambda_observer("lambda-test"), records, 3)
    assert answer == {"batchItemFailures": []} and rows(tmp_path) == list(range(12))
    assert seen and set(seen) == {0}, seen
    assert gc.get_threshold() == saved


def test_free_heap_pages_are_returned_after_every_invocation(tmp_path: Path, monkeypatch):
    """malloc_trim runs once after each invocation, also one whose dependency stayed down."""
    import squall.deploy.lambda_consumer as lc

    calls: list[int] = []
    monkeypatch.setattr(lc, "release_free_memory", lambda: calls.append(len(calls)))
    handler = handler_for(tmp_path, dlq=True)
    assert handler(kinesis_lambda_event([{"n": 1}]), None) == {"batchItemFailures": []}
    [chaos] = [c for c in handler.engine.components if c.id == "chaos"]
    chaos.config = chaos.config.model_copy(update={"transient_failures": 5})
    event = kinesis_lambda_event([{"n": 2}])
    first = event["Records"][0]["kinesis"]["sequenceNumber"]
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": first}]}
    assert calls == [0, 1]
    assert lc._malloc_trim() is None or lc._malloc_trim()(0) in (0, 1)  # glibc: 1 if it freed


def test_init_warnings_already_have_the_json_log_format(tmp_path: Path, monkeypatch):
    """With SQUALL_LOG_FORMAT=json, Lambda's log handler gets squall's formatter before the
    topology loads: the init's own warning (a dead-letter file, lost with the container) is a
    JSON line too."""
    import io
    import json
    import logging

    monkeypatch.setenv("SQUALL_LOG_FORMAT", "json")
    root = logging.getLogger()
    stream = io.StringIO()
    lambda_handler = logging.StreamHandler(stream)  # as the runtime client's, already there
    saved = root.handlers[:]
    root.handlers = [lambda_handler]
    try:
        handler_for(tmp_path, dlq=True)
    finally:
        root.handlers = saved
    [line] = [ln for ln in stream.getvalue().splitlines() if "lost with the Lambda container" in ln]
    assert json.loads(line)["level"] == "WARNING"
