"""Where the events of a batch were read, for the subscription bolt: positions (``state.Position``)
and the checks that tell, without ``state.play``, which events come after a key's state.

Spouts deliver a batch of one lineage in order (one shard's records, one input's lines): then its
lineage is named once (``positions_of``), and a key whose state was made before the batch's first
position gives each of its events the state after the updates before it (``made_before``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice, repeat
from operator import le, lt
from typing import Any

from squall.enrichment.state import Position
from squall.event import Event, RecordMeta, lineage


def positions_of(
    batch: list[Event], lazy: bool = False
) -> tuple[Sequence[Position | None], Position | None]:
    """``position`` of every event, and the first of them when all are of one lineage and in
    order (else None). A batch of one lineage — what a spout delivers: one shard's records in
    order, one input's lines — names it once, the rest at C speed: the metadata's columns by
    ``zip`` (a ``RecordMeta`` is a tuple), the lineage's fields compared by ``tuple.count``, the
    sequence numbers' digits tested in one string. (Per event, a tuple of the lineage's four
    fields by ``attrgetter``, its hash for a set and ``str.isdigit`` called on each number cost
    ~2k instructions more.)

    ``lazy``: when the batch's numbers are ASCII digits of one length, strictly increasing —
    in order whatever their sub-sequence numbers, compared as text —, the positions are
    computed only when indexed (``_Positions``): the subscription bolt needs those of its
    updates, not every event's."""
    metas = [event.meta for event in batch]
    if metas and not metas[0].replay:
        columns = list(zip(*metas, strict=True))
        numbers = columns[_SEQUENCE]
        n = len(metas)
        first = metas[0]
        digits = "".join(numbers)
        if (
            columns[_SHARD_ID].count(first.shard_id) == n
            and columns[_STREAM].count(first.stream) == n
            and columns[_SOURCE].count(first.source) == n
            and columns[_REPLAY].count(first.replay) == n
            # every number all decimal digits: their concatenation is, and none is empty
            # (``isdecimal``, what ``int`` reads: ``isdigit`` took "²" and "①", and int() raised)
            and digits.isdecimal()
            and "" not in numbers
        ):
            subs = columns[_SUB_SEQUENCE]
            if (
                lazy
                and digits.isascii()
                and len(digits) == n * len(numbers[0])
                and len(set(map(len, numbers))) == 1
                and all(map(lt, numbers, islice(numbers, 1, None)))
            ):
                name = lineage(first)
                return _Positions(name, numbers, subs), (name, int(numbers[0]), subs[0])
            positions = list(zip(repeat(lineage(first)), map(int, numbers), subs))
            in_order = all(map(le, positions, islice(positions, 1, None)))
            return positions, positions[0] if in_order else None  # type: ignore[return-value]
    return [position(event) for event in batch], None


class _Positions(Sequence):
    """The positions of a batch of one lineage, each computed when indexed."""

    __slots__ = ("name", "numbers", "subs")

    def __init__(self, name: str, numbers: tuple[str, ...], subs: tuple[int, ...]):
        self.name, self.numbers, self.subs = name, numbers, subs

    def __getitem__(self, i: Any) -> Any:
        if i.__class__ is int:
            return self.name, int(self.numbers[i]), self.subs[i]
        return list(self)[i]

    def __len__(self) -> int:
        return len(self.numbers)


_FIELDS = RecordMeta._fields
_STREAM, _SHARD_ID, _SEQUENCE, _SUB_SEQUENCE, _SOURCE, _REPLAY = map(
    _FIELDS.index,
    ("stream", "shard_id", "sequence_number", "sub_sequence_number", "source", "replay"),
)


def position(event: Event) -> Position | None:
    """Where ``event`` was read: ``state.position_of(lineage(meta), …)``, inline — for a record
    re-driven by ``squall replay``, where it was read first (its ``replay`` count left out)."""
    meta = event.meta
    seq = meta.sequence_number
    if not seq.isdecimal():  # (not ``isdigit``: "²" is a digit int() cannot read)
        return None
    if meta.replay:
        # A record re-driven by ``squall replay`` is where it was first read: its event sees the
        # state as of that position (a state made later in its lineage was made after it), as a
        # re-delivery does. (Not ``lineage``'s own lineage per re-driven record: that serves the
        # window bolt's marks, which count records; here a position only orders states.)
        meta = meta._replace(replay=0)
    if meta.source is None:  # a stream's shard (Kinesis, SQS)
        return f"{meta.shard_id}\x1f{meta.stream}", int(seq), meta.sub_sequence_number
    return lineage(meta), int(seq), meta.sub_sequence_number


def made_before(made: Position | None, low: Position | None) -> bool:
    """Whether a state made at position ``made`` (None: not by an update with a position) comes
    before every event of a batch that is of one lineage and in order, from position ``low`` on
    (None: the batch is not), or does not compare with them (another lineage, that names its
    stream). Then ``play`` gives each event of the key the state after the updates before it."""
    if low is None:
        return False
    return made is None or (made < low if made[0] == low[0] else "\x1f" in made[0])


def all_after(positions: Sequence[Position | None], indexes: list[int], made: Position) -> bool:
    """Whether every event at ``indexes`` comes after position ``made`` (or cannot be compared
    with it: another lineage, no numeric position) — what ``play`` checks for a read. A position
    saved before lineages named their stream (a shard id alone) is left to ``play``."""
    old = "\x1f" not in made[0]
    for i in indexes:
        p = positions[i]
        if p is not None and (p <= made if p[0] == made[0] else old and p[1:] <= made[1:]):
            return False
    return True
