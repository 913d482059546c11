"""A writer's start check of its stream: one DescribeStreamSummary when the component opens.

A ``kinesis`` sink or ``dead_letter_kinesis`` whose stream does not exist (a name from ``${VAR}``
unset or mistyped, another region's stream) failed only at the first batch — in a Lambda
producer, every request answered 500 while the function itself started fine. It now stops the
start with one line naming the component, the stream and the region asked.

Only a stream Kinesis says does not exist stops it. A role that may only put records
(``kinesis:PutRecords``, hand-written: the generated roles allow ``DescribeStreamSummary`` on the
stream) is refused the check: that is not the stream's fault, and such a role is a valid
deployment, so the start goes on with a WARNING saying the stream was not checked. So does a
check Kinesis throttled (``DescribeStreamSummary`` allows 20 calls per second per account: a
fleet of functions starting at once can exceed it) or could not answer: the first batch tells
then, as it did. The check is one attempt within ``CHECK_SECONDS`` (``aws.time_bounded``):
with the client's own bounds (connect 5 s, read 30 s, botocore's 3 attempts with backoff) an
endpoint that did not answer held a start up to ~100 s — a Lambda's init has 10 s (past them
it is run again inside the first invocation, whose API Gateway integration gives up at 29 s),
and each of a KCL worker's shard processes makes its own check.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from squall import aws
from squall.errors import SinkError, safe_text

log = logging.getLogger("squall.kinesis")

#: The action the check calls, declared by the components that make it (``aws_permissions``).
DESCRIBE = "kinesis:DescribeStreamSummary"
#: The whole check, at most (one attempt: its connection and its answer within it).
CHECK_SECONDS = 2.0


def check_stream(component: str, client: Any, ref: aws.StreamRef) -> None:
    """Raise ``SinkError`` naming ``component``, the stream and the region when the stream does
    not exist; log a WARNING and return when it cannot be checked (see the module docstring)."""
    region = getattr(getattr(client, "meta", None), "region_name", None)
    where = f"stream '{ref.arn or ref.name}'" + (f" in {region}" if region else "")
    deadline = time.monotonic() + CHECK_SECONDS
    try:
        with aws.time_bounded(lambda: deadline - time.monotonic()):
            client.describe_stream_summary(**ref.params)
    except Exception as exc:
        code = aws.error_code(exc)
        detail = f"{code or type(exc).__name__}: {safe_text(exc, 300)}"
        if code == "ResourceNotFoundException":
            raise SinkError(
                f"{component}: {where} does not exist (DescribeStreamSummary: {detail})"
            ) from None
        hint = (
            f"the role may not call {DESCRIBE} (it may still put records)"
            if code in ("AccessDeniedException", "AccessDenied")
            else "the check failed"
        )
        log.warning(
            "%s: %s not checked at start: %s (%s); a missing stream fails the first batch",
            component,
            where,
            hint,
            detail,
        )
