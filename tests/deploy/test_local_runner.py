"""The local runner and the CLI around it: exit codes, Ctrl-C, stdin, schema export."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import jsonschema
import pytest
import yaml

from squall.bolts.base import Bolt, Output
from squall.deploy.local import EXIT_FAILED, EXIT_OK, LocalRunner
from squall.event import Event, Record
from squall.testing import ListSpout
from squall.topology.loader import load_text
from squall.topology.outcomes import Outcome
from tests.conftest import EXAMPLES
from tests.pipe_wait import wait_in_pipe_read

TOPOLOGY = """
name: local
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {spout}
settings: {{batch_size: {batch}, retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
{extra}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
{dlq}
"""


def topo(tmp_path: Path, spout: str, *, batch: int = 10, extra: str = "", dlq: bool = True):
    dl = f"  - {{id: dlq, type: dead_letter, path: {tmp_path / 'dlq.jsonl'}}}" if dlq else ""
    return load_text(
        TOPOLOGY.format(db=tmp_path / "w.db", spout=spout, batch=batch, extra=extra, dlq=dl),
        base_dir=tmp_path,
    )


def test_runner_commits_checkpoints_after_each_batch(tmp_path: Path):
    payloads = [{"n": i} for i in range(25)]
    runner = LocalRunner(
        topo(tmp_path, json.dumps({"type": "squall.testing:ListSpout", "records": payloads}))
    )
    report = runner.run()
    assert report.exit_code == EXIT_OK and report.batches == 3
    assert [c["shardId-000000000000"].sequence_number for c in runner.spout.committed] == [
        "10",
        "20",
        "25",
    ]
    assert report.counts[Outcome.COMMITTED] == 25


def test_a_holding_sink_moves_the_checkpoint_only_when_it_releases(tmp_path: Path):
    from squall.testing import memory_stores

    payloads = [{"n": i} for i in range(25)]
    yaml_text = f"""
name: hold
spout: {json.dumps({"type": "squall.testing:ListSpout", "records": payloads})}
settings: {{batch_size: 10}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: lake, type: 'tests.topology.test_holding:RollingSink', roll_events: 15}}
"""
    with memory_stores({}) as stores:
        runner = LocalRunner(load_text(yaml_text, base_dir=tmp_path))
        report = runner.run()
        assert report.exit_code == EXIT_OK
        # batch 1 held; at 20 events the sink rolled; the last 5 were released at the end
        assert [c["shardId-000000000000"].sequence_number for c in runner.spout.committed] == [
            "20",
            "25",
        ]
        assert [ev.value["n"] for ev in stores["lake"]] == list(range(25))


def test_a_batch_that_keeps_failing_is_not_checkpointed_and_exits_1(tmp_path: Path):
    payloads = [{"n": i} for i in range(25)]
    extra = "  - {id: chaos, type: 'squall.testing:FaultyBolt', transient_failures: 99}"
    runner = LocalRunner(
        topo(
            tmp_path,
            json.dumps({"type": "squall.testing:ListSpout", "records": payloads}),
            extra=extra,
        )
    )
    report = runner.run()
    assert report.exit_code == EXIT_FAILED and report.error is not None
    assert runner.spout.committed == []
    assert "chaos" in str(report.error) and "2 attempt" in str(report.error)


def test_records_failing_without_a_dead_letter_stop_the_run_before_them(tmp_path: Path):
    payloads = [{"n": 1}, {"n": 2, "fail": "nope"}, {"n": 3}]
    extra = "  - {id: chaos, type: 'squall.testing:FaultyBolt'}"
    runner = LocalRunner(
        topo(
            tmp_path,
            json.dumps({"type": "squall.testing:ListSpout", "records": payloads}),
            extra=extra,
            dlq=False,
            batch=2,
        )
    )
    report = runner.run()
    assert report.exit_code == EXIT_FAILED
    assert [r.reason for r in report.failed_records] == ["nope"]
    assert runner.spout.committed == [
        {"shardId-000000000000": runner.spout.records[0].meta.position}
    ]


def run_cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "squall.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def test_a_run_stopped_by_failed_records_says_it_read_no_further(tmp_path: Path):
    """Found in the fleet walkthrough: `squall run producer.yaml --input events.jsonl.gz` (as the
    producer's own comment says) printed "500 records, 1 batches" and the first failed records,
    and exited 1: nothing said that 2,500 of the 3,000 events were never read."""
    (tmp_path / "lines.jsonl").write_text('{"n": 1}\nnot json\n{"n": 3}\n{"n": 4}\n{"n": 5}\n')
    (tmp_path / "t.yaml").write_text(
        "name: stops\nspout: {type: file, path: lines.jsonl}\nsettings: {batch_size: 2}\n"
        "bolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: 'squall.testing:MemorySink'}]\n"
    )
    result = run_cli(["run", str(tmp_path / "t.yaml")], env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == EXIT_FAILED
    assert (
        "stopped: records failed with no dead letter to take them, so the run stopped after "
        "batch 1 and read no further; the file spout keeps no checkpoint: the next run reads "
        "its input from the start. A dead_letter sink keeps bad records with their reasons and "
        "lets the run go on"
    ) in result.stderr


@pytest.mark.parametrize("dead_letter", [True, False], ids=["dead-letter", "none"])
def test_records_failed_beside_a_dead_letter_sink_do_not_ask_for_one(tmp_path: Path, dead_letter):
    """Found with a push topology against an FCM stand-in over its quota: 50 notifications still
    answered 429 after the sink's retries failed (not a record's fault, so never dead-lettered),
    and the summary said they failed "with no dead letter to take them" and that "a dead_letter
    sink keeps bad records" — in a topology that had one. Without one (rE), it still said to add
    a dead_letter sink that "lets the run go on": such records are not dead-lettered either."""
    (tmp_path / "lines.jsonl").write_text('{"n": 1}\n{"n": 2, "sink_fail": true}\n{"n": 3}\n')
    (tmp_path / "t.yaml").write_text(
        "name: stops\nspout: {type: file, path: lines.jsonl}\n"
        "bolts: [{id: decode, type: json}]\n"
        "sinks:\n  - {id: out, type: 'squall.testing:FaultySink'}\n"
        + ("  - {id: rejects, type: dead_letter, path: rejects.jsonl}\n" if dead_letter else "")
    )
    result = run_cli(["run", str(tmp_path / "t.yaml")], env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == EXIT_FAILED
    text = " ".join(result.stderr.split())
    assert "no dead letter to take them" not in text
    assert "A dead_letter sink keeps bad records" not in text
    assert (
        "stopped: records failed (still failing after the retries: not a record's fault, so not "
        "dead-lettered), so the run stopped after batch 1 and read no further; the file spout "
        "keeps no checkpoint: the next run reads its input from the start. Run again once what "
        "failed them answers"
    ) in text


def test_records_failed_at_the_end_of_input_do_not_say_the_run_read_no_further(tmp_path: Path):
    """A window's flush at the end of the input emits a result a later bolt fails (no dead
    letter): the whole input was read, but the summary said the run "stopped after batch 2 and
    read no further" and that a dead_letter sink "lets the run go on" (there was nothing left)."""
    (tmp_path / "lines.jsonl").write_text(
        "".join(f'{{"timestamp": {1_700_000_000_000 + i}, "fail": "boom"}}\n' for i in range(3))
    )
    (tmp_path / "t.yaml").write_text(
        "name: stops\nresources: {state: {url: 'sqlite:///state.db'}}\n"
        "spout: {type: file, path: lines.jsonl}\nsettings: {batch_size: 2}\n"
        "bolts:\n  - {id: decode, type: json}\n"
        "  - {id: w, type: window, store: state, key: [fail], size: 1m, "
        "aggregates: {n: {fn: count}}}\n"
        "  - {id: check, type: 'squall.testing:FaultyBolt'}\n"
        "sinks: [{id: out, type: 'squall.testing:MemorySink'}]\n"
    )
    result = run_cli(
        ["run", str(tmp_path / "t.yaml")], env={**os.environ, "COLUMNS": "300"}, cwd=tmp_path
    )
    assert result.returncode == EXIT_FAILED
    assert "failed in check: boom" in result.stderr
    assert "read no further" not in result.stderr
    assert (
        "stopped: what the bolts emitted at the end of the input (their flush) failed with no "
        "dead letter to take it, after the whole input was read (2 batches); the file spout "
        "keeps no checkpoint: the next run reads its input from the start. A dead_letter sink "
        "keeps bad records with their reasons"
    ) in result.stderr


class CheckpointedListSpout(ListSpout):
    """A list spout that asks for the default checkpoint store, as the kinesis spout does."""

    def checkpointing(self):
        from squall.topology.checkpoint import CheckpointSpec

        return CheckpointSpec("default", "s", owner=self.id)


@pytest.mark.parametrize(
    ("resources", "next_run"),
    [
        (
            "",
            "its checkpoints were kept in memory (no checkpoint store, no 'warehouse' resource): "
            "the next run starts at the spout's `start` again",
        ),
        (
            "resources: {warehouse: {url: 'sqlite:///w.db'}}\n",
            "the checkpoint stops before the first of them: the next run starts there",
        ),
    ],
)
def test_a_stopped_run_whose_checkpoints_are_in_memory_does_not_say_the_next_starts_there(
    tmp_path: Path, resources: str, next_run: str
):
    """A kinesis spout with no checkpoint store and no `warehouse` resource keeps its checkpoints
    in memory (the start warns: "a restart reads from `start` again"), but a run stopped by failed
    records said "the checkpoint stops before the first of them: the next run starts there", and
    an interrupted one that the batch in flight was "checkpointed"."""
    from rich.console import Console

    from squall.deploy.console import print_summary

    topology = load_text(
        f"name: mem\n{resources}"
        f"spout: {{type: '{__name__}:CheckpointedListSpout', records: [{{n: 1}}, 'x', {{n: 3}}]}}\n"
        "bolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: 'squall.testing:MemorySink'}]\n",
        base_dir=tmp_path,
    )
    report = LocalRunner(topology).run()
    assert report.exit_code == EXIT_FAILED
    out = io.StringIO()
    print_summary(Console(file=out, width=400), topology, report)
    text = " ".join(out.getvalue().split())
    assert f"read no further; {next_run}." in text
    report.failed_records, report.interrupted = [], True
    out = io.StringIO()
    print_summary(Console(file=out, width=400), topology, report)
    interrupted = " ".join(out.getvalue().split())
    assert ("finished and checkpointed" in interrupted) == bool(resources)


def test_stdin_input(tmp_path: Path):
    t = tmp_path / "t.yaml"
    t.write_text(
        TOPOLOGY.format(db=tmp_path / "w.db", spout="{type: stdin}", batch=2, extra="", dlq="")
    )
    r = run_cli(["run", str(t)], input='{"n": 1}\n\n{"n": 2}\n{"n": 3}\n')
    assert r.returncode == 0, r.stderr
    assert sqlite3.connect(tmp_path / "w.db").execute("select sum(n) from events").fetchone() == (
        6,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_finishes_the_batch_in_flight_and_exits_130(
    tmp_path: Path, sig: signal.Signals
):
    """SIGTERM is how a service manager (systemd, ``docker stop``) stops a long run: as Ctrl-C."""
    src = tmp_path / "many.jsonl"
    src.write_text("".join(f'{{"n": {i}}}\n' for i in range(200_000)))
    t = tmp_path / "t.yaml"
    t.write_text(
        TOPOLOGY.format(
            db=tmp_path / "w.db", spout=f"{{type: file, path: {src}}}", batch=100, extra="", dlq=""
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "squall.cli", "run", str(t)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = tmp_path / "w.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if sqlite3.connect(db).execute("select count(*) from events").fetchone()[0] > 0:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # The signal lands in a batch (finished and committed) or, between two, in the file spout's
    # read (read_interruptible: that read is given up, no batch being in flight): whole batches
    # committed either way.
    assert "finishing the batch in flight" in err or "no batch in flight" in err, err
    assert "interrupted" in err, err
    rows = sqlite3.connect(db).execute("select count(*) from events").fetchone()[0]
    assert 0 < rows < 200_000 and rows % 100 == 0  # whole batches only


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_stdin_waits_for_input_ends_the_run_at_once(
    tmp_path: Path, sig: signal.Signals
):
    """A pipe that stays open (``tail -f … | squall run``, a service's socket): the stop came
    while the spout waited for its next line, with no batch in flight, and the run went on
    waiting for a whole batch more of input or its end — a service manager's SIGTERM was
    ignored until its SIGKILL (before SIGTERM was handled, it ended the run at once). The
    committed batch stays; the line read into the unfinished batch was acknowledged nowhere."""
    t = tmp_path / "t.yaml"
    t.write_text(
        TOPOLOGY.format(db=tmp_path / "w.db", spout="{type: stdin}", batch=2, extra="", dlq="")
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "squall.cli", "run", str(t)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b'{"n": 1}\n{"n": 2}\n{"n": 3}\n')  # one batch and a line: then idle
        proc.stdin.flush()
        db = tmp_path / "w.db"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if sqlite3.connect(db).execute("select count(*) from events").fetchone()[0]:
                    break
            except sqlite3.OperationalError:
                pass
            time.sleep(0.05)
        # a row committed is not the batch ended: the stop is meant for the wait that follows
        wait_in_pipe_read(proc, deadline - time.monotonic())
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=60)  # the pipe stays open: only the signal can end it
        except subprocess.TimeoutExpired:
            pytest.fail("the run still waits for input after the stop")
        err = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert code == 130, err
        assert "no batch in flight" in err and "Traceback" not in err
        assert sqlite3.connect(db).execute("select n from events order by n").fetchall() == [
            (1,),
            (2,),
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_schema_export_validates_the_example_and_rejects_typos(tmp_path: Path):
    r = run_cli(["schema"])
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    doc = yaml.safe_load((EXAMPLES / "pistats" / "topology.yaml").read_text())
    jsonschema.validate(doc, schema)
    doc["bolts"][0]["type"] = "jsn"
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    out = tmp_path / "s.json"
    assert (
        run_cli(["schema", "-o", str(out)]).returncode == 0
        and json.loads(out.read_text()) == schema
    )


@pytest.mark.parametrize(
    "args",
    [
        ["schema", "-o", "{blocked}/s.json"],
        ["reference", "-o", "{blocked}/r.md"],
        ["dashboards", str(EXAMPLES / "pistats" / "topology.yaml"), "-o", "{blocked}/monitoring"],
    ],
)
def test_an_output_path_that_cannot_be_written_is_one_line_not_a_traceback(
    tmp_path: Path, args: list[str]
):
    blocked = tmp_path / "a-file"  # a file where a directory should be
    blocked.write_text("")
    r = run_cli([a.format(blocked=blocked) for a in args])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"cannot write {blocked}/")


def test_dead_letter_file_is_idempotent_and_survives_a_torn_line(tmp_path: Path):
    payloads = ["not json", {"n": 1}]
    spout = json.dumps({"type": "squall.testing:ListSpout", "records": payloads})
    LocalRunner(topo(tmp_path, spout)).run()
    dl = tmp_path / "dlq.jsonl"
    assert len(dl.read_text().splitlines()) == 1
    with dl.open("a") as fh:
        fh.write('{"event_id": "torn')  # a crash mid-write
    LocalRunner(topo(tmp_path, spout)).run()
    lines = dl.read_text().splitlines()
    assert len([line for line in lines if line.startswith('{"event_id":"')]) == 1
    doc = json.loads(lines[0])
    assert (
        doc["component"] == "decode"
        and doc["record"] == '"not json"'
        and "not an object" in doc["reason"]
    )


def test_a_missing_input_file_is_a_clear_error_with_exit_2(tmp_path: Path):
    t = tmp_path / "t.yaml"
    t.write_text(
        TOPOLOGY.format(
            db=tmp_path / "w.db",
            spout="{type: file, path: nowhere.jsonl}",
            batch=2,
            extra="",
            dlq="",
        )
    )
    r = run_cli(["run", str(t)])
    assert r.returncode == 2
    # at the spout's `path` in the file (it named only the spout's id)
    assert (
        f"{t}:5:27: spout.path: spout 'spout': cannot read {tmp_path / 'nowhere.jsonl'}: "
        "No such file or directory"
    ) in r.stderr
    assert "Traceback" not in r.stderr
    # `--input` is no place in the file: the problem says where the path came from
    r = run_cli(["run", str(t), "--input", str(tmp_path / "gone.jsonl")])
    assert r.returncode == 2
    assert f"--input: spout 'spout': cannot read {tmp_path / 'gone.jsonl'}: No such" in r.stderr


def test_a_dead_letter_write_that_fails_is_written_on_the_retry(tmp_path: Path):
    """A failed write (disk full) must not count the dead letters as written: the retry writes them."""
    import errno

    import pytest

    from squall.errors import BatchFailed
    from squall.testing import records_from
    from squall.topology.executor import Engine

    engine = Engine(topo(tmp_path, "{type: stdin}").plan).open()
    [dlq] = [c for c in engine.components if c.id == "dlq"]

    class DiskFullOnce:
        def __init__(self, fh):
            self.fh, self.failed = fh, False

        def write(self, data):
            if not self.failed:
                self.failed = True
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    dlq._fh = DiskFullOnce(dlq._fh)
    records = records_from([b"not json", {"n": 1}])
    with pytest.raises(BatchFailed, match="No space left"):
        engine.process(records)
    result = engine.process(records)  # the runner's retry (KCL in-process, Lambda warm container)
    assert result.ok and result.checkpoint
    engine.close()
    lines = (tmp_path / "dlq.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["component"] == "decode"


def test_input_override_keeps_the_spout_id_used_in_streams(tmp_path: Path):
    t = tmp_path / "t.yaml"
    t.write_text(f"""
name: edges
resources:
  db: {{url: "sqlite:///{tmp_path / "w.db"}"}}
spout: {{id: source, type: file, path: nowhere.jsonl}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: rows, type: warehouse, resource: db, table: events, columns: {{n: {{path: n, type: integer}}}}}}
streams:
  - {{from: source, to: decode}}
""")
    src = tmp_path / "in.jsonl"
    src.write_text('{"n": 7}\n')
    r = run_cli(["run", str(t), "--input", str(src)])
    assert r.returncode == 0, r.stderr
    assert sqlite3.connect(tmp_path / "w.db").execute("select n from events").fetchall() == [(7,)]


def test_a_truncated_gzip_input_is_one_clear_line(tmp_path: Path):
    import gzip

    data = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(2000)))
    src = tmp_path / "trunc.jsonl.gz"
    src.write_bytes(data[: len(data) // 2])
    t = tmp_path / "t.yaml"
    t.write_text(
        TOPOLOGY.format(
            db=tmp_path / "w.db", spout=f"{{type: file, path: {src}}}", batch=100, extra="", dlq=""
        )
    )
    r = run_cli(["run", str(t)])
    assert r.returncode == 2, r.stderr
    assert "cannot read past line" in r.stderr and "truncated or corrupt gzip" in r.stderr
    assert "Traceback" not in r.stderr and "Aborted" not in r.stderr
    # The run had started: the batches before the break are committed, and the output says so.
    committed = sqlite3.connect(tmp_path / "w.db").execute("select count(*) from events").fetchone()
    assert committed[0] > 0 and committed[0] % 100 == 0
    out = r.stdout + r.stderr
    assert f"input stopped after {committed[0] // 100} committed batches" in out
    assert "cannot start" not in out


def test_the_summary_never_cuts_a_number_on_an_80_column_console():
    """Without a terminal the console is 80 columns wide: a long run's counts widen the table
    instead of being cut ("200,0…")."""
    import io

    from rich.console import Console

    from squall.deploy.console import print_summary
    from squall.deploy.local import RunReport
    from squall.observability.progress import Totals
    from squall.topology.loader import load_text
    from squall.topology.outcomes import ComponentStats

    topo = load_text("name: wide\nspout: {type: stdin}\nsinks:\n  - {id: out, type: stdout}\n")
    report = RunReport(batches=4_000, records=2_000_000, seconds=123.4)
    report.stats = [
        ComponentStats("spout", "spout", "stdin", 2_000_000, 2_000_000, seconds=1.5),
        ComponentStats(
            "warehouse-events",
            "sink",
            "stdout",
            2_000_000,
            1_987_654,
            dead_lettered=12_346,
            retries=12,
            seconds=1234.56,
        ),
    ]
    totals = Totals()
    totals.written = {"warehouse-events": 1_987_654}
    totals.present = {"warehouse-events": 0}
    out = io.StringIO()
    print_summary(Console(file=out, width=80, force_terminal=False), topo, report, totals)
    text = out.getvalue()
    for number in ("2,000,000", "1,987,654", "12,346", "1234.56"):
        assert number in text, text
    assert "warehouse-events" in text


SUBSCRIPTION_TOPOLOGY = """
name: daily
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: file, path: {path}}}
bolts:
  - {{id: decode, type: json}}
  - {{id: subs, type: subscription, store: db}}
sinks:
  - id: rows
    type: warehouse
    resource: db
    table: events
    columns:
      kind: {{path: event_type, type: text}}
      status: {{path: subscription.status, type: text}}
"""


def _register_subscribe_view(day: str) -> list[dict]:
    return [
        {"event_type": "register", "device_token": "K", "timestamp": f"{day}T10:00:00Z"},
        {"event_type": "subscribe", "device_token": "K", "timestamp": f"{day}T10:01:00Z"},
        {"event_type": "page_view", "device_token": "K", "timestamp": f"{day}T10:02:00Z"},
    ]


def test_a_later_input_file_is_enriched_from_the_latest_state_not_as_a_replay(tmp_path: Path):
    """Line numbers restart with each file: line 1 of tomorrow's file does not come before the
    update at line 2 of today's. Before positions counted per input (RecordMeta.source), the
    second file's page view was taken for a re-delivery from before the subscribe and enriched
    as "registered" — for a differently named file and for new content under the same name."""

    def run(name: str, events: list[dict]) -> None:
        path = tmp_path / name
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        text = SUBSCRIPTION_TOPOLOGY.format(db=tmp_path / "w.db", path=path)
        assert LocalRunner(load_text(text, base_dir=tmp_path)).run().exit_code == EXIT_OK

    def statuses() -> list[tuple[str, str]]:
        with sqlite3.connect(tmp_path / "w.db") as db:
            return db.execute("SELECT kind, status FROM events ORDER BY rowid").fetchall()

    run("day1.jsonl", _register_subscribe_view("2024-05-01"))
    view = {"event_type": "page_view", "device_token": "K", "timestamp": "2024-05-02T09:00:00Z"}
    run("day2.jsonl", [view])
    run("day1.jsonl", [{**view, "timestamp": "2024-05-03T09:00:00Z"}])  # rewritten in place
    assert statuses()[3:] == [("page_view", "subscribed"), ("page_view", "subscribed")]
    # The same file read again (or appended to) is still a replay of itself: nothing changes.
    run("day1.jsonl", [{**view, "timestamp": "2024-05-03T09:00:00Z"}])
    assert len(statuses()) == 5


def test_two_files_starting_with_the_same_line_are_two_inputs(tmp_path: Path):
    """Review of 6 December: a file's lineage was its shard ('file') and its first record's
    fingerprint only, so two differently named files whose first line is the same (an export's
    header line, a constant first event) shared their positions: day 2's page view at line 2 came
    'before' day 1's subscribe at line 3 and was enriched from day 1's register. The input's name
    (the stream, part of every event id already) is part of the lineage too."""

    def run(name: str, events: list[dict]) -> None:
        path = tmp_path / name
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        text = SUBSCRIPTION_TOPOLOGY.format(db=tmp_path / "w.db", path=path)
        assert LocalRunner(load_text(text, base_dir=tmp_path)).run().exit_code == EXIT_OK

    def statuses() -> list[tuple[str, str]]:
        with sqlite3.connect(tmp_path / "w.db") as db:
            return db.execute("SELECT kind, status FROM events ORDER BY rowid").fetchall()

    header = {"event_type": "export", "device_token": "-", "timestamp": "2024-05-01T00:00:00Z"}
    run("day1.jsonl", [header, *_register_subscribe_view("2024-05-01")[:2]])
    view = {"event_type": "page_view", "device_token": "K", "timestamp": "2024-05-02T09:00:00Z"}
    run("day2.jsonl", [header, view])
    assert statuses()[-1] == ("page_view", "subscribed")  # before: registered


def test_ctrl_c_before_the_run_takes_it_exits_130_not_aborted_1(monkeypatch, tmp_path: Path):
    """Ctrl-C while the topology loads or the runner opens (Python raises KeyboardInterrupt
    there: the runner's handler is not installed yet) ends with 130, as every Ctrl-C does."""
    from click.testing import CliRunner

    from squall.cli import main
    from squall.deploy import console

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(console, "run_with_console", interrupted)
    result = CliRunner().invoke(main, ["run", str(EXAMPLES / "pistats" / "topology.yaml")])
    assert result.exit_code == 130, result.output
    assert "Aborted!" not in result.output and "aborted: nothing after" in result.output


class Marker:
    """Weak-referenceable: tells whether an event of an earlier batch is still held."""


MARKED: list = []


class MarkingBolt(Bolt):
    """Gives each event a marker (in ``extra``) and keeps only weak references to them."""

    def process(self, batch: list[Event]) -> Output:
        import weakref

        out = Output(self.id)
        for ev in batch:
            marker = Marker()
            ev.extra["marker"] = marker
            MARKED.append(weakref.ref(marker))
        out.emit_all(list(batch))
        return out


class CountingSpout(ListSpout):
    """Before each batch after the first, notes how many events of earlier batches are alive."""

    alive_at_read: ClassVar[list[int]] = []

    def read(self, max_records: int) -> Iterator[list[Record]]:
        for i in range(0, len(self.records), max_records):
            if i:
                self.alive_at_read.append(sum(1 for ref in MARKED if ref() is not None))
            yield self.records[i : i + max_records]


def test_a_batch_is_let_go_before_the_next_is_read(tmp_path: Path):
    """Its events (held by its result) stayed alive through the next read: the collector's
    young collections there (Python's own thresholds apply between batches) scanned them all."""
    MARKED.clear()
    CountingSpout.alive_at_read.clear()
    payloads = [{"n": i} for i in range(30)]
    spout = json.dumps({"type": f"{__name__}:CountingSpout", "records": payloads})
    extra = f"  - {{id: mark, type: '{__name__}:MarkingBolt'}}"
    report = LocalRunner(topo(tmp_path, spout, extra=extra)).run()
    assert report.exit_code == EXIT_OK and report.batches == 3
    assert len(MARKED) == 30
    assert CountingSpout.alive_at_read == [0, 0]


def test_the_young_collection_after_a_batch_does_not_scan_its_events(tmp_path: Path):
    """Between batches the process's own thresholds apply (tests/topology/test_gc.py); the young
    collection then due ran right after ``Engine.process`` returned, while the batch's result
    still held every event — it scanned them all and collected nothing. The runner now lets
    the batch go first: no collection under the process's thresholds sees a batch's events."""
    import gc

    MARKED.clear()
    CountingSpout.alive_at_read.clear()
    seen: list[int] = []

    def census(phase: str, info: dict) -> None:
        if phase == "start" and gc.get_threshold()[0] == 50:  # the process's own: between batches
            seen.append(sum(1 for ref in MARKED if ref() is not None))

    payloads = [{"n": i, "pad": ["x"] * 20} for i in range(60)]
    spout = json.dumps({"type": f"{__name__}:CountingSpout", "records": payloads})
    extra = f"  - {{id: mark, type: '{__name__}:MarkingBolt'}}"
    runner = LocalRunner(topo(tmp_path, spout, extra=extra))
    saved = gc.get_threshold()
    gc.set_threshold(50, 10, 10)  # a young collection due right after every batch
    gc.callbacks.append(census)
    try:
        report = runner.run()
    finally:
        gc.callbacks.remove(census)
        gc.set_threshold(*saved)
    assert report.exit_code == EXIT_OK and report.batches == 6 and len(MARKED) == 60
    assert seen and set(seen) == {0}, seen
    assert gc.get_threshold() == saved


class InterruptedSpout(ListSpout):
    """Its second read raises KeyboardInterrupt, as a Ctrl-C does that the runner's handler did not
    see first (a component's or a library's own SIGINT handler)."""

    def read(self, max_records: int) -> Iterator[list[Record]]:
        yield self.records[:max_records]
        raise KeyboardInterrupt


def test_an_aborted_run_exits_130_even_when_not_interrupted_first(tmp_path: Path):
    """README: an abort exits with 130 (nothing after the last checkpoint is acknowledged).
    ``squall run`` exited 0 — success — when the KeyboardInterrupt came without the runner's
    handler having marked the run interrupted; ``squall replay``'s copy of the exit-code rule
    already counted an abort. One rule serves both now (``ExitStatus``)."""
    from squall.deploy.local import EXIT_INTERRUPTED
    from squall.deploy.replay import ReplayReport

    payloads = [{"n": i} for i in range(25)]
    spout = json.dumps({"type": f"{__name__}:InterruptedSpout", "records": payloads})
    report = LocalRunner(topo(tmp_path, spout)).run()
    assert report.aborted and not report.interrupted and report.batches == 1
    assert report.exit_code == EXIT_INTERRUPTED  # before: 0
    assert ReplayReport(aborted=True).exit_code == EXIT_INTERRUPTED
    # ... and the summary does not speak of a second interrupt that never came
    assert (
        "aborted by an interrupt: the batch in flight" in ReplayReport(aborted=True).summary()[-1]
    )
    again = ReplayReport(aborted=True, interrupted=True).summary()[-1]
    assert again.startswith("aborted by a second interrupt")
