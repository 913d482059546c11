"""The payload paths every sink reads — not only the warehouse's columns: an S3 column or time
field, an SQS attribute or FIFO group/deduplication id, a Kinesis partition or explicit hash
key, a push token or a template's placeholder. A typo there was not caught at load (the sinks
did not declare ``payload_reads``): the events went to the dead letter one by one (a missing
key, group id or template field) or, worse, an S3 column was null and an SQS attribute left out
in every message with nobody told. Now, as for the warehouse: refused at load, at the option's
line with the closest field, where a closed schema upstream proves no event has the path; else,
where a missing value fails nothing (S3 columns, SQS attributes), one WARNING at the first
batch where no event has it."""

from __future__ import annotations

import logging

import orjson
import pytest

from squall.component import ComponentContext
from squall.errors import TopologyError
from squall.event import Event
from squall.sinks.s3 import S3Sink, S3SinkConfig
from squall.sinks.sqs import SqsSink, SqsSinkConfig
from squall.testing import records_from
from squall.topology.loader import load_text

HEAD = """
name: paths
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - id: validate
    type: schema
    schema:
      type: object
      additionalProperties: false
      properties:
        user_id: {type: string}
        device_token: {type: string}
        ts: {type: integer}
        kiosk:
          type: object
          additionalProperties: false
          properties: {id: {type: string}}
sinks:
"""

#: Each sink with a typo in every path option it reads: (sink entry, [(problem path, bad path,
#: the closest field or None)]).
MISSPELT = {
    "s3": (
        "  - id: out\n"
        "    type: s3\n"
        "    bucket: lake\n"
        "    time_field: tss\n"
        "    columns:\n"
        "      user: user_idd\n"
        "      kiosk: {path: kiosk.idd, type: string}\n"
        "      shard: meta.shard_id\n",
        [
            ("sinks[0].columns.user", "user_idd", "user_id"),
            ("sinks[0].columns.kiosk.path", "kiosk.idd", "kiosk.id"),
            ("sinks[0].time_field", "tss", "ts"),
        ],
    ),
    "sqs-fifo": (
        "  - id: out\n"
        "    type: sqs\n"
        "    queue: orders.fifo\n"
        "    message_group: kiosk.idd\n"
        "    deduplication_id: user_idd\n"
        "    attributes: {user: user_idd, shard: meta.shard_id}\n",
        [
            ("sinks[0].attributes.user", "user_idd", "user_id"),
            ("sinks[0].message_group", "kiosk.idd", "kiosk.id"),
            ("sinks[0].deduplication_id", "user_idd", "user_id"),
        ],
    ),
    # a standard queue sends the group (a fair queue's) but no deduplication id
    "sqs-standard": (
        "  - {id: out, type: sqs, queue: orders, message_group: kiosk.idd, "
        "deduplication_id: user_idd}\n",
        [("sinks[0].message_group", "kiosk.idd", "kiosk.id")],
    ),
    "kinesis": (
        "  - id: out\n"
        "    type: kinesis\n"
        "    stream: out\n"
        "    partition_key: kiosk.idd\n"
        "    explicit_hash_key: tss\n",
        [
            ("sinks[0].partition_key", "kiosk.idd", "kiosk.id"),
            ("sinks[0].explicit_hash_key", "tss", "ts"),
        ],
    ),
    "push": (
        "  - id: out\n"
        "    type: push\n"
        "    project_id: p\n"
        "    credentials: key.json\n"
        "    token: device_tokn\n"
        "    title: 'Hello {user_idd}'\n"
        "    body: 'kiosk {kiosk.id} {{not a path}}'\n"
        "    data: {kiosk: '{kiosk.idd}{kiosk.idd}'}\n",
        [
            ("sinks[0].token", "device_tokn", "device_token"),
            ("sinks[0].title", "user_idd", "user_id"),
            ("sinks[0].data.kiosk", "kiosk.idd", "kiosk.id"),  # once, though twice there
        ],
    ),
}


@pytest.mark.parametrize("sink", list(MISSPELT))
def test_a_misspelt_path_in_a_sinks_option_is_refused_at_its_line_with_the_closest_field(
    sink: str,
):
    entry, expected = MISSPELT[sink]
    text = HEAD + entry
    with pytest.raises(TopologyError) as info:
        load_text(text, file="paths.yaml")
    found = info.value.problems
    assert [p.path for p in found] == [place for place, _, _ in expected]
    lines = text.splitlines()
    for problem, (_, path, close) in zip(found, expected, strict=True):
        assert problem.file == "paths.yaml"
        assert path in lines[problem.line - 1], problem
        assert f"path '{path}' names no field the events reaching 'out' can have" in (
            problem.message
        )
        assert "schema of bolt 'validate'" in problem.message
        assert f"did you mean '{close}'?" in problem.message


#: The same sinks with paths the events have (or metadata), and options not read as configured.
SPELT = {
    "s3": "  - {id: out, type: s3, bucket: lake, time_field: ts, "
    "columns: {user: user_id, kiosk: {path: kiosk.id, type: string}, at: meta.arrival_time}}\n",
    "sqs-fifo": "  - {id: out, type: sqs, queue: orders.fifo, message_group: kiosk.id, "
    "attributes: {user: user_id}}\n",  # deduplication_id: meta.event_id by default
    # a standard queue reads no deduplication id
    "sqs-standard": "  - {id: out, type: sqs, queue: orders, message_group: kiosk.id, "
    "deduplication_id: user_idd}\n",
    "kinesis": "  - {id: out, type: kinesis, stream: out, partition_key: meta.partition_key, "
    "explicit_hash_key: ts}\n",
    "push": "  - {id: out, type: push, project_id: p, credentials: key.json, "
    "title: 'Hello {user_id}', data: {kiosk: '{kiosk.id}'}, "
    # the unsubscribe time comes from the arrival time when the event has no `timestamp`
    "unsubscribe: {state: subs, time_field: timestamp}}\n",
}


@pytest.mark.parametrize("sink", list(SPELT))
def test_paths_the_events_have_and_options_not_read_are_not_refused(sink: str):
    text = HEAD + SPELT[sink]
    if sink == "push":  # the unsubscribe state's bolt, fed by the schema's events too
        text = text.replace(
            "sinks:\n", "  - {id: subs, type: subscription, store: state}\nsinks:\n"
        ).replace("spout:", 'resources: {state: {url: "sqlite:///unused.db"}}\nspout:')
    load_text(text, file="paths.yaml")


def _events(payloads: list[dict]) -> list[Event]:
    return [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from(payloads))
    ]


@pytest.mark.parametrize(
    ("make", "logger", "said"),
    [
        (
            lambda: S3Sink(
                S3SinkConfig(
                    id="out",
                    type="s3",
                    bucket="lake",
                    time_field="ts",
                    columns={"user": "user_idd", "note": "note", "shard": "meta.shard_id"},
                ),
                ComponentContext("t"),
            ),
            "squall.sinks.s3",
            "out: column 'user' (path 'user_idd') is absent from all 2 event(s) of a batch: "
            "their rows have null there",
        ),
        (
            lambda: SqsSink(
                SqsSinkConfig(
                    id="out",
                    type="sqs",
                    queue="https://127.0.0.1:9/1/orders",
                    attributes={"user": "user_idd", "note": "note", "shard": "meta.shard_id"},
                ),
                ComponentContext("t"),
            ),
            "squall.sinks.sqs",
            "out: attribute 'user' (path 'user_idd') is absent from all 2 event(s) of a batch: "
            "their messages go without it",
        ),
    ],
    ids=["s3-column", "sqs-attribute"],
)
def test_a_path_whose_absence_fails_nothing_is_warned_once_when_a_whole_batch_lacks_it(
    make, logger: str, said: str, caplog: pytest.LogCaptureFixture
):
    """No schema upstream: nothing proves the typo at load. An S3 column of a path no event has
    is null in every row, an SQS attribute is left out of every message — no record fails, so
    no dead letter tells. One WARNING, at the first batch; `note` is there (null counts)."""
    sink = make()
    events = _events([{"user_id": f"u{i}", "note": None, "ts": 1_700_000_000} for i in range(4)])
    with caplog.at_level(logging.WARNING, logger=logger):
        for batch in (events[:2], events[2:]):
            prepared = sink.prepare(batch)
            assert not prepared.rejected and len(prepared.events) == 2
    warned = [r.getMessage() for r in caplog.records if r.name == logger]
    assert len(warned) == 1 and warned[0].startswith(said), warned
