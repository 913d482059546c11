"""Shard discovery and lineage for the Kinesis poller.

Resharding (split, merge, UpdateShardCount) closes parent shards and opens children. Records
of one partition key move from the parent to a child at that moment, so a child may be read
only after every parent has been read to SHARD_END *and* checkpointed: then per-key order holds
across splits and merges, and a restart never reads a child before its parent's tail.
(The KCL does the same: its lease for a child starts only when the parents' leases hold
SHARD_END.)
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from squall.aws import NOT_SENT, StreamRef, time_spent
from squall.errors import TransientError
from squall.event import Position, Record

#: The checkpoint a shard gets once it was read to its end and everything from it was committed.
#: Stored stores compare positions as integers, so the sentinel is the largest 128-digit number:
#: greater than any Kinesis sequence number (56 digits today), it never moves backwards.
SHARD_END_SEQUENCE = "9" * 128
SHARD_END = Position(SHARD_END_SEQUENCE, 0)


def is_shard_end(position: Position | None) -> bool:
    return position is not None and position.sequence_number == SHARD_END_SEQUENCE


@dataclass(frozen=True)
class ShardInfo:
    """One shard as ListShards describes it."""

    shard_id: str
    parents: tuple[str, ...] = ()
    starting_hash_key: int = 0
    ending_hash_key: int = 2**128 - 1
    closed: bool = False

    @classmethod
    def from_api(cls, shard: dict[str, Any]) -> ShardInfo:
        parents = tuple(
            p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p
        )
        keys = shard.get("HashKeyRange", {})
        return cls(
            shard_id=shard["ShardId"],
            parents=parents,
            starting_hash_key=int(keys.get("StartingHashKey", 0)),
            ending_hash_key=int(keys.get("EndingHashKey", 2**128 - 1)),
            closed="EndingSequenceNumber" in shard.get("SequenceNumberRange", {}),
        )


def list_shards(
    client: Any, stream: StreamRef, time_left: Callable[[], float | None] | None = None
) -> list[ShardInfo]:
    """Every shard of the stream, open and closed (paginated ListShards). ``time_left`` (a
    Lambda write's): no page is asked for with no time left (``TransientError``, ``not sent``)."""
    shards: list[ShardInfo] = []
    kwargs: dict[str, Any] = dict(stream.params)
    while True:
        if time_spent(time_left):
            raise TransientError(f"ListShards of '{stream.name}': {NOT_SENT}")
        resp = client.list_shards(**kwargs)
        shards.extend(ShardInfo.from_api(s) for s in resp.get("Shards", []))
        token = resp.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}  # ListShards refuses the stream name beside a token


class ShardStatus(enum.Enum):
    WAITING = "waiting"  # a parent is not finished yet
    READING = "reading"  # has (or will get) an iterator
    ENDED = "ended"  # read to SHARD_END; waiting for its last records to be committed
    FINISHED = "finished"  # SHARD_END is checkpointed: children may start


@dataclass
class ShardState:
    """What the poller knows about one shard."""

    info: ShardInfo
    status: ShardStatus = ShardStatus.WAITING
    checkpoint: Position | None = None  # last persisted position
    iterator: str | None = None
    last_read: str | None = None  # sequence number of the last record fetched (iterator renewal)
    skip_through: Position | None = None  # after AT_SEQUENCE_NUMBER: drop user records up to it
    pending: Record | None = None  # last record handed out and not known to be committed
    next_call: float = 0.0  # monotonic time of the next allowed GetRecords
    failures: int = 0  # consecutive throttles / errors, for backoff
    errors: int = 0  # consecutive server errors / network failures: MAX_ERRORS fail the read
    millis_behind: int | None = None
    answered_at: float | None = None  # monotonic time of the last GetRecords answer
    # monotonic time since which the shard's calls fail (throttled, 5xx): its last answer's,
    # or the first failure's if it never answered; None while it answers
    unanswered_since: float | None = None
    # arrival time of the first record fetched but not yet handed to the engine (a GetRecords
    # answer larger than a batch): the shard's lag counts from there, not from the last read
    held_arrival: datetime | None = None
    # records fetched and not yet handed out, in shard order: the poller hands out records of
    # several shards in arrival-time order, so a shard's page may wait for the others' reads
    buffer: deque[Record] = field(default_factory=deque)
    # the shard may hold more records than were fetched: its last page was full or it answered
    # behind its tip (MillisBehindLatest > 0); the other shards' later records wait for it
    more: bool = True
    # no record it has not fetched yet arrived before this (its last record fetched, or the
    # position an empty answer behind the tip stands at)
    read_through: datetime | None = None
    started: bool = False  # an iterator was requested in this process
    latest_since: datetime | None = None  # when a LATEST iterator was first asked for (renewals)

    @property
    def shard_id(self) -> str:
        return self.info.shard_id


@dataclass
class ShardLineage:
    """Every known shard of a stream and its state; decides which may be read."""

    states: dict[str, ShardState] = field(default_factory=dict)

    def update(
        self, listed: Iterable[ShardInfo], checkpoints: dict[str, Position]
    ) -> list[ShardState]:
        """Add newly listed shards (with their stored checkpoints); returns the new states."""
        new = []
        for info in listed:
            st = self.states.get(info.shard_id)
            if st is None:
                st = ShardState(info, checkpoint=checkpoints.get(info.shard_id))
                if is_shard_end(st.checkpoint):
                    st.status = ShardStatus.FINISHED
                self.states[info.shard_id] = st
                new.append(st)
            elif info.closed and not st.info.closed:
                st.info = info
        return new

    def parents_finished(self, st: ShardState) -> bool:
        """True when every parent is finished, or gone (trimmed past retention, never to be read)."""
        for parent in st.info.parents:
            p = self.states.get(parent)
            if p is not None and p.status is not ShardStatus.FINISHED:
                return False
        return True

    def read_parent(self, st: ShardState, stored: Collection[str] = ()) -> bool:
        """True when a parent of this shard was read by this application (so read the child from
        its start). ``stored``: shards with a stored checkpoint — a parent trimmed past retention
        is no longer listed, but its checkpoint says it was read."""
        return any(
            (p in self.states and (self.states[p].started or self.states[p].checkpoint is not None))
            or p in stored
            for p in st.info.parents
        )

    def promote(self) -> list[ShardState]:
        """Move waiting shards whose parents are finished to READING; returns them."""
        ready = [
            st
            for st in self.states.values()
            if st.status is ShardStatus.WAITING and self.parents_finished(st)
        ]
        for st in ready:
            st.status = ShardStatus.READING
        return ready

    def with_status(self, status: ShardStatus) -> list[ShardState]:
        return [st for st in self.states.values() if st.status is status]
