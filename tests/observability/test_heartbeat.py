"""A consumer that hangs is seen: ``squall_last_progress_timestamp_seconds`` and ``SquallHung``.

A shard processor that hung after catching up (a sink call that never returns, a deadlock) raised
no alert: ``squall_millis_behind_latest`` and the iterator age move only when a batch runs, so
their last value (often 0) stayed exported, ``SquallStalled`` (lag > 0) never fired and the
failed-batch alerts saw nothing. The heartbeat is the UNIX time of the last batch end or idle
poll, per run (``squall run``) and per shard (the KCL); ``SquallHung`` fires when one is older
than ``--heartbeat-s``. The time is the recorder's clock, driven here by the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from squall.deploy.kcl import RecordProcessor
from squall.deploy.local import LocalRunner
from squall.observability.dashboards import Thresholds, prometheus_rules
from squall.observability.metrics import Recorder
from squall.observability.prometheus import PrometheusBackend, _LiveOnly
from squall.testing import records_from
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.deploy.test_kcl_processor import TOPOLOGY as KCL_TOPOLOGY
from tests.factories import KclCheckpointer, kcl_initialize, kcl_message, kcl_process_records
from tests.observability import hanging
from tests.observability.promtool import promtool_test
from tests.observability.test_alert_series import needs_promtool

HEARTBEAT = "squall_last_progress_timestamp_seconds"
SHARD_A, SHARD_B = "shardId-000000000001", "shardId-000000000002"
ROOT = Path(__file__).resolve().parents[2]


def heartbeat(registry: CollectorRegistry, topology: str, shard: str = "") -> float | None:
    return registry.get_sample_value(HEARTBEAT, {"topology": topology, "shard": shard})


def test_squall_runs_heartbeat_moves_with_each_batch_and_each_idle_poll(tmp_path: Path):
    """A source with no idle batches of its own (no lag, no rolling sink) is asked for them once
    the recorder keeps a heartbeat: an idle stream is not a stuck one."""
    backend = PrometheusBackend(CollectorRegistry(), topology="ticking")
    recorder = Recorder("ticking", [backend], clock=lambda: hanging.CLOCK[0])
    hanging.CLOCK[0] = 1_000.0
    recorder.idle()  # as ``local_recorder`` does when it serves metrics: the run starts
    assert heartbeat(backend.registry, "ticking") == 1_000.0
    hanging.SEEN.clear()
    hanging.PROBE[:] = [lambda: heartbeat(backend.registry, "ticking")]
    topo = load_text(
        """
name: ticking
spout: {type: 'tests.observability.hanging:TickingSpout', records: [{n: 1}, {n: 2}]}
bolts: [{id: decode, type: json}]
sinks: [{id: rows, type: 'squall.testing:MemorySink'}]
""",
        base_dir=tmp_path,
    )
    report = LocalRunner(topo, recorder=recorder).run()
    assert report.exit_code == 0 and report.batches == 2
    assert hanging.SEEN == [1_010.0, 1_020.0, 1_030.0, 1_040.0]  # batch, idle, idle, batch


def _kcl_processor(tmp_path: Path, now: list[float]) -> tuple[RecordProcessor, PrometheusBackend]:
    topo = load_text(KCL_TOPOLOGY.format(db=tmp_path / "w.db", transient=0, dlq=""))
    p = RecordProcessor(Engine(topo.plan), stream="s", sleep=lambda s: None)
    backend = PrometheusBackend(CollectorRegistry(), topology=topo.name)
    p.metrics.backends.append(backend)  # the multiprocess one, in this process's registry
    p.metrics.clock = lambda: now[0]
    return p, backend


def test_a_kcl_shards_heartbeat_starts_with_it_and_moves_on_idle_polls_and_batches(
    tmp_path: Path,
):
    now = [5_000.0]
    p, backend = _kcl_processor(tmp_path, now)
    name = p.engine.topology.name
    kcl_initialize(SHARD_A).dispatch(None, p)
    assert heartbeat(backend.registry, name, SHARD_A) == 5_000.0
    now[0] = 5_001.0  # callProcessRecordsEvenForEmptyRecordList: the idle shard is called
    idle = {"action": "processRecords", "millisBehindLatest": 0, "records": []}
    kcl_message(idle).dispatch(KclCheckpointer(), p)
    assert heartbeat(backend.registry, name, SHARD_A) == 5_001.0
    now[0] = 5_002.0
    kcl_process_records([{"n": 1}]).dispatch(KclCheckpointer(), p)
    assert heartbeat(backend.registry, name, SHARD_A) == 5_002.0
    assert heartbeat(backend.registry, name) is None  # per shard: no series without one


CHILD = """
import sys
from squall.deploy.kcl import RecordProcessor
from squall.topology.executor import Engine
from squall.topology.loader import load_text
from tests.deploy.test_kcl_processor import TOPOLOGY
from tests.factories import KclCheckpointer, kcl_initialize, kcl_message

db, shard = sys.argv[1], sys.argv[2]
p = RecordProcessor(Engine(load_text(TOPOLOGY.format(db=db, transient=0, dlq="")).plan), stream="s")
kcl_initialize(shard).dispatch(None, p)
idle = {"action": "processRecords", "millisBehindLatest": 0, "records": []}
kcl_message(idle).dispatch(KclCheckpointer(), p)
print("ready", flush=True)
sys.stdin.readline()  # alive (as a hung shard process is) until the test closes stdin
"""


def _collect(directory: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    _LiveOnly(registry, path=str(directory))
    return {
        s.labels["shard"]: s.value
        for m in registry.collect()
        if m.name == HEARTBEAT
        for s in m.samples
    }


def test_the_kcl_hosts_endpoint_keeps_a_live_shard_process_heartbeat_and_drops_an_exited_ones(
    tmp_path: Path,
):
    """Per shard process, in prometheus-client's multiprocess files: a process alive (a hung
    one too) keeps its series, which ages; one that exited (its lease lost, its shard ended)
    leaves it, or its time would age for ever and ``SquallHung`` fire for a shard nobody reads."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics), "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / f"{shard}.db"), shard],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        for shard in (SHARD_A, SHARD_B)
    ]
    try:
        for child in children:
            assert child.stdout.readline() == b"ready\n", child.communicate(timeout=30)[1]
        assert set(_collect(metrics)) == {SHARD_A, SHARD_B}
        _, err = children[0].communicate(b"", timeout=30)  # the first shard's process exits
        assert children[0].returncode == 0, err.decode()
        assert set(_collect(metrics)) == {SHARD_B}
    finally:
        for child in children:
            if child.poll() is None:
                child.communicate(b"", timeout=30)


@needs_promtool
def test_squall_hung_fires_for_a_heartbeat_older_than_the_threshold_and_not_a_fresh_one(
    tmp_path: Path,
):
    """Scraped minute by minute from the backend: shard A's sink hangs in the batch that starts at
    minute 3 (no batch end, no idle poll after it); shard B polls on, idle. With 300 s, A's alert
    fires at 9 min (540 - 180 > 300) and not at 8 (480 - 180 = 300); B's never."""
    name = "hangs"
    topo = load_text(
        f"name: {name}\nspout: {{type: stdin}}\nbolts: [{{id: decode, type: json}}]\n"
        "sinks: [{id: rows, type: 'squall.testing:MemorySink'}]\n"
    )
    engine = Engine(topo.plan).open()
    backend = PrometheusBackend(CollectorRegistry(), topology=name)
    minute = [0]
    rec = Recorder(name, [backend], clock=lambda: minute[0] * 60.0)
    series: dict[str, list[str]] = {}
    for m in range(12):
        minute[0] = m
        rec.idle({SHARD_B: 0}, shard=SHARD_B)
        if m < 3:
            rec.idle({SHARD_A: 0}, shard=SHARD_A)
        elif m == 3:  # a batch ends at 3 min; the next one never does
            batch = records_from([{"n": 1}], shard_id=SHARD_A)
            with rec.batch(engine, batch, shard=SHARD_A) as watch:
                watch.result = engine.process(batch)
        for shard in (SHARD_A, SHARD_B):
            key = f'{HEARTBEAT}{{shard="{shard}",topology="{name}"}}'
            series.setdefault(key, []).append(f"{heartbeat(backend.registry, name, shard):g}")
    engine.close()
    assert series[f'{HEARTBEAT}{{shard="{SHARD_A}",topology="{name}"}}'][-1] == "180"
    rules = prometheus_rules(topo, thresholds=Thresholds(heartbeat_s=300))
    [rule] = [r for r in rules["groups"][0]["rules"] if r["alert"] == "SquallHung"]
    hung = {
        "exp_labels": {**rule["labels"], "shard": SHARD_A},
        "exp_annotations": rule["annotations"],
    }
    promtool_test(
        tmp_path,
        rules,
        series,
        [
            {"eval_time": "2m", "alertname": "SquallHung", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "SquallHung", "exp_alerts": []},
            {"eval_time": "9m", "alertname": "SquallHung", "exp_alerts": [hung]},
            {"eval_time": "11m", "alertname": "SquallHung", "exp_alerts": [hung]},
        ],
    )


def test_a_sample_that_names_no_shard_beats_for_the_kcl_processs_shard():
    """Under the KCL a series with shard "" would be no process's: nothing would move it, and
    ``SquallHung`` would fire for it once the threshold passed."""
    from squall.observability.metrics import BatchSample

    backend = PrometheusBackend(CollectorRegistry())
    backend.record_idle("t", SHARD_A, 10.0)
    backend.record(BatchSample("t", 1, 0, 0.1, "ok", ended=20.0))  # e.g. a release between batches
    assert heartbeat(backend.registry, "t", SHARD_A) == 20.0
    assert heartbeat(backend.registry, "t") is None


def test_a_release_between_batches_beats_at_the_recorders_time():
    """Every sample's time is the recorder's clock (the heartbeat's), but a release's was
    ``time.time()`` of the sample's own default: with another clock (the tests'), a release moved
    the heartbeat to another time than its batches and idle polls."""
    engine = Engine(load_text(KCL_TOPOLOGY.format(db=":memory:", transient=0, dlq="")).plan)
    backend = PrometheusBackend(CollectorRegistry(), topology="t")
    recorder = Recorder("t", [backend], clock=lambda: 42.0)
    recorder.idle(shard=SHARD_A)
    recorder.released(engine, {SHARD_A: None}, 0.01)
    assert heartbeat(backend.registry, "t", SHARD_A) == 42.0


def test_squall_run_waiting_for_input_on_an_idle_pipe_is_not_hung(tmp_path: Path, monkeypatch):
    """`tail -F app.log | squall run t.yaml --metrics-port 9108`: stdin (or a FIFO) has no idle
    polls, so while the pipe was quiet the heartbeat stood still and `SquallHung` paged after
    5 minutes of a healthy, idle run. While the runner waits in such a spout's read (no batch in
    flight: not a hang) the heartbeat now moves about every second (``WAIT_BEAT_S``)."""
    import threading

    from squall.deploy import local

    monkeypatch.setattr(local, "WAIT_BEAT_S", 0.01, raising=False)
    now = [1_000.0]
    backend = PrometheusBackend(CollectorRegistry(), topology="piped")
    recorder = Recorder("piped", [backend], clock=lambda: now[0])
    recorder.idle()
    marker = tmp_path / "m"
    topo = load_text(
        f"""
name: piped
spout: {{type: 'tests.observability.hanging:WaitingSpout', marker: '{marker}', records: [{{n: 1}}, {{n: 2}}]}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: rows, type: 'squall.testing:MemorySink'}}]
""",
        base_dir=tmp_path,
    )
    runner = LocalRunner(topo, recorder=recorder)
    done = threading.Thread(target=runner.run)
    done.start()
    pause = threading.Event()
    try:
        for _ in range(3000):  # until the first batch ended (at 1,000) and the read waits
            if (tmp_path / "m.waiting").exists():
                break
            pause.wait(0.01)
        assert heartbeat(backend.registry, "piped") == 1_000.0
        now[0] = 2_000.0  # the pipe is quiet: time passes while the read waits
        for _ in range(500):  # (at most 5 s)
            if heartbeat(backend.registry, "piped") == 2_000.0:
                break
            pause.wait(0.01)
        # before: it stayed at the first batch's end, 1,000, until the next line came
        assert heartbeat(backend.registry, "piped") == 2_000.0
    finally:
        (tmp_path / "m.more").touch()
        done.join(30)
    assert not done.is_alive()
