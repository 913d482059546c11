"""``firehose`` sink: send events to an Amazon Data Firehose stream with PutRecordBatch.

Firehose limits (PutRecordBatch API reference): at most 500 records and 4 MiB per call, a record
at most 1,000 KiB before base64. A call can succeed for some records and fail for others
(``FailedPutCount``, an ``ErrorCode`` per record): only the failed records are sent again, with
backoff, and those still failing after ``max_attempts`` fail the batch (the source delivers them
again). Firehose does not deduplicate: a replay delivers its records again, so each record can
carry the event id (``event_id_key``) for the destination to deduplicate on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from squall import aws, exact_json
from squall.aws import chunks
from squall.component import ComponentConfig, ComponentContext
from squall.errors import SinkError
from squall.event import Event
from squall.iam import AwsPermission, firehose_stream_arn
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult
from squall.sinks.batchio import Item, Retry, aws_call, send_all, time_left_of, write_result

MAX_CALL_RECORDS = 500
MAX_CALL_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1000 * 1024


class FirehoseSinkConfig(ComponentConfig):
    delivery_stream: str = Field(description="Firehose stream name.")
    region: aws.OptionalSetting = Field(
        None, description="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)."
    )
    endpoint_url: aws.EndpointUrl = Field(None, description="Firehose endpoint (local testing).")
    format: Literal["json", "raw"] = Field(
        "json",
        description="`json`: the event's value as JSON (orjson; an integer beyond 64 bits as its "
        "digits); `raw`: the record's bytes.",
    )
    event_id_key: str | None = Field(
        None,
        description="json format: add the event id to each object under this key (for deduplication "
        "downstream).",
    )
    delimiter: str = Field(
        "\n", description="Appended to every record (a newline makes the S3 objects JSON lines)."
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="PutRecordBatch attempts for records that fail "
        "(first included); then those records fail, not the whole batch: their shard's later "
        "records are held, delivered again from the first failed.",
    )


class FirehoseSink(Sink):
    """Put events to a Firehose stream, 500 per call; retry the records Firehose failed."""

    Config = FirehoseSinkConfig
    summary = "Send events to an Amazon Data Firehose stream with PutRecordBatch."

    @classmethod
    def aws_permissions(cls, config: FirehoseSinkConfig) -> list[AwsPermission]:
        return [
            AwsPermission(
                ("firehose:PutRecordBatch",),
                firehose_stream_arn(config.delivery_stream, config.region),
                f"sink {config.id}",
            )
        ]

    def __init__(self, config: FirehoseSinkConfig, context: ComponentContext):
        super().__init__(config, context)
        self.client: Any = None
        self.backoff = aws.Backoff(base=0.1, cap=5.0)
        self.sleep: Callable[[float], None] = time.sleep
        self._delim = config.delimiter.encode()

    def open(self, resources: Any = None) -> None:
        if self.client is None:
            self.client = aws.client(
                "firehose", region=self.config.region, endpoint_url=self.config.endpoint_url
            )

    def prepare(self, events: list[Event]) -> Prepared:
        out = Prepared([])
        items = []
        key = self.config.event_id_key
        for ev in events:
            if self.config.format == "raw":
                data = ev.raw
            elif ev.value is None:
                out.reject(
                    ev, self.id, "event has no decoded value: add a decode bolt, or set format: raw"
                )
                continue
            else:
                value = ev.value
                if key is not None:
                    if not isinstance(value, dict):
                        out.reject(
                            ev,
                            self.id,
                            f"event_id_key needs an object payload, not {type(value).__name__}",
                        )
                        continue
                    value = {**value, key: ev.event_id}
                try:
                    data = exact_json.dumps(value)  # an integer beyond 64 bits as its digits
                except TypeError as exc:
                    out.reject(ev, self.id, f"value cannot be serialized as JSON: {exc}")
                    continue
            data += self._delim
            if len(data) > MAX_RECORD_BYTES:
                out.reject(
                    ev,
                    self.id,
                    f"record is {len(data)} bytes (Firehose takes at most {MAX_RECORD_BYTES})",
                )
                continue
            out.events.append(ev)
            items.append(Item([ev], data, len(data)))
        out.payload = items
        return out

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        if self.client is None:
            raise SinkError(f"{self.id}: open() the sink first")
        outcome = send_all(
            f"{self.id}: PutRecordBatch",
            chunks(prepared.payload or [], MAX_CALL_RECORDS, MAX_CALL_BYTES),
            self._send,
            max_attempts=self.config.max_attempts,
            backoff=self.backoff,
            sleep=self.sleep,
            time_left=time_left_of(ctx),  # no retry past the runner's deadline
        )
        return write_result(self.id, outcome)

    def _send(self, chunk: list[Item]) -> list[Retry | None]:
        resp = aws_call(
            f"{self.id}: PutRecordBatch",
            self.client.put_record_batch,
            DeliveryStreamName=self.config.delivery_stream,
            Records=[{"Data": i.body} for i in chunk],
        )
        answers = resp.get("RequestResponses", [])
        if len(answers) != len(chunk):
            raise SinkError(
                f"{self.id}: PutRecordBatch answered {len(answers)} results for {len(chunk)} records"
            )
        # Every per-record error Firehose reports (ServiceUnavailableException, InternalFailure, KMS
        # throttling) is worth another attempt; a record it can never take is refused before the call.
        return [
            Retry(f"PutRecordBatch: {a['ErrorCode']}: {a.get('ErrorMessage', '')}")
            if a.get("ErrorCode")
            else None
            for a in answers
        ]

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
