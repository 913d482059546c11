"""Alarms and dashboards generated from a topology: CloudWatch (Lambda) and Prometheus/Grafana (KCL, run).

The dashboards follow the topology graph: an overview row (records by outcome, lag, batch
duration, failures; the time since each heartbeat), then one row per component in plan order —
spout, bolts, sinks — with its records in, out, dead-lettered, filtered and its time per batch.
The alarms are the ones an operator of a stream consumer needs: lag (iterator age /
MillisBehindLatest) over a threshold, a dead-letter rate, failed batches, a hang (no batch end
nor idle poll: Prometheus only), a runner restarting again and again (Prometheus only), and for
Lambda the function's errors and throttles.

Size (~660 lines): two generators (CloudWatch; Prometheus rules and Grafana) of declarative
JSON, most of it panel and alarm literals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from squall.observability.emf import NAMESPACE, cloudwatch_name
from squall.observability.metrics import RECORD_OUTCOMES
from squall.topology.model import Topology


@dataclass(frozen=True)
class Thresholds:
    """Alarm thresholds (defaults suit a consumer that should stay within a minute of the tip)."""

    lag_ms: int = 60_000
    dead_letter_ratio: float = 0.01
    period_s: int = 300
    #: Seconds without a batch end or an idle poll (``SquallHung``): far above a slow batch (a
    #: minute), an SQS long poll (20 s) and the KCL's retry backoff (30 s).
    heartbeat_s: int = 300
    #: Seconds one batch may retry a dependency that is down (``SquallRetrying``): a database
    #: restart or failover rides it out; longer, the records wait and someone should look.
    retrying_s: int = 300
    #: Restarts of one runner within ``restart_window`` (``SquallRestarting``): a deploy restarts
    #: it once, a deploy and its rollback twice; a runner that exits at start does every few
    #: seconds (systemd's RestartSec) — each start a scrape sees counts.
    restarts: int = 3
    restart_window: str = "30m"


def components(topology: Topology) -> list[tuple[str, str]]:
    """(id, kind) of the spout, the bolts and the sinks, in plan order."""
    plan = topology.plan
    return [(plan.spout_id, "spout"), *[(n.id, n.kind) for n in plan.nodes]]


def _logical(name: str) -> str:
    return "".join(ch for ch in name.title() if ch.isalnum())


# -- CloudWatch (squall package --template) -------------------------------------------------------


#: How the consumer function is invoked, for its Lambda alarms: by an event source mapping on a
#: stream (``IteratorAge``), asynchronously (S3 directly or through EventBridge: Lambda retries a
#: failed event twice and then drops it, ``AsyncEventsDropped``; no ``IteratorAge``), or by one
#: on a queue (no ``IteratorAge`` either: the queue's own age of the oldest message says it).
INVOCATIONS = ("stream", "async", "queue")

#: What becomes of a failed batch, and of records failed with no dead letter, per invocation (the
#: alarms' words): a stream's shard waits from its checkpoint; an S3 event (no shard) is retried
#: by Lambda's asynchronous queue, then dropped; an SQS message (no shard) goes back to its queue.
_FAILED = {
    "stream": (
        "nothing after the batch is checkpointed and Lambda retries it",
        "their shard waits for them",
    ),
    "async": (
        "the function fails its S3 event, which Lambda's asynchronous queue retries (twice, then "
        "drops it — to the on-failure destination if the function has one)",
        "the function fails their S3 event, which Lambda retries twice, then drops (to the "
        "on-failure destination if the function has one; squall run with the s3 spout reads the "
        "object again)",
    ),
    "queue": (
        "its messages are answered as failures (batchItemFailures) and go back to the queue, "
        "seen again after its visibility timeout",
        "their messages go back to the queue, seen again after its visibility timeout until its "
        "redrive policy moves them to its dead-letter queue",
    ),
}
#: The lag series' label on the dashboard: a stream's iterator age; an S3 event's or an SQS
#: message's age (squall's ``iterator_age`` of such a batch).
_AGE_LABEL = {"stream": "iterator age", "async": "event age", "queue": "message age"}


def cloudwatch_resources(
    topology: Topology,
    *,
    function: str = "Function",
    namespace: str = NAMESPACE,
    thresholds: Thresholds = Thresholds(),
    invocation: str = "stream",
    queue: Any = None,
) -> dict[str, Any]:
    """CloudFormation resources: six alarms and a dashboard, for the consumer function ``function``
    invoked as ``invocation`` says (``INVOCATIONS``): the lag alarm on a stream's iterator age,
    for an asynchronous function one on the events Lambda dropped, for a queue's one on the age
    of the oldest message of ``queue`` (the ARN its event source mapping reads, a CloudFormation
    value)."""
    t, th = topology.name, thresholds
    fn_dim = [{"Name": "FunctionName", "Value": {"Ref": function}}]
    squall_dims = [{"Name": "Topology", "Value": t}, {"Name": "service", "Value": t}]
    prefix = _logical(t)

    def lambda_alarm(metric: str, stat: str, threshold: float, what: str) -> dict[str, Any]:
        return {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": f"squall {t}: {what}",
                "Namespace": "AWS/Lambda",
                "MetricName": metric,
                "Dimensions": fn_dim,
                "Statistic": stat,
                "Period": 60,
                "EvaluationPeriods": 5,
                "DatapointsToAlarm": 3,
                "Threshold": threshold,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
            },
        }

    def squall_alarm(metric: str, what: str) -> dict[str, Any]:
        """Any of the topology's ``metric`` (EMF, summed per minute) in 2 of 3 minutes."""
        return {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": f"squall {t}: {what}",
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": squall_dims,
                "Statistic": "Sum",
                "Period": 60,
                "EvaluationPeriods": 3,
                "DatapointsToAlarm": 2,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
            },
        }

    def squall_metric(mid: str, name: str, visible: bool = False) -> dict[str, Any]:
        return {
            "Id": mid,
            "ReturnData": visible,
            "MetricStat": {
                "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": squall_dims},
                "Period": th.period_s,
                "Stat": "Sum",
            },
        }

    outcomes = [
        squall_metric(f"m{i}", cloudwatch_name("outcomes", o))
        for i, o in enumerate(RECORD_OUTCOMES)
    ]
    dead, n = RECORD_OUTCOMES.index("dead_lettered"), len(RECORD_OUTCOMES)
    if invocation not in INVOCATIONS:
        raise ValueError(f"invocation must be one of {', '.join(INVOCATIONS)}")
    resources: dict[str, Any] = {}
    if invocation == "stream":
        resources[f"{prefix}IteratorAgeAlarm"] = lambda_alarm(
            "IteratorAge",
            "Maximum",
            th.lag_ms,
            f"iterator age over {th.lag_ms} ms: the consumer falls behind",
        )
    elif invocation == "async":
        dropped = lambda_alarm(
            "AsyncEventsDropped",
            "Sum",
            0,
            "events dropped: Lambda gave an event up after its retries (or it was too old); its "
            "objects were not all read — it is in the on-failure destination if the function "
            "has one, and squall run with the s3 spout reads them again",
        )
        dropped["Properties"].update(EvaluationPeriods=1, DatapointsToAlarm=1)
        resources[f"{prefix}EventsDroppedAlarm"] = dropped
    elif queue is not None:  # the queue's own lag (Lambda has none for it): seconds, per minute
        aged = lambda_alarm(
            "ApproximateAgeOfOldestMessage",
            "Maximum",
            th.lag_ms / 1000,
            f"oldest message of the trigger queue over {th.lag_ms / 1000:g} s: the consumer "
            "falls behind, or fails messages that the queue keeps until its redrive policy moves "
            "them",
        )
        aged["Properties"].update(
            Namespace="AWS/SQS",
            Dimensions=[
                {"Name": "QueueName", "Value": {"Fn::Select": [5, {"Fn::Split": [":", queue]}]}}
            ],
        )
        resources[f"{prefix}QueueAgeAlarm"] = aged
    raised = (
        "a line that failed, an object that could not be read: Lambda retries the event"
        if invocation == "async"
        else "an event it cannot read; a failed batch is answered with batchItemFailures, see "
        "the two alarms below"
    )
    batches_failed, records_failed = _FAILED[invocation]
    resources |= {
        f"{prefix}ErrorsAlarm": lambda_alarm(
            "Errors",
            "Sum",
            0,
            f"function errors (the handler raised: {raised}; a failed init)",
        ),
        f"{prefix}FailedBatchesAlarm": squall_alarm(
            cloudwatch_name("batches", "failed"),
            f"batches failed: a dependency stayed down through the retries; {batches_failed}",
        ),
        f"{prefix}RecordsFailedAlarm": squall_alarm(
            cloudwatch_name("outcomes", "failed"),
            f"records failed with no dead letter to take them: {records_failed}",
        ),
        f"{prefix}ThrottlesAlarm": lambda_alarm("Throttles", "Sum", 0, "function throttled"),
        f"{prefix}DeadLetterRateAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": f"squall {t}: more than {th.dead_letter_ratio:.1%} of records dead-lettered",
                "Metrics": [
                    *outcomes,
                    {
                        "Id": "ratio",
                        "ReturnData": True,
                        "Label": "dead-letter ratio",
                        # every outcome: a held record was read too (as in the Prometheus rule)
                        "Expression": f"m{dead} / ({' + '.join(f'm{i}' for i in range(n))})",
                    },
                ],
                "EvaluationPeriods": 2,
                "DatapointsToAlarm": 2,
                "Threshold": th.dead_letter_ratio,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
            },
        },
        f"{prefix}Dashboard": {
            "Type": "AWS::CloudWatch::Dashboard",
            "Properties": {
                "DashboardName": f"squall-{t}",
                "DashboardBody": {
                    "Fn::Sub": json.dumps(
                        cloudwatch_dashboard(
                            topology,
                            namespace=namespace,
                            function="${" + function + "}",
                            invocation=invocation,
                        )
                    )
                },
            },
        },
    }
    return resources


def cloudwatch_dashboard(
    topology: Topology,
    *,
    namespace: str = NAMESPACE,
    function: str = "",
    region: str = "${AWS::Region}",
    invocation: str = "stream",
) -> dict[str, Any]:
    """The dashboard body: an overview row, then one row per component (records; time per batch).
    With a ``function``, its lag beside squall's: ``IteratorAge`` on a stream, ``AsyncEventAge``
    invoked asynchronously (``INVOCATIONS``)."""
    t = topology.name
    widgets: list[dict[str, Any]] = []

    def metric(name: str, *dims: str, stat: str = "Sum", label: str | None = None) -> list[Any]:
        keys = (
            ["Topology", "Component", "service"][: len(dims)]
            if len(dims) == 3
            else ["Topology", "service"]
        )
        m: list[Any] = [namespace, name]
        for k, v in zip(keys, dims, strict=True):
            m += [k, v]
        return m + [{"stat": stat, **({"label": label} if label else {})}]

    def widget(
        x: int,
        y: int,
        w: int,
        title: str,
        metrics: list[list[Any]],
        *,
        stat: str = "Sum",
        unit: str | None = None,
    ) -> dict[str, Any]:
        props: dict[str, Any] = {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stacked": False,
            "period": 60,
            "stat": stat,
            "metrics": metrics,
        }
        if unit:
            props["yAxis"] = {"left": {"label": unit, "showUnits": False}}
        return {"type": "metric", "x": x, "y": y, "width": w, "height": 6, "properties": props}

    outcomes = [metric(cloudwatch_name("outcomes", o), t, t, label=o) for o in RECORD_OUTCOMES]
    if invocation not in INVOCATIONS:
        raise ValueError(f"invocation must be one of {', '.join(INVOCATIONS)}")
    age = _AGE_LABEL[invocation]
    lag = [metric(cloudwatch_name("iterator_age"), t, t, stat="Maximum", label=age)]
    lambda_lag = {"stream": "IteratorAge", "async": "AsyncEventAge"}.get(invocation)
    if function and lambda_lag:
        lag.append(
            [
                "AWS/Lambda",
                lambda_lag,
                "FunctionName",
                function,
                {"stat": "Maximum", "label": "Lambda"},
            ]
        )
    batch = [
        metric(cloudwatch_name("batch_seconds"), t, t, stat=s, label=s) for s in ("Average", "p99")
    ]
    failures = [
        metric(cloudwatch_name("batches", "failed"), t, t, label="batches failed"),
        metric(cloudwatch_name("batches", "records_failed"), t, t, label="records failed"),
    ]
    if function:
        failures += [
            ["AWS/Lambda", "Errors", "FunctionName", function, {"stat": "Sum"}],
            ["AWS/Lambda", "Throttles", "FunctionName", function, {"stat": "Sum"}],
        ]
    widgets += [
        widget(0, 0, 6, f"{t}: records by outcome", outcomes),
        widget(6, 0, 6, "lag (ms)", lag, stat="Maximum", unit="ms"),
        widget(12, 0, 6, "batch duration (ms)", batch, stat="Average", unit="ms"),
        widget(18, 0, 6, "failures", failures),
    ]
    for row, (cid, kind) in enumerate(components(topology), start=1):
        records = [
            metric(cloudwatch_name("records", o), t, cid, t, label=o)
            for o in ("in", "out", "dead_lettered", "filtered", "failed")
        ]
        time_ = [
            metric(cloudwatch_name("component_seconds"), t, cid, t, stat=s, label=s)
            for s in ("Average", "p99")
        ]
        widgets += [
            widget(0, row * 6, 16, f"{kind} {cid}: records", records),
            widget(16, row * 6, 8, f"{cid}: time per batch (ms)", time_, stat="Average", unit="ms"),
        ]
    return {"widgets": widgets}


# -- Prometheus and Grafana (squall dashboards) ----------------------------------------------------


def prometheus_rules(
    topology: Topology, *, thresholds: Thresholds = Thresholds()
) -> dict[str, Any]:
    """A Prometheus rules file (alerting rules for the topology), as a dict to dump as YAML."""
    t, th = topology.name, thresholds
    sel = f'topology="{t}"'
    records = f"sum(rate(squall_topology_records_total{{{sel}}}[5m]))"
    dead = f'sum(rate(squall_topology_records_total{{{sel},outcome="dead_lettered"}}[5m]))'
    if topology.spout.type == "sqs":
        # A queue has no MillisBehindLatest (the rule read only that: an SQS consumer falling
        # behind raised nothing). Its lag is the age of the batches' messages, a gauge that keeps
        # its last value on an idle queue: read it while records go through — each series with
        # its own run's records (an SQS consumer scales out: one run's old age beside another's
        # records is not lag).
        own_records = f"sum without (outcome) (rate(squall_topology_records_total{{{sel}}}[5m]))"
        lag = (
            f"squall_iterator_age_seconds{{{sel}}} * 1000 > {th.lag_ms} and {own_records} > 0",
            f"{t}'s messages are more than {th.lag_ms / 1000:.0f}s old when processed: the "
            "queue's backlog grows",
        )
    else:
        lag = (
            f"max(squall_millis_behind_latest{{{sel}}}) > {th.lag_ms}",
            f"{t} is more than {th.lag_ms / 1000:.0f}s behind the tip of a shard",
        )

    def alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": {"severity": severity, "topology": t},
            "annotations": {"summary": summary},
        }

    return {
        "groups": [
            {
                "name": f"squall-{t}",
                "rules": [
                    alert("SquallLagHigh", lag[0], "5m", "warning", lag[1]),
                    alert(
                        "SquallDeadLetterRateHigh",
                        f"{dead} / {records} > {th.dead_letter_ratio}",
                        "10m",
                        "warning",
                        f"{t} dead-letters more than {th.dead_letter_ratio:.1%} of its records",
                    ),
                    alert(
                        "SquallBatchesFailing",
                        f'sum(increase(squall_batches_total{{{sel},status="failed"}}[5m])) > 0',
                        "5m",
                        "critical",
                        f"{t}: a dependency is down; batches fail and the checkpoint does not move",
                    ),
                    alert(
                        "SquallRecordsFailing",
                        f'sum(increase(squall_batches_total{{{sel},status="records_failed"}}[5m])) > 0',
                        "0m",
                        "critical",
                        f"{t}: records failed with no dead letter to take them; the shard is retried from its checkpoint",
                    ),
                    alert(
                        "SquallStalled",
                        f"{records} == 0 and max(squall_millis_behind_latest{{{sel}}}) > 0",
                        "10m",
                        "critical",
                        f"{t} processes nothing although records are waiting",
                    ),
                    alert(
                        # Each series alone: one per `squall run`, one per shard of a KCL host
                        # (its labels say which). Lag and failures cannot see a hang: they move
                        # only when a batch ends.
                        "SquallHung",
                        # A batch retrying a dependency moves no heartbeat either: that is
                        # SquallRetrying's (it names the cause), not a hang.
                        f"(time() - squall_last_progress_timestamp_seconds{{{sel}}} > "
                        f"{th.heartbeat_s}) unless "
                        f"squall_retrying_since_timestamp_seconds{{{sel}}} > 0",
                        "0m",
                        "critical",
                        f"{t}: no batch ended and no idle poll for over {th.heartbeat_s}s: a call "
                        "that never returns (a sink, a lookup), a deadlock, or a KCL daemon that "
                        "stopped calling",
                    ),
                    alert(
                        # Set at a batch's first retry, 0 once a batch ends settled: a
                        # dependency down is seen while the batch retries, not when it gives up.
                        "SquallRetrying",
                        f"squall_retrying_since_timestamp_seconds{{{sel}}} > 0 and time() - "
                        f"squall_retrying_since_timestamp_seconds{{{sel}}} > {th.retrying_s}",
                        "0m",
                        "critical",
                        f"{t}: a batch has been retrying a dependency that is down for over "
                        f"{th.retrying_s}s (squall_retries_total says which component)",
                    ),
                    alert(
                        # Each series alone (one per `squall run`, one per `squall kcl` host:
                        # its instance label). A start time changes at each restart; a range
                        # vector holds the samples of the starts scrapes saw, not the gaps
                        # between (a process that is down exports nothing), so a process scraped
                        # many times is one start at any interval. A life shorter than the
                        # interval may go unseen: docs/operating.md's `up` rule covers it.
                        "SquallRestarting",
                        f"changes(squall_start_time_seconds{{{sel}}}[{th.restart_window}]) "
                        f">= {th.restarts}",
                        "0m",
                        "critical",
                        f"{t}: a runner restarted {{{{ $value }}}} times in "
                        f"{th.restart_window}: it exits soon after it starts (a bad secret, a "
                        "dependency refusing connections); its exit status and last log lines "
                        "say why",
                    ),
                ],
            }
        ]
    }


def promql_string(value: str) -> str:
    """``value`` as a PromQL string literal: a component id may hold ``"`` and ``\\``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def grafana_dashboard(topology: Topology) -> dict[str, Any]:
    """A Grafana dashboard (JSON model, schemaVersion 39) over the Prometheus metrics."""
    t = topology.name
    sel = f'topology="{t}"'
    ds = {"type": "prometheus", "uid": "${datasource}"}
    panels: list[dict[str, Any]] = []
    next_id = iter(range(1, 10_000))

    def panel(
        title: str, x: int, y: int, w: int, targets: list[tuple[str, str]], unit: str
    ) -> dict[str, Any]:
        return {
            "id": next(next_id),
            "type": "timeseries",
            "title": title,
            "datasource": ds,
            "gridPos": {"h": 8, "w": w, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "none"},
            },
            "targets": [
                {"refId": chr(65 + i), "datasource": ds, "expr": expr, "legendFormat": legend}
                for i, (expr, legend) in enumerate(targets)
            ],
        }

    def row(title: str, y: int) -> dict[str, Any]:
        return {
            "id": next(next_id),
            "type": "row",
            "title": title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }

    panels.append(row(f"{t}: overview", 0))
    panels += [
        panel(
            "records by outcome",
            0,
            1,
            6,
            [
                (
                    f"sum by (outcome) (rate(squall_topology_records_total{{{sel}}}[$__rate_interval]))",
                    "{{outcome}}",
                )
            ],
            "reqps",
        ),
        panel(
            "lag",
            6,
            1,
            6,
            [
                (f"max by (shard) (squall_millis_behind_latest{{{sel}}})", "{{shard}}"),
                (f"max(squall_iterator_age_seconds{{{sel}}}) * 1000", "iterator age"),
            ],
            "ms",
        ),
        panel(
            "batch duration",
            12,
            1,
            6,
            [
                (
                    f"histogram_quantile(0.99, sum by (le) (rate(squall_batch_duration_seconds_bucket{{{sel}}}"
                    "[$__rate_interval])))",
                    "p99",
                ),
                (
                    f"sum(rate(squall_batch_duration_seconds_sum{{{sel}}}[$__rate_interval])) / "
                    f"sum(rate(squall_batch_duration_seconds_count{{{sel}}}[$__rate_interval]))",
                    "mean",
                ),
            ],
            "s",
        ),
        panel(
            "batches by status",
            18,
            1,
            6,
            [
                (
                    f"sum by (status) (rate(squall_batches_total{{{sel}}}[$__rate_interval]))",
                    "{{status}}",
                )
            ],
            "ops",
        ),
        panel(
            "time since the last batch or idle poll (a hang: it grows); how long a batch retries",
            0,
            9,
            24,
            [
                (
                    f"time() - squall_last_progress_timestamp_seconds{{{sel}}}",
                    "{{instance}} {{shard}}",
                ),
                (
                    f"(time() - squall_retrying_since_timestamp_seconds{{{sel}}}) and "
                    f"squall_retrying_since_timestamp_seconds{{{sel}}} > 0",
                    "retrying {{instance}} {{shard}}",
                ),
            ],
            "s",
        ),
    ]
    y = 17
    for cid, kind in components(topology):
        c = f"{sel},component={promql_string(cid)}"
        panels.append(row(f"{kind} {cid}", y))
        panels += [
            panel(
                f"{cid}: records",
                0,
                y + 1,
                16,
                [
                    (
                        f"sum by (outcome) (rate(squall_records_total{{{c}}}[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
                "reqps",
            ),
            panel(
                f"{cid}: time per batch",
                16,
                y + 1,
                8,
                [
                    (
                        f"histogram_quantile(0.99, sum by (le) (rate(squall_component_duration_seconds_bucket{{{c}}}"
                        "[$__rate_interval])))",
                        "p99",
                    )
                ],
                "s",
            ),
        ]
        y += 9
    return {
        "title": f"squall: {t}",
        "uid": f"squall-{t}"[:40],
        "tags": ["squall"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }
