"""The sqs spout's client takes the region its queue's AWS URL names (as an ARN's)."""

from __future__ import annotations

import boto3
import pytest

from squall.component import ComponentContext
from squall.spouts.sqs import SqsSpout, SqsSpoutConfig
from tests.moto_standin import QUEUE_URLS_AND_REGIONS, unique


@pytest.mark.parametrize(
    "url,region",
    QUEUE_URLS_AND_REGIONS,
)
def test_a_queue_given_by_its_aws_url_is_read_in_the_url_s_region(
    moto_server, monkeypatch, url, region
):
    """`queue: https://sqs.eu-west-1.amazonaws.com/…` with `AWS_REGION=us-east-1`: the client
    was the environment's region, and SQS (moto too) answers a queue URL of another region as a
    queue that does not exist: every receive failed. An ARN's region was already used."""
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
    name = unique("q")
    local = home.create_queue(QueueName=name)["QueueUrl"]
    home.send_message(QueueUrl=local, MessageBody='{"n": 1}')
    cfg = SqsSpoutConfig(
        id="in",
        type="sqs",
        queue=url.format(name=name),
        endpoint_url=moto_server.endpoint,
        wait_time=0,
        visibility_timeout=30,
    )
    spout = SqsSpout(cfg, ComponentContext("t"))
    spout.open()
    assert spout.client.meta.region_name == region
    assert [r.data for r in next(spout.read(10))] == [b'{"n": 1}']
