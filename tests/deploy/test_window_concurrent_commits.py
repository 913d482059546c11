"""The same records of one lineage in two batches at once, the second committed first: a KCL
lease taken over while the old holder's batch is between its sinks and its state commit (the
new holder runs the same records from the last checkpoint), an SQS message of a standard queue
delivered to two Lambda invocations at once. The later window commit finds the lineage's mark
moved since it read it and writes nothing (``MarkMoved``): the records are counted once, not
twice. On every window store.

The interleaving is the test's: a sink of the first batch's topology runs the other batch when
it is written — after the first batch's window read the marks, before its state commit."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import ClassVar

from squall.deploy.kcl import RecordProcessor
from squall.deploy.lambda_consumer import make_handler
from squall.sinks.base import Sink
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.bolts.test_window import store_url  # noqa: F401
from tests.deploy.test_lambda_parallel_shard import TOPOLOGY as WINDOW_TOPOLOGY
from tests.deploy.test_lambda_parallel_shard import payload
from tests.factories import KclCheckpointer, kcl_initialize, kcl_process_records

# The window topology of tests/deploy/test_lambda_parallel_shard.py, with retries that do not
# wait and a sink that hands the batch over while it is written.
TOPOLOGY = (
    WINDOW_TOPOLOGY.replace(
        "spout: {{type: stdin}}\n",
        "spout: {{type: stdin}}\nsettings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}\n",
    )
    + """  - {{id: handoff, type: "tests.deploy.test_window_concurrent_commits:HandOff"}}
streams:
  - {{from: decode, to: counts}}
  - {{from: counts, to: out}}
  - {{from: decode, to: handoff}}
"""
)


class HandOff(Sink):
    """Runs ``then`` (once) when written: the new lease holder's batch, at this point of the
    old holder's."""

    then: ClassVar[list] = []

    def write_batch(self, prepared, ctx):
        while HandOff.then:
            HandOff.then.pop()()
        return None


def worker(tmp_path: Path, state: str, name: str, owner: list[str], me: str):
    text = TOPOLOGY.format(name=name, state=state, db=tmp_path / "w.db")
    processor = RecordProcessor(
        Engine(load_text(text).plan),
        stream="pistats",
        sleep=lambda s: None,
        lease_held=lambda shard: owner[0] == me,
    )
    cp = KclCheckpointer()
    kcl_initialize().dispatch(cp, processor)
    return processor, cp


def test_the_old_lease_holder_never_counts_what_the_new_one_committed(
    store_url,  # noqa: F811
    unique_name,
    tmp_path: Path,
):
    owner = ["w1"]
    old, old_cp = worker(tmp_path, store_url, unique_name, owner, "w1")
    new, new_cp = worker(tmp_path, store_url, unique_name, owner, "w2")
    batch = kcl_process_records([payload(i) for i in range(3)])

    def take_over() -> None:
        owner[0] = "w2"
        batch.dispatch(new_cp, new)  # from the last checkpoint: the same three records

    HandOff.then[:] = [take_over]
    batch.dispatch(old_cp, old)  # reads the marks; its sinks run the new holder's batch
    kcl_process_records([payload(300)], start=103).dispatch(new_cp, new)  # closes 10:00
    rows = sqlite3.connect(tmp_path / "w.db").execute("select k, n from counts").fetchall()
    assert rows == [("x", 3)]  # not 6
    # the old holder's state commit refused, its batch ran again at once and found the records
    # counted (replays): its checkpoint, at the same position (the test's message object hands
    # it to the new holder's checkpointer; the daemon refuses it, the lease being lost)
    assert new_cp.calls == [("102", 0), ("102", 0), ("103", 0)]


def sqs_event(ids: list[str]) -> dict:
    """A standard queue's Lambda event: message ``m<i>`` carries an event of second ``i``."""
    return {
        "Records": [
            {
                "messageId": f"{int(i):08d}-0000-4000-8000-000000000000",
                "receiptHandle": f"rh-{i}",
                "body": json.dumps(payload(int(i))),
                "attributes": {"SentTimestamp": str(1714557600000 + 1000 * int(i))},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:orders",
            }
            for i in ids
        ]
    }


def test_an_sqs_message_in_two_invocations_at_once_is_counted_once(
    store_url,  # noqa: F811
    unique_name,
    tmp_path: Path,
):
    """Messages 1 and 2 go to one invocation; message 1, its visibility timeout passed, to another
    at the same time, which commits first. The first invocation's commit is refused, and its
    batch runs again at once: message 1 is a replay, message 2 counted."""
    t = tmp_path / "topology.yaml"
    t.write_text(TOPOLOGY.format(name=unique_name, state=store_url, db=tmp_path / "w.db"))
    first, second = make_handler(t), make_handler(t)
    answers = []
    HandOff.then[:] = [lambda: answers.append(second(sqs_event(["1"]), None))]
    failed = first(sqs_event(["1", "2"]), None)["batchItemFailures"]
    assert answers == [{"batchItemFailures": []}]
    assert first(sqs_event(["1", "2"]), None) == {"batchItemFailures": []}  # Lambda's retry
    assert first(sqs_event(["600"]), None) == {"batchItemFailures": []}  # closes 10:00
    rows = sqlite3.connect(tmp_path / "w.db").execute("select k, n from counts").fetchall()
    assert rows == [("x", 2)]  # not 3
    assert failed == []


def test_sqlite_a_mark_moved_between_the_check_and_the_write_is_seen(tmp_path: Path):
    """SQLite, the window store on a database of its own: another process commits the lineage's
    mark between a's check of it and a's write. The check's read must be in the write's
    transaction (WAL then refuses a write from a stale snapshot); read outside it, both commits
    went through: the records counted twice."""
    from squall.bolts.window_store import ShardMark, SqlWindowStore
    from squall.errors import TransientError
    from squall.topology.resource_config import ResourceConfig
    from squall.topology.resources import Resources

    url = f"sqlite:///{tmp_path / 'state.db'}"
    res_a = Resources({"s": ResourceConfig(url=url, connect_timeout=0.1)})  # (busy timeout)
    res_b = Resources({"s": ResourceConfig(url=url, connect_timeout=0.1)})
    a, b = SqlWindowStore(res_a.sql("s"), "w"), SqlWindowStore(res_b.sql("s"), "w")
    a.commit({}, {}, {"s": ShardMark(1, 1)}, 0, expect={"s": None})
    checked = a._check_marks
    done: list[str] = []

    def check_then_b_commits(conn, expect, marks):
        checked(conn, expect, marks)
        try:
            b.commit({60_000: (120_000, '{"b": 1}')}, {}, {"s": ShardMark(2, 5)}, 0,
                     expect={"s": (1, 0)})  # fmt: skip
            done.append("b")
        except TransientError:
            pass  # waits for a's write lock: its batch runs again later

    a._check_marks = check_then_b_commits  # type: ignore[method-assign]
    try:
        a.commit(
            {60_000: (120_000, '{"a": 1}')}, {}, {"s": ShardMark(2, 5)}, 0, expect={"s": (1, 0)}
        )
        done.append("a")
    except TransientError:
        pass  # MarkMoved, or refused as stale: the batch runs again
    assert len(done) == 1  # the same records committed once, not by both
    res_a.close()
    res_b.close()
