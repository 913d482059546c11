"""The kiosk backend built from the docs (orders → schema → a kiosk lookup on PostgreSQL with a
Redis cache → priority route → SQS FIFO queues): what a new user hit, each a regression test.

- A lookup whose database is unreachable when the topology starts is an outage (README: `squall
  run` exits 1 when "a database was unreachable at start"; a KCL shard waits for it), not a
  misconfiguration: it was wrapped as a ``TopologyError``, so `squall run` exited 2 and a KCL
  record processor exited as misconfigured instead of waiting.
- Ctrl-C during `squall run` of the example (a `file` spout) said "the batch in flight was
  finished and checkpointed": a file spout keeps no checkpoint, the next run reads the file from
  its start (SQS FIFO deduplicates the re-sent orders for five minutes only).
  The fix said so of every spout without a checkpoint, an ``sqs`` one too — whose batch in
  flight was finished and its messages deleted: the next run does not read them again.
"""

from __future__ import annotations

import io
import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from rich.console import Console

from squall.deploy.console import print_summary
from squall.deploy.kcl import RecordProcessor
from squall.deploy.local import LocalRunner
from squall.errors import TransientError
from squall.observability.progress import Totals
from squall.topology.executor import Engine
from squall.topology.loader import load, load_text
from squall.topology.outcomes import Outcome
from tests.deploy.test_local_runner import run_cli
from tests.factories import KclCheckpointer, kcl_initialize
from tests.moto_standin import queue_counts, unique
from tests.ports import free_port

SECRET = "kiosk-pw-5b1e"

LOOKUP_TOPOLOGY = """
name: kiosk-review-{port}
resources:
  db: {{url: "{url}"}}
spout: {{type: stdin}}
settings: {{retry: {{attempts: 2, initial_backoff: 0, max_backoff: 0}}}}
bolts:
  - {{id: decode, type: json}}
  - id: kiosk
    type: lookup
    key: kiosk_id
    target: kiosk
    source: {{type: sql, resource: db, table: kiosks}}
    on_missing: fail
sinks:
  - {{id: out, type: stdout}}
"""


def unreachable_database(pg_url: str) -> tuple[str, str]:
    """(topology text, URL) of a lookup whose PostgreSQL, with a password, listens nowhere."""
    port = free_port()
    path = urlsplit(pg_url).path
    url = f"postgresql://kiosk:{SECRET}@127.0.0.1:{port}{path}"
    return LOOKUP_TOPOLOGY.format(url=url, port=port), url


def test_a_lookup_database_unreachable_at_start_exits_1_as_the_readme_says(
    pg_url: str, tmp_path: Path
):
    text, _ = unreachable_database(pg_url)
    t = tmp_path / "kiosk.yaml"
    t.write_text(text)
    result = run_cli(["run", str(t)], input='{"kiosk_id": "k1"}\n')
    assert result.returncode == 1, result.stderr  # was 2: "invalid topology"
    assert "cannot start:" in result.stderr and "table kiosks" in result.stderr
    assert "Connection refused" in result.stderr or "connection" in result.stderr.lower()
    assert SECRET not in result.stderr + result.stdout and "Traceback" not in result.stderr


class Waited(Exception):
    """The processor waited for the database, as for an outage."""


def test_a_kcl_shard_waits_for_a_lookup_database_that_is_down_at_start(pg_url: str):
    text, _ = unreachable_database(pg_url)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        raise Waited

    processor = RecordProcessor(Engine.for_topology(load_text(text)), stream="s", sleep=sleep)
    cp = KclCheckpointer()
    # Before: SystemExit(EXIT_MISCONFIGURED) — the worker stopped as if the YAML were wrong.
    with pytest.raises(Waited):
        kcl_initialize().dispatch(cp, processor)
    assert slept == [1.0] and cp.calls == []


def test_the_lookup_outage_at_open_is_a_transient_error_naming_the_bolt(pg_url: str):
    text, _ = unreachable_database(pg_url)
    engine = Engine.for_topology(load_text(text))
    with pytest.raises(TransientError) as err:
        engine.open()
    assert str(err.value).startswith("kiosk.source: table kiosks: ")
    assert SECRET not in str(err.value)
    engine.close()


def test_ctrl_c_on_a_file_spout_does_not_claim_a_checkpoint(tmp_path: Path):
    orders = tmp_path / "orders.jsonl"
    orders.write_text("".join(f'{{"order_id": "o-{i}"}}\n' for i in range(30)))
    t = tmp_path / "kiosk.yaml"
    t.write_text(
        "name: kiosk-ctrl-c\nspout: {type: file, path: orders.jsonl}\n"
        "settings: {batch_size: 10}\nbolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: 'squall.testing:MemorySink'}]\n"
    )

    def interrupt_after_the_first_batch(result, spout) -> None:
        runner._on_sigint(signal.SIGINT, None)  # what Ctrl-C does

    runner = LocalRunner(load(t), on_batch=interrupt_after_the_first_batch)
    report = runner.run()
    assert report.interrupted and report.exit_code == 130 and report.batches == 1
    out = io.StringIO()
    print_summary(Console(file=out, width=200, force_terminal=False), load(t), report, Totals())
    text = " ".join(out.getvalue().split())
    assert "checkpointed" not in text  # was: "the batch in flight was finished and checkpointed"
    assert "interrupted: the batch in flight was finished" in text
    assert "keeps no checkpoint: the next run reads its input from the start" in text


def test_the_summary_prints_failed_records_as_text_masked_never_as_markup(tmp_path: Path):
    """Records failing with no dead letter are listed at the end of `squall run`. Their reasons
    (a kiosk id quoted by the lookup) were printed as rich markup: a kiosk id `[/]` crashed the
    summary with a MarkupError traceback, `[bold]x` lost its brackets, and a password in a
    URL-shaped key was shown in clear there while the log line of the same record masked it."""
    import sqlite3

    db = tmp_path / "kiosks.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE kiosks (kiosk_id text PRIMARY KEY, name text)")
        conn.execute("INSERT INTO kiosks VALUES ('k1', 'Front 1')")
    t = tmp_path / "kiosk.yaml"
    t.write_text(
        f'name: kiosk-summary\nresources: {{db: {{url: "sqlite:///{db}"}}}}\n'
        "spout: {type: stdin}\nbolts:\n  - {id: decode, type: json}\n"
        "  - {id: kiosk, type: lookup, key: kiosk_id, target: kiosk, on_missing: fail,\n"
        "     source: {type: sql, resource: db, table: kiosks}}\n"
        "sinks: [{id: out, type: 'squall.testing:MemorySink'}]\n"
    )
    keys = ["[/]", "[bold]x", f"postgresql://admin:{SECRET}@db/x"]
    lines = "".join(f'{{"kiosk_id": "{k}"}}\n' for k in ["k1", *keys])
    result = run_cli(["run", "--no-progress", str(t)], input=lines)
    assert result.returncode == 1, result.stderr  # records failed, no dead letter
    assert "Traceback" not in result.stderr and "MarkupError" not in result.stderr
    summary = result.stderr[result.stderr.index("committed 1, dead-lettered 0") :]
    text = " ".join(summary.split())  # the console wraps long lines at 80 columns
    assert "key '[/]' not found" in text and "key '[bold]x' not found" in text
    assert SECRET not in result.stderr and "postgresql://admin:***@db/x" in text


def test_ctrl_c_on_an_sqs_spout_says_its_batch_was_acknowledged_not_read_again(moto_server):  # noqa: F811
    """An ``sqs`` spout keeps no checkpoint, but the batch in flight was finished and its
    messages deleted: the summary said the next run reads the input from the start."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("orders"))["QueueUrl"]
    for i in range(10):
        sqs.send_message(QueueUrl=url, MessageBody=f'{{"order_id": "o-{i}"}}')
    spout = f'{{type: sqs, queue: "{url}", endpoint_url: "{moto_server.endpoint}", wait_time: 0}}'
    text = (
        f"name: kiosk-sqs-ctrl-c\nspout: {spout}\nsettings: {{batch_size: 10}}\n"
        "bolts: [{id: decode, type: json}]\nsinks: [{id: out, type: 'squall.testing:MemorySink'}]\n"
    )

    def interrupt_after_the_first_batch(result, spout) -> None:
        runner._on_sigint(signal.SIGINT, None)  # what Ctrl-C does

    runner = LocalRunner(load_text(text), on_batch=interrupt_after_the_first_batch)
    report = runner.run()
    assert report.interrupted and report.batches == 1
    committed = report.counts[Outcome.COMMITTED]
    assert committed and committed + queue_counts(sqs, url) == 10  # the batch's were deleted
    out = io.StringIO()
    print_summary(
        Console(file=out, width=200, force_terminal=False), load_text(text), report, Totals()
    )
    said = " ".join(out.getvalue().split())
    assert "reads its input from the start" not in said
    assert "interrupted: the batch in flight was finished and checkpointed" in said
