"""An ``sqs`` sink's message attribute holding a number a Python bolt made — NumPy's ``float64``
(a ``float`` subclass), ``int64``, ``bool_``, an ``IntEnum`` member — is the number the body's
JSON holds. Before (hG), the attribute was the value's Python ``repr``: a Number attribute
``np.float64(0.5)`` or ``<Tier.GOLD: 3>`` (which SQS refuses: the message failed), ``int64`` a
String ``"7"``, ``bool_`` the String ``"True"``; a NaN the Number ``nan``."""

from __future__ import annotations

from enum import IntEnum, StrEnum

import pytest

from squall.component import ComponentContext
from squall.event import Event, RecordMeta
from squall.sinks.sqs import SqsSink

np = pytest.importorskip("numpy")


class Tier(IntEnum):
    GOLD = 3


class Region(StrEnum):
    EU = "eu"


def _attributes(value) -> dict:
    config = SqsSink.Config(
        id="out",
        type="sqs",
        queue="https://sqs.eu-west-1.amazonaws.com/123456789012/q",
        region="eu-west-1",
        attributes={"x": "x"},
        event_id_attribute=None,
    )
    sink = SqsSink(config, ComponentContext("t"))
    event = Event(b"{}", RecordMeta("s", "shard-0", "1"), "id-1", 0, {"x": value})
    return sink._message(event, 0).body.get("MessageAttributes", {})


@pytest.mark.parametrize(
    ("value", "data_type", "text"),
    [
        (np.float64(0.5), "Number", "0.5"),
        (np.float32(1.5), "Number", "1.5"),
        (np.int64(7), "Number", "7"),
        (Tier.GOLD, "Number", "3"),
        (np.bool_(True), "String", "true"),
        (Region.EU, "String", "eu"),
        (7, "Number", "7"),  # plain values as before
        (0.25, "Number", "0.25"),
        (True, "String", "true"),
    ],
)
def test_an_attribute_is_the_number_the_body_holds(value, data_type, text):
    assert _attributes(value) == {"x": {"DataType": data_type, "StringValue": text}}


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), np.float64("nan"), np.float32("-inf")]
)
def test_a_nan_or_infinity_is_left_out_as_null_is(value):
    # (the body's JSON writes null; SQS takes no "nan" Number, nor an empty value)
    assert _attributes(value) == {}
