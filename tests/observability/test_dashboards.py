"""Alarms, alerting rules and dashboards generated from a topology: valid, and following its graph."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import promql_parser
import pytest
import yaml

from squall.deploy.template import sam_template
from squall.observability.dashboards import (
    cloudwatch_dashboard,
    components,
    grafana_dashboard,
    prometheus_rules,
)
from squall.observability.metrics import BatchSample
from squall.topology.loader import load
from tests.conftest import EXAMPLES

PISTATS = EXAMPLES / "pistats" / "topology.yaml"


def promql(expr: str) -> None:
    promql_parser.parse(expr.replace("$__rate_interval", "5m"))  # raises ValueError on bad PromQL


def test_grafana_dashboard_has_an_overview_then_one_row_per_component_in_plan_order():
    topo = load(PISTATS)
    dash = grafana_dashboard(topo)
    json.loads(json.dumps(dash))
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["pistats: overview", *[f"{kind} {cid}" for cid, kind in components(topo)]]
    assert rows[1:4] == ["spout spout", "bolt decode", "bolt validate"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']} overlaps another"
                cells.add((x, y))
        for target in p.get("targets", []):
            promql(target["expr"])
            assert 'topology="pistats"' in target["expr"]
    assert dash["schemaVersion"] >= 36 and dash["templating"]["list"][0]["type"] == "datasource"


def test_prometheus_rules_parse_and_name_the_topology():
    rules = prometheus_rules(load(PISTATS))
    [group] = rules["groups"]
    names = [r["alert"] for r in group["rules"]]
    assert names == [
        "SquallLagHigh",
        "SquallDeadLetterRateHigh",
        "SquallBatchesFailing",
        "SquallRecordsFailing",
        "SquallStalled",
        "SquallHung",
        "SquallRetrying",
        "SquallRestarting",
    ]
    for r in group["rules"]:
        promql(r["expr"])
        assert r["labels"]["topology"] == "pistats"


PROMTOOL_TEST = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'squall_millis_behind_latest{{topology="pistats",shard="shardId-000000000000"}}'
        values: '0 1000 90000x10'
      - series: 'squall_topology_records_total{{topology="pistats",outcome="committed"}}'
        values: '0+100x15'
      - series: 'squall_topology_records_total{{topology="pistats",outcome="dead_lettered"}}'
        values: '0+5x15'
      - series: 'squall_batches_total{{topology="pistats",status="failed"}}'
        values: '0x15'
    alert_rule_test:
      - eval_time: 10m
        alertname: SquallLagHigh
        exp_alerts:
          - exp_labels: {{severity: warning, topology: pistats}}
            exp_annotations: {{summary: "pistats is more than 60s behind the tip of a shard"}}
      - eval_time: 15m
        alertname: SquallDeadLetterRateHigh
        exp_alerts:
          - exp_labels: {{severity: warning, topology: pistats}}
            exp_annotations: {{summary: "pistats dead-letters more than 1.0% of its records"}}
      - eval_time: 15m
        alertname: SquallBatchesFailing
        exp_alerts: []
"""


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian: apt install prometheus)",
)
def test_promtool_checks_the_rules_and_their_alerts_fire_on_lag_and_dead_letters(tmp_path: Path):
    r = subprocess.run(
        [sys.executable, "-m", "squall.cli", "dashboards", str(PISTATS), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    rules = tmp_path / "pistats.rules.yaml"
    check = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0 and "8 rules found" in check.stdout, check.stdout + check.stderr
    (tmp_path / "test.yaml").write_text(PROMTOOL_TEST.format(rules=rules.name))
    test = subprocess.run(
        ["promtool", "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert json.loads((tmp_path / "pistats.grafana.json").read_text())["title"] == "squall: pistats"


def _emf_metrics(samples: list) -> set[tuple[str, str]]:
    """(namespace, metric name) of every metric in the EMF documents the Lambda's backend prints
    for ``samples``, with the topology's dimensions (Topology, service)."""
    import contextlib
    import io

    from squall.observability.emf import EmfBackend

    backend = EmfBackend(service="pistats")
    for sample in samples:
        backend.record(sample)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        backend.flush()
    found = set()
    for line in out.getvalue().splitlines():
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            if sorted(directive["Dimensions"][0]) == ["Topology", "service"]:
                found.update((directive["Namespace"], m["Name"]) for m in directive["Metrics"])
    return found


def test_consumer_template_gets_alarms_and_a_dashboard_whose_rows_follow_the_graph():
    topo = load(PISTATS)
    template = sam_template(topo, PISTATS.read_text(), handler="consumer", code_uri="function.zip")
    res = template["Resources"]
    alarms = {k: v for k, v in res.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert sorted(alarms) == [
        "PistatsDeadLetterRateAlarm",
        "PistatsErrorsAlarm",
        "PistatsFailedBatchesAlarm",
        "PistatsIteratorAgeAlarm",
        "PistatsRecordsFailedAlarm",
        "PistatsThrottlesAlarm",
    ]
    # The failed-batch and failed-record alarms watch what the Lambda's EMF documents carry for a
    # failed batch and a failed record (the handler answers batchItemFailures: Errors stays 0).
    emitted = _emf_metrics(
        [
            BatchSample("pistats", 1, 2, 0.1, "failed", error="down"),
            BatchSample("pistats", 2, 2, 0.1, "records_failed", outcomes={"failed": 1}),
        ]
    )
    for name in ("PistatsFailedBatchesAlarm", "PistatsRecordsFailedAlarm"):
        props = alarms[name]["Properties"]
        assert (props["Namespace"], props["MetricName"]) in emitted, (props, emitted)
        assert props["Dimensions"] == [
            {"Name": "Topology", "Value": "pistats"},
            {"Name": "service", "Value": "pistats"},
        ]
    assert alarms["PistatsIteratorAgeAlarm"]["Properties"]["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": "Function"}}
    ]
    ratio = alarms["PistatsDeadLetterRateAlarm"]["Properties"]["Metrics"]
    assert [m["MetricStat"]["Metric"]["MetricName"] for m in ratio[:5]] == [
        "RecordsCommitted",
        "RecordsDeadLettered",
        "RecordsFiltered",
        "RecordsFailed",
        "RecordsHeld",
    ]
    # the ratio's denominator is every record read, held ones too (m4 was defined and unused)
    assert ratio[5]["Expression"] == "m1 / (m0 + m1 + m2 + m3 + m4)"
    body = json.loads(res["PistatsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"])
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert titles[4:8] == [
        "spout spout: records",
        "spout: time per batch (ms)",
        "bolt decode: records",
        "decode: time per batch (ms)",
    ]
    assert [
        "AWS/Lambda",
        "IteratorAge",
        "FunctionName",
        "${Function}",
        {"stat": "Maximum", "label": "Lambda"},
    ] in body["widgets"][1]["properties"]["metrics"]
    producer = sam_template(topo, PISTATS.read_text(), handler="producer", code_uri="function.zip")
    assert not any(v["Type"].startswith("AWS::CloudWatch") for v in producer["Resources"].values())


def test_cloudwatch_dashboard_metrics_use_the_emf_names_and_dimensions():
    body = cloudwatch_dashboard(load(PISTATS), region="eu-west-1")
    names = {m[1] for w in body["widgets"] for m in w["properties"]["metrics"]}
    assert {
        "RecordsIn",
        "RecordsOut",
        "RecordsDeadLettered",
        "ComponentDuration",
        "RecordsCommitted",
        "IteratorAge",
        "BatchDuration",
    } <= names
    for w in body["widgets"]:
        for m in w["properties"]["metrics"]:
            dims = dict(zip(m[2:-1:2], m[3:-1:2], strict=True))
            assert dims.get("Topology") == "pistats" and dims.get("service") == "pistats"
    yaml.safe_dump(body)


def test_grafana_loads_the_dashboard_with_its_own_schema_models():
    """Grafana's foundation SDK (its schema as typed models) decodes the generated dashboard, and
    nothing of it is lost on the way: every panel with its type, title, layout and queries."""
    from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel

    dash = grafana_dashboard(load(PISTATS))
    model = Dashboard.from_json(json.loads(json.dumps(dash)))
    assert model.title == dash["title"] and len(model.panels) == len(dash["panels"])
    for panel, loaded in zip(dash["panels"], model.panels, strict=True):
        assert isinstance(loaded, RowPanel if panel["type"] == "row" else Panel)
        assert loaded.title == panel["title"]
        again = _plain(loaded)
        assert (again["type"], again["gridPos"]) == (panel["type"], panel["gridPos"])
        assert [t["expr"] for t in again.get("targets", [])] == [
            t["expr"] for t in panel.get("targets", [])
        ]


def _plain(obj):
    """A model of the SDK back to plain JSON values (its to_json is one level deep)."""
    if hasattr(obj, "to_json"):
        return _plain(obj.to_json())
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _matchers(node) -> list:
    """Every label matcher of a parsed PromQL expression."""
    found = []
    for name in ("expr", "lhs", "rhs", "vector_selector"):
        if hasattr(node, name):
            found += _matchers(getattr(node, name))
    for arg in getattr(node, "args", []) or []:
        found += _matchers(arg)
    matchers = getattr(node, "matchers", None)
    if matchers is not None:
        found += list(matchers.matchers)
    return found


def test_a_component_id_with_quotes_and_backslashes_is_escaped_in_the_grafana_queries():
    """An id may hold any printable character but a space: ``"`` and ``\\`` made the panel's
    PromQL invalid (Grafana shows an error instead of the component's records)."""
    from squall.topology.loader import load_text

    cid = 'geo"v2\\eu'
    topo = load_text(
        f"name: q\nspout: {{type: stdin}}\nbolts: [{{id: {json.dumps(cid)}, type: json}}]\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    exprs = [t["expr"] for p in grafana_dashboard(topo)["panels"] for t in p.get("targets", [])]
    named = []
    for expr in exprs:
        tree = promql_parser.parse(expr.replace("$__rate_interval", "5m"))
        named += [m.value for m in _matchers(tree) if m.name == "component"]
    assert named == ["spout", "spout", cid, cid, "out", "out"]  # records, time per batch


def test_the_generated_dashboard_and_rules_read_no_deprecated_metric():
    """`squall_iterator_age_milliseconds` gave way to `squall_iterator_age_seconds` (Prometheus'
    base unit) and stays exported for one release, deprecated: what `squall dashboards` writes
    reads the new name only — the Grafana lag panel read the milliseconds. Every metric a query
    names is one squall exports."""
    from squall.observability.metrics import METRICS

    topo = load(PISTATS)
    exprs = [
        target["expr"]
        for panel in grafana_dashboard(topo)["panels"]
        for target in panel.get("targets", [])
    ] + [rule["expr"] for group in prometheus_rules(topo)["groups"] for rule in group["rules"]]
    current = {spec.prometheus for spec in METRICS if not spec.deprecated}
    read = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for expr in exprs
        for name in re.findall(r"\bsquall_\w+", expr)
    }
    assert "squall_iterator_age_seconds" in read
    assert read <= current, read - current


def _lambda_alarms(template: dict) -> dict[str, str]:
    return {
        name: r["Properties"]["MetricName"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("Namespace") == "AWS/Lambda"
    }


def test_an_s3_triggered_function_is_watched_for_dropped_events_not_an_iterator_age():
    """The ETL example's ingest (S3 notifications, invoked asynchronously) got the stream
    consumer's alarm on `IteratorAge`, a metric Lambda emits only for stream sources: it could
    never fire, while an event Lambda gave up after its two retries — an object not all read —
    raised nothing but the `Errors` of its attempts. It now has an alarm on `AsyncEventsDropped`
    (its dashboard shows `AsyncEventAge`); a queue-triggered function has no lag alarm of the
    function (the queue's age says it); a Kinesis consumer keeps `IteratorAge`."""
    from squall.deploy.template import TemplateOptions
    from tests.deploy.sam import translate

    ingest = EXAMPLES / "etl" / "ingest.yaml"
    topo, text = load(ingest), ingest.read_text()
    template = sam_template(topo, text, handler="consumer", code_uri="ingest.zip")
    assert _lambda_alarms(template) == {
        "EtlIngestEventsDroppedAlarm": "AsyncEventsDropped",
        "EtlIngestErrorsAlarm": "Errors",
        "EtlIngestThrottlesAlarm": "Throttles",
    }
    errors = template["Resources"]["EtlIngestErrorsAlarm"]["Properties"]["AlarmDescription"]
    assert "batchItemFailures" not in errors and "Lambda retries the event" in errors
    body = json.loads(
        template["Resources"]["EtlIngestDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    )
    lag = [m[1] for m in body["widgets"][1]["properties"]["metrics"] if m[0] == "AWS/Lambda"]
    assert lag == ["AsyncEventAge"]
    translate(template)
    eventbridge = sam_template(
        topo,
        text,
        handler="consumer",
        code_uri="ingest.zip",
        options=TemplateOptions(s3_delivery="eventbridge"),
    )
    assert "EtlIngestEventsDroppedAlarm" in _lambda_alarms(eventbridge)
    queued = sam_template(
        topo,
        text,
        handler="consumer",
        code_uri="ingest.zip",
        options=TemplateOptions(s3_delivery="sqs", s3_bucket="existing"),
    )
    assert set(_lambda_alarms(queued).values()) == {"Errors", "Throttles"}
    transform = EXAMPLES / "etl" / "transform.yaml"
    kinesis = sam_template(
        load(transform), transform.read_text(), handler="consumer", code_uri="t.zip"
    )
    assert _lambda_alarms(kinesis)["EtlTransformIteratorAgeAlarm"] == "IteratorAge"


def _queue_age_alarms(template: dict) -> list[dict]:
    return [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("Namespace") == "AWS/SQS"
        and r["Properties"]["MetricName"] == "ApproximateAgeOfOldestMessage"
    ]


def test_a_queue_triggered_function_is_watched_by_the_age_of_its_queue_s_oldest_message(
    tmp_path: Path,
):
    """An SQS-triggered function (an sqs spout, or S3 notifications through a queue) had no lag
    alarm at all once `IteratorAge` (a stream's metric, which never fired for it) was left out:
    a consumer falling behind, or failing its messages until their redrive, raised nothing. The
    queue's `ApproximateAgeOfOldestMessage` (seconds) now says it, on the queue the event source
    mapping reads."""
    from squall.deploy.template import TemplateOptions
    from tests.deploy.sam import cfn_lint, translate

    ingest = EXAMPLES / "etl" / "ingest.yaml"
    queued = sam_template(
        load(ingest),
        ingest.read_text(),
        handler="consumer",
        code_uri="ingest.zip",
        options=TemplateOptions(s3_delivery="sqs", s3_bucket="existing"),
    )
    [alarm] = _queue_age_alarms(queued)
    assert alarm["Dimensions"] == [
        {
            "Name": "QueueName",
            "Value": {"Fn::Select": [5, {"Fn::Split": [":", {"Ref": "NotificationQueueArn"}]}]},
        }
    ]
    assert alarm["Statistic"] == "Maximum" and alarm["Threshold"] == 60
    path = tmp_path / "topology.yaml"
    path.write_text(
        "name: orders-q\n"
        "spout: {type: sqs, queue: 'https://sqs.eu-west-1.amazonaws.com/123456789012/orders'}\n"
        "bolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    sqs = sam_template(load(path), path.read_text(), handler="consumer", code_uri="q.zip")
    [alarm] = _queue_age_alarms(sqs)
    [event] = sqs["Resources"]["Function"]["Properties"]["Events"].values()
    queue = event["Properties"]["Queue"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::Select": [5, {"Fn::Split": [":", queue]}]}
    for template in (queued, sqs):
        out = tmp_path / "t.json"
        out.write_text(json.dumps(translate(template)))
        lint = cfn_lint(out)
        assert lint.returncode == 0, lint.stdout
    ingest_direct = sam_template(
        load(ingest), ingest.read_text(), handler="consumer", code_uri="ingest.zip"
    )
    assert _queue_age_alarms(ingest_direct) == []


def _descriptions(template: dict) -> dict[str, str]:
    return {
        name: r["Properties"]["AlarmDescription"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def _lag_labels(template: dict, dashboard: str) -> list[str]:
    body = json.loads(template["Resources"][dashboard]["Properties"]["DashboardBody"]["Fn::Sub"])
    return [m[-1]["label"] for m in body["widgets"][1]["properties"]["metrics"]]


def test_the_alarms_of_s3_and_sqs_triggered_functions_say_what_becomes_of_a_failure(
    tmp_path: Path,
):
    """The failed-records and failed-batches alarms of every consumer spoke of a stream ("their
    shard waits for them", "nothing after the batch is checkpointed"): an S3 event has no shard
    (Lambda's asynchronous queue retries it twice, then drops it), an SQS message neither (it
    goes back to its queue until the redrive policy moves it). Each trigger now reads its own."""
    from squall.deploy.template import TemplateOptions

    ingest = EXAMPLES / "etl" / "ingest.yaml"
    topo, text = load(ingest), ingest.read_text()
    path = tmp_path / "topology.yaml"
    path.write_text(
        "name: orders-q\n"
        "spout: {type: sqs, queue: 'https://sqs.eu-west-1.amazonaws.com/123456789012/orders'}\n"
        "bolts: [{id: decode, type: json}]\n"
        "sinks: [{id: out, type: stdout}]\n"
    )
    transform = EXAMPLES / "etl" / "transform.yaml"
    cases = {
        "async": [
            (sam_template(topo, text, handler="consumer", code_uri="i.zip"), "EtlIngest"),
            (
                sam_template(
                    topo,
                    text,
                    handler="consumer",
                    code_uri="i.zip",
                    options=TemplateOptions(s3_delivery="eventbridge"),
                ),
                "EtlIngest",
            ),
        ],
        "queue": [
            (
                sam_template(
                    topo,
                    text,
                    handler="consumer",
                    code_uri="i.zip",
                    options=TemplateOptions(s3_delivery="sqs", s3_bucket="existing"),
                ),
                "EtlIngest",
            ),
            (
                sam_template(load(path), path.read_text(), handler="consumer", code_uri="q.zip"),
                "OrdersQ",
            ),
        ],
        "stream": [
            (
                sam_template(
                    load(transform), transform.read_text(), handler="consumer", code_uri="t.zip"
                ),
                "EtlTransform",
            )
        ],
    }
    for invocation, templates in cases.items():
        for template, prefix in templates:
            said = _descriptions(template)
            records = said[f"{prefix}RecordsFailedAlarm"]
            batches = said[f"{prefix}FailedBatchesAlarm"]
            labels = _lag_labels(template, f"{prefix}Dashboard")
            if invocation == "stream":
                assert records.endswith("their shard waits for them")
                assert "nothing after the batch is checkpointed" in batches
                assert labels[0] == "iterator age"
                continue
            assert not any("shard" in d or "checkpoint" in d for d in said.values()), said
            if invocation == "async":
                assert "S3 event, which Lambda retries twice, then drops" in records
                assert "Lambda's asynchronous queue retries" in batches
                assert labels == ["event age", "Lambda"]
            else:
                assert "messages go back to the queue" in records and "redrive" in records
                assert "batchItemFailures" in batches and "back to the queue" in batches
                assert labels == ["message age"]
