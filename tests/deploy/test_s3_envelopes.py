"""An s3 spout's Lambda function gets S3 notifications through SNS, SQS and EventBridge too.

Events are shaped as AWS documents them: the S3 event message structure
(docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html, with its
``s3:TestEvent``), SNS's Lambda event and its SQS envelope (sns/latest/dg/sns-sqs-as-subscriber,
http-notification-json) and S3's EventBridge "Object Created" event (userguide/ev-events.html).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squall.deploy.lambda_consumer import make_handler
from squall.errors import SquallError
from squall.testing import MemorySink
from tests.deploy.test_sqs_s3_sources import (
    put_lines,
    s3_lambda_event,
    sqs_lambda_event,
    write_topology,
)
from tests.moto_standin import unique

TOPIC = "arn:aws:sns:us-east-1:123456789012:s3-landing"


def sns_envelope(message: dict) -> dict:
    """What SNS delivers to an SQS queue (without raw message delivery) for a published message."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(message),
        "Timestamp": "2026-12-06T08:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q=",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "UnsubscribeURL": f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC}:c9135db0-26c4-47ec-8998-413945fb5a96",
    }


def sns_lambda_event(message: dict) -> dict:
    return {
        "Records": [
            {
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{TOPIC}:c9135db0-26c4-47ec-8998-413945fb5a96",
                "EventSource": "aws:sns",
                "Sns": {**sns_envelope(message), "MessageAttributes": {}},
            }
        ]
    }


def eventbridge_event(bucket: str, key: str, version: str | None = None) -> dict:
    obj = {
        "key": key,
        "size": 5,
        "etag": "b1946ac92492d2347c6235b4d2611184",
        "sequencer": "00617F08299329D189",
    }
    if version:
        obj["version-id"] = version
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-12-06T08:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }


def s3_test_event(bucket: str) -> dict:
    return {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-12-06T07:59:02.089Z",
        "Bucket": bucket,
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }


@pytest.fixture
def landing(moto_server, tmp_path: Path):
    """A bucket with two objects (one key with a space and a plus) and an s3-spout handler."""
    s3 = moto_server.client("s3")
    bucket = unique("landing")
    s3.create_bucket(Bucket=bucket)
    put_lines(s3, bucket, "in/day one+1.jsonl", [{"n": 1}, {"n": 2}], gz=True)
    put_lines(s3, bucket, "in/bad.jsonl", [{"n": 3}, {"n": 4, "sink_fail": True}], gz=False)
    store = unique("envelope")
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store))
    return bucket, store, handler


RAW = "in/day one+1.jsonl"
ENCODED = "in/day+one%2B1.jsonl"  # RAW as S3 puts it in an event (EventBridge does not encode)


def test_s3_to_sqs_messages_are_read_as_notifications_and_failures_reported_per_message(landing):
    bucket, store, handler = landing
    event = sqs_lambda_event(
        [
            ("m-test", s3_test_event(bucket), None),  # sent when the notification is configured
            ("m-good", s3_lambda_event(bucket, ENCODED), None),
            ("m-bad", s3_lambda_event(bucket, "in/bad.jsonl"), None),
            ("m-junk", {"hello": "world"}, None),  # not an S3 notification: its dead letter
            ("m-sns", sns_envelope(s3_lambda_event(bucket, ENCODED)), None),  # S3 -> SNS -> SQS
            ("m-eb", eventbridge_event(bucket, RAW), None),  # EventBridge -> SQS
        ]
    )
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "m-bad"}]}
    day = [("in/day one+1.jsonl", 1), ("in/day one+1.jsonl", 2)]
    rows = [(ev.meta.shard_id, ev.value["n"]) for ev in MemorySink.stores[store]]
    assert rows == [*day, ("in/bad.jsonl", 3), *day, *day]  # bad.jsonl's line 2 failed
    assert len({ev.event_id for ev in MemorySink.stores[store]}) == 3  # the same lines each time
    (junk,) = [ev for ev in MemorySink.stores[f"{store}-dlq"]]
    assert junk.failure.reason == (
        "Records[3] (SQS message m-junk): not an S3 notification (keys: hello)"
    )
    assert json.loads(junk.raw) == {"hello": "world"}


def test_s3_to_sns_to_lambda_and_eventbridge_to_lambda_read_the_named_objects(landing):
    bucket, store, handler = landing
    assert handler(sns_lambda_event(s3_lambda_event(bucket, ENCODED)), None) == {
        "objects": 1,
        "records": 2,
        "failed": 0,
        "skipped": 0,
    }
    assert handler(eventbridge_event(bucket, RAW), None)["records"] == 2
    assert handler(sns_lambda_event(s3_test_event(bucket)), None)["objects"] == 0
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1, 2, 1, 2]


def test_an_eventbridge_key_is_the_key_as_it_is_not_url_decoded(moto_server, tmp_path: Path):  # noqa: F811
    """S3 URL-encodes the key of its own notifications (S3, SNS, SQS: a space is '+', a '+' is
    '%2B'); its EventBridge events carry the key as it is (userguide/ev-events.html documents no
    encoding; moto sends it raw; an EventBridge rule's key prefix matches the raw key). Decoding
    it named another object: 'a+b.jsonl' became 'a b.jsonl', a missing key, and the object was
    never read."""
    s3 = moto_server.client("s3")
    bucket = unique("ebraw")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/a+b%41.jsonl", Body=b'{"n": 1}\n')
    store = unique("ebraw")
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store))
    assert handler(eventbridge_event(bucket, "in/a+b%41.jsonl"), None)["records"] == 1
    event = sqs_lambda_event([("m-1", eventbridge_event(bucket, "in/a+b%41.jsonl"), None)])
    assert handler(event, None) == {"batchItemFailures": []}
    assert [ev.meta.shard_id for ev in MemorySink.stores[store]] == ["in/a+b%41.jsonl"] * 2


def test_an_eventbridge_event_reads_the_version_it_names(moto_server, tmp_path: Path):  # noqa: F811
    s3 = moto_server.client("s3")
    bucket = unique("ebversion")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="a.jsonl", Body=b'{"n": 1}\n')["VersionId"]
    s3.put_object(Bucket=bucket, Key="a.jsonl", Body=b'{"n": 2}\n')
    store = unique("ebv")
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store))
    handler(eventbridge_event(bucket, "a.jsonl", first), None)
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1]


def test_a_malformed_record_of_a_direct_event_is_an_error_naming_it_and_nothing_runs(landing):
    bucket, store, handler = landing
    event = s3_lambda_event(bucket, ENCODED)
    event["Records"].append({"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}})
    with pytest.raises(SquallError, match=r"Records\[1\]: an S3 event without bucket name"):
        handler(event, None)
    sns = sns_lambda_event({"Records": "no"})
    sns["Records"][0]["Sns"]["Message"] = "{not json"
    with pytest.raises(SquallError, match=r"Records\[0\]: Sns.Message: not JSON"):
        handler(sns, None)
    assert MemorySink.stores.get(store, []) == []


def test_a_fifo_queue_reports_the_messages_after_a_failed_one_without_running_them(landing):
    """EventBridge can feed a FIFO queue: after a failed message the later ones stay, in order."""
    bucket, store, handler = landing
    event = sqs_lambda_event(
        [
            ("f-1", eventbridge_event(bucket, "in/bad.jsonl"), "g"),
            ("f-2", eventbridge_event(bucket, RAW), "g"),
        ],
        queue="landing.fifo",
    )
    assert handler(event, None) == {
        "batchItemFailures": [{"itemIdentifier": "f-1"}, {"itemIdentifier": "f-2"}]
    }
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [3]


def test_an_sqs_spout_function_keeps_reading_s3_notifications_as_plain_messages(tmp_path: Path):
    store = unique("plain")
    handler = make_handler(write_topology(tmp_path, "{type: stdin}", store))
    event = sqs_lambda_event([("m-1", s3_lambda_event("b", "k.jsonl"), None)])
    assert handler(event, None) == {"batchItemFailures": []}
    (ev,) = MemorySink.stores[store]
    assert ev.value["Records"][0]["s3"]["object"]["key"] == "k.jsonl"


def test_a_dependency_down_fails_the_rest_of_the_sqs_batch_without_running_it(
    moto_server,
    tmp_path: Path,
):
    """A dependency that stays down (retries exhausted: ``BatchFailed``) is every message's
    problem: the messages after it are named failed without being run, as the SQS trigger does
    for a batch of plain messages. Running each of them through its own retries and backoff made
    one invocation last the retries times the batch size (Lambda's timeout then fails it all)."""
    s3 = moto_server.client("s3")
    bucket = unique("down")
    s3.create_bucket(Bucket=bucket)
    for i in range(3):
        put_lines(s3, bucket, f"in/{i}.jsonl", [{"n": i}], gz=False)
    store = unique("down")
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store, transient=1000))
    ids = ["m-0", "m-1", "m-2"]
    event = sqs_lambda_event(
        [(mid, s3_lambda_event(bucket, f"in/{i}.jsonl"), None) for i, mid in enumerate(ids)]
    )
    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}
    (faulty,) = [c for c in handler.engine.components if c.id == "faulty"]
    assert faulty.calls == 2  # the first message's attempts (settings.retry.attempts), no more
    assert MemorySink.stores.get(store, []) == []


def test_an_eventbridge_key_that_was_url_encoded_after_all_is_read_decoded(
    moto_server,  # noqa: F811
    tmp_path: Path,
):
    """AWS does not state whether EventBridge encodes keys: when no object has the key as it
    came and its decoded form names one, that object is read (a space sent as '+')."""
    s3 = moto_server.client("s3")
    bucket = unique("ebenc")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/day one.jsonl", Body=b'{"n": 1}\n{"n": 2}\n')
    store = unique("ebenc")
    spout = f'{{type: s3, bucket: {bucket}, endpoint_url: "{moto_server.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store))
    assert handler(eventbridge_event(bucket, "in/day+one.jsonl"), None)["records"] == 2
    assert [ev.meta.shard_id for ev in MemorySink.stores[store]] == ["in/day one.jsonl"] * 2
    # Neither there: the dead letter of the key as it came (tests/deploy/test_s3_missing_object.py)
    assert handler(eventbridge_event(bucket, "in/no+such.jsonl"), None)["failed"] == 0
    [dead] = MemorySink.stores[f"{store}-dlq"]
    assert dead.failure.reason.startswith(f"s3://{bucket}/in/no+such.jsonl: NoSuchKey: ")


def test_objects_outside_the_spouts_bucket_or_prefix_are_skipped_not_failed(
    moto_server,  # noqa: F811
    tmp_path: Path,
    caplog,
):
    """A topic or rule shared with other readers names objects the function may not read (the
    template grants reads under the prefix only): they were read, failed with AccessDenied at
    every delivery, and held the message until its dead-letter queue. They are skipped now,
    with an INFO line; the spout's own objects in the same message are read."""
    s3 = moto_server.client("s3")
    bucket = unique("scope")
    s3.create_bucket(Bucket=bucket)
    for key in ("in/a.jsonl", "other/b.jsonl", "in/c.csv"):
        s3.put_object(Bucket=bucket, Key=key, Body=b'{"n": 1}\n')
    store = unique("scope")
    spout = f'{{type: s3, bucket: {bucket}, prefix: "in/", endpoint_url: "{moto_server.endpoint}"}}'
    handler = make_handler(write_topology(tmp_path, spout, store))
    with caplog.at_level("INFO", logger="squall.lambda"):
        got = handler(eventbridge_event(bucket, "other/b.jsonl"), None)
    assert got == {"objects": 0, "records": 0, "failed": 0, "skipped": 1}
    assert "outside the spout's s3://" in caplog.text
    elsewhere = eventbridge_event("another-bucket", "in/a.jsonl")
    assert handler(elsewhere, None)["skipped"] == 1
    event = sqs_lambda_event(
        [
            ("m-1", eventbridge_event(bucket, "other/b.jsonl"), None),
            ("m-2", eventbridge_event(bucket, "in/a.jsonl"), None),
        ]
    )
    assert handler(event, None) == {"batchItemFailures": []}
    assert [ev.meta.shard_id for ev in MemorySink.stores[store]] == ["in/a.jsonl"]


class NoTimeLeft:
    """A Lambda context whose invocation has no time left (``calls`` counts the questions)."""

    function_name = "consumer"
    calls = 0

    def get_remaining_time_in_millis(self) -> int:
        self.calls += 1
        return 0


class SpentOnceWritten:
    """A Lambda context with time enough until the store has rows, then none (no sleeping)."""

    function_name = "consumer"

    def __init__(self, store: str):
        self.store = store

    def get_remaining_time_in_millis(self) -> int:
        return 0 if MemorySink.stores.get(self.store) else 60_000


def test_s3_notifications_through_sqs_stop_between_messages_before_the_deadline(landing):
    """Each message is a slice: the first runs, the later ones are answered, not started."""
    bucket, store, handler = landing
    event = sqs_lambda_event(
        [
            ("m-1", s3_lambda_event(bucket, ENCODED), None),
            ("m-2", s3_lambda_event(bucket, ENCODED), None),
            ("m-3", eventbridge_event(bucket, RAW), None),
        ]
    )
    assert handler(event, SpentOnceWritten(store)) == {
        "batchItemFailures": [{"itemIdentifier": "m-2"}, {"itemIdentifier": "m-3"}]
    }
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1, 2]


def test_an_sqs_message_whose_object_cannot_be_read_with_no_time_left_is_answered(landing):
    """The first message always runs, but its GetObject is not sent with no time left (as no
    sink's AWS call is): it is answered with the rest, for the queue to deliver again."""
    bucket, store, handler = landing
    event = sqs_lambda_event(
        [
            ("m-1", s3_lambda_event(bucket, ENCODED), None),
            ("m-2", eventbridge_event(bucket, RAW), None),
        ]
    )
    assert handler(event, NoTimeLeft()) == {
        "batchItemFailures": [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-2"}]
    }
    assert MemorySink.stores.get(store, []) == []


def test_an_s3_event_has_no_partial_answer_and_runs_to_its_end_whatever_the_time_left(
    landing, monkeypatch
):
    """Stopping would fail the event, and its retry would start it over from its first line:
    no stop between its objects is considered (its reads are bounded by the time left)."""
    from squall.deploy.deadline import Deadline

    asked: list[int] = []
    monkeypatch.setattr(Deadline, "next_slice", lambda self: asked.append(1) or False)
    bucket, store, handler = landing
    event = {
        "Records": [
            *s3_lambda_event(bucket, ENCODED)["Records"],
            *s3_lambda_event(bucket, ENCODED)["Records"],
        ]
    }
    assert handler(event, SpentOnceWritten(unique("never")))["records"] == 4 and asked == []
    assert [ev.value["n"] for ev in MemorySink.stores[store]] == [1, 2, 1, 2]


def test_an_s3_event_whose_time_is_spent_reads_nothing_and_fails_for_lambdas_retry(landing):
    """With no time left no GetObject is sent (Lambda would kill the invocation mid-read): the
    event fails with the reason, and Lambda retries it."""
    from squall.spouts.s3 import ObjectReadError

    bucket, store, handler = landing
    context = NoTimeLeft()
    with pytest.raises(
        ObjectReadError, match="not sent: the time left before the deadline is spent"
    ):
        handler(s3_lambda_event(bucket, ENCODED), context)
    assert context.calls >= 1 and MemorySink.stores.get(store, []) == []
