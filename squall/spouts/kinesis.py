"""``kinesis`` spout: poll a Kinesis stream with boto3, in one process, with checkpoints.

One process reads every shard of the stream (GetRecords, round robin) and hands their records
out in arrival-time order: a shard still behind its tip holds back the others' later records,
so on a backlog no shard runs ahead of another's unread records. It follows resharding
(a child shard starts only after its parents were read to SHARD_END and checkpointed), respects
the per-shard read limits, backs off on throttling and resumes after the last checkpoint.
Fleets of hosts use the KCL or Lambda runners instead: they coordinate shard leases, this
poller does not (two pollers on one stream both read every record).

Size (~790 lines): one poller — shard sync, resharding order, iterators, backoff, the merge of
the shards' records by arrival time — whose parts share the per-shard state; the Kinesis pieces
others use are in ``squall/kinesis/``.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import islice
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from squall import aws
from squall.component import (
    Capabilities,
    ComponentConfig,
    ComponentContext,
    LambdaTrigger,
    TriggerSource,
)
from squall.errors import DecodeError, SquallError, TransientError
from squall.event import Position, Record, RecordMeta
from squall.iam import AwsPermission, dynamodb_table_arn, kinesis_stream_arn
from squall.identifiers import check_application, check_dynamodb_table, check_identifier
from squall.kinesis.fields import StreamFields
from squall.kinesis.kpl import deaggregate, is_aggregated, last_position
from squall.kinesis.shards import (
    SHARD_END,
    ShardLineage,
    ShardState,
    ShardStatus,
    is_shard_end,
    list_shards,
)
from squall.spouts.base import Progress, Spout
from squall.times import Seconds
from squall.topology.checkpoint import CheckpointSpec
from squall.topology.resource_config import SqlResource

log = logging.getLogger("squall.spouts.kinesis")

#: Before any arrival time: a shard that may hold records and fetched none yet holds every other.
_FIRST = datetime.min.replace(tzinfo=UTC)


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _arrival(item: tuple[datetime, int, ShardState]) -> tuple[datetime, int]:
    return item[0], item[1]


def _due(st: ShardState, frontier: datetime | None) -> Iterator[tuple[datetime, int, ShardState]]:
    """The shard's fetched records that may be handed out, in its order: (arrival time, rank
    among the shard's records of that arrival time, shard), up to its first record after the
    frontier. The rank interleaves the shards' records of one arrival time (a PutRecords call's
    records share it) instead of handing out one shard's before the other's."""
    last, rank = None, 0
    for rec in st.buffer:
        t = rec.meta.arrival_time or _FIRST
        if frontier is not None and t > frontier:
            return
        rank = rank + 1 if t == last else 0
        last = t
        yield t, rank, st


def _answered(resp: dict[str, Any], now: Callable[[], datetime]) -> datetime:
    """When Kinesis answered, by its clock — the one arrival times are stamped by: the answer's
    Date header (to the second, so never later than the answer); this host's clock without it.
    A host clock ahead of Kinesis's placed a shard answering nothing behind its tip that far
    ahead, and the other shards' later records went out before its older ones."""
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        try:
            at = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return now()
        return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    return now()


#: GetRecords: at most 5 calls per second per shard, and 10,000 records per call.
MIN_CALL_INTERVAL = 0.2
MAX_LIMIT = 10_000
#: Records a shard takes at most per second (Kinesis's write limit per shard).
MAX_SHARD_WRITES = 1_000
#: Consecutive non-throttling failures (network, 5xx) of one shard before the read fails.
MAX_ERRORS = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SqlCheckpoint(_Strict):
    """Checkpoints in a SQL resource (table ``squall_checkpoints``)."""

    store: Literal["sql"]
    resource: SqlResource | None = Field(
        None, description="SQL resource name (default: `warehouse`)."
    )
    table: str = Field("squall_checkpoints", description="Table name; created if missing.")
    application: str | None = Field(
        None, description="Checkpoint namespace (default: the topology name)."
    )

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return check_identifier(v, "table name")

    @field_validator("application")
    @classmethod
    def _application(cls, v: str | None) -> str | None:
        return check_application(v) if v is not None else v


class DynamoDbCheckpoint(_Strict):
    """Checkpoints in a DynamoDB table (one item per shard)."""

    store: Literal["dynamodb"]
    table: str = Field(description="DynamoDB table name; created (on demand billing) if missing.")
    endpoint_url: aws.EndpointUrl = Field(None, description="DynamoDB endpoint (local testing).")
    region: aws.OptionalSetting = Field(None, description="Region (default: the spout's).")
    application: str | None = Field(
        None, description="Checkpoint namespace (default: the topology name)."
    )
    create_table: bool = Field(True, description="Create the table when it does not exist.")

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return check_dynamodb_table(v)

    @field_validator("application")
    @classmethod
    def _application(cls, v: str | None) -> str | None:
        return check_application(v) if v is not None else v


class MemoryCheckpoint(_Strict):
    """No persistence: a restart starts again from `start`."""

    store: Literal["memory"]


CheckpointConfig = Annotated[
    SqlCheckpoint | DynamoDbCheckpoint | MemoryCheckpoint, Field(discriminator="store")
]


class KinesisSpoutConfig(StreamFields, ComponentConfig):
    start: Literal["trim_horizon", "latest", "at_timestamp"] = Field(
        "trim_horizon", description="Where to start in shards that have no checkpoint."
    )
    timestamp: datetime | None = Field(None, description="Start time for `start: at_timestamp`.")
    poll_interval: Seconds = Field(
        1.0, ge=0, description="Seconds between GetRecords calls on a caught-up shard."
    )
    limit: int = Field(
        MAX_LIMIT,
        ge=1,
        le=MAX_LIMIT,
        description="Records per GetRecords call (at most 10,000); on a backlog, shared by the "
        "shards behind their tip, each keeping at least what a shard written at 1,000 records a "
        "second takes between two calls (or `limit`, if smaller).",
    )
    checkpoint: CheckpointConfig | None = Field(
        None,
        description="Where checkpoints go (default: the `warehouse` resource if any, else memory).",
    )
    idle_exit: Seconds | None = Field(
        None,
        gt=0,
        description="Stop after this many seconds without a new record "
        "(for local runs and tests); default: run forever.",
    )
    shard_sync_interval: Seconds = Field(
        60.0,
        gt=0,
        description="Seconds between ListShards calls (shards are also re-listed when one ends).",
    )

    @model_validator(mode="after")
    def _timestamp(self) -> KinesisSpoutConfig:
        if self.start == "at_timestamp" and self.timestamp is None:
            raise ValueError("start: at_timestamp needs a `timestamp`")
        if self.start != "at_timestamp" and self.timestamp is not None:
            raise ValueError("`timestamp` is only used with start: at_timestamp")
        return self


@dataclass
class KinesisProgress(Progress):
    """Progress plus how far behind the tip of the stream each shard is."""

    millis_behind_latest: int | None = None
    lag: dict[str, int] = field(default_factory=dict)


@dataclass
class PollStats:
    """Counters of the poller, for reports and tests."""

    get_records_calls: int = 0
    records: int = 0
    throttled: int = 0
    expired_iterators: int = 0
    errors: int = 0
    shard_syncs: int = 0
    shards_finished: int = 0


class KinesisSpout(Spout):
    """Poll every shard of a Kinesis stream; checkpoint per shard; follow resharding."""

    Config = KinesisSpoutConfig
    summary = "Read a Kinesis stream with GetRecords (one process), checkpointing per shard."

    def __init__(
        self,
        config: KinesisSpoutConfig,
        context: ComponentContext,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """``clock`` (monotonic seconds) and ``sleep`` drive polling, idle exit and backoff, as
        the engine's ``sleep`` does: tests pass their own instead of waiting."""
        super().__init__(config, context)
        self.ref = aws.StreamRef.parse(config.stream)
        self.stream_name = self.ref.name
        self.stats = PollStats()
        self._now: Callable[[], datetime] = lambda: datetime.now(UTC)  # wall clock: record ages
        self.client: Any = None
        self._stored: dict[str, Position] = {}  # positions loaded by the runner (resume)
        self._to_save: dict[
            str, Position
        ] = {}  # SHARD_END of shards finished, for the runner to save
        self._resumed = False
        self._lineage = ShardLineage()
        self._backoff = aws.Backoff(base=0.1, cap=10.0)
        self._clock = clock
        self._sleep = sleep
        self._next_sync = 0.0
        self._last_activity = 0.0
        self._initial_sync = True
        self._released: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def capabilities(cls, config: KinesisSpoutConfig) -> Capabilities:
        # Lambda's trigger is the stream, in the spout's region when it sets one.
        return Capabilities(
            kinesis_streams=(config.stream,),
            lambda_trigger=LambdaTrigger(TriggerSource.KINESIS, config.stream, config.region),
        )

    @classmethod
    def aws_permissions(cls, config: KinesisSpoutConfig) -> list[AwsPermission]:
        """The polling reads on the stream, and the checkpoint table's calls when it is in DynamoDB."""
        out = [
            AwsPermission(
                ("kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"),
                kinesis_stream_arn(config.stream, config.region),
                f"spout {config.id}",
            )
        ]
        cp = config.checkpoint
        if isinstance(cp, DynamoDbCheckpoint):
            actions = ("dynamodb:DescribeTable", "dynamodb:Query", "dynamodb:UpdateItem")
            if cp.create_table:
                actions += ("dynamodb:CreateTable",)
            out.append(
                AwsPermission(
                    actions,
                    dynamodb_table_arn(cp.table, cp.region or config.region),
                    f"spout {config.id} checkpoints",
                )
            )
        return out

    def open(self, resources: Any = None) -> None:
        cfg = self.config
        region = aws.resolve_region(cfg.region, self.ref.region)
        if self.client is None:
            self.client = aws.client(
                "kinesis", region=region, endpoint_url=cfg.endpoint_url, botocore_retries=1
            )
        self._region = region

    def checkpointing(self) -> CheckpointSpec:
        cp = self.config.checkpoint
        if cp is None:
            return CheckpointSpec("default", self.stream_name, owner=self.id)
        if isinstance(cp, MemoryCheckpoint):
            return CheckpointSpec("memory", self.stream_name, owner=self.id)
        if isinstance(cp, SqlCheckpoint):
            return CheckpointSpec(
                "sql", self.stream_name, cp.application, cp.resource, cp.table, owner=self.id
            )
        region = aws.resolve_region(cp.region or self.config.region, self.ref.region)
        return CheckpointSpec(
            "dynamodb",
            self.stream_name,
            cp.application,
            None,
            cp.table,
            region,
            cp.endpoint_url,
            cp.create_table,
            owner=self.id,
        )

    def resume(self, positions: dict[str, Position]) -> None:
        """Start from the stored positions: list the shards and get the first iterators."""
        if self.client is None:
            raise SquallError(f"{self.id}: open() the spout before resume()")
        self._stored = dict(positions)
        self._sync_shards()
        self._prime()
        self._last_activity = self._clock()
        self._resumed = True

    def _prime(self) -> None:
        """Get iterators for the shards readable now, so `latest` means "from open()" on."""
        for st in self._lineage.promote():
            try:
                st.iterator = self._get_iterator(st)
                st.started = True
            except Exception as exc:
                if not aws.is_retryable(exc):
                    raise SquallError(
                        f"{self.id}: GetShardIterator on {st.shard_id} failed: {exc}"
                    ) from exc
                # throttled: _poll gets the iterator later

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    # -- reading -------------------------------------------------------------------------------

    def read(self, max_records: int) -> Iterator[list[Record]]:
        if self.client is None:
            raise SquallError(f"{self.id}: open() the spout before read()")
        if not self._resumed:  # used without a runner (tests, tools): resume from nothing stored
            self.resume({})
        idle_exit = self.config.idle_exit
        while not self.stopping:
            now = self._clock()
            if now >= self._next_sync:
                self._sync_shards()
            self._finish_ended()
            # parents read to their end, handed out, and still not committed a round later
            self._released = {
                st.shard_id for st in self._lineage.with_status(ShardStatus.ENDED) if not st.buffer
            }
            if self._lineage.promote():
                self._last_activity = now
            reading = self._lineage.with_status(ShardStatus.READING)
            # a shard whose fetched records still wait is not read again: what is held stays
            # within about one `limit` of records
            due = sorted(
                (s for s in reading if s.next_call <= now and not s.buffer),
                key=lambda s: s.next_call,
            )
            if due:
                share = self._share(sum(1 for s in reading if s.more))
                for st in due:
                    self._poll(st, share if st.more else self.config.limit)
            delivered = False
            while batch := self._merge(max_records):
                delivered = True
                yield batch
                if self.stopping:
                    return
            if delivered:
                continue
            if self.idle_batches:
                yield []  # the runner's sinks hear that time moves
                if self.stopping:
                    return
            now = self._clock()
            reading = self._lineage.with_status(ShardStatus.READING)
            backing_off = any(s.failures for s in reading)
            if idle_exit is not None and now - self._last_activity >= idle_exit and not backing_off:
                log.info("%s: no new record for %.1fs: stopping", self.id, idle_exit)
                return
            wake = min((s.next_call for s in reading if not s.buffer), default=now + 0.5)
            self._sleep(min(0.5, max(0.01, wake - now)))

    def _share(self, behind: int) -> int:
        """Each shard's part of a round's ``limit`` when ``behind`` shards are behind their tip:
        never less than what a shard written at its limit (1,000 records a second) takes
        between two calls, nor than ``limit`` if smaller. Below it a shard behind could never
        catch up (at 5 calls a second, 8 shards and ``limit: 100`` read 60 records a second of
        each) and a caught-up shard's page filled its part: it counted as behind and was called
        every 0.2 s instead of every ``poll_interval``."""
        limit = self.config.limit
        if behind <= 1:
            return limit
        between = max(MIN_CALL_INTERVAL, self.config.poll_interval)
        return max(limit // behind, min(limit, round(MAX_SHARD_WRITES * between)))

    def _frontier(self) -> datetime | None:
        """The latest arrival time the records handed out may reach: no shard that may hold
        records not fetched yet (a full page, an answer behind its tip, a child waiting for its
        parents) may have unread records older than what is handed out. None: no bound."""
        bound: datetime | None = None
        for st in self._lineage.states.values():
            if st.status is ShardStatus.READING and (st.more or st.info.closed):
                # behind its tip, or closed (listed so: children follow its end)
                t = st.read_through or _FIRST
            elif st.status is ShardStatus.ENDED and st.shard_id not in self._released:
                # read to its end (a split or merge): its children's records arrived after its
                # last one; the others wait there until the children start, at the commit of its
                # last records — but for one round only once these are handed out (a sink may
                # hold the commit back for more records)
                t = st.read_through or _FIRST
            elif st.status is ShardStatus.WAITING:
                # a child starts after its parents' end: from their commit (in this round, as a
                # batch is committed, or the next) until it starts, its parents' end holds the
                # others — unless a parent waits for its commit a round later (a child of a
                # waiting shard: that one holds)
                parents = [p for p in (self._lineage.states.get(x) for x in st.info.parents) if p]
                if any(
                    p.shard_id in self._released or p.status is ShardStatus.WAITING for p in parents
                ):
                    continue
                t = max((p.read_through or _FIRST for p in parents), default=_FIRST)
            else:
                continue
            if bound is None or t < bound:
                bound = t
        return bound

    def _merge(self, n: int) -> list[Record]:
        """Up to ``n`` fetched records, of every shard, in arrival-time order (each shard's in its
        own order), none after the frontier; each shard's first record still waiting sets its
        lag (``held_arrival``) and its last one handed out waits for a commit (``pending``)."""
        shards = [st for st in self._lineage.states.values() if st.buffer]
        if not shards:
            return []
        frontier = self._frontier()
        if frontier is None and len(shards) == 1:
            picks: list[ShardState] = [shards[0]] * min(n, len(shards[0].buffer))
        else:
            merged = heapq.merge(*(_due(st, frontier) for st in shards), key=_arrival)
            picks = [st for _, _, st in islice(merged, n)]
        out = [st.buffer.popleft() for st in picks]
        if out:
            self._last_activity = self._clock()
        for st in shards:
            st.held_arrival = st.buffer[0].meta.arrival_time if st.buffer else None
        for st, rec in zip(picks, out, strict=True):
            st.pending = rec
        return out

    def _poll(self, st: ShardState, limit: int) -> None:
        """One GetRecords call on a shard (getting an iterator first if needed); the records
        join the shard's buffer."""
        now = self._clock()
        try:
            if st.iterator is None:
                st.iterator = self._get_iterator(st)
                st.started = True
            self.stats.get_records_calls += 1
            resp = self.client.get_records(ShardIterator=st.iterator, Limit=limit)
        except Exception as exc:
            self._on_error(st, exc, now)
            return
        st.failures = st.errors = 0
        st.answered_at, st.unanswered_since = now, None
        raw = resp.get("Records", [])
        st.millis_behind = resp.get("MillisBehindLatest")
        st.iterator = resp.get("NextShardIterator")
        records = self._records(st, raw)
        if raw:
            st.last_read = raw[-1]["SequenceNumber"]
            self.stats.records += len(raw)
            # the latest of the page, not its last record's: arrival times are approximate and
            # every record fetched must be at most this (else its shard would wait for itself)
            arrivals = [r.meta.arrival_time for r in records if r.meta.arrival_time is not None]
            arrivals += [
                a.astimezone(UTC)
                for a in (raw[-1].get("ApproximateArrivalTimestamp"),)
                if a is not None
            ]
            if arrivals:
                st.read_through = _later(st.read_through, max(arrivals))
        elif st.millis_behind:
            # an answer without records behind the tip stands that far back from its time:
            # nothing unread arrived before it
            st.read_through = _later(
                st.read_through,
                _answered(resp, self._now) - timedelta(milliseconds=st.millis_behind),
            )
        if raw or st.millis_behind:  # behind its tip, a shard may answer nothing: not drained
            self._last_activity = now
        if records:
            st.buffer.extend(records)
            st.held_arrival = st.buffer[0].meta.arrival_time
        busy = len(raw) >= limit or bool(st.millis_behind)
        st.more = busy
        if st.iterator is None:  # SHARD_END: the parent of a split or merge
            st.status = ShardStatus.ENDED
            st.millis_behind = 0
            st.more = False
            self._next_sync = now  # find the children now
            self._last_activity = now
            log.info("%s: shard %s read to its end", self.id, st.shard_id)
        st.next_call = now + (
            MIN_CALL_INTERVAL if busy else max(MIN_CALL_INTERVAL, self.config.poll_interval)
        )

    def _on_error(self, st: ShardState, exc: Exception, now: float) -> None:
        code = aws.error_code(exc)
        self._last_activity = now  # a shard that cannot be read now is not drained (idle_exit)
        if code == "ExpiredIteratorException":
            # Iterators live 5 minutes; get a new one after the last record read (or the checkpoint).
            self.stats.expired_iterators += 1
            log.info("%s: iterator of shard %s expired; renewing", self.id, st.shard_id)
            st.iterator = None
            st.next_call = now
            return
        if st.unanswered_since is None and (aws.is_throttling(exc) or aws.is_retryable(exc)):
            st.unanswered_since = st.answered_at if st.answered_at is not None else now
        if aws.is_throttling(exc):
            self.stats.throttled += 1
            st.failures += 1
            delay = self._backoff.delay(st.failures - 1)
            log.warning(
                "%s: shard %s throttled (%s); backing off %.2fs", self.id, st.shard_id, code, delay
            )
            st.next_call = now + delay
            return
        if aws.is_retryable(exc):
            self.stats.errors += 1
            st.failures += 1
            # throttles between them count for the backoff, not here: throttling has no limit
            st.errors += 1
            if st.errors >= MAX_ERRORS:
                raise TransientError(
                    f"{self.id}: shard {st.shard_id}: {st.errors} server or network errors "
                    f"without an answer between (throttles aside): {exc}"
                ) from exc
            delay = self._backoff.delay(st.failures - 1)
            log.warning("%s: shard %s: %s; retrying in %.2fs", self.id, st.shard_id, exc, delay)
            st.next_call = now + delay
            return
        if code == "ResourceNotFoundException" and st.shard_id not in self._sync_shards():
            # Trimmed past retention since it was listed (a closed parent): nothing is left to
            # read. It ends as if read to its end, once what was delivered from it is committed.
            log.warning(
                "%s: shard %s no longer exists (trimmed past the stream's retention): done with it",
                self.id,
                st.shard_id,
            )
            st.status = ShardStatus.ENDED
            st.iterator = None
            return
        if (
            code == "InvalidArgumentException"
            and st.checkpoint is not None
            and st.last_read is None
        ):
            raise SquallError(
                f"{self.id}: the checkpoint of shard {st.shard_id} ({st.checkpoint.sequence_number}) does not "
                f"belong to stream '{self.stream_name}' (was it deleted and created again?): {exc}"
            ) from exc
        raise SquallError(
            f"{self.id}: reading shard {st.shard_id} of '{self.stream_name}' failed: {exc}"
        ) from exc

    def _get_iterator(self, st: ShardState) -> str:
        args: dict[str, Any] = {**self.ref.params, "ShardId": st.shard_id}
        cp = st.checkpoint
        if st.last_read is not None:
            args.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=st.last_read
            )
        elif cp is not None and not is_shard_end(cp):
            # AT the checkpoint, then skip user records up to it: resumes correctly both after a
            # plain record and inside a KPL aggregate whose first sub-records were committed.
            args.update(
                ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=cp.sequence_number
            )
            st.skip_through = cp
        elif self._lineage.read_parent(st, self._stored) or self.config.start == "trim_horizon":
            args["ShardIteratorType"] = "TRIM_HORIZON"
        elif self.config.start == "latest" and st.latest_since is not None:
            # A renewal (expired iterator) before any record was read: LATEST again would skip
            # what arrived since the first LATEST iterator; start at that moment instead.
            args.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=st.latest_since)
        elif self.config.start == "latest":
            st.latest_since = datetime.now(UTC)
            args["ShardIteratorType"] = "LATEST"
        else:
            args.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=self.config.timestamp)
        return self.client.get_shard_iterator(**args)["ShardIterator"]

    def _records(self, st: ShardState, raw: list[dict[str, Any]]) -> list[Record]:
        stream, shard = self.stream_name, st.shard_id
        out = []
        for r in raw:
            arrival = r.get("ApproximateArrivalTimestamp")
            if arrival is not None:
                arrival = arrival.astimezone(UTC)
            out.append(
                Record(
                    r["Data"],
                    RecordMeta(
                        stream, shard, r["SequenceNumber"], 0, r.get("PartitionKey", ""), arrival
                    ),
                )
            )
        if st.skip_through is not None:
            out = self._skip(st, out)
        return out

    @staticmethod
    def _skip(st: ShardState, records: list[Record]) -> list[Record]:
        """Drop what the checkpoint covers: records before it and its own user records up to it."""
        cp = st.skip_through
        assert cp is not None
        target = int(cp.sequence_number)
        out: list[Record] = []
        for i, rec in enumerate(records):
            seq = int(rec.meta.sequence_number)
            if seq > target:
                st.skip_through = None
                out.extend(records[i:])
                break
            if seq < target:
                continue
            subs = [rec]
            if is_aggregated(rec.data):
                try:
                    subs = deaggregate(rec)
                except DecodeError:
                    pass  # a corrupt aggregate was dead-lettered whole, as sub-record 0
            out.extend(s for s in subs if s.meta.sub_sequence_number > cp.sub_sequence_number)
        return out

    # -- shards and checkpoints ----------------------------------------------------------------

    def _sync_shards(self) -> set[str]:
        """List the shards (ListShards, retried); returns the ids listed."""
        attempt = 0
        while True:
            try:
                listed = list_shards(self.client, self.ref)
                break
            except Exception as exc:
                if aws.error_code(exc) == "ResourceNotFoundException":
                    raise SquallError(
                        f"{self.id}: stream '{self.stream_name}' not found: {exc}"
                    ) from exc
                if not aws.is_retryable(exc):  # AccessDenied, a bad request: no retry changes it
                    raise SquallError(f"{self.id}: ListShards failed: {exc}") from exc
                if attempt + 1 >= MAX_ERRORS:
                    raise TransientError(f"{self.id}: ListShards failed: {exc}") from exc
                if aws.is_throttling(exc):
                    self.stats.throttled += 1
                delay = self._backoff.delay(attempt)
                log.warning("%s: ListShards: %s; retrying in %.2fs", self.id, exc, delay)
                self._sleep(delay)
                attempt += 1
        self.stats.shard_syncs += 1
        new = self._lineage.update(listed, self._stored)
        for st in new:
            if is_shard_end(st.checkpoint) and not st.info.closed:
                # Only a closed shard can have been read to its end: this shard id belongs to
                # another stream of the same name. Reading on would skip it whole, silently.
                raise SquallError(
                    f"{self.id}: the checkpoint of shard {st.shard_id} says it was read to its "
                    f"end (SHARD_END), but stream '{self.stream_name}' lists it open (was the "
                    "stream deleted and created again?): delete this application's checkpoints "
                    "of the stream to start over"
                )
        if self._initial_sync and self.config.start == "latest":
            # Shards closed before the first start hold only old records: `latest` skips them.
            for st in new:
                if st.info.closed and st.checkpoint is None:
                    st.status = ShardStatus.FINISHED
        self._initial_sync = False
        self._next_sync = self._clock() + self.config.shard_sync_interval
        return {info.shard_id for info in listed}

    def commit(self, checkpoint: dict[str, Position]) -> dict[str, Position]:
        """The engine saved these positions; returns SHARD_END for the shards now finished
        (read to their end, everything from them committed), for the runner to save."""
        for shard, pos in checkpoint.items():
            st = self._lineage.states.get(shard)
            if st is not None:
                if st.checkpoint is not None and pos <= st.checkpoint:
                    continue
                st.checkpoint = pos
                if st.pending is not None and pos >= last_position(st.pending):
                    st.pending = None
        self._finish_ended()
        out, self._to_save = self._to_save, {}
        return out

    def _finish_ended(self) -> None:
        done = [
            st
            for st in self._lineage.with_status(ShardStatus.ENDED)
            if st.pending is None and not st.buffer
        ]
        for st in done:
            self._to_save[st.shard_id] = SHARD_END
        for st in done:
            st.status = ShardStatus.FINISHED
            st.checkpoint = SHARD_END
            self.stats.shards_finished += 1
            log.info(
                "%s: shard %s finished (read to SHARD_END, everything committed)",
                self.id,
                st.shard_id,
            )

    # -- observability -------------------------------------------------------------------------

    def lag(self) -> dict[str, int]:
        """How far behind the tip each shard being read is: its last GetRecords answer's
        MillisBehindLatest — or, while records fetched from it still wait (an answer of up to
        ``limit`` records is handed out ``max_records`` at a time; records held back behind a
        shard still behind wait for it), the age of the first waiting one, if larger: the answer is about the read, the lag about the engine. A shard
        whose calls fail (throttled without end, 5xx answers) adds the time since its last
        answer: the tip moves on while nothing is read (its last answer, often 0, stayed its lag
        and no alert saw a shard that could not be read)."""
        lag: dict[str, int] = {}
        now: datetime | None = None
        clock = self._clock()
        for st in self._lineage.states.values():
            unanswered = st.unanswered_since is not None and st.status is ShardStatus.READING
            # a shard read to its end (its last records and SHARD_END come in one answer) is
            # ended at once: while those records wait, its lag is theirs, then it leaves the lag
            if (
                st.held_arrival is None
                and not unanswered
                and (st.status is not ShardStatus.READING or st.millis_behind is None)
            ):
                continue
            ms = st.millis_behind or 0
            if unanswered:
                ms += max(0, round((clock - st.unanswered_since) * 1000))  # type: ignore[operator]
            if st.held_arrival is not None:
                now = now or self._now()
                ms = max(ms, round((now - st.held_arrival).total_seconds() * 1000))
            lag[st.shard_id] = ms
        return lag

    def shards(self) -> dict[str, str]:
        """Every known shard and its status (waiting, reading, ended, finished)."""
        return {sid: st.status.value for sid, st in sorted(self._lineage.states.items())}

    def progress(self) -> KinesisProgress:
        lag = self.lag()
        return KinesisProgress(
            self.stats.records,
            None,
            "records",
            millis_behind_latest=max(lag.values()) if lag else None,
            lag=lag,
        )
