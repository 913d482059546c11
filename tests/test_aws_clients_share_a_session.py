"""The boto3 clients of one process come from one session: a session of its own per client
parsed botocore's endpoint rules and the service's model again for each, ~100 ms of CPU of a
Lambda's init per client (the kiosk's two SQS queues and SQS dead letter: three). A changed
``AWS_*`` variable still gets a session that sees it."""

from __future__ import annotations

import threading

import boto3
import pytest

from squall import aws


@pytest.fixture
def sessions(monkeypatch):
    """Every boto3 session made while the test runs."""
    made = []
    real = boto3.session.Session

    def counting(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(boto3.session, "Session", counting)
    monkeypatch.setattr(aws, "_shared", None, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return made


def test_clients_of_one_process_share_one_session(sessions):
    clients = [
        aws.client("sqs", region="us-east-1", endpoint_url="http://127.0.0.1:1"),
        aws.client("sqs", region="us-east-1", endpoint_url="http://127.0.0.1:2"),
        aws.client("s3", region="eu-west-1", endpoint_url=None),
    ]
    assert len(sessions) == 1
    # Each keeps its own settings (region, endpoint) and its own deadline hooks.
    assert [c.meta.endpoint_url for c in clients[:2]] == [
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
    ]
    assert clients[2].meta.region_name == "eu-west-1"
    assert clients[0].meta.events is not clients[1].meta.events


def test_a_changed_aws_variable_gets_a_new_session_that_sees_it(sessions, monkeypatch):
    aws.client("s3", region=None, endpoint_url=None)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    changed = aws.client("s3", region=None, endpoint_url=None)
    assert len(sessions) == 2
    assert changed.meta.endpoint_url == "http://127.0.0.1:9"
    aws.client("s3", region=None, endpoint_url=None)
    assert len(sessions) == 2


def test_clients_made_in_threads_at_once_are_all_made(sessions):
    made, errors = [], []

    def make():
        try:
            made.append(aws.client("sqs", region="us-east-1", endpoint_url=None))
        except Exception as exc:  # pragma: no cover - what the lock prevents
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(made) == 8 and len(sessions) == 1
