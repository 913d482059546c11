"""The fixes of the second reviews, reviewed again: what they refused that worked, and what they
left (resource URLs, the engine's sinks, the dead-letter file's distrusted ranges)."""

from __future__ import annotations

import json
import uuid

import pytest

from squall import redact
from squall.bolts.base import Output
from squall.errors import TopologyError, TransientError
from squall.event import Event, Failure
from squall.sinks.base import Prepared, WriteContext, WriteResult
from squall.testing import MemorySink, MemorySinkConfig, records_from, run_topology
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from squall.topology.resources import Resources
from tests.topology.test_review_hold import FeedbackCounter


@pytest.fixture(autouse=True)
def _forget_remembered_values(monkeypatch):
    """Values resolved here are masked process-wide (``redact.remember``): forgotten after each test."""
    monkeypatch.setattr(redact, "_known", redact._known)


# --- a resource URL from a variable kept with its trailing newline ---------------------------

RESOURCE = """
name: nl
resources:
  cache: {url: "${CACHE_URL}"}
spout: {type: stdin}
bolts: [{id: decode, type: json}]
sinks: [{id: out, type: stdout}]
"""


def test_a_redis_url_with_a_trailing_newline_connects_as_it_did_before_the_load_refused_it(
    redis_url,
):
    """redis-py reads a URL through ``urllib``, which removes tabs and line breaks: a Redis URL
    kept in a variable with its trailing newline connected to its database. The load's refusal of
    control characters in URLs (right for SQL URLs: database "x\\n", SQLite file "w.db\\n")
    stopped such a deployment at its upgrade; the URL is kept as the driver reads it."""
    topology = load_text(RESOURCE, file="t.yaml", env={"CACHE_URL": redis_url + "\n"})
    assert topology.resources["cache"].url == redis_url
    resources = Resources(topology.resources)
    try:
        client = resources.redis("cache")
        assert client.ping()
        assert (
            str(client.connection_pool.connection_kwargs.get("db", 0))
            == redis_url.rsplit("/", 1)[1]
        )
    finally:
        resources.close()


def test_a_sql_url_with_a_trailing_newline_is_still_a_located_error(tmp_path):
    """A SQLite URL with its newline named another file (``w.db\\n``): still refused at load."""
    with pytest.raises(TopologyError) as err:
        load_text(RESOURCE, file="t.yaml", env={"CACHE_URL": f"sqlite:///{tmp_path}/w.db\n"})
    [problem] = err.value.problems
    assert (problem.line, problem.path) == (4, "resources.cache.url")
    assert "line break or another control character" in problem.message


# --- a sink in the batch's SQL transaction, prepared again after a refusal ------------------


class RefusingTxConfig(MemorySinkConfig):
    resource: str


class RefusingTx(MemorySink):
    """A user's sink written in the batch's SQL transaction: ``write_batch`` refuses for good an
    event with ``"refuse": true``; ``prepare`` leaves out (neither to write nor rejected) an event
    with ``"skip": true`` it has prepared before (a bug: an in-memory de-duplication across
    calls) — so only the engine's second ``prepare``, after the refusal, loses it."""

    Config = RefusingTxConfig
    seen: set[str] = set()

    def transaction_resource(self) -> str | None:
        return self.config.resource

    def prepare(self, events: list[Event]) -> Prepared:
        kept = [ev for ev in events if not (ev.value.get("skip") and ev.event_id in self.seen)]
        self.seen.update(ev.event_id for ev in events)
        return Prepared(kept)

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        assert ctx.connection is not None  # in the batch's transaction
        refused = [ev for ev in prepared.events if ev.value.get("refuse")]
        for ev in refused:
            ev.failure = Failure(self.id, "refused")
        if refused:
            return WriteResult(rejected=refused)
        self.store.extend(prepared.events)
        return None


def test_a_record_a_transaction_sinks_second_prepare_loses_is_dead_lettered(tmp_path):
    """A sink in the transaction refused an event at write time: the engine rolled back,
    dead-lettered it and prepared the rest again — and took no reject (nor, since the sinks'
    prepare losses are dead-lettered, no lost record) of that prepare: the record had no outcome
    ("engine: no outcome") and failed on every delivery, its shard held behind it."""
    tag = f"t{uuid.uuid4().hex[:8]}"
    text = f"""
name: tx
resources:
  db: {{url: "sqlite:///{tmp_path}/tx.db"}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts: [{{id: decode, type: json}}]
sinks:
  - {{id: out, type: '{__name__}:RefusingTx', name: {tag}-out, resource: db}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {tag}-dlq}}
"""
    payloads = [{"i": 0}, {"i": 1, "refuse": True}, {"i": 2, "skip": True}, {"i": 3}]
    try:
        run = run_topology(text, records_from(payloads), batch_size=4)
        [result] = run.results
        assert [o.outcome for o in result.records] == [
            Outcome.COMMITTED,
            Outcome.DEAD_LETTERED,
            Outcome.DEAD_LETTERED,
            Outcome.COMMITTED,
        ]
        assert result.records[2].reason == (
            "no outcome: sink 'out' prepared it neither to write nor to reject"
        )
        assert sorted(ev.value["i"] for ev in MemorySink.stores[f"{tag}-dlq"]) == [1, 2]
        assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [0, 3]
        assert result.checkpoint["shardId-000000000000"].sequence_number == "4"
        out = next(s for s in run.engine.stats if s.id == "out")
        assert (out.received, out.emitted, out.dead_lettered) == (4, 2, 2)
    finally:
        for suffix in ("out", "dlq"):
            MemorySink.stores.pop(f"{tag}-{suffix}", None)


# --- feedback to a stateful bolt that empties its list before a transient error -------------


class EmptyingCounter(FeedbackCounter):
    """As ``FeedbackCounter``, but it empties the list it is given as it reads it (``pop``), and
    its first call with feedback meets a dependency outage (``TransientError``) after that."""

    outages = 1

    def process(self, batch: list[Event]) -> Output:
        kept = []
        while batch:
            kept.append(batch.pop(0))
        if EmptyingCounter.outages and any(ev.value.get("event_type") for ev in kept):
            EmptyingCounter.outages -= 1
            raise TransientError("state store: connection reset")
        return super().process(kept)


def test_feedback_retried_after_an_outage_reaches_a_bolt_that_emptied_its_list():
    """hX's fix gave a bolt's retries a copy of its batch (a bolt may empty its list before it
    raises); a sink's feedback to a stateful bolt was still retried with the list the bolt had
    emptied: the retry staged nothing, and the unsubscribes of dead tokens were lost, unsaid."""
    FeedbackCounter.committed = []
    EmptyingCounter.outages = 1
    spec = {
        "name": "fb",
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [
            {"id": "decode", "type": "json"},
            {"id": "counter", "type": f"{__name__}:EmptyingCounter"},
        ],
        "sinks": [
            {"id": "push", "type": "tests.topology.test_review_hold:PickyPush"},
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink"},
        ],
    }
    engine = Engine(load_text(json.dumps(spec)).plan, sleep=lambda s: None)
    with engine:
        result = engine.process(records_from([{"token": "dead-1"}, {"token": "alive"}]))
    assert result.ok
    assert EmptyingCounter.outages == 0  # the outage happened, and was retried
    assert FeedbackCounter.committed == ["dead-1"]  # was: []


# --- a sink's prepare that empties its list before a transient error ------------------------


class EmptyingPrepare(MemorySink):
    """A user's sink whose ``prepare`` empties the list it is given as it reads it (``pop``);
    its first ``prepare`` meets a dependency outage (``TransientError``) after that."""

    outages = 1

    def prepare(self, events: list[Event]) -> Prepared:
        kept = []
        while events:
            kept.append(events.pop(0))
        if EmptyingPrepare.outages:
            EmptyingPrepare.outages -= 1
            raise TransientError("schema registry: connection reset")
        return Prepared(kept)


def test_a_sinks_prepare_retried_after_an_outage_gets_the_events_it_emptied_its_list_of():
    """As a bolt's retry (hX): a sink's ``prepare`` retried after a transient error was called
    with the list it had emptied — it prepared nothing, and every record of the batch had no
    outcome ("engine: no outcome"), failing on every delivery."""
    EmptyingPrepare.outages = 1
    tag = f"p{uuid.uuid4().hex[:8]}"
    spec = {
        "name": "prep",
        "spout": {"type": "squall.testing:ListSpout"},
        "bolts": [{"id": "decode", "type": "json"}],
        "sinks": [
            {"id": "out", "type": f"{__name__}:EmptyingPrepare", "name": f"{tag}-out"},
            {"id": "dlq", "type": "squall.testing:MemoryDeadLetterSink", "name": f"{tag}-dlq"},
        ],
    }
    try:
        run = run_topology(json.dumps(spec), records_from([{"i": i} for i in range(3)]))
        [result] = run.results
        assert EmptyingPrepare.outages == 0  # the outage happened, and was retried
        assert [o.outcome for o in result.records] == [Outcome.COMMITTED] * 3
        assert [ev.value["i"] for ev in MemorySink.stores[f"{tag}-out"]] == [0, 1, 2]
    finally:
        for suffix in ("out", "dlq"):
            MemorySink.stores.pop(f"{tag}-{suffix}", None)
