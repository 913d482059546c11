"""Every option in seconds takes a duration too (hA): ``30s``, ``500ms``, ``5m`` as well as a
number, as ``size``, ``max_future``, the lookup TTLs already did (``squall.times.Seconds``,
``WholeSeconds``). Before, ``timeout: 30s`` on an http sink (and the options below) was refused
with "Input should be a valid number"."""

from __future__ import annotations

import pydantic
import pytest

from squall.bolts.lookup_sources import HttpSourceConfig, SqlSourceConfig
from squall.errors import TopologyError
from squall.sinks.http import HttpSinkConfig
from squall.sinks.push import PushSinkConfig
from squall.sinks.s3 import S3SinkConfig
from squall.sinks.sqs import SqsSinkConfig
from squall.sinks.warehouse import WarehouseConfig
from squall.spouts.kinesis import KinesisSpoutConfig
from squall.spouts.sqs import SqsSpoutConfig
from squall.topology.loader import load_text
from squall.topology.model import RetryConfig, Settings
from squall.topology.resource_config import ResourceConfig

#: (model, option): options of seconds that take any number of seconds
SECONDS = [
    (HttpSinkConfig, "timeout"),
    (HttpSinkConfig, "max_retry_after"),
    (PushSinkConfig, "timeout"),
    (PushSinkConfig, "max_retry_after"),
    (S3SinkConfig, "roll_seconds"),
    (WarehouseConfig, "statement_timeout"),
    (SqlSourceConfig, "timeout"),
    (HttpSourceConfig, "timeout"),
    (RetryConfig, "initial_backoff"),
    (RetryConfig, "max_backoff"),
    (Settings, "lambda_deadline_margin"),
    (KinesisSpoutConfig, "poll_interval"),
    (KinesisSpoutConfig, "idle_exit"),
    (KinesisSpoutConfig, "shard_sync_interval"),
    (ResourceConfig, "connect_timeout"),
]
#: options of whole seconds (an AWS API's integer)
WHOLE = [
    (SqsSinkConfig, "delay_seconds"),
    (SqsSpoutConfig, "wait_time"),
    (SqsSpoutConfig, "visibility_timeout"),
]


def _option(model: type[pydantic.BaseModel], name: str) -> type[pydantic.BaseModel]:
    """A model of that one option, as the component's model declares it (type and bounds)."""
    field = model.model_fields[name]
    return pydantic.create_model("One", x=(field.annotation, field))


def _ids(options: list) -> list[str]:
    return [f"{model.__name__}.{name}" for model, name in options]


@pytest.mark.parametrize(("model", "name"), SECONDS, ids=_ids(SECONDS))
def test_a_seconds_option_takes_a_duration(model, name) -> None:
    one = _option(model, name)
    assert one(x="500ms").x == 0.5
    assert one(x="20s").x == 20
    assert one(x=" 2m ").x == 120
    assert one(x=3).x == 3  # a number is seconds, as before
    assert one(x=".5").x == 0.5  # (a number's text, as the option's number type read it)
    with pytest.raises(pydantic.ValidationError, match="not a duration"):
        one(x="30 seconds")


@pytest.mark.parametrize(("model", "name"), WHOLE, ids=_ids(WHOLE))
def test_a_whole_seconds_option_takes_a_duration_of_whole_seconds(model, name) -> None:
    one = _option(model, name)
    assert one(x="10s").x == 10
    assert one(x=3).x == 3
    with pytest.raises(pydantic.ValidationError):
        one(x="1500ms")  # not a whole second: refused, not rounded


@pytest.mark.parametrize(("model", "name"), SECONDS + WHOLE, ids=_ids(SECONDS + WHOLE))
def test_a_duration_keeps_the_options_bounds(model, name) -> None:
    field = model.model_fields[name]
    bounds = {type(m).__name__: m for m in field.metadata}
    if "Le" in bounds:
        with pytest.raises(pydantic.ValidationError):
            _option(model, name)(x=f"{bounds['Le'].le + 1}s")
    with pytest.raises(pydantic.ValidationError):
        _option(model, name)(x="-1s")


TOPOLOGY = """
name: t
settings:
  retry: {attempts: 3, initial_backoff: 100ms, max_backoff: 10s}
  lambda_deadline_margin: 1500ms
resources:
  db: {url: "sqlite:///w.db", connect_timeout: 2s}
spout: {type: kinesis, stream: s, poll_interval: 500ms, shard_sync_interval: 1m}
bolts: []
sinks:
  - {id: out, type: stdout}
"""


def test_a_topology_reads_the_durations(tmp_path) -> None:
    topology = load_text(TOPOLOGY, base_dir=tmp_path)
    assert topology.settings.retry.initial_backoff == 0.1
    assert topology.settings.lambda_deadline_margin == 1.5
    assert topology.resources["db"].connect_timeout == 2
    assert topology.spout.poll_interval == 0.5
    assert topology.spout.shard_sync_interval == 60


def test_an_octal_looking_number_is_refused_as_for_every_duration(tmp_path) -> None:
    # (YAML 1.1 reads 010 as 8: a duration option asks for its unit)
    with pytest.raises(TopologyError, match="010"):
        load_text(TOPOLOGY.replace("poll_interval: 500ms", "poll_interval: 010"), base_dir=tmp_path)
