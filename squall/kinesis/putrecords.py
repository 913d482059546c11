"""PutRecords batching, partial-failure retries and KPL aggregation.

Shared by the ``kinesis`` sink and ``squall produce``. Kinesis limits (PutRecords API reference):
a record is at most 1 MiB counting data *and* partition key; a call carries at most 500 records
and 5 MiB; a partition key is 1-256 Unicode characters; an explicit hash key is a decimal in
[0, 2**128). A call can succeed for some records and fail for others (``FailedRecordCount`` and
an ``ErrorCode`` per entry): only the failed entries are sent again.

Aggregates and resharding: an aggregate travels with its first user record's key, so Kinesis
puts it on the shard that key maps to *now*. The KCL (and the KPL's de-aggregator) drops a whole
aggregate when any of its user records hashes outside the hash range of the shard it arrived on.
So, as the KPL does, every aggregate is built for one shard of the current shard map, and every
PutRecords answer's ``ShardId`` is compared with that shard: on a mismatch the shard map is listed
again, and the user records of an aggregate that does not fit where it landed are re-sent,
re-grouped by the new map (never the stale aggregate itself).

Size (~485 lines): one writer — batching, partial-failure retries, aggregation and the
resharding re-send share its shard map and pending entries; split, that state would be passed around.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from squall import aws
from squall.errors import SinkError, TransientError
from squall.kinesis.kpl import KPL_MAGIC
from squall.kinesis.shards import ShardInfo

log = logging.getLogger("squall.kinesis.putrecords")

MAX_RECORD_BYTES = 1024 * 1024
MAX_CALL_RECORDS = 500
MAX_CALL_BYTES = 5 * 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256
MAX_HASH_KEY = 2**128 - 1
#: Seconds an aggregating writer trusts its shard map before listing shards again (a misplaced
#: aggregate makes it list them at once).
SHARD_MAP_TTL = 60.0
#: The KPL's default AggregationMaxSize: small aggregates spread load and keep retries cheap.
AGGREGATE_MAX_BYTES = 51_200
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,38}")


def record_problem(
    data: bytes, partition_key: str, explicit_hash_key: str | None = None
) -> str | None:
    """Why Kinesis would refuse this record, or None."""
    if not partition_key:
        return "empty partition key"
    if key_length(partition_key) > MAX_PARTITION_KEY_CHARS:
        return (
            f"partition key has {key_length(partition_key)} characters (UTF-16 code units; "
            "Kinesis allows at most 256)"
        )
    size = len(data) + len(partition_key.encode())
    if size > MAX_RECORD_BYTES:
        return f"record is {size} bytes with its partition key (Kinesis allows at most {MAX_RECORD_BYTES})"
    if explicit_hash_key is not None:
        # Kinesis' pattern is 0|([1-9]\d{0,38}) (ASCII digits): a leading zero or another script's
        # digits ("007", "١٢") made it refuse the whole PutRecords call, failing every record of it.
        if _DECIMAL.fullmatch(explicit_hash_key) is None or int(explicit_hash_key) > MAX_HASH_KEY:
            return (
                f"explicit hash key '{explicit_hash_key[:50]}' is not a decimal in [0, 2**128) "
                "(ASCII digits, no leading zero)"
            )
    return None


def key_length(partition_key: str) -> int:
    """A partition key's length as Kinesis counts it (as Java does): UTF-16 code units, so a
    character outside the Basic Multilingual Plane (an emoji) counts two. Counting code points
    let 129-256 such characters through, and Kinesis refused the whole PutRecords call."""
    return len(partition_key.encode("utf-16-le", "surrogatepass")) // 2


def key_for_id(event_id: str) -> str:
    """A partition key for an event id: the id itself, or its digest when it is longer than a
    partition key may be (event ids from a payload field run to 512 bytes)."""
    if 0 < key_length(event_id) <= MAX_PARTITION_KEY_CHARS:
        return event_id
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


#: A user record as the aggregator got it: (data, partition key, explicit hash key).
UserRecord = tuple[bytes, str, "str | None"]
#: Times one put re-sends misplaced aggregates' records under a newly listed shard map.
MAX_RESHARD_ROUNDS = 5


@dataclass
class Entry:
    """One Kinesis record to put, and the user items (events, line numbers) it carries.

    An aggregate of several user records also keeps the shard it was built for and its user
    records, so it can be checked against the answer's ``ShardId`` and re-grouped if misplaced.
    """

    data: bytes
    partition_key: str
    explicit_hash_key: str | None = None
    items: list[Any] = field(default_factory=list)
    shard: str | None = None
    users: list[UserRecord] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode())

    def request(self) -> dict[str, Any]:
        req: dict[str, Any] = {"Data": self.data, "PartitionKey": self.partition_key}
        if self.explicit_hash_key is not None:
            req["ExplicitHashKey"] = self.explicit_hash_key
        return req


def hash_key(partition_key: str) -> int:
    """The 128-bit hash key Kinesis derives from a partition key (MD5, big-endian)."""
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


def effective_hash_key(partition_key: str, explicit_hash_key: str | None = None) -> int:
    """The hash key that picks the shard: the explicit one if given, else the partition key's."""
    return int(explicit_hash_key) if explicit_hash_key is not None else hash_key(partition_key)


class ShardMap:
    """Which open shard a partition key (or explicit hash key) lands on; every shard's hash range."""

    def __init__(self, shards: list[ShardInfo]):
        open_shards = sorted((s for s in shards if not s.closed), key=lambda s: s.starting_hash_key)
        if not open_shards:
            raise SinkError("the stream has no open shard")
        self._starts = [s.starting_hash_key for s in open_shards]
        self._ids = [s.shard_id for s in open_shards]
        self._ranges = {s.shard_id: (s.starting_hash_key, s.ending_hash_key) for s in shards}
        self.loaded_at = time.monotonic()

    def shard_for(self, partition_key: str, explicit_hash_key: str | None = None) -> str:
        key = effective_hash_key(partition_key, explicit_hash_key)
        return self._ids[max(0, bisect.bisect_right(self._starts, key) - 1)]

    def fits(self, shard_id: str, users: list[UserRecord]) -> bool:
        """True when every user record hashes into ``shard_id``'s range: a consumer keeps the
        aggregate there (the KCL drops an aggregate with any record outside its shard's range)."""
        bounds = self._ranges.get(shard_id)
        if bounds is None:
            return False
        lo, hi = bounds
        return all(lo <= effective_hash_key(pk, ehk) <= hi for _, pk, ehk in users)


class Aggregator:
    """Packs user records into KPL aggregates, one open aggregate per shard.

    An aggregate travels with its first record's partition key, so all its user records land on
    that record's shard: grouping by the shard each key maps to (as the KPL does) keeps every
    partition key on its own shard, in order. Without a shard map, one aggregate takes all.
    """

    def __init__(self, shard_map: ShardMap | None = None, max_bytes: int = AGGREGATE_MAX_BYTES):
        from aws_kinesis_agg.aggregator import RecordAggregator

        self._new = lambda: RecordAggregator(max_size=max_bytes)
        self.shard_map = shard_map
        self._open: dict[str, tuple[Any, list[Any], list[UserRecord]]] = {}

    def add(
        self, data: bytes, partition_key: str, explicit_hash_key: str | None, item: Any
    ) -> list[Entry]:
        """Add a user record; returns the entries completed by it (usually none)."""
        shard = self.shard_map.shard_for(partition_key, explicit_hash_key) if self.shard_map else ""
        slot = self._open.get(shard)
        if slot is None:
            slot = self._open[shard] = (self._new(), [], [])
        agg, items, users = slot
        try:
            full = agg.add_user_record(partition_key, data, explicit_hash_key)
        except ValueError:  # too big to share an aggregate: send it alone, after what came before
            return [*self._flush(shard), _single(data, partition_key, explicit_hash_key, item)]
        out = []
        if full is not None:
            out.append(self._entry(full, items, users, shard))
            items, users = [], []
            self._open[shard] = (agg, items, users)
        items.append(item)
        users.append((data, partition_key, explicit_hash_key))
        return out

    def reroute(self, shard_map: ShardMap) -> list[Entry]:
        """Take a newer shard map; user records waiting in open aggregates are re-grouped by it.

        Returns the aggregates that fill up on the way (after a merge, two open aggregates may
        become one shard's)."""
        waiting = [
            (u, item)
            for _, items, users in self._open.values()
            for u, item in zip(users, items, strict=True)
        ]
        self.shard_map = shard_map
        self._open = {}
        out: list[Entry] = []
        for (data, pk, ehk), item in waiting:
            out.extend(self.add(data, pk, ehk, item))
        return out

    def flush(self) -> list[Entry]:
        """Entries for every partly filled aggregate."""
        out = []
        for shard in list(self._open):
            out.extend(self._flush(shard))
        return out

    def _flush(self, shard: str) -> list[Entry]:
        slot = self._open.pop(shard, None)
        if slot is None:
            return []
        agg, items, users = slot
        full = agg.clear_and_get()
        return [self._entry(full, items, users, shard)] if full is not None else []

    @staticmethod
    def _entry(agg_record: Any, items: list[Any], users: list[UserRecord], shard: str) -> Entry:
        if len(items) == 1:
            # an aggregate of one is sent as the plain record (as the KPL does), unless its bytes
            # start like an aggregate: a consumer would then take it for a corrupt one. Either way
            # it lands where its own key maps, so it cannot be misplaced.
            data, pk, ehk = users[0]
            if data[:4] != KPL_MAGIC:
                return Entry(data, pk, ehk, items)
            pk, ehk, wrapped = agg_record.get_contents()
            return Entry(wrapped, pk, ehk or None, items)
        pk, ehk, data = agg_record.get_contents()
        return Entry(data, pk, ehk or None, items, shard=shard or None, users=users)


def _single(data: bytes, partition_key: str, explicit_hash_key: str | None, item: Any) -> Entry:
    """One user record on its own: plain, or an aggregate of one if its bytes start with the magic."""
    if data[:4] == KPL_MAGIC:
        from aws_kinesis_agg.aggregator import RecordAggregator

        agg = RecordAggregator(max_size=MAX_RECORD_BYTES - len(partition_key.encode()))
        try:
            agg.add_user_record(partition_key, data, explicit_hash_key)
            pk, ehk, wrapped = agg.clear_and_get().get_contents()
            return Entry(wrapped, pk, ehk or None, [item])
        except ValueError:
            pass  # no room for the framing: sent plain, a consumer dead-letters it as corrupt
    return Entry(data, partition_key, explicit_hash_key, [item])


def chunks(entries: list[Entry]) -> Iterator[list[Entry]]:
    """Split entries into PutRecords calls of at most 500 records and 5 MiB, in order."""
    return aws.chunks(entries, MAX_CALL_RECORDS, MAX_CALL_BYTES)


@dataclass
class PutOutcome:
    """What a put achieved: failed entries with their reason, and counters."""

    failed: list[tuple[Entry, str]] = field(default_factory=list)
    sent: int = 0  # Kinesis records accepted
    retried: int = 0  # entries sent again after a partial failure
    calls: int = 0
    misplaced: int = 0  # aggregates that landed on another shard than the one they were built for
    resent: int = 0  # user records of misplaced aggregates sent again, re-grouped
    shard_map: ShardMap | None = None  # the map listed again after a misplacement, if any


class PutRecordsWriter:
    """Send entries with PutRecords; retry only failed entries, with jittered backoff, bounded."""

    def __init__(
        self,
        client: Any,
        stream: aws.StreamRef,
        *,
        max_attempts: int = 5,
        backoff: aws.Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        aggregate_max_bytes: int = AGGREGATE_MAX_BYTES,
    ):
        self.client = client
        self.stream = stream
        self.max_attempts = max_attempts
        self.backoff = backoff or aws.Backoff(base=0.1, cap=5.0)
        self._sleep = sleep
        self._aggregate_max_bytes = aggregate_max_bytes

    def put(
        self, entries: list[Entry], time_left: Callable[[], float | None] | None = None
    ) -> PutOutcome:
        """Put every entry. Raises ``TransientError`` if a whole call fails before anything was
        written (throttled, network), ``SinkError`` for a permanent refusal; after the first
        write, whole-call failures count against the failing entries' attempts instead, so a
        retry of the batch never duplicates what was already written.

        An aggregate that lands on another shard than the one it was built for (the stream was
        resharded since the shard map was listed) makes the writer list the shards again
        (``outcome.shard_map``); if its user records do not all hash into the shard it landed on,
        they are sent again, re-grouped by the new map, up to ``MAX_RESHARD_ROUNDS`` times.

        ``time_left`` (seconds before the runner's deadline, less its margin; None: no limit):
        a retry whose backoff would outlast it is not made — its records fail now (the runner
        answers them as retriable: a Lambda killed at its timeout answers nothing); with no time
        left no call is started (``TransientError`` before anything was written, else the
        call's records fail ``not sent: …``); each call makes one attempt and reads its answer
        no longer than the time left (``aws.time_bounded``).
        """
        outcome = PutOutcome()
        pending = entries
        for _ in range(MAX_RESHARD_ROUNDS + 1):
            misplaced: list[tuple[Entry, str]] = []
            for chunk in chunks(pending):
                misplaced.extend(self._put_chunk(chunk, outcome, time_left))
            if not misplaced:
                return outcome
            pending = self._regroup(misplaced, outcome, time_left)
            if not pending:
                return outcome
        for entry in pending:
            outcome.failed.append(
                (
                    entry,
                    f"the shards of '{self.stream.name}' changed {MAX_RESHARD_ROUNDS} "
                    "times during one put",
                )
            )
        return outcome

    def _regroup(
        self,
        misplaced: list[tuple[Entry, str]],
        outcome: PutOutcome,
        time_left: Callable[[], float | None] | None = None,
    ) -> list[Entry]:
        """List the shards again; entries for the user records of aggregates that do not fit where they landed."""
        try:
            shard_map = load_shard_map(self.client, self.stream, time_left)
        except TransientError as exc:  # cannot tell where they belong now: they fail, to come again
            outcome.failed.extend((e, f"landed on another shard and {exc}") for e, _ in misplaced)
            return []
        outcome.shard_map = shard_map
        outcome.misplaced += len(misplaced)
        agg = Aggregator(shard_map, self._aggregate_max_bytes)
        again: list[Entry] = []
        kept = 0
        for entry, landed in misplaced:
            if shard_map.fits(landed, entry.users):
                kept += (
                    1  # every record belongs where it landed: consumers keep it, nothing to re-send
                )
                continue
            outcome.resent += len(entry.items)
            for (data, pk, ehk), item in zip(entry.users, entry.items, strict=True):
                again.extend(agg.add(data, pk, ehk, item))
        again.extend(agg.flush())
        log.warning(
            "PutRecords to '%s': %d aggregate(s) landed on another shard than the shard map predicted "
            "(the stream was resharded): shards listed again; %d kept where they landed, %d user "
            "record(s) sent again, re-grouped",
            self.stream.name,
            len(misplaced),
            kept,
            sum(len(e.items) for e in again),
        )
        return again

    def _put_chunk(
        self,
        chunk: list[Entry],
        outcome: PutOutcome,
        time_left: Callable[[], float | None] | None = None,
    ) -> list[tuple[Entry, str]]:
        """Put one call's entries (retrying failed ones); returns accepted aggregates that landed
        on another shard than they were built for, with that shard."""
        misplaced: list[tuple[Entry, str]] = []
        pending = chunk
        attempt = 0
        while True:
            if attempt == 0 and aws.time_spent(time_left):
                # No call is started with no time left (as the other sinks'): before anything
                # was written the put fails as transient (the engine's retry, bounded by the
                # same time left, is not made); after, this call's records fail with the reason.
                if outcome.sent == 0 and not outcome.failed:
                    raise TransientError(f"PutRecords to '{self.stream.name}': {aws.NOT_SENT}")
                outcome.failed.extend((e, aws.NOT_SENT) for e in pending)
                return misplaced
            attempt += 1
            outcome.calls += 1
            try:
                with aws.time_bounded(time_left):  # botocore's retries do not know the deadline
                    resp = self.client.put_records(
                        Records=[e.request() for e in pending], **self.stream.params
                    )
            except Exception as exc:
                if not aws.is_retryable(exc):
                    raise SinkError(f"PutRecords to '{self.stream.name}' failed: {exc}") from exc
                if outcome.sent == 0 and not outcome.failed and attempt == 1:
                    raise TransientError(f"PutRecords to '{self.stream.name}': {exc}") from exc
                failed = [
                    (e, f"{aws.error_code(exc) or type(exc).__name__}: {exc}") for e in pending
                ]
            else:
                answers = resp.get("Records", [])
                if len(answers) != len(pending):
                    raise SinkError(
                        f"PutRecords answered {len(answers)} results for {len(pending)} records"
                    )
                failed = []
                for e, a in zip(pending, answers, strict=True):
                    if a.get("ErrorCode"):
                        failed.append((e, f"{a['ErrorCode']}: {a.get('ErrorMessage', '')}"))
                    elif e.shard is not None and a.get("ShardId") and a["ShardId"] != e.shard:
                        misplaced.append((e, a["ShardId"]))
                outcome.sent += len(pending) - len(failed)
            if not failed:
                return misplaced
            if attempt >= self.max_attempts:
                log.warning(
                    "PutRecords to '%s': %d record(s) still failing after %d attempts: %s",
                    self.stream.name,
                    len(failed),
                    attempt,
                    failed[0][1],
                )
                outcome.failed.extend(failed)
                return misplaced
            delay = self.backoff.delay(attempt - 1)
            left = time_left() if time_left is not None else None
            if left is not None and delay >= left:
                # The invocation's time is nearly spent: a retry would be cut off by the
                # timeout, and the request answered by nobody.
                log.warning(
                    "PutRecords to '%s': %d record(s) failed (%s); not retried: %.2fs left "
                    "before the deadline, %.2fs of backoff",
                    self.stream.name,
                    len(failed),
                    failed[0][1],
                    max(left, 0.0),
                    delay,
                )
                outcome.failed.extend(
                    (e, f"{reason} (not retried: the time left before the deadline is spent)")
                    for e, reason in failed
                )
                return misplaced
            outcome.retried += len(failed)
            log.info(
                "PutRecords to '%s': %d of %d record(s) failed (%s); retrying in %.2fs",
                self.stream.name,
                len(failed),
                len(pending),
                failed[0][1],
                delay,
            )
            self._sleep(delay)
            pending = [e for e, _ in failed]


def load_shard_map(
    client: Any, stream: aws.StreamRef, time_left: Callable[[], float | None] | None = None
) -> ShardMap:
    """The current shard map of a stream; ``TransientError`` when ListShards cannot answer now
    (``time_left``: its calls are bounded as a put's, ``aws.time_bounded``, and none — a
    re-listing after a misplaced aggregate, a later page — is started with no time left)."""
    from squall.kinesis.shards import list_shards

    try:
        with aws.time_bounded(time_left):
            return ShardMap(list_shards(client, stream, time_left))
    except (SinkError, TransientError):
        raise
    except Exception as exc:
        if aws.is_retryable(exc):
            raise TransientError(f"ListShards of '{stream.name}': {exc}") from exc
        raise SinkError(f"ListShards of '{stream.name}' failed: {exc}") from exc
