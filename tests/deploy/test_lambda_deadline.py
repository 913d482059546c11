"""The Lambda consumer stops starting slices before the invocation's deadline.

The context's remaining time is set by the test (no sleeping, no timing assertions): each slice
after the first asks it once, and a slice starts only while what is left exceeds twice the
longest slice so far plus ``settings.lambda_deadline_margin``. What was not started is answered
as failures, so Lambda retries from there and the committed slices are not done again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from squall.deploy.deadline import SAFETY_FACTOR, Deadline
from squall.deploy.lambda_consumer import make_handler
from squall.errors import SquallError
from squall.testing import MemorySink
from squall.topology.loader import load_text
from tests.deploy.test_lambda_consumer import batches_of, rows, topology_for
from tests.deploy.test_sqs_s3_sources import emf_top_documents, sqs_lambda_event
from tests.factories import kinesis_lambda_event
from tests.moto_standin import unique


class Context:
    """A Lambda context whose remaining time the test sets: one value per call, the last one
    repeated (``calls`` counts them)."""

    function_name = "consumer"  # Powertools' ColdStart metric names it

    def __init__(self, *remaining_ms: float):
        self.remaining, self.calls = list(remaining_ms), 0

    def get_remaining_time_in_millis(self) -> float:
        self.calls += 1
        return self.remaining.pop(0) if len(self.remaining) > 1 else self.remaining[0]


def seqs_of(event: dict) -> list[str]:
    return [r["kinesis"]["sequenceNumber"] for r in event["Records"]]


def test_a_kinesis_invocation_stops_before_its_deadline_and_reports_the_first_record_not_started(
    tmp_path: Path,
):
    handler = make_handler(topology_for(tmp_path, dlq=True, size=2))
    sizes = batches_of(handler)
    event = kinesis_lambda_event([{"n": i} for i in range(1, 8)])
    # 10 s left before the second slice, 0.5 s before the third (margin 1 s by default)
    context = Context(10_000, 500)
    assert handler(event, context) == {"batchItemFailures": [{"itemIdentifier": seqs_of(event)[4]}]}
    assert sizes == [2, 2] and rows(tmp_path) == [1, 2, 3, 4] and context.calls == 2
    # Lambda retries from record 5: the committed slices are not done again
    sizes.clear()
    retry = {"Records": event["Records"][4:]}
    assert handler(retry, Context(60_000)) == {"batchItemFailures": []}
    assert sizes == [2, 1] and rows(tmp_path) == [1, 2, 3, 4, 5, 6, 7]


def test_the_first_slice_always_runs_even_with_no_time_left(tmp_path: Path):
    handler = make_handler(topology_for(tmp_path, dlq=True, size=2))
    sizes = batches_of(handler)
    event = kinesis_lambda_event([{"n": i} for i in range(1, 6)])
    context = Context(0)
    assert handler(event, context) == {"batchItemFailures": [{"itemIdentifier": seqs_of(event)[2]}]}
    assert sizes == [2] and rows(tmp_path) == [1, 2]
    # an invocation of one slice asks nothing
    one = kinesis_lambda_event([{"n": 10}], start=1)
    assert handler(one, context) == {"batchItemFailures": []} and context.calls == 1


def test_an_invocation_with_time_enough_or_no_context_runs_every_slice(tmp_path: Path):
    handler = make_handler(topology_for(tmp_path, dlq=True, size=2))
    sizes = batches_of(handler)
    assert handler(kinesis_lambda_event([{"n": 1}, {"n": 2}, {"n": 3}]), Context(60_000)) == {
        "batchItemFailures": []
    }
    assert handler(kinesis_lambda_event([{"n": 4}] * 3, start=10), object()) == {
        "batchItemFailures": []
    }
    assert sizes == [2, 1, 2, 1]


def test_a_failed_record_before_the_stop_is_what_is_reported(tmp_path: Path):
    handler = make_handler(topology_for(tmp_path, dlq=False, size=2))
    event = kinesis_lambda_event([{"n": 1}, {"n": 2, "fail": "bad"}, {"n": 3}])
    assert handler(event, Context(0)) == {
        "batchItemFailures": [{"itemIdentifier": seqs_of(event)[1]}]
    }


def test_the_margin_is_a_setting_and_says_how_much_time_is_kept(tmp_path: Path):
    path = topology_for(tmp_path, dlq=True, size=2)
    path.write_text(
        path.read_text().replace(
            "lambda_batch_size: 2", "lambda_batch_size: 2, lambda_deadline_margin: 30"
        )
    )
    handler = make_handler(path)
    event = kinesis_lambda_event([{"n": i} for i in range(1, 6)])
    # 20 s left: enough with the default margin (1 s), not with 30 s
    assert handler(event, Context(20_000)) == {
        "batchItemFailures": [{"itemIdentifier": seqs_of(event)[2]}]
    }


@pytest.mark.parametrize("margin", ["-1", "901", "nan", "soon"])
def test_a_margin_out_of_range_is_a_topology_error(margin: str):
    text = f"name: t\nspout: {{type: stdin}}\nsinks: [{{id: out, type: stdout}}]\nsettings: {{lambda_deadline_margin: {margin}}}\n"
    with pytest.raises(SquallError, match="lambda_deadline_margin"):
        load_text(text)


def test_the_stop_is_logged_and_counted_in_the_invocations_emf_document(
    tmp_path: Path, caplog, capsys
):
    handler = make_handler(topology_for(tmp_path, dlq=True, size=2))
    event = kinesis_lambda_event([{"n": i} for i in range(1, 6)])
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="squall.lambda"):
        handler(event, Context(0))
        handler(kinesis_lambda_event([{"n": 9}], start=100), Context(0))
    [stopped, whole] = emf_top_documents(capsys.readouterr().out)
    assert stopped["DeadlineStops"] == [1.0] and "DeadlineStops" not in whole
    [line] = [r.getMessage() for r in caplog.records if "deadline" in r.getMessage()]
    assert line.startswith("invocation stopped before its deadline: 3 records not started")
    assert "only one slice fits in the function's timeout: lower settings.lambda_batch_size" in line


def test_a_stop_after_messages_that_ran_no_batch_is_counted_in_its_own_invocation(capsys):
    """An SQS batch of S3 notifications whose first message names only objects outside the
    spout's scope runs no engine batch, then may stop: its EMF flush printed nothing and the
    stop was counted in the next invocation's document, one that did not stop."""
    from squall.observability.metrics import BatchSample
    from squall.observability.runners import lambda_observer

    observer = lambda_observer("s3-reader")
    capsys.readouterr()
    observer.deadline_stop()  # the stopped invocation: no batch recorded
    observer.flush()
    [stopped] = emf_top_documents(capsys.readouterr().out)
    assert stopped["DeadlineStops"] == [1.0] and stopped["Topology"] == "s3-reader"
    observer.emf.record(BatchSample("s3-reader", batch_id=1, records=1, seconds=0.01, status="ok"))
    observer.flush()  # the next invocation, which did not stop
    [whole] = emf_top_documents(capsys.readouterr().out)
    assert "DeadlineStops" not in whole


SQS_TOPOLOGY = """
name: sqs-deadline
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: faulty, type: 'squall.testing:FaultyBolt'}}
sinks:
  - {{id: out, type: 'squall.testing:FaultySink', name: {store}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {store}-dlq}}
settings: {{retry: {{attempts: 2, initial_backoff: 0}}, lambda_batch_size: 2}}
"""


def sqs_handler(tmp_path: Path):
    store = unique("ldeadline")
    path = tmp_path / "sqs.yaml"
    path.write_text(SQS_TOPOLOGY.format(store=store))
    return make_handler(path), store


def test_an_sqs_invocation_runs_in_slices_and_stops_before_its_deadline(tmp_path: Path):
    handler, store = sqs_handler(tmp_path)
    sizes = batches_of(handler)
    ids = [f"m{i}" for i in range(7)]
    event = sqs_lambda_event([(m, {"n": i}, None) for i, m in enumerate(ids)])
    answer = handler(event, Context(10_000, 500))
    assert answer == {"batchItemFailures": [{"itemIdentifier": m} for m in ids[4:]]}
    assert sizes == [2, 2] and [ev.value["n"] for ev in MemorySink.stores[store]] == [0, 1, 2, 3]


def test_an_sqs_stop_names_failed_messages_of_earlier_slices_too(tmp_path: Path):
    handler, _ = sqs_handler(tmp_path)
    event = sqs_lambda_event(
        [("a", {"n": 0, "sink_fail": True}, None), ("b", {"n": 1}, None), ("c", {"n": 2}, None)]
    )
    assert handler(event, Context(0)) == {
        "batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "c"}]
    }


def test_sqs_slices_keep_a_fifo_group_waiting_after_its_failure(tmp_path: Path):
    handler, store = sqs_handler(tmp_path)
    event = sqs_lambda_event(
        [
            ("a1", {"n": 1, "sink_fail": True}, "g1"),
            ("b1", {"n": 2}, "g2"),
            ("a2", {"n": 3}, "g1"),  # next slice: not run, the group waits for a1
            ("b2", {"n": 4}, "g2"),
            ("a3", {"n": 5}, "g1"),
        ],
        queue="orders.fifo",
    )
    assert handler(event, Context(60_000)) == {
        "batchItemFailures": [{"itemIdentifier": m} for m in ("a1", "a2", "a3")]
    }
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [2, 4]


def test_an_sqs_slice_whose_dependency_stays_down_names_it_and_the_rest_not_the_slices_before(
    tmp_path: Path,
):
    handler, store = sqs_handler(tmp_path)
    [faulty] = [c for c in handler.engine.components if c.id == "faulty"]
    process = handler.engine.process

    def down_after_the_first_slice(records):
        result = process(records)
        faulty.config = faulty.config.model_copy(update={"transient_failures": 5})
        return result

    handler.engine.process = down_after_the_first_slice
    event = sqs_lambda_event([(f"m{i}", {"n": i}, None) for i in range(5)])
    assert handler(event, None) == {
        "batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(2, 5)]
    }
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [0, 1]


def test_a_slice_starts_only_while_twice_the_longest_slice_and_the_margin_fit():
    now = [0.0]
    left = [0.0]
    d = Deadline(lambda: left[0], 1.0, clock=lambda: now[0])
    assert d.next_slice()  # the first: always, and nothing asked
    now[0] += 2.0  # the first slice took 2 s
    left[0] = (SAFETY_FACTOR * 2.0 + 1.0) * 1000  # exactly what the next needs
    assert d.next_slice()
    now[0] += 0.5  # a shorter slice: the longest (2 s) still counts
    left[0] -= 1
    assert not d.next_slice() and d.stopped and d.longest == 2.0 and d.left_ms == left[0]


def test_no_remaining_time_no_stop():
    d = Deadline.of(None, 1.0)
    assert all(d.next_slice() for _ in range(3)) and not d.stopped


def test_a_stand_in_context_whose_remaining_time_is_not_a_number_sets_no_deadline(
    tmp_path: Path,
):
    """Handlers are often tested with ``MagicMock()`` as the context: it answers a mock."""
    from unittest.mock import MagicMock

    handler = make_handler(topology_for(tmp_path, dlq=True, size=2))
    event = kinesis_lambda_event([{"n": i} for i in range(1, 6)])
    assert handler(event, MagicMock()) == {"batchItemFailures": []}
    assert rows(tmp_path) == [1, 2, 3, 4, 5]


def test_a_context_whose_remaining_time_raises_sets_no_deadline(tmp_path: Path, caplog):
    """A stand-in context whose ``get_remaining_time_in_millis`` raises: no deadline, as for one
    that answers no number. Its error surfaced inside the http sink's request (the time check)
    and failed every record as the record's own fault — dead-lettered with a DLQ, and the same
    again on every delivery."""
    from tests.sinks.local_http import LocalHttp

    class Broken:
        function_name = "consumer"

        def get_remaining_time_in_millis(self) -> float:
            raise RuntimeError("no clock here")

    with LocalHttp(lambda req: (200, {}, "")) as srv:
        path = tmp_path / "hook.yaml"
        path.write_text(
            f"""
name: hook
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: hook, type: http, url: "{srv.url}/events", concurrency: 1}}]
"""
        )
        handler = make_handler(path)
        event = kinesis_lambda_event([{"n": 1}, {"n": 2}, {"n": 3}])
        with caplog.at_level(logging.WARNING, logger="squall.lambda"):
            assert handler(event, Broken()) == {"batchItemFailures": []}
        assert sorted(json.loads(r.body)["n"] for r in srv.requests) == [1, 2, 3]
    assert "remaining time cannot be read (RuntimeError: no clock here)" in caplog.text


@pytest.mark.e2e
def test_awslambdaric_with_a_deadline_nearly_spent_answers_what_was_not_started(tmp_path: Path):
    """AWS's runtime client hands the handler a context from ``Lambda-Runtime-Deadline-Ms``: 50 ms
    left, so after its first slice the handler stops and answers the third record."""
    from tests.lambda_runtime import LambdaFunction

    topology_for(tmp_path, dlq=True, size=2)
    (tmp_path / "consumer_app.py").write_text(
        "from squall.deploy.lambda_consumer import make_handler\n"
        "handler = make_handler('topology.yaml')\n"
    )
    consumer = LambdaFunction("consumer_app.handler", tmp_path)
    try:
        event = kinesis_lambda_event([{"n": i} for i in range(1, 6)])
        payload, is_error = consumer.api.invoke(event, deadline_ms=int(time.time() * 1000) + 50)
        assert not is_error, payload
        assert payload == {"batchItemFailures": [{"itemIdentifier": seqs_of(event)[2]}]}
        # with the whole timeout ahead, the retry runs the rest
        retry = {"Records": event["Records"][2:]}
        assert consumer.invoke(retry) == {"batchItemFailures": []}
    finally:
        consumer.stop()
    assert "invocation stopped before its deadline: 3 records not started" in consumer.log()
    db = sqlite3.connect(tmp_path / "w.db")
    assert [n for (n,) in db.execute("select n from events order by n")] == [1, 2, 3, 4, 5]


def test_a_dependency_down_is_not_retried_past_the_deadline(tmp_path: Path, caplog):
    """A dependency down inside a slice was retried whatever the time left: Lambda then killed
    the invocation, and the whole batch — its committed slices too — came again. A retry whose
    backoff would outlast the time left (less the margin) is not made: the slice fails at once
    and the answer names its first record; with time enough the retry is made, as before."""
    handler = make_handler(topology_for(tmp_path, dlq=True, size=2))
    [chaos] = [c for c in handler.engine.components if c.id == "chaos"]
    chaos.config = chaos.config.model_copy(update={"transient_failures": 1})
    event = kinesis_lambda_event([{"n": 1}, {"n": 2}])
    with caplog.at_level(logging.WARNING, logger="squall.engine"):
        answer = handler(event, Context(500))  # 0.5 s left, 1 s of margin: no retry
    assert answer == {"batchItemFailures": [{"itemIdentifier": seqs_of(event)[0]}]}
    assert chaos.calls == 1 and rows(tmp_path) == []
    assert "not retried: -0.50s left" in caplog.text
    chaos.calls = 0  # the dependency fails once more: with a minute left, it is retried
    assert handler(event, Context(60_000)) == {"batchItemFailures": []}
    assert chaos.calls == 2 and rows(tmp_path) == [1, 2]


@pytest.mark.parametrize(("remaining_ms", "retried"), [(11_000, False), (900_000, True)])
def test_a_sinks_own_retry_is_not_made_past_the_deadline(tmp_path: Path, remaining_ms, retried):
    """The consumer's time left reaches a sink's own retries (``WriteContext.time_left``): the
    webhook answers record 2's first request 503 with ``Retry-After: 30``; with 10 s left past the
    margin the request is not made again and the answer names record 2 for Lambda's retry (the
    http sink retried regardless: Lambda killed the function, and the whole batch came again);
    with time enough it is retried and written."""
    from tests.sinks.local_http import LocalHttp

    tries: dict[int, int] = {}

    def answer(req):
        n = json.loads(req.body)["n"]
        tries[n] = tries.get(n, 0) + 1
        return (503, {"Retry-After": "30"}, "busy") if n == 2 and tries[n] == 1 else (200, {}, "")

    with LocalHttp(answer) as srv:
        path = tmp_path / "hook.yaml"
        path.write_text(
            f"""
name: hook
spout: {{type: stdin}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: hook, type: http, url: "{srv.url}/events", concurrency: 1}}]
"""
        )
        handler = make_handler(path)
        [hook] = [c for c in handler.engine.components if c.id == "hook"]
        slept: list[float] = []
        hook.sleep = slept.append
        event = kinesis_lambda_event([{"n": 1}, {"n": 2}, {"n": 3}])
        answer_ = handler(event, Context(remaining_ms))
    if retried:
        assert answer_ == {"batchItemFailures": []} and slept == [30.0]
        assert tries == {1: 1, 2: 2, 3: 1}
    else:
        assert answer_ == {"batchItemFailures": [{"itemIdentifier": seqs_of(event)[1]}]}
        assert slept == [] and tries == {1: 1, 2: 1, 3: 1}
