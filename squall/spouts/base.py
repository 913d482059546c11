"""The spout API: where records come from, in batches, and where their positions are committed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from squall.component import Component
from squall.event import Position, Record

if TYPE_CHECKING:
    from squall.topology.resources import Resources


@dataclass
class Progress:
    """How far a spout has read, for progress bars: ``total`` is None when unknown."""

    done: int
    total: int | None = None
    unit: str = "records"


class Spout(Component):
    """Base of all spouts used by the local runner.

    ``read`` yields batches of records, in sequence order per shard, of at most
    ``max_records``; it ends when the source is exhausted or ``stop()`` was called.
    ``commit`` is called with the positions the engine says are safe, after each batch.
    """

    kind: ClassVar[str] = "spout"

    def open(self, resources: Resources) -> None:
        """Connect; load the last checkpoint."""

    def read(self, max_records: int) -> Iterator[list[Record]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def commit(self, checkpoint: dict[str, Position]) -> None:
        """Persist the positions that are safe to resume after (no-op for files)."""

    def stop(self) -> None:
        """Ask ``read`` to end after the batch in flight."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return getattr(self, "_stopping", False)

    def progress(self) -> Progress | None:
        return None
