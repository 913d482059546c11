"""The sqs sink against moto's SQS: batches of 10, size limits, FIFO groups and deduplication, partial failures."""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import orjson
import pytest
import redis
import sqlalchemy as sa

from squall.component import ComponentContext
from squall.errors import SinkError, TransientError
from squall.sinks.base import WriteContext
from squall.sinks.dead_letter_aws import DeadLetterSqsConfig, DeadLetterSqsSink
from squall.sinks.sqs import SqsSink, SqsSinkConfig
from squall.testing import records_from, run_topology
from squall.topology.executor import Engine
from squall.topology.loader import load, load_text
from squall.topology.outcomes import Outcome
from tests.conftest import EXAMPLES
from tests.moto_standin import QUEUE_URLS_AND_REGIONS, FlakyClient, client_error, unique


def drain(sqs, url: str) -> list[dict]:
    """Every message in the queue (received and deleted), in the order SQS gives them."""
    out = []
    while True:
        resp = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        )
        msgs = resp.get("Messages", [])
        if not msgs:
            return out
        out.extend(msgs)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ],
        )


def make_queue(sqs, fifo: bool = False) -> str:
    name = unique("q") + (".fifo" if fifo else "")
    attrs = {"FifoQueue": "true"} if fifo else {}
    return sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]


def sink_yaml(endpoint: str, queue: str, extra: str = "") -> str:
    return f"""
name: sqs-test
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
sinks:
  - {{id: out, type: sqs, queue: "{queue}", endpoint_url: "{endpoint}"{extra}}}
  - {{id: dlq, type: 'squall.testing:MemoryDeadLetterSink', name: {queue.rsplit("/", 1)[-1]}-dlq}}
"""


@pytest.fixture
def sqs(moto_server):
    return moto_server.client("sqs")


def test_sqs_sink_sends_each_event_once_in_calls_of_ten_with_event_id_attribute(moto_server, sqs):
    url = make_queue(sqs)
    payloads = [{"n": i, "store": f"s{i % 2}" if i != 5 else "", "vip": i == 3} for i in range(25)]
    topo = load_text(
        sink_yaml(moto_server.endpoint, url, ", attributes: {store: store, n: n, vip: vip}")
    )
    engine = Engine(topo.plan)
    real = moto_server.client("sqs")
    flaky = FlakyClient(real, send_message_batch=lambda kw, call: call(**kw))
    next(c for c in engine.components if c.id == "out").client = flaky
    with engine:
        result = engine.process(records_from(payloads))
    assert result.counts()[Outcome.COMMITTED] == 25
    assert flaky.calls["send_message_batch"] == 3  # 10 + 10 + 5
    msgs = drain(sqs, url)
    assert sorted(json.loads(m["Body"])["n"] for m in msgs) == list(range(25))
    by_n = {json.loads(m["Body"])["n"]: m for m in msgs}
    ids = {o.event_id for o in result.records}
    assert {m["MessageAttributes"]["event_id"]["StringValue"] for m in msgs} == ids
    assert by_n[3]["MessageAttributes"]["store"] == {"StringValue": "s1", "DataType": "String"}
    assert by_n[3]["MessageAttributes"]["n"] == {"StringValue": "3", "DataType": "Number"}
    # a boolean as JSON writes it (was Python's "True")
    assert by_n[3]["MessageAttributes"]["vip"] == {"StringValue": "true", "DataType": "String"}
    assert by_n[4]["MessageAttributes"]["vip"]["StringValue"] == "false"
    assert "store" not in by_n[5]["MessageAttributes"]  # empty: left out (SQS refuses it)


def test_sqs_sink_rejects_a_message_over_the_size_limit_to_dead_letter_with_the_reason(
    moto_server, sqs
):
    url = make_queue(sqs)
    big = {"blob": "x" * (256 * 1024)}
    run = run_topology(
        sink_yaml(moto_server.endpoint, url), records_from([{"n": 1}, big, {"n": 2}])
    )
    outcomes = run.outcomes
    assert [o.outcome for o in outcomes] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.COMMITTED,
    ]
    assert "bytes with its attributes (the queue takes at most 262144)" in outcomes[1].reason
    assert outcomes[1].component == "out"
    assert sorted(json.loads(m["Body"])["n"] for m in drain(sqs, url)) == [1, 2]


def test_sqs_sink_raw_format_rejects_bytes_that_are_not_text(moto_server, sqs):
    url = make_queue(sqs)
    run = run_topology(
        sink_yaml(moto_server.endpoint, url, ", format: raw").replace(
            "bolts:\n  - {id: decode, type: json}\n", "bolts: []\n"
        ),
        records_from([b"plain text", b"\xff\xfe\x00"]),
    )
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED, Outcome.DEAD_LETTERED]
    assert "not UTF-8" in run.outcomes[1].reason
    assert [m["Body"] for m in drain(sqs, url)] == ["plain text"]


def test_sqs_fifo_sink_groups_by_payload_path_and_a_replay_adds_nothing(moto_server, sqs):
    url = make_queue(sqs, fifo=True)
    payloads = [{"kiosk": f"k{i % 3}", "n": i} for i in range(12)]
    yaml = sink_yaml(moto_server.endpoint, url, ", message_group: kiosk")
    first = run_topology(yaml, records_from(payloads))
    again = run_topology(yaml, records_from(payloads))  # the same records delivered again
    assert all(o.outcome is Outcome.COMMITTED for o in first.outcomes + again.outcomes)
    msgs = drain(sqs, url)
    assert len(msgs) == 12
    groups: dict[str, list[int]] = {}
    for m in msgs:
        body = json.loads(m["Body"])
        assert m["Attributes"]["MessageGroupId"] == body["kiosk"]
        assert (
            m["Attributes"]["MessageDeduplicationId"]
            == m["MessageAttributes"]["event_id"]["StringValue"]
        )
        groups.setdefault(body["kiosk"], []).append(body["n"])
    assert all(ns == sorted(ns) for ns in groups.values())  # in order within a group


def test_sqs_fifo_sink_rejects_an_event_without_a_group_and_the_config_requires_one(
    moto_server, sqs
):
    url = make_queue(sqs, fifo=True)
    run = run_topology(
        sink_yaml(moto_server.endpoint, url, ", message_group: kiosk"),
        records_from([{"kiosk": "k1"}, {"other": 1}, {"kiosk": "bad group ✗"}]),
    )
    assert [o.outcome for o in run.outcomes] == [
        Outcome.COMMITTED,
        Outcome.DEAD_LETTERED,
        Outcome.DEAD_LETTERED,
    ]
    assert "message group 'kiosk' is missing" in run.outcomes[1].reason
    assert "is not 1-128 letters, digits or punctuation" in run.outcomes[2].reason
    with pytest.raises(ValueError, match="FIFO queue needs message_group"):
        SqsSinkConfig(id="q", type="sqs", queue="orders.fifo")


def _sink(client, queue_url: str, **cfg) -> SqsSink:
    sink = SqsSink(
        SqsSinkConfig(id="out", type="sqs", queue=queue_url, **cfg), ComponentContext("t")
    )
    sink.client = client
    sink.sleeps = []
    sink.sleep = sink.sleeps.append
    sink.open()
    return sink


def _events(payloads):
    from squall.event import Event

    return [
        Event(r.data, r.meta, None, i, orjson.loads(r.data))
        for i, r in enumerate(records_from(payloads))
    ]


def test_sqs_sink_retries_only_the_entries_sqs_failed_then_reports_the_rest_as_failed(
    moto_server, sqs
):
    url = make_queue(sqs)
    state = {"n": 0}

    def partly(kw, call):
        # every call: the entry carrying n=3 fails (service side); on the first call n=5 too
        state["n"] += 1
        keep, failed = [], []
        for e in kw["Entries"]:
            n = json.loads(e["MessageBody"])["n"]
            if n == 3 or (n == 5 and state["n"] == 1):
                failed.append(
                    {
                        "Id": e["Id"],
                        "SenderFault": False,
                        "Code": "InternalError",
                        "Message": "try later",
                    }
                )
            else:
                keep.append(e)
        resp = call(QueueUrl=kw["QueueUrl"], Entries=keep) if keep else {"Successful": []}
        resp["Failed"] = failed
        return resp

    sink = _sink(
        FlakyClient(moto_server.client("sqs"), send_message_batch=partly), url, max_attempts=3
    )
    events = _events([{"n": i} for i in range(8)])
    result = sink.write_batch(sink.prepare(events), None)
    assert [ev.value["n"] for ev in result.failed] == [3]
    assert result.failed[0].failure.reason == "SendMessageBatch: InternalError: try later"
    assert len(sink.sleeps) == 2  # two retries, with backoff
    assert sorted(json.loads(m["Body"])["n"] for m in drain(sqs, url)) == [0, 1, 2, 4, 5, 6, 7]


@pytest.mark.parametrize("fifo", [False, True])
@pytest.mark.parametrize(("left", "retried"), [(0.04, False), (900.0, True)])
def test_sqs_sink_retries_failed_entries_only_while_the_backoff_fits_in_the_time_left(
    moto_server, sqs, fifo, left, retried
):
    """``WriteContext.time_left`` (a Lambda runner's deadline less its margin): 40 ms is under the
    sink's shortest backoff (50 ms), so the entry SQS failed is not retried — it fails now, with
    the reason, and the runner answers it for Lambda's retry; with time left it is sent again.
    FIFO queues (their own retry round) too; each message in a group of its own."""
    url = make_queue(sqs, fifo=fifo)
    state = {"n": 0}

    def partly(kw, call):  # the first call: the entry carrying n=1 fails (service side)
        state["n"] += 1
        bad = [
            e for e in kw["Entries"] if state["n"] == 1 and json.loads(e["MessageBody"])["n"] == 1
        ]
        keep = [e for e in kw["Entries"] if e not in bad]
        resp = call(QueueUrl=kw["QueueUrl"], Entries=keep) if keep else {"Successful": []}
        resp["Failed"] = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "later"}
            for e in bad
        ]
        return resp

    extra = {"message_group": "g"} if fifo else {}
    sink = _sink(FlakyClient(moto_server.client("sqs"), send_message_batch=partly), url, **extra)
    asked = []
    ctx = WriteContext(time_left=lambda: asked.append(left) or left)
    result = sink.write_batch(
        sink.prepare(_events([{"n": i, "g": f"g{i}"} for i in range(3)])), ctx
    )
    sent = sorted(json.loads(m["Body"])["n"] for m in drain(sqs, url))
    if retried:
        assert result is None and len(sink.sleeps) == 1 and sent == [0, 1, 2]
    else:
        assert sink.sleeps == [] and asked  # the deadline was asked, and no retry made
        assert [ev.value["n"] for ev in result.failed] == [1]
        assert result.failed[0].failure.reason == (
            "SendMessageBatch: InternalError: later "
            "(not retried: the time left before the deadline is spent)"
        )
        assert sent == [0, 2]


def test_sqs_sink_sender_fault_is_a_record_problem_not_retried(moto_server, sqs):
    url = make_queue(sqs)

    def refuse(kw, call):
        bad = [e for e in kw["Entries"] if json.loads(e["MessageBody"])["n"] == 1]
        resp = call(QueueUrl=kw["QueueUrl"], Entries=[e for e in kw["Entries"] if e not in bad])
        resp["Failed"] = [
            {"Id": e["Id"], "SenderFault": True, "Code": "InvalidMessageContents", "Message": "no"}
            for e in bad
        ]
        return resp

    flaky = FlakyClient(moto_server.client("sqs"), send_message_batch=refuse)
    sink = _sink(flaky, url)
    result = sink.write_batch(sink.prepare(_events([{"n": 0}, {"n": 1}])), None)
    refused = getattr(result, "rejected", None) or result.failed
    assert [ev.value["n"] for ev in refused] == [1]
    assert "InvalidMessageContents" in refused[0].failure.reason
    assert flaky.calls["send_message_batch"] == 1 and sink.sleeps == []


def test_sqs_sink_throttled_call_raises_transient_and_the_retry_sends_only_what_is_missing(
    moto_server, sqs
):
    url = make_queue(sqs)
    state = {"n": 0}

    def throttle_second(kw, call):
        state["n"] += 1
        if state["n"] == 2:
            raise client_error("RequestThrottled", "slow down", 403)
        return call(**kw)

    sink = _sink(FlakyClient(moto_server.client("sqs"), send_message_batch=throttle_second), url)
    prepared = sink.prepare(_events([{"n": i} for i in range(25)]))
    with pytest.raises(TransientError, match="RequestThrottled"):
        sink.write_batch(prepared, None)
    assert sink.write_batch(prepared, None) is None  # the engine's retry, same prepared batch
    assert sorted(json.loads(m["Body"])["n"] for m in drain(sqs, url)) == list(range(25))


def test_sqs_sink_missing_queue_fails_at_open_naming_the_queue_and_region(moto_server):
    """The name often comes from ``${VAR}`` (the kiosk's ``KIOSK_HIGH_QUEUE``), or the queue is in
    another region: "the specified queue does not exist" alone did not say which was asked for."""
    name = unique("nope")
    sink = SqsSink(
        SqsSinkConfig(
            id="out",
            type="sqs",
            queue=name,
            region="eu-west-1",
            endpoint_url=moto_server.endpoint,
        ),
        ComponentContext("t"),
    )
    with pytest.raises(SinkError) as err:
        sink.open()
    assert str(err.value).startswith(f"out: GetQueueUrl of queue '{name}' in eu-west-1 failed: ")
    assert "NonExistentQueue" in str(err.value)


def test_the_sqs_dead_letter_names_its_missing_queue_and_region(moto_server):
    name = unique("nope-dlq")
    sink = DeadLetterSqsSink(
        DeadLetterSqsConfig(
            id="dlq",
            type="dead_letter_sqs",
            queue=name,
            region="us-west-2",
            endpoint_url=moto_server.endpoint,
        ),
        ComponentContext("t"),
    )
    with pytest.raises(SinkError) as err:
        sink.open()
    assert str(err.value).startswith(f"dlq: GetQueueUrl of queue '{name}' in us-west-2 failed: ")


def test_a_queue_given_by_arn_is_sent_to_in_the_arn_s_region(moto_server):
    """`queue: arn:aws:sqs:…` (a template's `GetAtt Queue.Arn`; the `sqs` spout and the IAM
    statements take one) was asked for as a queue *name*: the start failed with
    `NonExistentQueue` though the queue existed. Now its name is looked up in its account, with a
    client of the ARN's region; the dead-letter queue the same."""
    eu = boto3.client(
        "sqs",
        endpoint_url=moto_server.endpoint,
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    urls = [make_queue(eu, fifo=fifo) for fifo in (True, False)]
    account = eu.get_queue_attributes(QueueUrl=urls[0], AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ].split(":")[4]
    arns = [f"arn:aws:sqs:eu-west-1:{account}:{url.rsplit('/', 1)[-1]}" for url in urls]
    sink = SqsSink(
        SqsSinkConfig(
            id="out",
            type="sqs",
            queue=arns[0],
            message_group="g",
            endpoint_url=moto_server.endpoint,
        ),
        ComponentContext("t"),
    )
    sink.open()
    assert sink.client.meta.region_name == "eu-west-1"
    assert sink.queue_url.endswith(urls[0].rsplit("/", 1)[-1]) and sink.fifo
    assert sink.write_batch(sink.prepare(_events([{"g": "k1", "n": 1}])), None) is None
    dlq = DeadLetterSqsSink(
        DeadLetterSqsConfig(
            id="dlq", type="dead_letter_sqs", queue=arns[1], endpoint_url=moto_server.endpoint
        ),
        ComponentContext("t"),
    )
    dlq.open()
    assert dlq.client.meta.region_name == "eu-west-1"
    assert dlq.queue_url.endswith(urls[1].rsplit("/", 1)[-1])
    received = [json.loads(m["Body"]) for m in drain(eu, sink.queue_url)]
    assert received == [{"g": "k1", "n": 1}]


@pytest.mark.parametrize(
    "url,region",
    QUEUE_URLS_AND_REGIONS,
)
def test_a_queue_given_by_its_aws_url_is_sent_to_in_the_url_s_region(
    moto_server, monkeypatch, url, region
):
    """`queue: https://sqs.eu-west-1.amazonaws.com/…` with `AWS_REGION=us-east-1` (the process's
    region, not the queue's): the client was the environment's region, and SQS answers a queue
    URL of another region as a queue that does not exist. The URL's region is used unless
    `region` is configured (moto, like SQS, keeps queues per region)."""
    other = "ap-southeast-2" if region == "us-east-1" else "us-east-1"
    monkeypatch.setenv("AWS_REGION", other)
    monkeypatch.setenv("AWS_DEFAULT_REGION", other)
    home = boto3.client(
        "sqs",
        endpoint_url=moto_server.endpoint,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    name = make_queue(home).rsplit("/", 1)[-1]
    url = url.format(name=name)
    for sink in (
        SqsSink(
            SqsSinkConfig(id="out", type="sqs", queue=url, endpoint_url=moto_server.endpoint),
            ComponentContext("t"),
        ),
        DeadLetterSqsSink(
            DeadLetterSqsConfig(
                id="dlq", type="dead_letter_sqs", queue=url, endpoint_url=moto_server.endpoint
            ),
            ComponentContext("t"),
        ),
    ):
        sink.open()
        assert sink.client.meta.region_name == region
    out = SqsSink(
        SqsSinkConfig(id="out", type="sqs", queue=url, endpoint_url=moto_server.endpoint),
        ComponentContext("t"),
    )
    out.open()
    assert out.write_batch(out.prepare(_events([{"n": 1}])), None) is None
    assert [
        json.loads(m["Body"]) for m in drain(home, home.get_queue_url(QueueName=name)["QueueUrl"])
    ] == [{"n": 1}]


def seed_kiosk_registry(monkeypatch, url: str, table: str) -> None:
    """Run the example's own seed script (``python examples/kiosk/kiosks.py``) against ``url``."""
    monkeypatch.setenv("KIOSK_REGISTRY_URL", url)
    monkeypatch.setenv("KIOSK_TABLE", table)
    spec = importlib.util.spec_from_file_location("kiosks_seed", EXAMPLES / "kiosk" / "kiosks.py")
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    seed.main()


@contextmanager
def registry_queries(table: str) -> Iterator[list[tuple]]:
    """The parameters of each SELECT on ``table`` the database was sent (SQLAlchemy's cursor
    events: the statements as they go to the driver, the table check at start left out)."""
    sent: list[tuple] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            if "WHERE" in statement.upper():  # the start's check reads no row by key
                values = parameters.values() if isinstance(parameters, dict) else parameters
                sent.append(tuple(values))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)


KIOSK_SITES = {
    "k1": ("s1", "Lisbon airport, gate 12"),
    "k2": ("s1", "Lisbon airport, food court"),
    "k3": ("s2", "Porto station, hall"),
    "k4": ("s2", "Porto station, platform 3"),
}


def kiosk_example(moto_server, sqs, tmp_path: Path, monkeypatch, url: str):
    """examples/kiosk/topology.yaml on a registry seeded by kiosks.py at ``url`` and two fresh
    FIFO queues: (topology, its records, high queue URL, low queue URL, table)."""
    table = f"kiosks_{uuid.uuid4().hex[:8]}"
    seed_kiosk_registry(monkeypatch, url, table)
    high, low = unique("kiosk-high") + ".fifo", unique("kiosk-low") + ".fifo"
    high_url = sqs.create_queue(QueueName=high, Attributes={"FifoQueue": "true"})["QueueUrl"]
    low_url = sqs.create_queue(QueueName=low, Attributes={"FifoQueue": "true"})["QueueUrl"]
    monkeypatch.setenv("KIOSK_HIGH_QUEUE", high)
    monkeypatch.setenv("KIOSK_LOW_QUEUE", low)
    monkeypatch.setenv("SQS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("KIOSK_REJECTS", str(tmp_path / "rejects.jsonl"))
    from squall.spouts.file import FileSpout

    path = EXAMPLES / "kiosk" / "topology.yaml"
    topo = load(path)
    spout = FileSpout(topo.spout, ComponentContext(topo.name, topo.base_dir))
    spout.open()
    records = [r for batch in spout.read(1000) for r in batch]
    spout.close()
    return topo, records, high_url, low_url, table


def run_kiosk_example(topo, records, table: str) -> list[tuple]:
    """One run in batches of 10 (the kiosks come back batch after batch), by a new engine as a
    new process has: the parameters of each query of the registry."""
    with registry_queries(table) as queries:
        run = run_topology(topo, records, batch_size=10)
    assert {o.outcome for o in run.outcomes} == {Outcome.COMMITTED, Outcome.DEAD_LETTERED}
    return queries


def check_kiosk_outputs(sqs, high_url: str, low_url: str, rejects_path: Path) -> None:
    """Each queued order once, with its kiosk's registry record in the body and its store and site
    as attributes; the unknown kiosk's, the retired kiosk's and the invalid order dead-lettered once."""
    orders = [
        json.loads(line) for line in (EXAMPLES / "kiosk" / "orders.jsonl").read_text().splitlines()
    ]
    queued = [o for o in orders if o.get("kiosk_id") in KIOSK_SITES]
    got_high, got_low = drain(sqs, high_url), drain(sqs, low_url)
    assert sorted(json.loads(m["Body"])["order_id"] for m in got_high) == sorted(
        o["order_id"] for o in queued if o["priority"] in ("rush", "vip")
    )
    assert sorted(json.loads(m["Body"])["order_id"] for m in got_low) == sorted(
        o["order_id"] for o in queued if o["priority"] not in ("rush", "vip")
    )
    assert (len(got_high), len(got_low)) == (18, 41)  # as docs/sinks.md says
    for m in got_high + got_low:
        body = json.loads(m["Body"])
        store, site = KIOSK_SITES[body["kiosk_id"]]
        assert body["kiosk"] == {
            "store_id": store,
            "site": site,
            "timezone": "Europe/Lisbon",
            "active": True,
        }
        assert m["Attributes"]["MessageGroupId"] == body["kiosk_id"]
        attrs = {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
        assert (attrs["store"], attrs["site"], attrs["priority"]) == (
            store,
            site,
            body["priority"],
        )
    rejects = [json.loads(line) for line in rejects_path.read_text().splitlines()]
    assert sorted((r["event_id"], r["component"], r["reason"]) for r in rejects) == [
        ("ord-0017", "validate", "schema: $: 'kiosk_id' is a required property"),
        ("ord-0060", "kiosk", "key 'k9' not found"),
        ("ord-0061", "active", "routed to dead letter by stream 'inactive_kiosk'"),
        ("ord-0062", "kiosk", "key 'k9' not found"),
        ("ord-0063", "active", "routed to dead letter by stream 'inactive_kiosk'"),
    ]


def drop_table(url: str, table: str) -> None:
    if url.startswith("postgresql"):
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


@pytest.mark.parametrize("registry", ["sqlite", "postgresql"])
def test_kiosk_example_enriches_orders_and_routes_them_by_priority_into_two_fifo_queues(
    moto_server, sqs, tmp_path: Path, monkeypatch, registry: str, request
):
    """examples/kiosk as its header says: the registry seeded by kiosks.py (SQLite by default,
    PostgreSQL by URL), each order enriched with its kiosk's store and site, an unknown kiosk's
    and a retired one's orders dead-lettered, and a rerun adding nothing anywhere."""
    monkeypatch.delenv("KIOSK_CACHE_URL", raising=False)  # the example as it is: no shared cache
    if registry == "sqlite":
        url = f"sqlite:///{tmp_path / 'kiosks.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    topo, records, high_url, low_url, table = kiosk_example(
        moto_server, sqs, tmp_path, monkeypatch, url
    )
    try:
        for _ in range(2):  # the second run is a replay: nothing new in either queue
            queries = run_kiosk_example(topo, records, table)
            # 7 batches, 3 queries: k1-k3 in the first batch, k4 in the second, k9 and k5 in
            # the last; each kiosk asked once (the unknown k9 too: remembered as missing).
            asked = [k for q in queries for k in q]
            assert len(queries) == 3 and sorted(asked) == ["k1", "k2", "k3", "k4", "k5", "k9"]
    finally:
        drop_table(url, table)
    check_kiosk_outputs(sqs, high_url, low_url, tmp_path / "rejects.jsonl")


def test_kiosk_example_with_its_cache_url_set_asks_the_registry_once_for_the_fleet(
    moto_server, sqs, tmp_path: Path, monkeypatch, redis_url: str
):
    """KIOSK_CACHE_URL set, as the example's comment says for a fleet: a second process (a new
    engine, its in-process cache empty) is served by Redis and queries the registry for nothing,
    the unknown kiosk included. (Unset, the other kiosk tests run it with no shared cache.)"""
    monkeypatch.setenv("KIOSK_CACHE_URL", redis_url)
    topo, records, high_url, low_url, table = kiosk_example(
        moto_server, sqs, tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'kiosks.db'}"
    )
    client = redis.Redis.from_url(redis_url)
    pattern = f"squall:lookup:{topo.name}:kiosk:*"
    before = set(client.scan_iter(match=pattern))
    try:
        first = run_kiosk_example(topo, records, table)
        assert sorted(k for q in first for k in q) == ["k1", "k2", "k3", "k4", "k5", "k9"]
        assert run_kiosk_example(topo, records, table) == []
    finally:
        # the default key prefix holds a hash of the source's options (this test's table)
        written = set(client.scan_iter(match=pattern)) - before
        if written:
            client.delete(*written)
        client.close()
    assert len(written) == 6
    check_kiosk_outputs(sqs, high_url, low_url, tmp_path / "rejects.jsonl")


def test_one_message_over_the_queues_own_size_limit_is_dead_lettered_alone(moto_server, sqs):
    """A queue created with a MaximumMessageSize below the sink's max_message_bytes refuses the
    whole SendMessageBatch call for one message too long (InvalidParameterValue). That failed the
    batch — and every run after it, at the same message. The call is split until the message is
    alone: only it is dead-lettered, with SQS's reason; the others are sent, in order."""
    url = sqs.create_queue(
        QueueName=unique("small") + ".fifo",
        Attributes={"FifoQueue": "true", "MaximumMessageSize": "1024"},
    )["QueueUrl"]
    payloads = [{"kiosk": "k1", "n": i} for i in range(12)]
    payloads[6]["note"] = "x" * 2000
    run = run_topology(
        sink_yaml(moto_server.endpoint, url, ", message_group: kiosk"), records_from(payloads)
    )
    outcomes = [o.outcome for o in run.outcomes]
    assert outcomes == [Outcome.COMMITTED] * 6 + [Outcome.DEAD_LETTERED] + [Outcome.COMMITTED] * 5
    reason = run.outcomes[6].reason
    assert "InvalidParameterValue" in reason and "shorter than 1024 bytes" in reason
    assert run.outcomes[6].component == "out"
    assert [json.loads(m["Body"])["n"] for m in drain(sqs, url)] == [n for n in range(12) if n != 6]


def test_an_outage_while_a_refused_call_is_split_sends_nothing_twice(moto_server, sqs):
    """The halves already sent stay written when a later half meets an outage: the engine's
    retry of the batch sends only the rest (a standard queue would hold duplicates)."""
    url = make_queue(sqs)
    state = {"calls": 0}

    def refuse_big_then_throttle(kw, call):
        state["calls"] += 1
        if any("note" in e["MessageBody"] for e in kw["Entries"]):
            raise client_error("InvalidParameterValue", "Message must be shorter than 1024 bytes.")
        if state["calls"] == 4:  # 1: all refused, 2: n 0-4 sent, 3: 5-9 refused, 4: 5-6
            raise client_error("RequestThrottled", "slow down", 403)
        return call(**kw)

    flaky = FlakyClient(moto_server.client("sqs"), send_message_batch=refuse_big_then_throttle)
    sink = _sink(flaky, url)
    payloads = [{"n": i} for i in range(10)]
    payloads[7]["note"] = "big"
    prepared = sink.prepare(_events(payloads))
    with pytest.raises(TransientError, match="RequestThrottled"):
        sink.write_batch(prepared, None)
    result = sink.write_batch(prepared, None)  # the engine's retry, same prepared batch
    refused = getattr(result, "rejected", None) or result.failed
    assert [ev.value["n"] for ev in refused] == [7]
    assert sorted(json.loads(m["Body"])["n"] for m in drain(sqs, url)) == [
        n for n in range(10) if n != 7
    ]


def test_a_queue_problem_refusing_the_whole_call_still_fails_the_batch(moto_server, sqs):
    """Not every refused call is a message's fault: a deleted queue fails the batch, unsplit."""
    url = make_queue(sqs)
    flaky = FlakyClient(moto_server.client("sqs"))
    sink = _sink(flaky, url)
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(Exception, match="NonExistentQueue|QueueDoesNotExist"):
        sink.write_batch(sink.prepare(_events([{"n": i} for i in range(10)])), None)


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_a_queue_url_with_a_trailing_slash_is_written(moto_server, sqs, fifo: bool):
    """A queue URL ending in '/' was sent as it was: SQS (moto's server) answered every
    SendMessageBatch NonExistentQueue and the batch failed; a FIFO queue's was not taken for one
    (``.fifo/``), so its message_group was not required. The URL is used without it, as the
    ``sqs`` spout's is since 855147."""
    url = make_queue(sqs, fifo=fifo)
    extra = ", message_group: k" if fifo else ""
    run = run_topology(
        sink_yaml(moto_server.endpoint, url + "/", extra), records_from([{"n": 1, "k": "a"}])
    )
    assert [o.outcome for o in run.outcomes] == [Outcome.COMMITTED]
    assert [json.loads(m["Body"])["n"] for m in drain(sqs, url)] == [1]
    topo = load_text(sink_yaml(moto_server.endpoint, url + "/", extra))
    assert next(s for s in topo.sinks if s.id == "out").queue == url
    with pytest.raises(Exception, match="message_group") if fifo else _nothing():
        load_text(sink_yaml(moto_server.endpoint, url + "/"))  # a FIFO queue needs one


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


#: SQS's answers when KMS throttles an SSE-KMS queue's data-key calls: the JSON protocol's error
#: shape (``KmsThrottled``, what botocore names the code without the query-compatible header)
#: and the query protocol's code (``KMS.ThrottlingException``, sent as ``x-amzn-query-error``).
KMS_THROTTLED = ["KmsThrottled", "KMS.ThrottlingException"]


@pytest.mark.parametrize("code", KMS_THROTTLED)
def test_sqs_sink_retries_entries_kms_throttled_as_a_sender_fault(moto_server, sqs, code):
    """SQS reports a KMS throttle of a message as the sender's fault (SenderFault true): the
    sink took that for a refusal and dead-lettered the kiosk's orders while KMS was only busy.
    It is sent again, as for RequestThrottled."""
    url = make_queue(sqs)
    state = {"n": 0}

    def kms_busy_once(kw, call):
        state["n"] += 1
        if state["n"] > 1:
            return call(**kw)
        return {
            "Successful": [],
            "Failed": [
                {"Id": e["Id"], "SenderFault": True, "Code": code, "Message": "KMS throttled"}
                for e in kw["Entries"]
            ],
        }

    sink = _sink(FlakyClient(moto_server.client("sqs"), send_message_batch=kms_busy_once), url)
    assert sink.write_batch(sink.prepare(_events([{"n": 0}, {"n": 1}])), None) is None
    assert len(sink.sleeps) == 1  # one retry, after a backoff
    assert sorted(json.loads(m["Body"])["n"] for m in drain(sqs, url)) == [0, 1]


@pytest.mark.parametrize("code", KMS_THROTTLED)
def test_sqs_sink_whole_call_kms_throttled_is_transient(moto_server, sqs, code):
    """The whole call refused for a KMS throttle is an outage the engine retries, not a refusal
    of the queue (SinkError: the batch failed at once, and a KCL worker stopped as misconfigured)."""
    url = make_queue(sqs)

    def kms_busy(kw, call):
        raise client_error(code, "KMS throttled", 400)

    sink = _sink(FlakyClient(moto_server.client("sqs"), send_message_batch=kms_busy), url)
    with pytest.raises(TransientError, match=code):
        sink.write_batch(sink.prepare(_events([{"n": 0}])), None)
