"""Enhanced fan-out for the Lambda consumer: a stream consumer of its own, which the trigger reads.

``squall package --handler consumer --template T --retrieval fanout`` registers an
``AWS::Kinesis::StreamConsumer`` on the consumed stream and points the event source mapping at the
consumer's ARN: each shard then pushes to the function over HTTP/2 at a dedicated 2 MB/s (~70 ms),
instead of Lambda polling it once a second within the 2 MB/s and 5 reads/s every polling consumer
of the shard shares. Billed per consumer-shard hour and per GB retrieved; a stream has at most 20
registered consumers.

The function's role reads the consumer (``SubscribeToShard``, ``DescribeStreamConsumer``: both
authorised on the consumer's ARN only) besides the stream (the reads of a polling trigger, which
Lambda's guide lists for either). A consumer is registered in the stack's account and region, and a
Lambda trigger reads only a stream of its own region: a stream the topology places elsewhere (an
ARN, a spout's ``region``) becomes a rule of the template, so CloudFormation refuses the stack in
another account or region before creating anything.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from squall.errors import SquallError

if TYPE_CHECKING:
    from squall.deploy.template import _Builder
    from squall.topology.model import Topology

#: ``squall package --retrieval``: how the trigger (or the KCL) reads the stream.
RETRIEVALS = ("polling", "fanout")
#: What Lambda calls on the stream consumer with the function's role (the Service Authorization
#: Reference gives both actions the consumer as their only resource).
FANOUT_READS = ("kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard")
#: AWS::Kinesis::StreamConsumer's ConsumerName: these characters, 1 to 128 of them.
CONSUMER_NAME_PATTERN = "[a-zA-Z0-9_.-]+"
MAX_CONSUMER_NAME = 128
#: A KCL fleet of the same topology registers a consumer named after its application (the
#: topology's name): the Lambda consumer's default name differs by this suffix.
NAME_SUFFIX = "-lambda"
#: A stream ARN as written in the template: its region and account (literal or ``${...}``).
_STREAM_HOME = re.compile(
    r"^arn:(?:aws[a-zA-Z-]*|\$\{AWS::Partition\}):kinesis:(\$\{[^}]*\}|[^:]*):(\$\{[^}]*\}|[^:]*):stream/"
)


def check_retrieval(retrieval: str) -> None:
    if retrieval not in RETRIEVALS:
        raise SquallError(f"--retrieval must be one of {', '.join(RETRIEVALS)}")


def consumer_name(topology: Topology) -> str:
    """The default ConsumerName: the topology's name (its allowed characters only) + ``-lambda``."""
    base = re.sub(r"[^a-zA-Z0-9_.-]", "-", topology.name).strip("-") or "squall"
    return base[: MAX_CONSUMER_NAME - len(NAME_SUFFIX)] + NAME_SUFFIX


def add_stream_consumer(b: _Builder, topology: Topology, stream_arn: Any) -> dict[str, Any]:
    """The ``ConsumerName`` parameter and the ``Consumer`` resource on the stream. Returns
    the consumer's ARN (``Fn::GetAtt``: the trigger and the grants depend on the consumer, so
    CloudFormation creates it first and deletes it last)."""
    b.params["ConsumerName"] = {
        "Type": "String",
        "Default": consumer_name(topology),
        "AllowedPattern": CONSUMER_NAME_PATTERN,
        "MinLength": 1,
        "MaxLength": MAX_CONSUMER_NAME,
        "Description": "Enhanced fan-out consumer registered on the stream (unique per stream; "
        "billed per consumer-shard hour and per GB)",
    }
    b.resources["Consumer"] = {
        "Type": "AWS::Kinesis::StreamConsumer",
        "Properties": {"ConsumerName": {"Ref": "ConsumerName"}, "StreamARN": stream_arn},
    }
    return {"Fn::GetAtt": ["Consumer", "ConsumerARN"]}


def home_assertions(stream_arn_text: str, retrieval: str) -> list[dict[str, Any]]:
    """Rules that the stack's region and account are the stream's, where its ARN names them."""
    m = _STREAM_HOME.match(stream_arn_text)
    if m is None:  # not an ARN the template writes: nothing to assert
        return []
    out = []
    for value, pseudo, what in (
        (m.group(1), "AWS::Region", "region"),
        (m.group(2), "AWS::AccountId", "account"),
    ):
        expected = rule_value(value)
        if expected is None or (what == "account" and retrieval != "fanout"):
            continue  # a polling trigger may read another account's stream (its stream policy)
        why = (
            f"the stream consumer is registered in the stack's {what}, and a Lambda trigger "
            "reads a stream of its own region only"
            if retrieval == "fanout"
            else "a Lambda trigger reads a stream of its own region only"
        )
        shown = expected if isinstance(expected, str) else "parameter " + expected["Ref"]
        out.append(
            {
                "Assert": {"Fn::Equals": [{"Ref": pseudo}, expected]},
                "AssertDescription": f"--retrieval {retrieval}: deploy this stack in the "
                f"stream's {what} ({shown}): {why}",
            }
        )
    return out


def rule_value(value: str) -> Any:
    """A region or account as a rule compares it: a literal, a parameter's ``Ref`` (a whole
    ``${VAR}``), or None when the template's own pseudo parameter (or a mix) stands there."""
    from squall.deploy.template import _MARKER, PSEUDO_PARAMETERS, param_name

    if value.startswith("${"):
        return None
    whole = _MARKER.fullmatch(value)
    if whole:
        if whole.group(1) in PSEUDO_PARAMETERS:  # `${AWS_REGION}`: the stack's own region
            return None
        return {"Ref": param_name(whole.group(1))}
    return None if _MARKER.search(value) else value
