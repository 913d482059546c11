"""A rolling s3 sink and a batch that fails after the sink took its rows (hR).

The engine undoes a failed batch (``Engine._undo_batch``): the rolling sink must then drop the
rows it took from that batch and still holds (``Sink.discard``), keeping the rows of earlier
batches (their checkpoint waits for the release); what a release already made durable of the
failed batch is taken back (hC: its objects deleted, or rebuilt from the earlier batches' rows),
whatever the retry emits. Records that come again without the batch failing are not released
(``Sink.held_back``). Every row ends in S3 once, counted by its ``n`` in every object of the
bucket.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest

from squall.bolts.base import Bolt, Output
from squall.deploy.kcl import EXIT_RECORDS_FAILED, RecordProcessor
from squall.deploy.lambda_consumer import make_handler
from squall.errors import BatchFailed, StaleState, TransientError
from squall.sinks.base import WriteResult
from squall.testing import MemorySink, records_from
from squall.topology.checkpoint import Checkpointer, SqlCheckpointStore
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.factories import (
    KclCheckpointer,
    kcl_initialize,
    kcl_message,
    kcl_process_records,
    kinesis_lambda_event,
)
from tests.moto_standin import FlakyClient, client_error
from tests.sinks.test_s3_rolling import SHARD, keys, line_size, payloads, rows, sink_yaml

OTHER = "shardId-000000000001"


def topology(lake: dict) -> str:
    """The lake, then a memory sink (``mirror``) that ``fail_next`` makes fail a batch."""
    return json.dumps(
        {
            "name": f"rollfail{uuid.uuid4().hex[:6]}",
            "resources": {"db": {"url": "sqlite:///:memory:"}},
            "spout": {"type": "stdin"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [{"id": "decode", "type": "json"}],
            "sinks": [
                lake,
                {"id": "mirror", "type": "squall.testing:FaultySink"},
                {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink"},
            ],
        }
    )


def component(engine: Engine, name: str):
    return next(c for c in engine.components if c.id == name)


def fail_next(engine: Engine) -> None:
    """The mirror raises ``TransientError`` on its next two writes: both attempts of one batch
    (the lake, first in ``sinks:``, has taken the batch's rows by then)."""
    component(engine, "mirror").calls = -2


def held(data: list[dict]) -> int:
    """The bytes the lake counts for these rows (their JSON lines)."""
    return sum(line_size(p) for p in data)


def counts(s3, bucket: str) -> Counter:
    return Counter(r["n"] for r in rows(s3, bucket))


def test_in_process_retry_of_a_failed_batch_puts_each_row_once(moto_server, s3, bucket):
    """hold=True (the local runner, the KCL retrying a batch): batch 2 fails after the lake took
    it; the lake then holds batch 1's rows only, and the retry's rows are put once."""
    lake = sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)
    engine = Engine(load_text(topology(lake)).plan, hold=True)
    with engine:
        sink = component(engine, "lake")
        assert engine.process(records_from(payloads(4), start=1)).checkpoint == {}  # held
        fail_next(engine)
        with pytest.raises(BatchFailed, match="injected transient write failure"):
            engine.process(records_from(payloads(4, start=4), start=5))
        assert sink.holding() and sink.held_bytes == held(payloads(4))  # batch 1's only
        assert engine.process(records_from(payloads(4, start=4), start=5)).checkpoint == {}
        assert sink.redelivered == 0  # taken again, not dropped as held
        assert engine.release()[SHARD].sequence_number == "8"
    assert counts(s3, bucket) == Counter(100 + i for i in range(8))


def test_a_lambda_containers_failed_batch_is_not_put_by_its_next_invocation(
    moto_server, s3, bucket
):
    """hold=False (Lambda): a batch failed in one container after its lake took the rows; Lambda
    retries it, with the records that came since, in another container. The first container's
    next invocation (another shard) must not put the failed batch's rows: named by the same first
    position, its objects would replace the retry's, and rows 5-8 would be gone."""
    lake = sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)
    x = Engine(load_text(topology(lake)).plan)
    y = Engine(load_text(topology(lake)).plan)
    with x, y:
        fail_next(x)
        with pytest.raises(BatchFailed):
            x.process(records_from(payloads(4), start=1))
        assert not x.holding  # nothing of the failed batch is kept
        y.process(records_from(payloads(8), start=1))  # the retry, in another container
        x.process(records_from(payloads(2, start=8), shard_id=OTHER, start=1))  # x's next
    assert counts(s3, bucket) == Counter(100 + i for i in range(10))


class _FlakyStore(SqlCheckpointStore):
    """A checkpoint store down for the next ``down`` saves."""

    down = 0

    def save(self, *args, **kwargs):
        if self.down:
            self.down -= 1
            raise TransientError("checkpoint store down")
        return super().save(*args, **kwargs)


def test_a_batch_failed_after_its_rows_were_released_is_put_once_by_its_retry(
    moto_server, s3, bucket
):
    """hold=True with the engine's checkpointer (the local runner): batch 2 makes the lake due,
    the release puts batches 1 and 2 in objects named by batch 1's first rows, and then the
    checkpoint store is down: the batch fails. The objects are rebuilt from batch 1's rows (same
    names) and the retry's rows held anew: its release puts both, each row once (hC: before, the
    retry's rows were dropped as durable, leaving the failed run's rows in S3)."""
    roll = held(payloads(8))
    lake = sink_yaml(moto_server.endpoint, bucket, roll_bytes=roll)
    topo = load_text(topology(lake))
    resources = Resources.for_topology(topo)
    store = _FlakyStore(resources.sql("db"), topo.name)  # saved on its own
    engine = Engine(topo.plan, resources=resources, checkpointer=Checkpointer(store), hold=True)
    with engine:
        assert engine.process(records_from(payloads(4), start=1)).checkpoint == {}
        store.down = 2  # both attempts of the save
        with pytest.raises(BatchFailed, match="checkpoint store down"):
            engine.process(records_from(payloads(4, start=4), start=5))
        assert len(keys(s3, bucket)) == 2  # released before the save failed
        result = engine.process(records_from(payloads(4, start=4), start=5))
        assert result.checkpoint[SHARD].sequence_number == "8" and not engine.holding
        assert engine.release() == {}
    assert counts(s3, bucket) == Counter(100 + i for i in range(8))
    assert store.load("test")[SHARD].sequence_number == "8"


# -- the Lambda consumer: two warm containers ---------------------------------------------------

#: Whether ``DownSink`` is down (the containers of one test share the class).
DOWN = {"now": False}


class DownSink(MemorySink):
    """A memory sink down (``TransientError``) while ``DOWN["now"]``."""

    def write_batch(self, prepared, ctx):
        if DOWN["now"]:
            raise TransientError("mirror down")
        return super().write_batch(prepared, ctx)


LAMBDA_TOPOLOGY = """
name: rollfail-lambda
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: s3, bucket: {bucket}, prefix: events, endpoint_url: "{endpoint}",
     time_field: ts, roll_seconds: 600}}
  - {{id: mirror, type: "tests.sinks.test_s3_rolling_failed_batch:DownSink"}}
"""


def test_lambda_consumer_a_failed_invocation_leaves_nothing_for_the_next_one(
    moto_server, s3, bucket, tmp_path
):
    """Container x fails an invocation after its lake took the rows; Lambda retries it, with
    the records that came since, in container y; x's next invocation (another shard) puts only
    its own rows: every row once, none replaced by x's stale objects."""
    path = tmp_path / "topology.yaml"
    path.write_text(LAMBDA_TOPOLOGY.format(bucket=bucket, endpoint=moto_server.endpoint))
    x, y = make_handler(path), make_handler(path)
    data = payloads(10)
    DOWN["now"] = True
    try:
        failed = x(kinesis_lambda_event(data[:4], start=1), None)
    finally:
        DOWN["now"] = False
    assert failed == {"batchItemFailures": [{"itemIdentifier": "1"}]}
    assert y(kinesis_lambda_event(data[:8], start=1), None) == {"batchItemFailures": []}
    other = kinesis_lambda_event(data[8:], shard="shardId-000000000001", start=1)
    assert x(other, None) == {"batchItemFailures": []}
    assert counts(s3, bucket) == Counter(100 + i for i in range(10))


# -- the KCL: a batch retried in process, then a failed record ---------------------------------

#: The ``n`` of the events ``FailSome`` fails (a record's problem found before the sinks).
FAIL: set[int] = set()


class FailSome(Bolt):
    """Passes every event, failing those whose ``n`` is in ``FAIL``."""

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            if ev.value["n"] in FAIL:
                out.fail(ev, "failed on purpose")
            else:
                out.emit(ev)
        return out


def kcl_topology(lake: dict) -> str:
    """No dead-letter sink: a record ``FailSome`` fails is a failed record (the KCL exits)."""
    return json.dumps(
        {
            "name": f"rollfail{uuid.uuid4().hex[:6]}",
            "spout": {"type": "stdin"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "some", "type": "tests.sinks.test_s3_rolling_failed_batch:FailSome"},
            ],
            "sinks": [
                lake,
                {"id": "mirror", "type": "tests.sinks.test_s3_rolling_failed_batch:DownSink"},
            ],
        }
    )


def test_kcl_a_retried_batch_with_a_failed_record_releases_none_of_the_first_attempts_rows(
    moto_server, s3, bucket
):
    """The KCL retries batch 2 (the mirror was down after the lake took rows 104-107); on the
    retry record 105 fails before the sinks, so 106-107 are held back, the KCL releases and exits,
    and the next owner replays from 105. The release must not put the first attempt's 105-107:
    the replay puts them under their own first positions, and they would be there twice."""
    lake = sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)
    data = payloads(8)

    def outage_over(seconds: float) -> None:  # the KCL's backoff before the retry
        DOWN["now"] = False
        FAIL.add(105)

    engine = Engine(load_text(kcl_topology(lake)).plan, hold=True)
    p = RecordProcessor(engine, stream="s", sleep=outage_over, daemon_alive=lambda: True)
    kcl_initialize().dispatch(None, p)
    cp = KclCheckpointer()
    try:
        kcl_process_records(data[:4], start=100).dispatch(cp, p)
        DOWN["now"] = True
        with pytest.raises(SystemExit) as exc:
            kcl_process_records(data[4:], start=104).dispatch(cp, p)
    finally:
        DOWN["now"] = False
        FAIL.clear()
    assert exc.value.code == EXIT_RECORDS_FAILED
    assert cp.calls == [("104", 0)]  # released, then checkpointed before the failed record
    # the next owner of the lease replays from 105 (a new process: an empty buffer)
    again = Engine(load_text(kcl_topology(lake)).plan, hold=True)
    q = RecordProcessor(again, stream="s", daemon_alive=lambda: True)
    kcl_initialize().dispatch(None, q)
    kcl_process_records(data[5:], start=105).dispatch(cp, q)
    kcl_message({"action": "shardEnded"}).dispatch(cp, q)
    assert counts(s3, bucket) == Counter(100 + i for i in range(8))


# -- hS: a batch whose release failed (its rows in a release still to finish) -------------------


def test_a_lambda_containers_batch_failed_in_its_release_is_not_put_by_its_next_invocation(
    moto_server, s3, bucket
):
    """hold=False (Lambda): container x's batch fails in the release itself (S3 answers SlowDown
    to both attempts), so the batch's rows sit in a release still to finish. Lambda retries the
    batch, with the records that came since, in container y. x's next invocation (another shard)
    must not finish that release: named by the same first position, its object would replace
    the retry's, and rows 4-7 would be gone."""
    down = {"now": True}

    def put(kw, call):
        if down["now"]:
            raise client_error("SlowDown", "Please reduce your request rate.", 503)
        return call(**kw)

    lake = sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)
    x = Engine(load_text(topology(lake)).plan)
    y = Engine(load_text(topology(lake)).plan)
    with x, y:
        component(x, "lake").client = FlakyClient(s3, put_object=put)
        with pytest.raises(BatchFailed, match="SlowDown"):
            x.process(records_from(payloads(4), start=1))
        down["now"] = False
        y.process(records_from(payloads(8), start=1))  # the retry, in another container
        x.process(records_from(payloads(2, start=8), shard_id=OTHER, start=1))  # x's next
    assert counts(s3, bucket) == Counter(100 + i for i in range(10))


def test_a_batch_failed_in_its_release_keeps_the_earlier_batches_rows(moto_server, s3, bucket):
    """hold=True: batch 2 makes the lake due and S3 answers SlowDown to both attempts of the
    release, which holds batches 1 and 2. The failed batch's rows leave the release still to
    finish; batch 1's stay in it (its checkpoint waits for it). The retry puts every row once."""
    down = {"now": False}

    def put(kw, call):
        if down["now"]:
            raise client_error("SlowDown", "Please reduce your request rate.", 503)
        return call(**kw)

    lake = sink_yaml(moto_server.endpoint, bucket, roll_bytes=held(payloads(8)))
    engine = Engine(load_text(topology(lake)).plan, hold=True)
    with engine:
        sink = component(engine, "lake")
        sink.client = FlakyClient(s3, put_object=put)
        assert engine.process(records_from(payloads(4), start=1)).checkpoint == {}
        down["now"] = True
        with pytest.raises(BatchFailed, match="SlowDown"):
            engine.process(records_from(payloads(4, start=4), start=5))
        assert sink.holding() and sink.held_bytes == held(payloads(4))  # batch 1's only
        down["now"] = False
        result = engine.process(records_from(payloads(4, start=4), start=5))
        assert result.checkpoint[SHARD].sequence_number == "8" and not engine.holding
    assert counts(s3, bucket) == Counter(100 + i for i in range(8))


def test_a_batch_failed_halfway_through_its_release_puts_each_row_once(moto_server, s3, bucket):
    """hold=True: the release due with batch 2 puts the 18h object (batches 1 and 2) and S3
    refuses the 19h one through both attempts. The failed batch's 18h rows are taken back out
    of the 18h object (``discard``: put again with batch 1's rows only at the next release), its
    19h rows leave the object still to put; the retry holds them all anew: every row once,
    batch 1's 19h rows included."""
    down = {"now": False}

    def put(kw, call):
        if down["now"] and "hour=19" in kw["Key"]:
            raise client_error("SlowDown", "Please reduce your request rate.", 503)
        return call(**kw)

    lake = sink_yaml(moto_server.endpoint, bucket, roll_bytes=held(payloads(8)))
    engine = Engine(load_text(topology(lake)).plan, hold=True)
    with engine:
        sink = component(engine, "lake")
        sink.client = FlakyClient(s3, put_object=put)
        assert engine.process(records_from(payloads(4), start=1)).checkpoint == {}
        down["now"] = True
        with pytest.raises(BatchFailed, match="SlowDown"):
            engine.process(records_from(payloads(4, start=4), start=5))
        assert len(keys(s3, bucket)) == 1  # the 18h object
        down["now"] = False
        result = engine.process(records_from(payloads(4, start=4), start=5))
        assert sink.redelivered == 0  # 104 and 106, taken back from the 18h object (hC)
        assert result.checkpoint[SHARD].sequence_number == "8" and not engine.holding
    assert counts(s3, bucket) == Counter(100 + i for i in range(8))


# -- hS: a stateful bolt's StaleState re-runs the batch after the lake released it -------------

#: How many times ``Restated`` committed (the first commit finds its state moved).
RESTATED = {"commits": 0}


class Restated(Bolt):
    """A stateful bolt whose output says which attempt of the batch computed it (``seen``: the
    stored state the attempt read); its first commit finds the state moved (``StaleState``)."""

    stateful = True

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            child = ev.fork()
            child.value = {**ev.value, "seen": RESTATED["commits"]}
            out.emit(child)
        return out

    def commit_state(self, covered, connection=None):
        RESTATED["commits"] += 1
        if RESTATED["commits"] == 1:
            raise StaleState("state moved (another process committed)")

    def discard_state(self):
        pass


def test_a_batch_run_again_from_moved_state_leaves_the_new_runs_rows(moto_server, s3, bucket):
    """A stateful bolt upstream makes the lake release after every batch: the first run's rows
    are put, then the bolt's commit finds its state moved and the engine runs the batch again
    from the stored state. The rows in S3 must be the second run's (what the committed state
    says), not the first run's, computed from a state that had moved."""
    RESTATED["commits"] = 0
    topo = json.dumps(
        {
            "name": f"rollfail{uuid.uuid4().hex[:6]}",
            "spout": {"type": "stdin"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "state", "type": "tests.sinks.test_s3_rolling_failed_batch:Restated"},
            ],
            "sinks": [sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)],
        }
    )
    engine = Engine(load_text(topo).plan, hold=True)
    with engine:
        result = engine.process(records_from(payloads(4), start=1))
        assert result.checkpoint[SHARD].sequence_number == "4" and RESTATED["commits"] == 2
    got = rows(s3, bucket)
    assert sorted(r["n"] for r in got) == [100, 101, 102, 103]
    assert {r["seen"] for r in got} == {1}


class RestatedDropsFirst(Restated):
    """``Restated`` whose run from the moved state no longer emits record 100 (a filter the
    stored state now says no to)."""

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            if RESTATED["commits"] and ev.value["n"] == 100:
                out.drop(ev)
                continue
            child = ev.fork()
            child.value = {**ev.value, "seen": RESTATED["commits"]}
            out.emit(child)
        return out


def test_a_run_again_whose_first_row_is_gone_leaves_no_row_of_the_first_run(
    moto_server, s3, bucket
):
    """hT: as above, but the second run drops record 100, the first row of the 18h object the
    first run put: the second run's 18h object is named by 102. The first run's object (100 and
    102, computed from moved state) must not stay next to it."""
    RESTATED["commits"] = 0
    topo = json.dumps(
        {
            "name": f"rollfail{uuid.uuid4().hex[:6]}",
            "spout": {"type": "stdin"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [
                {"id": "decode", "type": "json"},
                {
                    "id": "state",
                    "type": "tests.sinks.test_s3_rolling_failed_batch:RestatedDropsFirst",
                },
            ],
            "sinks": [sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)],
        }
    )
    engine = Engine(load_text(topo).plan, hold=True)
    with engine:
        result = engine.process(records_from(payloads(4), start=1))
        assert result.checkpoint[SHARD].sequence_number == "4" and RESTATED["commits"] == 2
    got = rows(s3, bucket)
    assert sorted(r["n"] for r in got) == [101, 102, 103]
    assert {r["seen"] for r in got} == {1}


def test_a_parquet_release_rebuilt_without_the_failed_batch_holds_the_earlier_rows_exactly(
    moto_server, s3, bucket
):
    """hT: the in-release discard of Parquet rows (held as column dicts, not JSON lines): the
    objects rebuilt from batch 1's rows hold them row for row (every column), and the bytes
    counted are batch 1's."""
    from tests.sinks.test_s3_rolling import PARQUET

    down = {"now": False}

    def put(kw, call):
        if down["now"]:
            raise client_error("SlowDown", "Please reduce your request rate.", 503)
        return call(**kw)

    lake = sink_yaml(moto_server.endpoint, bucket, roll_bytes=held(payloads(8)), **PARQUET)
    engine = Engine(load_text(topology(lake)).plan, hold=True)
    with engine:
        sink = component(engine, "lake")
        sink.client = FlakyClient(s3, put_object=put)
        engine.process(records_from(payloads(4), start=1))
        down["now"] = True
        with pytest.raises(BatchFailed, match="SlowDown"):
            engine.process(records_from(payloads(4, start=4), start=5))
        assert sink.held_bytes == held(payloads(4))
        down["now"] = False
        assert engine.release()[SHARD].sequence_number == "4"
        assert sorted(rows(s3, bucket), key=lambda r: r["n"]) == payloads(4)
        assert not engine.holding
        engine.process(records_from(payloads(4, start=4), start=5))
        engine.release()
    assert sorted(rows(s3, bucket), key=lambda r: r["n"]) == payloads(8)


def test_a_lambda_containers_unanswered_put_does_not_rename_its_next_invocations_objects(
    moto_server, s3, bucket
):
    """hT: container x's 18h object (100, 102) lands unanswered through both attempts; Lambda
    retries the batch, with the records that came since, in container y (its 18h object has the
    same name). x's next invocation, the same shard's next records, starts after that object:
    it keeps its own name instead of replacing y's (rows 100-106 would be gone)."""
    lost = {"now": True}

    def put(kw, call):
        answer = call(**kw)
        if lost["now"]:
            raise client_error("RequestTimeout", "Your socket connection timed out.", 400)
        return answer

    lake = sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)
    x = Engine(load_text(topology(lake)).plan)
    y = Engine(load_text(topology(lake)).plan)
    with x, y:
        component(x, "lake").client = FlakyClient(s3, put_object=put)
        with pytest.raises(BatchFailed, match="RequestTimeout"):
            x.process(records_from(payloads(4), start=1))
        lost["now"] = False
        y.process(records_from(payloads(8), start=1))  # the retry, in another container
        x.process(records_from(payloads(2, start=8), start=9))  # x's next: the shard's next
    assert counts(s3, bucket) == Counter(100 + i for i in range(10))


def test_a_retry_from_a_later_record_does_not_take_the_failed_objects_name(moto_server, s3, bucket):
    """hT: container x puts batch 1-4 alone, then its checkpoint save fails (hC: x deletes those
    objects before it answers). Container y commits records 1-2 (its objects named by 100 and
    101); Lambda hands records 3-4 to x. x's 3-4 objects must not replace y's (100 and 101
    would be lost), nor may x's first objects stay (102 and 103 twice)."""
    lake = sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)
    topo = load_text(topology(lake))
    resources = Resources.for_topology(topo)
    store = _FlakyStore(resources.sql("db"), topo.name)
    x = Engine(topo.plan, resources=resources, checkpointer=Checkpointer(store))
    y = Engine(load_text(topology(lake)).plan)
    with x, y:
        store.down = 2  # both attempts of the save
        with pytest.raises(BatchFailed, match="checkpoint store down"):
            x.process(records_from(payloads(4), start=1))
        assert keys(s3, bucket) == []  # released before the save failed, then taken back
        y.process(records_from(payloads(2), start=1))
        x.process(records_from(payloads(2, start=2), start=3))
    assert counts(s3, bucket) == Counter(100 + i for i in range(4))


# -- hC: a failed run's objects are taken back, whatever the retry's first row -----------------


def failing_topology(lake: dict) -> str:
    """The lake after ``FailSome`` (its failures dead-lettered), with a SQL checkpoint store."""
    return json.dumps(
        {
            "name": f"rollfail{uuid.uuid4().hex[:6]}",
            "resources": {"db": {"url": "sqlite:///:memory:"}},
            "spout": {"type": "stdin"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [
                {"id": "decode", "type": "json"},
                {"id": "some", "type": "tests.sinks.test_s3_rolling_failed_batch:FailSome"},
            ],
            "sinks": [lake, {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink"}],
        }
    )


def flaky_engine(lake: dict, **kwargs) -> tuple[Engine, _FlakyStore]:
    topo = load_text(failing_topology(lake))
    resources = Resources.for_topology(topo)
    store = _FlakyStore(resources.sql("db"), topo.name)
    return Engine(topo.plan, resources=resources, checkpointer=Checkpointer(store), **kwargs), store


def test_a_lambda_retry_in_another_container_without_the_first_runs_rows_leaves_none_of_them(
    moto_server, s3, bucket
):
    """hold=False (Lambda): container x puts batch 1-4 alone (18h: 100, 102 named by 100; 19h:
    101, 103 named by 101), then the batch fails (checkpoint store down). Lambda retries it in
    container y, where 100, 101 and 103 now fail (dead-lettered): y's only object is 18h's,
    named by 102. x's objects must not stay beside it: 102 would be there twice, and 100, 101
    and 103, which the committed run dead-lettered, would be in the lake too."""
    lake = sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)
    x, store = flaky_engine(lake)
    y = Engine(load_text(failing_topology(lake)).plan)
    try:
        with x, y:
            store.down = 2  # both attempts of the save
            with pytest.raises(BatchFailed, match="checkpoint store down"):
                x.process(records_from(payloads(4), start=1))
            FAIL.update({100, 101, 103})
            y.process(records_from(payloads(4), start=1))  # the retry, in another container
    finally:
        FAIL.clear()
    assert counts(s3, bucket) == Counter({102: 1})
    assert sorted(e.value["n"] for e in component(y, "dlq").store) == [100, 101, 103]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_retry_without_a_released_row_takes_it_out_of_the_object_it_went_in(
    moto_server, s3, bucket, fmt
):
    """hold=True (the local runner; the KCL retrying a batch in process): batch 2 makes the lake
    due, the release puts batches 1 and 2 together, then the checkpoint store is down. On the
    retry record 104 fails (dead-lettered). Its row, put by the failed run, must not stay in S3
    (the committed run did not produce it), and every other row is there once."""
    from tests.sinks.test_s3_rolling import PARQUET

    extra = PARQUET if fmt == "parquet" else {}
    lake = sink_yaml(moto_server.endpoint, bucket, roll_bytes=held(payloads(8)), **extra)
    engine, store = flaky_engine(lake, hold=True)
    try:
        with engine:
            engine.process(records_from(payloads(4), start=1))
            store.down = 2
            with pytest.raises(BatchFailed, match="checkpoint store down"):
                engine.process(records_from(payloads(4, start=4), start=5))
            FAIL.add(104)
            engine.process(records_from(payloads(4, start=4), start=5))
            engine.release()
            assert not engine.holding
    finally:
        FAIL.clear()
    assert counts(s3, bucket) == Counter(100 + i for i in range(8) if i != 4)
    assert store.load("test")[SHARD].sequence_number == "8"


def test_a_failed_batchs_object_that_cannot_be_deleted_is_named_in_a_warning(
    moto_server, s3, bucket, caplog
):
    """hC: the role lacks s3:DeleteObject (deployed before it was declared): the failed batch's
    objects stay, a warning names them and what a reader sees, and the batch's failure is the
    one reported (its cause, not the delete's)."""

    def refuse(kw, call):
        raise client_error("AccessDenied", "Access Denied", 403)

    lake = sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)
    x, store = flaky_engine(lake)
    with x:
        component(x, "lake").client = FlakyClient(s3, delete_object=refuse)
        store.down = 2
        with pytest.raises(BatchFailed, match="checkpoint store down"):
            x.process(records_from(payloads(4), start=1))
    stay = keys(s3, bucket)
    assert len(stay) == 2
    [warning] = [r.getMessage() for r in caplog.records if "stay in S3" in r.getMessage()]
    assert all(key in warning for key in stay) and "AccessDenied" in warning
    assert "deduplicate on event_id" in warning


# -- hC: a record a later sink refuses comes again: the lake keeps none of it, nor what follows --

#: The ``n`` of the events ``RefuseSome`` refuses (``WriteResult.failed``: they come again).
REFUSE: set[int] = set()


class RefuseSome(MemorySink):
    """A sink after the lake that fails the events whose ``n`` is in ``REFUSE`` (partially)."""

    def write_batch(self, prepared, ctx):
        super().write_batch(prepared, ctx)
        return WriteResult(failed=[ev for ev in prepared.events if ev.value["n"] in REFUSE])


def refusing_topology(lake: dict) -> str:
    return json.dumps(
        {
            "name": f"rollfail{uuid.uuid4().hex[:6]}",
            "spout": {"type": "stdin"},
            "settings": {"retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0}},
            "bolts": [{"id": "decode", "type": "json"}],
            "sinks": [
                lake,
                {"id": "later", "type": "tests.sinks.test_s3_rolling_failed_batch:RefuseSome"},
            ],
        }
    )


@pytest.mark.parametrize("refused", [102, 101])
@pytest.mark.parametrize("hold", [False, True], ids=["lambda", "local"])
def test_a_record_a_later_sink_refuses_and_those_after_it_are_not_released(
    moto_server, s3, bucket, hold, refused
):
    """Batch 1-4: the sink after the lake refuses record 3 (102), so 102 and 103 come again (a
    Lambda retry from record 3; a rerun from the checkpoint, at 2). The lake took their rows
    before the refusal was known: released with the batch (Lambda: at once; the local runner:
    when due), the first run's objects would hold them beside the retry's (102 and 103 twice).
    Refusing 101 instead leaves the 19h group of the batch with no row (101 and 103 come again).
    """
    lake = sink_yaml(moto_server.endpoint, bucket, roll_seconds=600)
    engine = Engine(load_text(refusing_topology(lake)).plan, hold=hold)
    at = refused - 100  # the refused record's index; its sequence number is at + 1
    try:
        with engine:
            REFUSE.add(refused)
            result = engine.process(records_from(payloads(4), start=1))
            assert [r.index for r in result.failed] == [at]
            position = result.checkpoint or engine.release()
            assert position[SHARD].sequence_number == str(at)
            REFUSE.clear()
            engine.process(records_from(payloads(4 - at, start=at), start=at + 1))  # the retry
            engine.release()
    finally:
        REFUSE.clear()
    assert counts(s3, bucket) == Counter(100 + i for i in range(4))
