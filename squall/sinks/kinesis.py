"""``kinesis`` sink: write events to a Kinesis stream with PutRecords (producers, stream to stream)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from squall import aws, exact_json, paths
from squall.component import Capabilities, ComponentConfig, ComponentContext
from squall.errors import TransientError
from squall.event import Event, Failure
from squall.iam import AwsPermission, kinesis_stream_arn
from squall.kinesis.fields import StreamFields
from squall.kinesis.putrecords import (
    SHARD_MAP_TTL,
    Aggregator,
    Entry,
    PutRecordsWriter,
    ShardMap,
    key_for_id,
    load_shard_map,
    record_problem,
)
from squall.kinesis.stream_check import DESCRIBE, check_stream
from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult


class KinesisSinkConfig(StreamFields, ComponentConfig):
    partition_key: paths.DottedPath | None = Field(
        None,
        description="Dotted path of the partition key (`user.id`, `meta.partition_key`); "
        "default: the source record's partition key, else the event id (its digest when longer "
        "than 256 characters).",
    )
    explicit_hash_key: paths.DottedPath | None = Field(
        None, description="Dotted path of a decimal explicit hash key that picks the shard."
    )
    format: Literal["json", "raw"] = Field(
        "json",
        description="`json`: the event's value as JSON (orjson; an integer beyond 64 bits as its "
        "digits); `raw`: the record's bytes.",
    )
    aggregate: bool = Field(
        False,
        description="Pack user records into KPL aggregates (per shard); every consumer must "
        "de-aggregate (squall's runners and the KCL do; a Lambda function of your own gets each "
        "aggregate as one record).",
    )
    event_id_key: str | None = Field(
        None,
        description="json format: add the event id to each object under this key, for the "
        "consumer's decode bolt (`event_id_field`) to keep it: a replayed put then adds nothing "
        "to its idempotent sinks (the new records have other sequence numbers).",
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="PutRecords attempts for records that fail "
        "(first included); then those records fail, not the whole batch: their shard's later "
        "records are held, delivered again from the first failed.",
    )


class KinesisSink(Sink):
    """Put each event as a Kinesis record (or KPL aggregates of them); failed puts fail the batch."""

    Config = KinesisSinkConfig
    summary = "Write events to a Kinesis stream with PutRecords, optionally KPL-aggregated."

    def __init__(self, config: KinesisSinkConfig, context: ComponentContext):
        super().__init__(config, context)
        self.ref = aws.StreamRef.parse(config.stream)
        self.client: Any = None
        self.writer: PutRecordsWriter | None = None
        self._pk = paths.getter(config.partition_key) if config.partition_key else None
        self._ehk = paths.getter(config.explicit_hash_key) if config.explicit_hash_key else None
        self._shard_map: ShardMap | None = None

    @classmethod
    def payload_reads(cls, config: KinesisSinkConfig) -> list[tuple[tuple[str | int, ...], str]]:
        """The partition key's and the explicit hash key's paths (``meta.…`` ones are passed by)."""
        return [
            ((option,), path)
            for option, path in (
                ("partition_key", config.partition_key),
                ("explicit_hash_key", config.explicit_hash_key),
            )
            if path
        ]

    @classmethod
    def capabilities(cls, config: KinesisSinkConfig) -> Capabilities:
        return Capabilities(kinesis_streams=(config.stream,))

    @classmethod
    def aws_permissions(cls, config: KinesisSinkConfig) -> list[AwsPermission]:
        """PutRecords on the stream; ListShards too when aggregating (the shard map); the start
        check's DescribeStreamSummary."""
        actions = (
            ("kinesis:PutRecords", "kinesis:ListShards", DESCRIBE)
            if config.aggregate
            else ("kinesis:PutRecords", DESCRIBE)
        )
        return [
            AwsPermission(
                actions, kinesis_stream_arn(config.stream, config.region), f"sink {config.id}"
            )
        ]

    def open(self, resources: Any = None) -> None:
        cfg = self.config
        if self.client is None:
            self.client = aws.client(
                "kinesis",
                region=aws.resolve_region(cfg.region, self.ref.region),
                endpoint_url=cfg.endpoint_url,
            )
        check_stream(self.id, self.client, self.ref)  # a missing stream stops the start
        self.writer = PutRecordsWriter(self.client, self.ref, max_attempts=cfg.max_attempts)

    def prepare(self, events: list[Event]) -> Prepared:
        """Serialize each event and check it against the Kinesis limits; reject what cannot be put."""
        out = Prepared([])
        rows = []
        for ev in events:
            try:
                data, pk, ehk = self._record(ev)
            except ValueError as exc:
                out.reject(ev, self.id, str(exc))
                continue
            problem = record_problem(data, pk, ehk)
            if problem is not None:
                out.reject(ev, self.id, problem)
                continue
            out.events.append(ev)
            rows.append((data, pk, ehk))
        out.payload = rows
        return out

    def _record(self, ev: Event) -> tuple[bytes, str, str | None]:
        if self.config.format == "raw":
            data = ev.raw
        else:
            if ev.value is None:
                raise ValueError(
                    "event has no decoded value: add a decode bolt, or set format: raw"
                )
            value = ev.value
            key = self.config.event_id_key
            if key is not None:
                if not isinstance(value, dict):
                    raise ValueError(
                        f"event_id_key needs an object payload, not {type(value).__name__}"
                    )
                value = {**value, key: ev.event_id}
            try:
                data = exact_json.dumps(value)  # an integer beyond 64 bits as its digits
            except TypeError as exc:
                raise ValueError(f"value cannot be serialized as JSON: {exc}") from None
            data = exact_json.owned(data)  # kept for the batch: not orjson's ~4 KB buffer
        if self._pk is not None:
            value = self._pk(ev)
            if value is paths.MISSING or value is None or isinstance(value, dict | list):
                raise ValueError(
                    f"partition key '{self.config.partition_key}' is missing or not a scalar"
                )
            pk = str(value)
        else:
            pk = ev.meta.partition_key or key_for_id(ev.event_id)
        ehk = None
        if self._ehk is not None:
            value = self._ehk(ev)
            if (
                value is paths.MISSING
                or value is None
                or isinstance(value, bool | dict | list | float)
            ):
                raise ValueError(
                    f"explicit hash key '{self.config.explicit_hash_key}' is missing or not an integer"
                )
            ehk = str(value)
        return data, pk, ehk

    def write_batch(self, prepared: Prepared, ctx: WriteContext) -> WriteResult | None:
        assert self.writer is not None, "open() the sink first"
        if aws.time_spent(ctx.time_left):
            # No call (ListShards, PutRecords) is started with no time left, as the other
            # sinks': the engine's retry, bounded by the same time left, is not made.
            raise TransientError(f"{self.id}: PutRecords: {aws.NOT_SENT}")
        entries = self._entries(prepared, ctx.time_left)
        outcome = self.writer.put(entries, ctx.time_left)  # retries only while time is left
        if outcome.shard_map is not None:  # an aggregate was misplaced: the stream was resharded
            self._shard_map = outcome.shard_map
        if not outcome.failed:
            return None
        failed = []
        for entry, reason in outcome.failed:
            for ev in entry.items:
                ev.failure = Failure(self.id, f"PutRecords: {reason}")
                failed.append(ev)
        return WriteResult(failed=failed)

    def _entries(
        self, prepared: Prepared, time_left: Callable[[], float | None] | None = None
    ) -> list[Entry]:
        rows = prepared.payload or []
        if not self.config.aggregate:
            return [
                Entry(data, pk, ehk, [ev])
                for ev, (data, pk, ehk) in zip(prepared.events, rows, strict=True)
            ]
        if self._shard_map is None or time.monotonic() - self._shard_map.loaded_at > SHARD_MAP_TTL:
            self._shard_map = load_shard_map(self.client, self.ref, time_left)
        agg = Aggregator(self._shard_map)
        entries: list[Entry] = []
        for ev, (data, pk, ehk) in zip(prepared.events, rows, strict=True):
            entries.extend(agg.add(data, pk, ehk, ev))
        entries.extend(agg.flush())
        return entries

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
