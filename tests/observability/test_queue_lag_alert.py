"""``SquallLagHigh`` of a topology fed by an SQS queue (``squall run`` with the ``sqs`` spout).

The rule read ``squall_millis_behind_latest`` alone: a Kinesis answer, which a queue has not (its
messages are shards of their own, with no tip to be behind). An SQS consumer two minutes behind
its queue exported its messages' age in ``squall_iterator_age_seconds`` and raised nothing: the
rules' lag alert could not fire for it. Here the run is real (the ``sqs`` spout on moto's
server), its recorder's clock two minutes ahead of the messages' send time (a queue two minutes
behind), and the series it exports are scraped minute by minute and handed to ``promtool``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from squall.deploy.local import LocalRunner
from squall.observability.dashboards import prometheus_rules
from squall.observability.metrics import Recorder
from squall.observability.prometheus import PrometheusBackend
from squall.topology.loader import load_text
from tests.moto_standin import unique
from tests.observability.promtool import promtool_test

TOPOLOGY = """
name: queued
spout: {{type: sqs, queue: "{url}", endpoint_url: "{endpoint}", wait_time: 0}}
settings: {{batch_size: 10}}
bolts: [{{id: decode, type: json}}]
sinks: [{{id: out, type: 'squall.testing:MemorySink'}}]
"""
READ = (
    "squall_topology_records_total",
    "squall_iterator_age_seconds",
    "squall_millis_behind_latest",
)
BEHIND_S = 120.0


def _scrape(registry: CollectorRegistry, series: dict[str, list[str]], minute: int) -> None:
    for metric in registry.collect():
        for s in metric.samples:
            if s.name in READ:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                values = series.setdefault(f"{s.name}{{{labels}}}", ["_"] * minute)
                values.append(f"{s.value:g}")
    for values in series.values():
        values += ["_"] * (minute + 1 - len(values))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_an_sqs_consumer_behind_its_queue_raises_squall_lag_high(moto_server, tmp_path: Path):
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=unique("lag"))["QueueUrl"]
    topology = load_text(TOPOLOGY.format(url=url, endpoint=moto_server.endpoint), base_dir=tmp_path)
    backend = PrometheusBackend(CollectorRegistry(), topology="queued")
    recorder = Recorder("queued", [backend], clock=lambda: time.time() + BEHIND_S)
    series: dict[str, list[str]] = {}
    _scrape(backend.registry, series, 0)
    for minute in range(1, 9):  # each minute, messages processed two minutes after they were sent
        for n in range(3):
            sqs.send_message(QueueUrl=url, MessageBody=f'{{"n": {n}}}')
        assert LocalRunner(topology, recorder=recorder).run().exit_code == 0
        _scrape(backend.registry, series, minute)
    for minute in range(9, 25):  # then the queue is drained and idle: the age keeps its value
        _scrape(backend.registry, series, minute)

    [age] = [v for k, v in series.items() if k.startswith("squall_iterator_age_seconds")]
    assert BEHIND_S <= float(age[-1]) < BEHIND_S + 60
    assert not [k for k in series if k.startswith("squall_millis_behind_latest")]  # none: a queue
    [rule] = [
        r for r in prometheus_rules(topology)["groups"][0]["rules"] if r["alert"] == "SquallLagHigh"
    ]
    fires = [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]
    promtool_test(
        tmp_path,
        prometheus_rules(topology),
        series,
        [
            {"eval_time": "8m", "alertname": "SquallLagHigh", "exp_alerts": fires},
            # drained: the last age stays, but no record goes through: not lagging
            {"eval_time": "20m", "alertname": "SquallLagHigh", "exp_alerts": []},
        ],
    )
    assert rule["annotations"]["summary"] == (
        "queued's messages are more than 60s old when processed: the queue's backlog grows"
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_an_sqs_consumer_that_keeps_up_raises_no_lag_alert(tmp_path: Path):
    topology = load_text(TOPOLOGY.format(url="https://sqs.invalid/1/q", endpoint="http://x"))
    series = {
        'squall_iterator_age_seconds{topology="queued"}': ["0.2"] * 16,
        'squall_topology_records_total{outcome="committed",topology="queued"}': [
            str(100 * m) for m in range(16)
        ],
    }
    promtool_test(
        tmp_path,
        prometheus_rules(topology),
        series,
        [{"eval_time": "15m", "alertname": "SquallLagHigh", "exp_alerts": []}],
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_an_idle_instance_s_old_age_raises_no_alert_beside_a_busy_one(tmp_path: Path):
    """Two ``squall run`` of one topology on one queue (an SQS consumer scales out so): the
    first processed old messages, then took nothing more — its gauge keeps that age — while
    the second processes fresh messages. No run is behind: no alert. The rule matched the
    topology's largest age with the topology's record rate, and fired as long as the idle
    run's age stayed above --lag-ms. Once the busy run falls behind, the alert names it."""
    topology = load_text(TOPOLOGY.format(url="https://sqs.invalid/1/q", endpoint="http://x"))
    a, b = 'instance="a:9000",job="squall"', 'instance="b:9000",job="squall"'
    series = {
        f'squall_iterator_age_seconds{{{a},topology="queued"}}': ["300"] * 45,
        f'squall_topology_records_total{{{a},outcome="committed",topology="queued"}}': ["10"] * 45,
        f'squall_iterator_age_seconds{{{b},topology="queued"}}': ["0.2"] * 30 + ["200"] * 15,
        f'squall_topology_records_total{{{b},outcome="committed",topology="queued"}}': [
            str(100 * m) for m in range(45)
        ],
    }
    [rule] = [
        r for r in prometheus_rules(topology)["groups"][0]["rules"] if r["alert"] == "SquallLagHigh"
    ]
    labels = {**rule["labels"], "instance": "b:9000", "job": "squall"}
    promtool_test(
        tmp_path,
        prometheus_rules(topology),
        series,
        [
            {"eval_time": "25m", "alertname": "SquallLagHigh", "exp_alerts": []},
            {
                "eval_time": "40m",
                "alertname": "SquallLagHigh",
                "exp_alerts": [{"exp_labels": labels, "exp_annotations": rule["annotations"]}],
            },
        ],
    )
