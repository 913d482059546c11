"""A release outside a batch (``Engine.tick`` on an idle source, ``Engine.release`` at the end of a
run or of a KCL shard, ``save_positions``) that retries a sink that is down shows while it
retries, as a batch does: ``squall_retries_total`` counts each retry as it is decided (and once),
``squall_retrying_since_timestamp_seconds`` is set, and 0 again once the release succeeded.

Found in review: the engine's ``on_retry`` hook was set only inside ``Recorder.batch``; a rolling
sink's flush retrying a warehouse that is down at the end of a run counted nothing and set no
gauge until the release gave up or ended. And a Ctrl-C (a ``BaseException``) in a batch's backoff
left the hook set after the batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from squall.deploy.local import EXIT_OK, LocalRunner
from squall.errors import TransientError
from squall.observability.metrics import Recorder
from squall.observability.prometheus import PrometheusBackend
from squall.testing import FaultyBolt, memory_stores
from squall.topology.loader import load_text
from tests.topology.test_holding import RollingSink

#: The backend the sink reads while its release is retried (set by the test).
_backend: list[PrometheusBackend] = []
#: (retries counted, retrying since) as the sink's release saw them on each attempt.
_seen: list[tuple[float, float]] = []


def _value(name: str, **labels: str) -> float:
    got = _backend[0].registry.get_sample_value(name, {"topology": "rel", **labels})
    return got or 0.0


def _since() -> float:
    """``squall_retrying_since_timestamp_seconds`` of whichever shard (a run's "", a KCL shard's)."""
    return max(
        (
            sample.value
            for metric in _backend[0].registry.collect()
            for sample in metric.samples
            if sample.name == "squall_retrying_since_timestamp_seconds"
        ),
        default=0.0,
    )


class WatchedRollingSink(RollingSink):
    """``RollingSink`` (``fail_release``: its release fails that many times, ``TransientError``)
    noting on each release attempt what the metrics say then."""

    def release(self) -> None:
        _seen.append(
            (
                _value("squall_retries_total", component=self.id),
                _since(),
            )
        )
        super().release()


def test_the_end_of_run_release_retrying_a_sink_shows_while_it_retries(tmp_path: Path):
    yaml_text = f"""
name: rel
spout: {{type: 'squall.testing:ListSpout', records: [{{n: 1}}, {{n: 2}}]}}
settings: {{retry: {{attempts: 5, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: '{__name__}:WatchedRollingSink', roll_events: 1000, fail_release: 2}}
"""
    _backend[:] = [PrometheusBackend(CollectorRegistry())]
    _seen.clear()
    with memory_stores({}) as stores:
        runner = LocalRunner(
            load_text(yaml_text, base_dir=tmp_path), recorder=Recorder("rel", [_backend[0]])
        )
        assert runner.run().exit_code == EXIT_OK
        assert [ev.value["n"] for ev in stores["lake"]] == [1, 2]
    # the 2nd and 3rd attempts ran after one and two retries: each counted and the batch's
    # retrying time set before its backoff (before: (0, 0) until the release ended)
    assert [n for n, _ in _seen] == [0, 1, 2]
    assert _seen[0][1] == 0 and _seen[1][1] > 0 and _seen[2][1] == _seen[1][1]
    # the release's sample carried the same 2 retries: not counted again; retrying is over
    assert _value("squall_retries_total", component="lake") == 2
    assert _value("squall_retry_reasons_total", component="lake", reason="TransientError") == 2
    assert _value("squall_retrying_since_timestamp_seconds", shard="") == 0


class _Engine:
    """What ``Recorder`` needs of an engine for the hook alone (its ``on_retry`` attribute)."""

    on_retry = None


def test_a_ctrl_c_in_a_batch_leaves_no_hook_set_after_it():
    engine = _Engine()
    recorder = Recorder("rel", [])
    with pytest.raises(KeyboardInterrupt):
        with recorder.batch(engine, []):
            assert engine.on_retry == recorder.retry
            raise KeyboardInterrupt  # in the backoff's sleep
    assert engine.on_retry is None  # before: recorder.retry, told of retries outside any batch


def test_a_release_that_retried_and_succeeded_without_a_sample_clears_the_retrying_time():
    """A tick that retried a sink and then released no checkpoint sends no sample: the backend
    is told the retrying is over (``record_settled``), else the gauge stays set for ever and
    ``SquallRetrying`` fires on an idle stream."""
    backend = PrometheusBackend(CollectorRegistry())
    engine = _Engine()
    recorder = Recorder("rel", [backend], clock=lambda: 100.0)
    labels = {"topology": "rel", "shard": "s1"}
    with recorder.retries(engine, shard="s1"):
        engine.on_retry("lake", "sink", ConnectionError("down"))
        assert (
            backend.registry.get_sample_value("squall_retrying_since_timestamp_seconds", labels)
            == 100
        )
    assert engine.on_retry is None
    assert backend.registry.get_sample_value("squall_retrying_since_timestamp_seconds", labels) == 0
    # a release that failed leaves it set: the runner retries it (the KCL), still retrying
    with pytest.raises(RuntimeError), recorder.retries(engine, shard="s1"):
        engine.on_retry("lake", "sink", ConnectionError("down"))
        raise RuntimeError("the sink stayed down")
    assert (
        backend.registry.get_sample_value("squall_retrying_since_timestamp_seconds", labels) == 100
    )


def test_a_retry_hook_that_fails_never_fails_the_batch(tmp_path: Path):
    """``Engine.on_retry`` is a runner's (a metrics backend behind it): when it raises, the retry
    goes on. Before, its exception left the engine's retry loop from inside its ``except``: the
    sink's release failed with the hook's error instead of being retried."""
    from squall.testing import records_from
    from tests.topology.test_holding import engine_with_checkpoints, lake, topology

    engine, store, resources = engine_with_checkpoints(
        topology(f"sqlite:///{tmp_path / 'cp.db'}", roll_events=1, fail_release=1), hold=True
    )
    told: list[str] = []

    def broken(component: str, kind: str, error: BaseException) -> None:
        told.append(component)
        raise RuntimeError("metrics backend down")

    engine.on_retry = broken
    with memory_stores({}), engine:
        result = engine.process(records_from([{"n": 1}], start=1))
        assert told == ["lake"]  # the release was retried once, the hook told
        assert result.ok and result.checkpoint  # released on the retry, checkpointed
        assert len(lake(engine).durable) == 1
    resources.close()


def test_a_kcl_shards_release_retrying_a_sink_shows_while_it_retries():
    """The KCL processor's idle release (``Engine.tick`` when the sink is due) retried by the
    engine: counted and the shard's retrying time set before each backoff, 0 once released."""
    from squall.deploy.kcl import RecordProcessor
    from squall.topology.executor import Engine
    from tests.factories import KclCheckpointer, kcl_initialize, kcl_process_records

    yaml_text = f"""
name: rel
spout: {{type: stdin}}
settings: {{retry: {{attempts: 5, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: '{__name__}:WatchedRollingSink', roll_events: 1000}}
"""
    _backend[:] = [PrometheusBackend(CollectorRegistry())]
    _seen.clear()
    with memory_stores({}):
        engine = Engine(load_text(yaml_text).plan, hold=True, sleep=lambda s: None)
        p = RecordProcessor(engine, stream="s")
        p.metrics = Recorder("rel", [_backend[0]])
        kcl_initialize().dispatch(None, p)
        lake = next(c for c in engine.components if c.id == "lake")
        cp = KclCheckpointer()
        kcl_process_records([{"n": 1}]).dispatch(cp, p)  # held
        lake.config = lake.config.model_copy(update={"roll_events": 1})
        lake.failures_left = 2
        kcl_process_records([]).dispatch(cp, p)  # idle, due: released after two retries
    assert cp.calls == [("100", 0)]
    assert [n for n, _ in _seen] == [0, 1, 2]  # before: [0, 0, 0]
    assert _seen[0][1] == 0 and _seen[1][1] > 0 and _seen[2][1] == _seen[1][1]
    assert _value("squall_retries_total", component="lake") == 2  # once each
    assert _since() == 0


class FlakyFlushBolt(FaultyBolt):
    """Its end-of-input flush fails twice (``TransientError``), noting the metrics each time."""

    flushes = 0

    def flush(self, end, final: bool = True):
        _seen.append((_value("squall_retries_total", component=self.id), _since()))
        FlakyFlushBolt.flushes += 1
        if FlakyFlushBolt.flushes <= 2:
            raise TransientError("window store: injected outage")
        return None


def test_the_end_of_input_flush_retrying_shows_while_it_retries(tmp_path: Path):
    """``squall run`` on a finite input flushes the bolts after the last batch (``Engine.finish``):
    its retries show live too, and the retrying time is 0 again once it succeeded."""
    yaml_text = f"""
name: rel
spout: {{type: file, path: {tmp_path / "in.jsonl"}}}
settings: {{retry: {{attempts: 5, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: win, type: '{__name__}:FlakyFlushBolt'}}
sinks:
  - {{id: rows, type: 'squall.testing:MemorySink'}}
"""
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n')
    _backend[:] = [PrometheusBackend(CollectorRegistry())]
    _seen.clear()
    FlakyFlushBolt.flushes = 0
    with memory_stores({}):
        runner = LocalRunner(
            load_text(yaml_text, base_dir=tmp_path), recorder=Recorder("rel", [_backend[0]])
        )
        assert runner.run().exit_code == EXIT_OK
    assert [n for n, _ in _seen] == [0, 1, 2]  # before: [0, 0, 0]
    assert _seen[0][1] == 0 and _seen[1][1] > 0 and _seen[2][1] == _seen[1][1]
    assert _value("squall_retries_total", component="win") == 2
    assert _since() == 0
