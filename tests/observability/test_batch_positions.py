"""Which records a batch held, in its log lines: each shard with its own sequence range.

A batch of several shards (``squall run`` reading a stream's shards, a Lambda SQS trigger's
messages, each its own shard) logged ``sequence_first`` from its first record's shard and
``sequence_last`` from its last record's, and no shard: a range of no shard, and no field to find
a shard's batches by."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.bolts.base import Bolt, Output
from squall.deploy.local import LocalRunner
from squall.event import Event, Record, RecordMeta
from squall.observability.logs import (
    SHARDS_LISTED,
    JsonFormatter,
    TextFormatter,
    batch_positions,
    log_context,
)
from squall.testing import ListSpout
from squall.topology.loader import load_text

log = logging.getLogger("squall.test.positions")
A, B = "shardId-000000000000", "shardId-000000000001"


class TwoShardSpout(ListSpout):
    """The list's records from two shards, interleaved as a Kinesis spout's batch of two shards
    is: A 1, B 101, A 2, B 102, …"""

    def read(self, max_records: int) -> Iterator[list[Record]]:
        self.records = [
            Record(r.data, r.meta._replace(shard_id=(A, B)[i % 2], sequence_number=str(n)))
            for i, r in enumerate(self.records)
            for n in [i // 2 + 1 + 100 * (i % 2)]
        ]
        yield from super().read(max_records)


class TellingBolt(Bolt):
    """Logs one line inside each batch, as a bolt's warning would be."""

    def process(self, batch: list[Event]) -> Output:
        log.warning("a line about the batch")
        out = Output(self.id)
        for ev in batch:
            out.emit(ev)
        return out


TOPOLOGY = """
name: positions
spout: {{type: 'tests.observability.test_batch_positions:TwoShardSpout', records: {records}}}
settings: {{batch_size: 4}}
bolts:
  - {{id: tell, type: 'tests.observability.test_batch_positions:TellingBolt'}}
sinks:
  - {{id: rows, type: 'squall.testing:MemorySink', name: positions}}
"""


@pytest.fixture
def lines():
    """The JSON lines ``log`` writes (the test's bolt's lines)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(x) for x in stream.getvalue().splitlines()]
    finally:
        log.removeHandler(handler)


def test_a_squall_run_batch_of_two_shards_logs_each_shards_range(tmp_path: Path, lines):
    topology = load_text(TOPOLOGY.format(records=[{"n": n} for n in range(6)]), base_dir=tmp_path)

    assert LocalRunner(topology).run().exit_code == 0

    first, second = lines()
    assert first["batch_id"] == 1
    assert first["shards"] == [
        {"shard": A, "sequence_first": "1", "sequence_last": "2"},
        {"shard": B, "sequence_first": "101", "sequence_last": "102"},
    ]
    # no range of no shard: its first record is A's, its last B's
    assert not {"sequence_first", "sequence_last", "shard"} & set(first)
    assert second["shards"] == [
        {"shard": A, "sequence_first": "3", "sequence_last": "3"},
        {"shard": B, "sequence_first": "103", "sequence_last": "103"},
    ]
    # a log query finds a shard's batches by shards[].shard
    assert [x["batch_id"] for x in lines() if any(s["shard"] == B for s in x["shards"])] == [1, 2]


def records(*positions: tuple[str, int]) -> list[Record]:
    return [Record(b"{}", RecordMeta("s", shard, str(seq))) for shard, seq in positions]


def test_a_batch_of_one_shard_keeps_its_range_at_the_top_and_in_shards():
    assert batch_positions(records((A, 7), (A, 9))) == {
        "shard": A,
        "sequence_first": "7",
        "sequence_last": "9",
        "shards": [{"shard": A, "sequence_first": "7", "sequence_last": "9"}],
    }
    assert batch_positions([]) == {}


def test_a_batch_whose_first_and_last_records_are_of_one_shard_is_not_taken_for_one_shards():
    """The one-shard path compares every record's shard, not the first and the last."""
    assert batch_positions(records((A, 1), (B, 101), (A, 2))) == {
        "shards": [
            {"shard": A, "sequence_first": "1", "sequence_last": "2"},
            {"shard": B, "sequence_first": "101", "sequence_last": "101"},
        ]
    }


def test_a_batch_of_more_shards_than_listed_counts_the_others():
    fields = batch_positions(records(*((f"msg-{n}", n) for n in range(SHARDS_LISTED + 3))))
    assert len(fields["shards"]) == SHARDS_LISTED and fields["shards_more"] == 3
    assert fields["shards"][0] == {"shard": "msg-0", "sequence_first": "0", "sequence_last": "0"}


def test_a_text_line_names_each_shards_range_once():
    formatter = TextFormatter()

    def line(recs: list[Record]) -> str:
        with log_context(topology="t", **batch_positions(recs)):
            return formatter.format(
                log.makeRecord(log.name, logging.WARNING, "f", 1, "x", (), None)
            )

    assert line(records((A, 1), (B, 101), (A, 2))).endswith(
        f"[topology=t shards={A}:1-2,{B}:101-101]"
    )
    assert line(records((A, 1), (A, 2))).endswith(
        f"[topology=t shard={A} sequence_first=1 sequence_last=2]"
    )


def test_a_lambda_sqs_invocation_line_names_each_messages_shard(tmp_path: Path, caplog):
    """The SQS trigger's messages are each their own shard (a standard queue's)."""
    from squall.deploy.lambda_consumer import make_handler
    from tests.deploy.test_sqs_s3_sources import sqs_lambda_event, write_topology
    from tests.moto_standin import unique

    handler = make_handler(write_topology(tmp_path, "{type: stdin}", unique("positions")))
    ids = [f"059f36b4-87a3-44ab-83d2-66197547553{i}" for i in range(2)]
    with caplog.at_level(logging.INFO, logger="squall.invocation"):
        handler(sqs_lambda_event([(ids[0], {"n": 0}, None), (ids[1], {"n": 1}, None)]))
    [fields] = [r.fields for r in caplog.records if r.name == "squall.invocation"]
    assert [s["shard"] for s in fields["shards"]] == [f"msg-{i}" for i in ids]
    assert not {"sequence_first", "sequence_last"} & set(fields)
    [record] = [r for r in caplog.records if r.name == "squall.invocation"]
    assert f"shards=msg-{ids[0]}:" in record.getMessage()  # the text line: not a repr


def test_an_otel_batch_span_of_two_shards_names_each_shards_range(tmp_path: Path):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from squall.observability.metrics import Recorder
    from squall.observability.otel import OtelBackend
    from tests.observability.test_metrics import engine_for

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    rec = Recorder("metered", [OtelBackend(tracer_provider=tracer_provider)])
    engine = engine_for(tmp_path, "otel-positions")
    batch = records((A, 1), (B, 101), (A, 2))
    with rec.batch(engine, batch) as watch:
        watch.result = engine.process(batch)
    [span] = [s for s in exporter.get_finished_spans() if s.name == "squall.batch"]
    assert tuple(span.attributes["squall.shards"]) == (f"{A}:1-2", f"{B}:101-101")
    assert "squall.sequence_first" not in span.attributes


def test_an_otel_batch_span_of_more_shards_than_listed_counts_the_others(tmp_path: Path):
    """An SQS batch of many messages (each its own shard): the span listed 50 and said nothing
    of the others, where the log line counts them (``shards_more``)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from squall.observability.metrics import Recorder
    from squall.observability.otel import OtelBackend
    from tests.observability.test_metrics import engine_for

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    rec = Recorder("metered", [OtelBackend(tracer_provider=tracer_provider)])
    engine = engine_for(tmp_path, "otel-more")
    batch = records(*((f"msg-{n}", n) for n in range(SHARDS_LISTED + 3)))
    with rec.batch(engine, batch) as watch:
        watch.result = engine.process(batch)
    [span] = [s for s in exporter.get_finished_spans() if s.name == "squall.batch"]
    assert len(span.attributes["squall.shards"]) == SHARDS_LISTED
    assert span.attributes["squall.shards_more"] == 3


def test_a_replay_batch_logs_its_id_and_the_dead_letters_shards(tmp_path: Path, lines):
    """``squall replay``'s lines named the topology only: not which batch, nor which dead letters'
    records (they keep their shards and sequence numbers), as a run's lines do."""
    from squall.deploy.dead_letters import read_lines
    from squall.deploy.replay import Replayer, ReplayReport, Selection, select

    topology = load_text(TOPOLOGY.format(records=[]), base_dir=tmp_path)
    docs = [
        {"event_id": f"e{seq}", "component": "tell", "reason": "r", "record": "{}",
         "meta": {"stream": "s", "shard_id": shard, "sequence_number": str(seq)}}
        for shard, seq in ((A, 1), (B, 101), (A, 2), (B, 102), (A, 3))
    ]  # fmt: skip
    report = ReplayReport()
    items = read_lines("dl.jsonl", iter(json.dumps(d).encode() for d in docs))

    Replayer(topology).run(select(items, Selection(), report), report)

    assert report.exit_code == 0
    first, second = lines()
    assert first["batch_id"] == 1 and first["topology"] == "positions"
    assert first["shards"] == [
        {"shard": A, "sequence_first": "1", "sequence_last": "2"},
        {"shard": B, "sequence_first": "101", "sequence_last": "102"},
    ]
    assert second["batch_id"] == 2
    assert (second["shard"], second["sequence_first"], second["sequence_last"]) == (A, "3", "3")


@given(st.lists(st.tuples(st.sampled_from([A, B]), st.integers(1, 99)), max_size=12))
def test_the_positions_are_the_loops_over_any_shards(pairs):
    """One shard's batch is read at C speed (its first record and its last): the same fields as
    the record-by-record loop, whatever the shards and their order."""
    records = [Record(b"", RecordMeta("s", shard, str(n))) for shard, n in pairs]
    ranges: dict[str, list[str]] = {}
    for r in records:
        ranges.setdefault(r.meta.shard_id, [r.meta.sequence_number, ""])[1] = r.meta.sequence_number
    shards = [
        {"shard": s, "sequence_first": f, "sequence_last": la} for s, (f, la) in ranges.items()
    ]
    expected = {**shards[0], "shards": shards} if len(shards) == 1 else {"shards": shards}
    assert batch_positions(records) == (expected if records else {})
