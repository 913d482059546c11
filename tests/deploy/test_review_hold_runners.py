"""Adversarial review of 995b16b, the runners' side: holding sinks under the KCL processor and
the local runner's SQS spout. Each test here fails on 995b16b and names what is wrong."""

from __future__ import annotations

import io
import json
import logging

import pytest

from squall.deploy.kcl import EXIT_RECORDS_FAILED, RecordProcessor
from squall.deploy.local import EXIT_OK, LocalRunner
from squall.testing import memory_stores
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.factories import KclCheckpointer, kcl_initialize, kcl_process_records, kcl_record
from tests.moto_standin import queue_counts, unique
from tests.topology.test_review_hold import HeldSink

HOLDING_NO_DLQ = """
name: kcl-hold-fail
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
  - {id: chaos, type: 'squall.testing:FaultyBolt'}
sinks:
  - {id: lake, type: 'tests.topology.test_review_hold:HeldSink'}
"""


def test_kcl_failed_records_release_and_checkpoint_before_them_when_a_sink_holds():
    """kcl.py promises: records that failed with nowhere to go make the processor checkpoint the
    position before the first of them, then exit. With a holding sink the batch's checkpoint is
    held ({}), so the processor exits without releasing and without a checkpoint: the buffer is
    lost and the restart goes back to the last release, not to the failed record. A failure
    that recurs before the sink is due (by age) then keeps the shard from ever moving."""
    with memory_stores({}) as stores:
        engine = Engine(load_text(HOLDING_NO_DLQ).plan, hold=True)
        p = RecordProcessor(engine, stream="s", sleep=lambda s: None)
        kcl_initialize().dispatch(None, p)
        cp = KclCheckpointer()
        kcl_process_records([{"n": 1}, {"n": 2}]).dispatch(cp, p)
        assert cp.calls == []  # held
        with pytest.raises(SystemExit) as exc:
            kcl_process_records([{"n": 3}, {"n": 4, "fail": "bad"}, {"n": 5}], start=102).dispatch(
                cp, p
            )
        assert exc.value.code == EXIT_RECORDS_FAILED
        assert cp.calls == [("102", 0)]  # the position before the failed record
        assert [ev.value["n"] for ev in stores["lake"]][:3] == [1, 2, 3]  # made durable first


@pytest.fixture
def moto(moto_server):
    return moto_server


def test_sqs_spout_deletes_the_messages_of_every_batch_a_holding_sink_released(moto):
    """The SQS spout's ``commit`` deletes only messages of the *last* batch it yielded
    (``self._records``). With a holding sink the local runner commits the held checkpoint when
    the sink releases — covering the messages of several batches — so every earlier batch's
    messages are never deleted: they come back after the visibility timeout, are processed
    again on every run (and reach the queue's redrive dead-letter queue after maxReceiveCount,
    though they were written)."""
    sqs = moto.client("sqs")
    url = sqs.create_queue(QueueName=unique("held"))["QueueUrl"]
    for n in range(6):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}))
    spout = (
        f'{{type: sqs, queue: "{url}", endpoint_url: "{moto.endpoint}", wait_time: 0, '
        "visibility_timeout: 60}"
    )
    text = f"""
name: sqs-hold
spout: {spout}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: 'tests.topology.test_review_hold:HeldSink'}}
"""
    with memory_stores({}) as stores:
        report = LocalRunner(load_text(text), batch_size=2).run()
        assert report.exit_code == EXIT_OK and report.batches >= 2
        assert sorted(ev.value["n"] for ev in stores["lake"]) == list(range(6))
    assert queue_counts(sqs, url) == 0  # every message was made durable: all deleted


IDLE_DUE = """
name: kcl-idle
spout: {type: stdin}
bolts:
  - {id: decode, type: json}
sinks:
  - {id: lake, type: 'tests.deploy.test_review_hold_runners:DueWhenIdle'}
"""


class DueWhenIdle(HeldSink):
    """Not due when a batch asks, due when the idle poll asks (a roll by age)."""

    def due(self) -> bool:
        self.asked = getattr(self, "asked", 0) + 1
        return self.asked >= 2


def test_a_lease_lost_at_an_idle_polls_checkpoint_is_one_info_line_not_a_traceback(caplog):
    """process_records catches LeaseLost around the batch's checkpoint, but not around the idle
    poll's release: a lease taken over while the idle poll checkpoints what the sink released
    escapes to amazon-kclpy, which prints 'Caught exception from action dispatch' and a
    traceback (the daemon logs every stderr line at ERROR) — the one-INFO-line rule broken."""
    from amazon_kclpy import kcl

    caplog.set_level(logging.INFO, logger="squall.kcl")
    lines = [
        {
            "action": "initialize",
            "shardId": "shardId-000000000001",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        },
        {"action": "processRecords", "millisBehindLatest": 0, "records": [record(1), record(2)]},
        {"action": "processRecords", "millisBehindLatest": 0, "records": []},  # idle: due
        {
            "action": "checkpoint",
            "sequenceNumber": "2",
            "subSequenceNumber": 0,
            "error": "ShutdownException",
        },
        {"action": "leaseLost"},
    ]
    with memory_stores({}):
        engine = Engine(load_text(IDLE_DUE).plan, hold=True)
        processor = RecordProcessor(engine, stream="s", sleep=lambda s: None)
        out, err = io.StringIO(), io.StringIO()
        stdin = io.StringIO("".join(json.dumps(line) + "\n" for line in lines))
        kcl.KCLProcess(processor, input_file=stdin, output_file=out, error_file=err).run()
    assert processor.lost
    assert "Traceback" not in err.getvalue() and "Caught exception" not in err.getvalue()


def record(seq: int) -> dict:
    return kcl_record({"n": seq}, seq)
