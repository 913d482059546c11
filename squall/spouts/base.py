"""The spout API: where records come from, in batches, and where their positions are committed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from squall.component import Component
from squall.event import Position, Record

if TYPE_CHECKING:
    from squall.topology.checkpoint import CheckpointSpec
    from squall.topology.resources import Resources


@dataclass
class Progress:
    """How far a spout has read, for progress bars: ``total`` is None when unknown."""

    done: int
    total: int | None = None
    unit: str = "records"


class Spout(Component):
    """Base of all spouts used by the local runner.

    A spout does not own a checkpoint store: it says what it wants (``checkpointing``), the
    runner opens the store, hands the stored positions to ``resume`` before the first ``read``,
    and the engine saves each batch's positions in its commit sequence.

    ``read`` yields batches of records, in sequence order per shard, of at most
    ``max_records``; it ends when the source is exhausted or ``stop()`` was called.
    ``commit`` is called after each batch with the positions the engine has just saved.
    """

    kind: ClassVar[str] = "spout"
    #: True when ``read`` ending (not stopped) means the input ended (a file): the local runner
    #: then calls ``Engine.finish`` so bolts emit what they hold back (windows still open).
    finite: ClassVar[bool] = False
    #: Set by the runner when a sink rolls files by age: an unbounded ``read`` then also yields an
    #: empty batch when it finds nothing new (about twice a second), so time moves while idle.
    idle_batches: bool = False
    #: Whether what a batch settled is acknowledged at the source (``commit``: SQS deletes the
    #: messages) though the spout keeps no checkpoint: the next run does not read it again.
    acknowledges: ClassVar[bool] = False
    #: True when ``read`` may wait for input for ever (stdin, a pipe) or long (an SQS long poll)
    #: and abandoning it part-way loses nothing kept (no position moved, nothing acknowledged):
    #: ``squall run`` then ends a read at a Ctrl-C or SIGTERM instead of waiting for a whole
    #: batch more of input.
    read_interruptible: ClassVar[bool] = False

    def open(self, resources: Resources) -> None:
        """Connect."""

    def checkpointing(self) -> CheckpointSpec | None:
        """Where this spout's positions should be kept; None: no checkpoints (files re-read whole)."""
        return None

    def resume(self, positions: dict[str, Position]) -> None:
        """The stored positions, per shard, before the first ``read``."""

    def read(self, max_records: int) -> Iterator[list[Record]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def commit(self, checkpoint: dict[str, Position]) -> dict[str, Position]:
        """The engine saved these positions. Returns more positions the runner must save
        (e.g. SHARD_END of shards read to their end); none by default."""
        return {}

    def stop(self) -> None:
        """Ask ``read`` to end after the batch in flight."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return getattr(self, "_stopping", False)

    def progress(self) -> Progress | None:
        return None
