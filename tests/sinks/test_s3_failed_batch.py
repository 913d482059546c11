"""The s3 sink writing each batch's objects (no roll settings) and a batch run again (hC).

A failed batch's objects are taken back before the failure is reported (``Sink.discard``), so
its retry — in this process or another Lambda container — leaves only its own, whatever it now
emits; a poison record's isolation (halves of the batch written on their own) leaves no object
of the whole batch's attempt beside the halves'. Every row is counted by its ``n`` in every
object of the bucket, against moto's S3 server on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import contextmanager

import pytest

from squall.bolts.base import Bolt, Output
from squall.errors import BatchFailed, TransientError
from squall.testing import records_from
from squall.topology.checkpoint import Checkpointer, SqlCheckpointStore
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.resources import Resources
from tests.moto_standin import FlakyClient, client_error
from tests.sinks.test_s3_rolling import SHARD, keys, payloads, sink_yaml
from tests.sinks.test_s3_rolling_failed_batch import (
    FAIL,
    component,
    counts,
    failing_topology,
    flaky_engine,
)


def test_a_lambda_retry_in_another_container_leaves_none_of_the_failed_batchs_objects(
    moto_server, s3, bucket
):
    """Container x puts batch 1-4 (18h: 100-102, 19h: 101-103), then its checkpoint save
    fails. Lambda retries it in container y, where 100 now fails (dead-lettered): y's 18h object
    is named 102-102. x's 100-102 must not stay beside it (102 twice, 100 dead-lettered)."""
    lake = sink_yaml(moto_server.endpoint, bucket)
    x, store = flaky_engine(lake)
    y = Engine(load_text(failing_topology(lake)).plan)
    try:
        with x, y:
            store.down = 2  # both attempts of the save
            with pytest.raises(BatchFailed, match="checkpoint store down"):
                x.process(records_from(payloads(4), start=1))
            assert keys(s3, bucket) == []  # put, then taken back
            FAIL.add(100)
            y.process(records_from(payloads(4), start=1))  # the retry, in another container
    finally:
        FAIL.clear()
    assert counts(s3, bucket) == Counter({101: 1, 102: 1, 103: 1})


def test_a_failed_batchs_object_whose_put_failed_halfway_is_deleted_too(moto_server, s3, bucket):
    """The 19h put lands but its answer is lost through both attempts (the batch fails): its
    object may be in S3, so it is deleted with the 18h one."""

    def put(kw, call):
        answer = call(**kw)
        if "hour=19" in kw["Key"]:
            raise client_error("RequestTimeout", "Your socket connection timed out.", 400)
        return answer

    engine = Engine(load_text(failing_topology(sink_yaml(moto_server.endpoint, bucket))).plan)
    with engine:
        component(engine, "lake").client = FlakyClient(s3, put_object=put)
        with pytest.raises(BatchFailed, match="RequestTimeout"):
            engine.process(records_from(payloads(4), start=1))
    assert keys(s3, bucket) == []


class LoneSurrogate(Bolt):
    """Puts a lone surrogate (no JSON encoder writes it as UTF-8) in the payload of n = 103."""

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            if ev.value["n"] == 103:
                ev.value["s"] = "\udc80"
            out.emit(ev)
        return out


def test_a_poison_rows_isolation_leaves_no_object_of_the_whole_batch(moto_server, s3, bucket):
    """The 19h object's body cannot be written (103's lone surrogate): the write of the whole
    batch had put the 18h object (100-102) first, then the engine wrote halves, whose objects
    have other names (100-100, 102-102): 100 and 102 were there twice. Every body is now built
    before the first put."""
    topo = failing_topology(sink_yaml(moto_server.endpoint, bucket)).replace(
        "test_s3_rolling_failed_batch:FailSome", "test_s3_failed_batch:LoneSurrogate"
    )
    engine = Engine(load_text(topo).plan)
    with engine:
        result = engine.process(records_from(payloads(4), start=1))
        assert [o.index for o in result.records if o.outcome.value == "dead_lettered"] == [3]
    assert counts(s3, bucket) == Counter({100: 1, 101: 1, 102: 1})


@pytest.mark.parametrize("refused", [102, 101])
def test_a_record_a_later_sink_refuses_is_taken_out_of_the_batchs_objects(
    moto_server, s3, bucket, refused
):
    """The sink after the lake refuses record ``refused``: it and the records after it come
    again (a Lambda retry from it). The lake had put them in the batch's objects; the retry
    puts them under other names (102-102, 103-103): they were there twice. The objects are put
    again without them (same names), or deleted when nothing is left (refusing 101 empties the
    19h object: 101 and 103)."""
    from tests.sinks.test_s3_rolling_failed_batch import REFUSE, refusing_topology

    engine = Engine(load_text(refusing_topology(sink_yaml(moto_server.endpoint, bucket))).plan)
    at = refused - 100
    try:
        with engine:
            REFUSE.add(refused)
            result = engine.process(records_from(payloads(4), start=1))
            assert result.checkpoint[SHARD].sequence_number == str(at)
            REFUSE.clear()
            engine.process(records_from(payloads(4 - at, start=at), start=at + 1))  # the retry
    finally:
        REFUSE.clear()
    assert counts(s3, bucket) == Counter(100 + i for i in range(4))


def test_a_refused_delete_of_an_object_left_empty_is_logged_and_the_batch_goes_on(
    moto_server, s3, bucket, caplog
):
    """A role deployed without s3:DeleteObject: the 19h object left empty by the records that
    come again (101 refused) cannot be deleted. The batch is not failed for it (its records
    would come again, and be refused again): the object stays, named in a warning."""
    from tests.sinks.test_s3_rolling_failed_batch import REFUSE, refusing_topology

    def refuse(kw, call):
        raise client_error("AccessDenied", "Access Denied", 403)

    engine = Engine(load_text(refusing_topology(sink_yaml(moto_server.endpoint, bucket))).plan)
    try:
        with engine:
            component(engine, "lake").client = FlakyClient(s3, delete_object=refuse)
            REFUSE.add(101)
            result = engine.process(records_from(payloads(4), start=1))
            assert result.checkpoint[SHARD].sequence_number == "1"
    finally:
        REFUSE.clear()
    assert counts(s3, bucket) == Counter({100: 1, 101: 1, 103: 1})  # 18h put again: 100 only
    [warning] = [r.getMessage() for r in caplog.records if "come again" in r.getMessage()]
    assert "hour=19" in warning and "AccessDenied" in warning


def test_s3_down_while_a_refused_record_is_taken_out_fails_the_batch_and_leaves_nothing(
    moto_server, s3, bucket
):
    """The 18h object cannot be put again without 102 (S3 answers SlowDown to both attempts):
    the batch fails, its objects are deleted, and its retry puts every row once."""
    from tests.sinks.test_s3_rolling_failed_batch import REFUSE, refusing_topology

    seen: Counter = Counter()

    def put(kw, call):
        seen[kw["Key"]] += 1
        if "hour=18" in kw["Key"] and seen[kw["Key"]] > 1 and REFUSE:
            raise client_error("SlowDown", "Please reduce your request rate.", 503)
        return call(**kw)

    engine = Engine(load_text(refusing_topology(sink_yaml(moto_server.endpoint, bucket))).plan)
    try:
        with engine:
            component(engine, "lake").client = FlakyClient(s3, put_object=put)
            REFUSE.add(102)
            with pytest.raises(BatchFailed, match="SlowDown"):
                engine.process(records_from(payloads(4), start=1))
            assert keys(s3, bucket) == []
            REFUSE.clear()
            engine.process(records_from(payloads(4), start=1))
    finally:
        REFUSE.clear()
    assert counts(s3, bucket) == Counter(100 + i for i in range(4))


# -- hJ: a batch whose checkpoint may be saved is not taken back -------------------------------


class _LostAnswerStore(SqlCheckpointStore):
    """A checkpoint store that saves, then loses the answer, for the next ``lost`` saves; and
    that cannot be read while ``gone`` (down after it saved)."""

    lost = 0
    gone = False

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        if self.lost:
            self.lost -= 1
            raise TransientError("checkpoint saved, its answer lost")

    def load(self, stream):
        if self.gone:
            raise TransientError("checkpoint store down")
        return super().load(stream)


@pytest.mark.parametrize("gone", [False, True], ids=["saved", "store-down-after"])
@pytest.mark.parametrize("roll", [False, True], ids=["per-batch", "rolling"])
def test_a_batch_whose_checkpoint_was_saved_but_unanswered_keeps_its_objects(
    moto_server, s3, bucket, roll, gone
):
    """The checkpoint save of batch 1-4 is applied but both attempts' answers are lost: the
    batch fails, yet the store has its checkpoint, so the next run starts after it and its
    records never come again. Its objects were deleted (``discard``): rows 100-103 were in no
    object, for ever. The engine reads the checkpoint back before taking anything back: saved
    (or the store not readable: unknown), the objects stay (at-least-once)."""
    lake = sink_yaml(moto_server.endpoint, bucket, **({"roll_seconds": 600} if roll else {}))
    topo = load_text(failing_topology(lake))
    resources = Resources.for_topology(topo)
    store = _LostAnswerStore(resources.sql("db"), topo.name)
    engine = Engine(topo.plan, resources=resources, checkpointer=Checkpointer(store))
    with engine:
        store.lost = 2  # both attempts of the save
        store.gone = gone
        with pytest.raises(BatchFailed, match="answer lost"):
            engine.process(records_from(payloads(4), start=1))
        store.gone = False
        assert store.load("test")[SHARD].sequence_number == "4"  # the next run starts after 4
    assert counts(s3, bucket) == Counter(100 + i for i in range(4))


def test_a_batch_whose_transactions_commit_was_applied_but_unanswered_keeps_its_objects(
    moto_server, s3, bucket, tmp_path, monkeypatch
):
    """The checkpoint is saved in the batch's SQL transaction (its store on the topology's
    database): the COMMIT is applied but both attempts' answers are lost. The store has the
    batch's checkpoint: its objects must stay."""
    from squall.topology import sql

    real = sql.transaction
    lost = {"n": 2}

    @contextmanager
    def unanswered(db):
        with real(db) as conn:
            yield conn
        if lost["n"]:
            lost["n"] -= 1
            raise TransientError("COMMIT applied, its answer lost")

    monkeypatch.setattr(sql, "transaction", unanswered)
    data = json.loads(failing_topology(sink_yaml(moto_server.endpoint, bucket)))
    data["resources"]["db"]["url"] = f"sqlite:///{tmp_path / 'cp.db'}"
    topo = load_text(json.dumps(data))
    resources = Resources.for_topology(topo)
    store = SqlCheckpointStore(resources.sql("db"), topo.name, resource="db")
    engine = Engine(topo.plan, resources=resources, checkpointer=Checkpointer(store))
    with engine:
        assert engine._checkpoint_in_tx  # (no SQL sink: the transaction holds the checkpoint)
        with pytest.raises(BatchFailed, match="answer lost"):
            engine.process(records_from(payloads(4), start=1))
        assert store.load("test")[SHARD].sequence_number == "4"
    assert counts(s3, bucket) == Counter(100 + i for i in range(4))


class _OneShardStore(SqlCheckpointStore):
    """A store that saves shard by shard (as DynamoDB's does) and goes down after the first."""

    def save(self, stream, positions):
        first = min(positions)
        super().save(stream, {first: positions[first]})
        raise TransientError("checkpoint store down after one shard")


def test_a_batch_whose_checkpoint_was_saved_for_one_shard_of_two_keeps_its_objects(
    moto_server, s3, bucket
):
    """A batch of two shards (the local runner reading a stream): the store saves shard 0's
    checkpoint, then is down for shard 1. Shard 0's records never come again: its objects must
    stay (all of the batch's stay: the records of shard 1 may be written twice)."""
    from tests.sinks.test_s3_rolling_failed_batch import OTHER

    topo = load_text(failing_topology(sink_yaml(moto_server.endpoint, bucket)))
    resources = Resources.for_topology(topo)
    store = _OneShardStore(resources.sql("db"), topo.name)
    engine = Engine(topo.plan, resources=resources, checkpointer=Checkpointer(store))
    records = records_from(payloads(2), start=1) + records_from(
        payloads(2, start=2), shard_id=OTHER, start=1
    )
    with engine:
        with pytest.raises(BatchFailed, match="after one shard"):
            engine.process(records)
        assert set(store.load("test")) == {SHARD}
    assert counts(s3, bucket) == Counter(100 + i for i in range(4))


@pytest.mark.parametrize("roll", [False, True], ids=["per-batch", "rolling"])
def test_a_failed_redelivery_does_not_delete_the_objects_a_committed_run_put(
    moto_server, s3, bucket, roll
):
    """Records delivered again after their batch was committed (Lambda's at-least-once
    invocations, `squall replay`, a checkpoint reset to reprocess): container x commits batch
    1-4; a second delivery of it in container y writes the same names (same rows, same bytes)
    and then fails (its checkpoint store down). y's discard deleted the objects: the committed
    run's rows were gone, and stay gone if the redelivery is never retried (Lambda's retries
    spent, a reprocessing given up). An object that was in S3 before the batch put it (its
    PutObject with If-None-Match: * answered 412) is now put again but not deleted."""
    lake = sink_yaml(moto_server.endpoint, bucket, **({"roll_seconds": 600} if roll else {}))
    x = Engine(load_text(failing_topology(lake)).plan)
    y, store = flaky_engine(lake)
    with x, y:
        x.process(records_from(payloads(4), start=1))  # committed
        before = keys(s3, bucket)
        store.down = 2  # both attempts of y's save
        with pytest.raises(BatchFailed, match="checkpoint store down"):
            y.process(records_from(payloads(4), start=1))
    assert keys(s3, bucket) == before
    assert counts(s3, bucket) == Counter(100 + i for i in range(4))


def test_an_endpoint_without_conditional_writes_gets_plain_puts(moto_server, s3, bucket):
    """An S3-compatible endpoint that answers If-None-Match with 501 NotImplemented: the object
    is put without it, and every later put is plain from the start (one call each)."""
    asked: Counter = Counter()

    def put(kw, call):
        asked["conditional" if "IfNoneMatch" in kw else "plain"] += 1
        if "IfNoneMatch" in kw:
            raise client_error("NotImplemented", "A header you provided is not implemented", 501)
        return call(**kw)

    engine = Engine(load_text(failing_topology(sink_yaml(moto_server.endpoint, bucket))).plan)
    with engine:
        component(engine, "lake").client = FlakyClient(s3, put_object=put)
        engine.process(records_from(payloads(4), start=1))
        engine.process(records_from(payloads(4, start=4), start=5))
    assert counts(s3, bucket) == Counter(100 + i for i in range(8))
    assert asked == Counter({"conditional": 1, "plain": 4})
