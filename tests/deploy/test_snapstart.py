"""Lambda SnapStart: warm-up at init, connections closed before the snapshot, hooks after restore.

The lifecycle runs in AWS's own runtime client (awslambdaric, with AWS's snapshot_restore_py):
with ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`` it runs the before-snapshot hooks after init,
asks the Runtime API for ``restore/next`` — which the test's API holds while the test looks at
the "snapshotted" process —, then runs the after-restore hooks and serves invocations.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

from squall.cli import main as cli
from squall.deploy import snapstart
from squall.errors import SquallError
from tests.conftest import EXAMPLES
from tests.deploy.test_template import checked, template_of
from tests.lambda_runtime import LambdaFunction

PISTATS = EXAMPLES / "pistats"

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)

# A bolt that notes, in a JSON-lines file, when its hooks run and what it sees then.
PROBE = """
import json, os
import psycopg2
from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig


class ProbeConfig(ComponentConfig):
    notes: str
    dsn: str
    app: str


class Probe(Bolt):
    Config = ProbeConfig
    summary = "notes its lifecycle"

    def note(self, **what):
        with open(self.config.notes, "a") as fh:
            fh.write(json.dumps(what) + "\\n")

    def connections(self):
        db = psycopg2.connect(self.config.dsn, application_name="probe")
        try:
            with db.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (self.config.app,),
                )
                return cur.fetchone()[0]
        finally:
            db.close()

    def warm_up(self):
        from squall.enrichment import device
        self.note(hook="warm_up", resolver_built=bool(device._shared_resolvers),
                  connections=self.connections())

    def after_restore(self):
        self.note(hook="after_restore")

    def process(self, batch):
        out = Output(self.id)
        out.emit_all(list(batch))
        return out
"""

CONSUMER = """
name: snap
resources:
  warehouse: {{url: "{url}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json, event_id_field: message_id}}
  - {{id: device, type: device, ua_field: ua}}
  - {{id: probe, type: "probe:Probe", notes: "{notes}", dsn: "{dsn}", app: "{app}"}}
sinks:
  - id: events
    type: warehouse
    resource: warehouse
    table: {table}
    columns: {{event_type: event_type, device_class: device.device_class}}
"""


def kinesis_event(values: list[dict]) -> dict:
    return {
        "Records": [
            {
                "kinesis": {
                    "partitionKey": "k",
                    "sequenceNumber": str(1000 + i),
                    "data": base64.b64encode(json.dumps(v).encode()).decode(),
                    "approximateArrivalTimestamp": 1714557600.0,
                },
                "eventSource": "aws:kinesis",
                "eventID": f"shardId-000000000000:{1000 + i}",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
            }
            for i, v in enumerate(values)
        ]
    }


def _connections(dsn: str, app: str) -> int:
    db = psycopg2.connect(dsn)
    try:
        with db.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,))
            return cur.fetchone()[0]
    finally:
        db.close()


def _connections_settled(dsn: str, app: str, deadline_s: float = 15.0) -> int:
    """``_connections``, polled until it is 0 or the deadline passes: its last count."""
    import time

    end = time.monotonic() + deadline_s
    while True:
        n = _connections(dsn, app)
        if n == 0 or time.monotonic() > end:
            return n
        time.sleep(0.1)


@pytest.mark.e2e
def test_a_snapstart_init_warms_up_closes_its_connections_and_reconnects_after_restore(
    pg_url: str, unique_name: str, tmp_path: Path
):
    app = f"squall-snap-{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}application_name={app}"
    notes = tmp_path / "notes.jsonl"
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "consumer.yaml").write_text(
        CONSUMER.format(url=url, notes=notes, dsn=pg_url, app=app, table=unique_name)
    )
    (tmp_path / "consumer_app.py").write_text(
        "from squall.deploy.lambda_consumer import make_handler\n"
        "handler = make_handler('consumer.yaml')\n"
    )
    fn = LambdaFunction(
        "consumer_app.handler",
        tmp_path,
        {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"},
        hold_restore=True,
    )
    try:
        # The runtime asks for restore/next once init and the before-snapshot hooks are done.
        assert fn.api.snapshot_taken.wait(60), fn.log()[-3000:]
        [warm] = [json.loads(line) for line in notes.read_text().splitlines()]
        assert warm["hook"] == "warm_up"
        assert warm["resolver_built"] is True  # the device bolt (before the probe) warmed up
        assert warm["connections"] >= 1  # init opened the warehouse (its table)...
        # ...and the snapshot holds no connection: the process closed its sockets, but a
        # backend leaves pg_stat_activity only once the server has seen the close (a poll with a
        # deadline; without the disconnect the count stays at 1 or more)
        assert _connections_settled(pg_url, app) == 0
        fn.api.restore.set()
        answer = fn.invoke(
            kinesis_event(
                [{"message_id": f"m{i}", "event_type": "page_view", "ua": IPHONE} for i in range(3)]
            )
        )
        assert answer == {"batchItemFailures": []}
        hooks = [json.loads(line)["hook"] for line in notes.read_text().splitlines()]
        assert hooks == ["warm_up", "after_restore"]
        assert fn.api.restore_errors == [] and fn.api.init_errors == []
        db = psycopg2.connect(pg_url)
        try:
            with db.cursor() as cur:
                cur.execute(f"SELECT event_type, device_class FROM {unique_name}")
                assert cur.fetchall() == [("page_view", "mobile")] * 3
                cur.execute(f"DROP TABLE {unique_name}")
            db.commit()
        finally:
            db.close()
    finally:
        fn.stop()


class _Engine:
    """What ``snapstart.prepare`` calls of an engine."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def warm_up(self) -> None:
        self.calls.append("warm_up")

    def before_snapshot(self) -> None:
        self.calls.append("before_snapshot")


def _registered() -> tuple[list, list]:
    import snapshot_restore_py

    return list(snapshot_restore_py.get_before_snapshot()), list(
        snapshot_restore_py.get_after_restore()
    )


@pytest.mark.parametrize(
    ("init_type", "done", "calls"),
    [
        (None, None, []),
        ("on-demand", None, []),
        ("provisioned-concurrency", "warm-up", ["warm_up"]),  # ahead of traffic: warm, no hooks
    ],
)
def test_only_an_init_ahead_of_traffic_warms_up_and_only_snapstart_registers_hooks(
    monkeypatch: pytest.MonkeyPatch, init_type: str | None, done: str | None, calls: list[str]
):
    if init_type is None:
        monkeypatch.delenv(snapstart.INIT_TYPE, raising=False)
    else:
        monkeypatch.setenv(snapstart.INIT_TYPE, init_type)
    before = _registered()
    engine = _Engine()
    assert snapstart.prepare(engine) == done
    assert engine.calls == calls
    assert _registered() == before


def test_snapstart_without_the_hooks_library_still_snapshots_no_connection(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv(snapstart.INIT_TYPE, "snap-start")
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # as in an image without it
    engine = _Engine()
    assert snapstart.prepare(engine) == "warm-up"
    assert engine.calls == ["warm_up", "before_snapshot"]


class _KeepAliveAWS:
    """An HTTP/1.1 endpoint that keeps connections open (as AWS does; moto's server closes
    them) and answers every call with ``{}``; counts the connections it accepted."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.accepted = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                stand_in.accepted += 1

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_snapshot_hooks_close_the_aws_clients_connections_and_the_clients_still_work(
    monkeypatch: pytest.MonkeyPatch,
):
    import snapshot_restore_py

    from squall import aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    endpoint = _KeepAliveAWS()
    client = aws.client("sqs", region="us-east-1", endpoint_url=endpoint.endpoint)
    monkeypatch.setenv(snapstart.INIT_TYPE, "snap-start")
    befores = snapshot_restore_py.get_before_snapshot()
    afters = snapshot_restore_py.get_after_restore()
    nb, na = len(befores), len(afters)
    engine = _Engine()
    engine.after_restore = lambda: engine.calls.append("after_restore")  # type: ignore[attr-defined]
    try:
        client.list_queues()  # as an SQS sink's open() resolving its queue URL
        client.list_queues()
        assert endpoint.accepted == 1  # one connection, kept alive
        assert snapstart.prepare(engine) == "snapstart"
        for func, args, kwargs in befores[nb:]:
            func(*args, **kwargs)
        client.list_queues()  # the client still works, on a new connection: the old one closed
        assert endpoint.accepted == 2
        for func, args, kwargs in afters[na:]:
            func(*args, **kwargs)
        client.list_queues()  # a restored copy does not send on the snapshot's connection
        assert endpoint.accepted == 3
        assert engine.calls == ["warm_up", "before_snapshot", "after_restore"]
    finally:
        del befores[nb:], afters[na:]
        endpoint.close()


@pytest.mark.parametrize("handler", ["consumer", "producer"])
def test_template_with_snapstart_publishes_versions_and_triggers_the_alias(
    handler: str, tmp_path: Path
):
    template = template_of(PISTATS / "topology.yaml", handler, python="3.12", snapstart=True)
    props = template["Resources"]["Function"]["Properties"]
    assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert props["AutoPublishAlias"] == "live"
    cfn = checked(template, tmp_path)  # cfn-lint and SAM's transform
    alias = {"Ref": "FunctionAliaslive"}
    assert cfn["Resources"]["FunctionAliaslive"]["Type"] == "AWS::Lambda::Alias"
    if handler == "consumer":
        [mapping] = [
            r for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
        ]
        assert mapping["Properties"]["FunctionName"] == alias
    else:
        invoke = [
            r
            for r in cfn["Resources"].values()
            if r["Type"] == "AWS::Lambda::Permission"
            and r["Properties"]["Principal"] == "apigateway.amazonaws.com"
            and r["Properties"]["FunctionName"] != {"Fn::GetAtt": ["Authorizer", "Arn"]}
        ]
        assert [p["Properties"]["FunctionName"] for p in invoke] == [alias]
    assert (
        "SnapStart"
        not in template_of(PISTATS / "topology.yaml", handler)["Resources"]["Function"][
            "Properties"
        ]
    )


def test_template_with_provisioned_concurrency_keeps_the_alias_initialised(tmp_path: Path):
    template = template_of(PISTATS / "topology.yaml", "consumer", provisioned=3)
    props = template["Resources"]["Function"]["Properties"]
    assert props["AutoPublishAlias"] == "live" and "SnapStart" not in props
    assert template["Parameters"]["ProvisionedConcurrency"]["Default"] == 3
    cfn = checked(template, tmp_path)
    alias = cfn["Resources"]["FunctionAliaslive"]["Properties"]
    assert alias["ProvisionedConcurrencyConfig"] == {
        "ProvisionedConcurrentExecutions": {"Ref": "ProvisionedConcurrency"}
    }
    [mapping] = [
        r for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert mapping["Properties"]["FunctionName"] == {"Ref": "FunctionAliaslive"}


def test_snapstart_and_provisioned_concurrency_do_not_combine():
    with pytest.raises(SquallError, match="cannot be combined"):
        template_of(
            PISTATS / "topology.yaml", "consumer", python="3.12", snapstart=True, provisioned=2
        )


def test_snapstart_needs_python_3_12():
    with pytest.raises(
        SquallError, match=r"SnapStart needs Python 3\.12 or later \(--python 3\.11\)"
    ):
        template_of(PISTATS / "topology.yaml", "consumer", python="3.11", snapstart=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--snapstart", "--python", "3.12"], "--snapstart configures the SAM template"),
        (
            ["--snapstart", "--template", "t.yaml"],
            "Lambda SnapStart needs Python 3.12 or later (--python 3.11)",
        ),
        (["--provisioned-concurrency", "2"], "--provisioned-concurrency configures the SAM"),
        (
            ["--handler", "kcl", "--stream", "events", "--snapstart", "--python", "3.12"],
            "--snapstart is for a Lambda function, not a KCL fleet",
        ),
        (
            ["--handler", "kcl", "--stream", "events", "--provisioned-concurrency", "2"],
            "--provisioned-concurrency is for a Lambda function, not a KCL fleet",
        ),
        (
            [
                "--provisioned-concurrency",
                "2",
                "--snapstart",
                "--python",
                "3.12",
                "--template",
                "t",
            ],
            "cannot be combined",
        ),
    ],
)
def test_package_refuses_snapstart_it_cannot_configure(args: list[str], message: str):
    result = CliRunner().invoke(
        cli,
        ["package", str(PISTATS / "topology.yaml"), "--handler", "consumer", *args]
        if "--handler" not in args
        else ["package", str(PISTATS / "topology.yaml"), *args],
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


WINDOWED = """
name: snapwin
resources:
  state: {{url: "sqlite:///{db}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - id: counts
    type: window
    store: state
    key: [app]
    size: 1m
    time_field: ts
    aggregates: {{events: {{fn: count}}}}
sinks:
  - {{id: out, type: stdout}}
"""


def test_each_restored_copy_has_its_own_window_commit_token_row(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """The SQL window store's row of its last commit token is made at open, so it is in the
    snapshot: copies sharing it overwrite each other's token (a commit retried after another
    copy's commit is written twice) and wait on one row lock. A restore gives a row of its own."""
    import snapshot_restore_py
    from awslambdaric import lambda_runtime_hooks_runner as hooks

    from squall.deploy.lambda_consumer import make_handler

    path = tmp_path / "t.yaml"
    path.write_text(WINDOWED.format(db=tmp_path / "state.db"))
    monkeypatch.setenv(snapstart.INIT_TYPE, snapstart.SNAP_START)
    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])
    handler = make_handler(path)
    [window] = [c for c in handler.engine.components if c.id == "counts"]
    snapshotted = window.store._token_row
    hooks.run_before_snapshot()
    hooks.run_after_restore()
    restored = window.store._token_row
    assert restored != snapshotted and restored.startswith("~token:")
    handler.engine.close()


@pytest.mark.parametrize("alias", [{"python": "3.12", "snapstart": True}, {"provisioned": 2}])
def test_an_existing_bucket_notifies_and_lets_s3_invoke_the_alias(alias: dict, tmp_path: Path):
    """SAM wires a template's own bucket to the alias; for an existing bucket the template's
    permission and the notification it outputs must name the alias too, or S3 invokes $LATEST
    (no snapshot, no provisioned environment, and the on-failure destination, configured on the
    alias, never applies)."""
    from tests.deploy.test_template import of_type, topology_file

    spout = '{type: "tests.deploy.test_template:TriggeredS3Spout", bucket: etl-logs, prefix: l/}'
    t = template_of(
        topology_file(tmp_path, spout), "consumer", s3_bucket="existing", on_failure="sqs", **alias
    )
    cfn = checked(t, tmp_path)
    [permission] = of_type(cfn, "AWS::Lambda::Permission")
    assert permission["FunctionName"] == {"Ref": "FunctionAliaslive"}
    [invoke] = of_type(cfn, "AWS::Lambda::EventInvokeConfig")
    assert invoke["Qualifier"] == "live"
    notification = json.loads(t["Outputs"]["BucketNotification"]["Value"]["Fn::Sub"])
    [config] = notification["LambdaFunctionConfigurations"]
    assert config["LambdaFunctionArn"] == "${FunctionAliaslive}"
