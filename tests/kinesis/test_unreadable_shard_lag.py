"""A shard the poller cannot read (every GetRecords throttled) is lagging, not caught up.

``squall run``'s poller backs a throttled shard off without end (throttling is normal when
consumers share a shard), and the shard's lag stayed its last GetRecords answer — 0 once it had
caught up. So nothing showed a shard that could not be read for an hour: its
``squall_millis_behind_latest`` read 0 (``SquallLagHigh``), the other shards' records went on
(``SquallStalled``) and the idle polls moved the heartbeat (``SquallHung``), while its records
drew near the stream's retention. Its lag now adds the time since its last answer.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from squall.observability.metrics import Recorder
from squall.observability.prometheus import PrometheusBackend
from squall.topology.checkpoint import MemoryCheckpointStore
from tests.kinesis.kinesis_helpers import FakeClock, make_spout, put_plain


def test_a_throttled_shard_lags_by_the_time_since_its_last_answer(
    kinesis, kinesis_mock, make_stream
):
    stream = make_stream(1)
    put_plain(kinesis, stream, [{"pk": "a", "n": n} for n in range(5)])
    clock = FakeClock()
    spout = make_spout(
        kinesis_mock.endpoint, stream, store=MemoryCheckpointStore(), clock=clock, idle_exit=None
    )
    spout.idle_batches = True
    batches = spout.read(10)
    first = next(batches)
    assert len(first) == 5
    while next(batches):  # up to the tip: an answer with no record
        pass
    (shard,) = spout.lag()
    assert spout.lag() == {shard: 0}
    answered = clock.t

    throttled = [True]

    def throttle(**kwargs):
        if not throttled[0]:
            return None

        class Http:
            status_code = 400

        code = "ProvisionedThroughputExceededException"
        return Http(), {"Error": {"Code": code, "Message": "Rate exceeded for shard"}}

    spout.client.meta.events.register("before-call.kinesis.GetRecords", throttle)
    backend = PrometheusBackend(CollectorRegistry(), topology="test-app")
    recorder = Recorder("test-app", [backend])
    while clock.t < answered + 180:  # three minutes of throttled calls, the runner's idle polls
        assert next(batches) == []
        recorder.idle(spout.lag())
    behind = spout.lag()[shard]
    assert 180_000 <= behind <= round((clock.t - answered) * 1000)
    value = backend.registry.get_sample_value(
        "squall_millis_behind_latest", {"topology": "test-app", "shard": shard}
    )
    assert value == behind  # what SquallLagHigh reads (over 60 s: it fires)
    assert spout.stats.throttled > 10

    throttled[0] = False  # answered again: its own answer, 0 at the tip
    while next(batches) == [] and spout.lag()[shard] != 0:
        pass
    assert spout.lag() == {shard: 0}
    batches.close()
