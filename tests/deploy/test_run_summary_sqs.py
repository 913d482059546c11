"""`squall run`'s summary of a run stopped by records that failed with no dead letter, when the
spout is an SQS queue (moto's server): there is no checkpoint; what failed is not deleted."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from squall.deploy.console import print_summary
from squall.deploy.local import EXIT_FAILED, LocalRunner
from squall.topology.loader import load_text
from tests.moto_standin import unique

TOPOLOGY = """
name: sqs-stops
spout: {{type: sqs, queue: "{url}", endpoint_url: "{endpoint}", wait_time: 0}}
settings: {{batch_size: 10}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: 'squall.testing:MemorySink'}}]
"""


def test_an_sqs_run_stopped_by_failed_records_says_they_come_back_not_where_a_checkpoint_is(
    moto_server, tmp_path: Path
):
    """The summary said "the checkpoint stops before the first of them: the next run starts
    there" for every spout that is not a file: an SQS queue keeps no checkpoint, and the next run
    does not start at the failed message — it and those held after it were not deleted and come
    back after their visibility timeout, among the queue's other messages."""
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("stops"))["QueueUrl"]
    for body in ('{"n": 1}', "not json", '{"n": 3}'):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    topology = load_text(TOPOLOGY.format(url=url, endpoint=moto_server.endpoint), base_dir=tmp_path)
    report = LocalRunner(topology).run()
    assert report.exit_code == EXIT_FAILED
    out = io.StringIO()
    print_summary(Console(file=out, width=300), topology, report)
    text = " ".join(out.getvalue().split())  # (rich wraps long lines)
    assert "the checkpoint stops before" not in text
    assert (
        "stopped: records failed with no dead letter to take them, so the run stopped after "
        "batch 1 and read no further; the sqs spout keeps no checkpoint: the messages that "
        "failed, and those held after them, were not deleted and come back after their "
        "visibility timeout. A dead_letter sink keeps bad records with their reasons and lets "
        "the run go on"
    ) in text
