"""Each component's `aws_permissions` declares exactly the AWS operations it calls (recorded from botocore)."""

from __future__ import annotations

import pytest

from squall.spouts.kinesis import KinesisSpout, KinesisSpoutConfig
from tests.kinesis.kinesis_helpers import consume, make_spout
from tests.kinesis.test_kinesis_sink import events, make_sink, write

pytestmark = pytest.mark.e2e


def declared(component_cls, config) -> set[str]:
    return {a for p in component_cls.aws_permissions(config) for a in p.actions}


@pytest.mark.parametrize("aggregate", [False, True])
def test_kinesis_sink_declares_the_calls_it_makes(kinesis_mock, make_stream, called, aggregate):  # noqa: F811
    stream = make_stream(2)
    sink = make_sink(kinesis_mock.endpoint, stream, partition_key="pk", aggregate=aggregate)
    _, result = write(sink, events(30))
    assert result is None
    assert called == declared(type(sink), sink.config)


def test_kinesis_spout_with_dynamodb_checkpoints_declares_the_calls_it_makes(
    kinesis,
    kinesis_mock,
    dynalite,
    make_stream,
    called,  # noqa: F811
    unique_name,
):
    stream = make_stream(2)
    kinesis.put_records(
        StreamName=stream, Records=[{"Data": b"{}", "PartitionKey": str(i)} for i in range(20)]
    )
    config = KinesisSpoutConfig(
        id="spout",
        type="kinesis",
        stream=stream,
        endpoint_url=kinesis_mock.endpoint,
        poll_interval=0,
        idle_exit=0.5,
        checkpoint={"store": "dynamodb", "table": unique_name, "endpoint_url": dynalite.endpoint},
    )
    # As the local runner does: the spout names its store, the runner opens it and saves positions.
    spout = make_spout(
        kinesis_mock.endpoint,
        stream,
        topology="perm-test",
        poll_interval=0,
        idle_exit=0.5,
        checkpoint=config.checkpoint,
    )
    try:
        assert len(consume(spout, max_records=100)) == 20
    finally:
        spout.close()
    assert called == declared(KinesisSpout, config)
