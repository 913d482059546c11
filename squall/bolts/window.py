"""The window bolt: tumbling and hopping windows by event or arrival time, keyed, with aggregates.

Per batch: the shard marks (watermark and last counted position per shard) are read once; each
event is assigned to its windows and its aggregate values are folded into a per-batch *delta*
per (window, key) — nothing is read per key while processing. A window closes when the
watermark (the lowest of the shards' watermarks, idle shards aside) passes its end plus
``allowed_lateness``: its stored state and the batch's delta are merged and a result event is
emitted. Events whose every window has closed go to the ``late`` stream (dead letter unless
wired), counted, never lost.

Nothing durable is written in ``process``: the engine's commit sequence calls ``commit_state``
after the sinks have committed the results. It appends the covered events' delta to the store's
log — one row per window, no read and no lock —, replaces the rows of the windows it closed by
their folded snapshot (if no other closer got there first: window_store.py), and saves the shard
marks — in the batch's SQL transaction when the store shares it. A batch delivered again therefore starts from the
state its first delivery saw (same results), or, when its state was already committed (a crash
between the state and the checkpoint: Redis state, Lambda, the KCL), its records are recognised
by the shard mark and not counted twice. See docs/windows.md.

Size (~1,500 lines): the bolt's batch path, its watermark, its closes (folding a window's log)
and its commit are one protocol with the state store (window_store.py); the aggregate functions
live in window_aggs.py.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import json
import logging
import math
import re
import uuid
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from squall.bolts import window_aggs
from squall.bolts.base import Bolt, Output
from squall.bolts.window_aggs import PLAIN_TYPES, plain
from squall.bolts.window_store import (
    Prune,
    RedisWindowStore,
    Replace,
    Retire,
    ShardMark,
    SqlWindowStore,
    WindowRows,
    WindowStore,
)
from squall.component import ComponentConfig, ComponentContext
from squall.errors import SinkError, TopologyError
from squall.event import (
    REPLAY_LINEAGE,
    Event,
    RecordMeta,
    is_old_lineage,
    lineage,
    not_an_object,
)
from squall.exact_json import plain_numbers
from squall.paths import MISSING, DottedPath, getter
from squall.times import (
    MAX_FUTURE,
    MAX_FUTURE_DOC,
    Duration,
    arrival_bound,
    arrival_ms,
    duration_ms,
    format_time,
    not_after_arrival,
    parse_time,
)

if TYPE_CHECKING:
    from squall.topology.resources import Resources

log = logging.getLogger("squall.window")

LATE = "late"
MAX_KEY_LENGTH = 1000
#: Characters of a shard's name in the store (the SQL column); a longer one (an S3 object's key,
#: the S3 spout's shard) is kept as its head and a digest of the whole
MAX_SHARD_NAME = 200
_CONTAINERS = (dict, list, tuple)  # (a tuple: a Python bolt's; JSON writes it as a list)
_KEY_TYPES = frozenset((str, int, float, bool))
_MS_EPOCH_FLOOR = 10**11  # an integer above this is epoch milliseconds (parse_time's rule)
_MS_EPOCH_TOP = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_END_OF_TIME = 2**62  # ms: every window ends before
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # the integers a key holds (what orjson writes)
_NO_MATCH: Any = object()  # what an object or a list is to a `where`: equal to no value
#: The mark (among the shard marks, under a name no shard has) of the highest watermark committed.
WATERMARK_MARK = ""
#: The mark of the highest bound a prune used (``_prune``'s cutoff, under a name no lineage has):
#: a record of a time at or below it is late, and a mark at or below it idle — as when the prune
#: decided, whatever ``allowed_lateness``, ``size`` or ``idle_shard_after`` are now.
PRUNED_MARK = "\x1fpruned"
#: a window with this many deltas in the store is compacted (folded into one) by the next batch
COMPACT_AT = 64
#: shard marks one commit deletes at most (or twice the lineages of its batch, if more; see _prune)
PRUNE_AT_MOST = 1000
CellId = tuple[int, str]  # (window start ms, key as JSON text)
#: The entry of a stored body (a delta, a snapshot) naming what its states are: the key paths, the
#: size and hop, and each aggregate's ``[fn, field, where]`` in the order of the states (a key is
#: a JSON list's text, so no key is this). A body of another layout is read by it (_relayout).
LAYOUT = "~layout"
#: (window, key) cells whose sketches one call keeps live at most: past them, every live sketch is
#: serialized (as at the end of the call) — a live KLL sketch holds ~1.8 kB whatever its values
#: (its image: a few dozen bytes for a few values), and a call of 2,000 keys' events in hopping
#: windows of 1h by 1m (120,000 cells, a percentile) peaked 256 MB above its start with every
#: sketch live, 59 MB before the live sketches
MAX_LIVE_CELLS = 2048


class Aggregate(BaseModel):
    """One output field of a window result."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    fn: Literal[
        "count", "count_distinct", "sum", "min", "max", "mean", "first", "last", "percentile"
    ] = Field(description="count, count_distinct, sum, min, max, mean, first, last or percentile.")
    field: DottedPath | None = Field(
        None, description="Dotted path of the value (count without it counts events)."
    )
    where: dict[DottedPath, Any] | None = Field(
        None,
        description="Only events whose fields equal these values (a list: any of them), e.g. {event_type: subscribe}.",
    )
    q: float = Field(0.5, gt=0, lt=1, description="percentile: the quantile (0.99 for p99).")
    exact_limit: int = Field(
        64,
        ge=1,
        le=10_000,
        description="count_distinct: distinct values kept exactly; beyond, an HLL sketch (4 kB, ~1.6 % error).",
    )

    @model_validator(mode="after")
    def _check(self) -> Aggregate:
        if self.fn in window_aggs.NEEDS_FIELD and self.field is None:
            raise ValueError(f"{self.fn} needs a field")
        # (an option another function takes did nothing: `exact_limit` on a percentile, which
        # is exact up to 200 values whatever it says)
        if "q" in self.model_fields_set and self.fn != "percentile":
            raise ValueError(f"q applies to percentile, not {self.fn}")
        if "exact_limit" in self.model_fields_set and self.fn != "count_distinct":
            raise ValueError(
                f"exact_limit applies to count_distinct, not {self.fn}"
                + (" (a percentile is exact up to 200 values)" if self.fn == "percentile" else "")
            )
        for path, value in (self.where or {}).items():
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, dict | list):
                    raise ValueError(f"where.{path}: compare with scalars only")
                # (JSON has neither: the layout wrote both as null, and `where: {x: null}`
                # took their states; NaN equals nothing, not even NaN)
                if v.__class__ is float and not math.isfinite(v):
                    raise ValueError(
                        f"where.{path}: {v} is no JSON value (JSON has no NaN or infinity)"
                    )
        return self


#: Hopping windows an event may fall in (``size / hop``): a day by seconds (86,400) is refused,
#: a day by 10 s (8,640) is not. Each of them is updated for every event, so the bound is there for
#: a unit typed wrong (``hop: 1s`` for ``1m``) rather than a use anyone means.
MAX_WINDOWS_PER_EVENT = 10_000


class WindowBolt(Bolt):
    """Counts and aggregates events per key in tumbling or hopping windows, with exactly-once results."""

    summary: ClassVar[str] = (
        "Aggregates events per key in tumbling/hopping windows (event or arrival time); results on close."
    )
    streams: ClassVar[tuple[str, ...]] = (LATE,)

    @classmethod
    def payload_reads(cls, config: Any) -> list[tuple[tuple[str | int, ...], str]]:
        """The key fields and the time field: an event without one is dead-lettered (not an
        aggregate's ``field``, whose absence only leaves that aggregate alone)."""
        reads: list[tuple[tuple[str | int, ...], str]] = [
            (("key", i), path) for i, path in enumerate(config.key)
        ]
        if config.time_field:
            reads.append((("time_field",), config.time_field))
        return reads

    @classmethod
    def packages(cls, config: Any) -> frozenset[str]:
        """SQLAlchemy and redis-py, whatever the store: the stores' module imports both; and
        DataSketches (the ``windows`` extra's) for a ``count_distinct`` or ``percentile``."""
        sketches = any(a.fn in ("count_distinct", "percentile") for a in config.aggregates.values())
        return frozenset({"sqlalchemy", "redis", *(("datasketches",) if sketches else ())})

    class Config(ComponentConfig):
        store: str = Field(
            description="Resource holding the window state: a SQL database or Redis."
        )
        key: list[DottedPath] = Field(
            default_factory=list, description="Dotted paths of the key fields (none: one key)."
        )
        size: Duration = Field(description="Window length: seconds, or 30s, 1m, 1h, 1d.")
        hop: Duration | None = Field(
            None,
            description="Hopping windows: a new window every `hop` (a divisor of `size`; at most "
            "10,000 windows an event). "
            "Default: `size` (tumbling).",
        )
        time_field: DottedPath | None = Field(
            "timestamp",
            description="Dotted path of the event time (ISO-8601 or epoch s/ms); null: arrival time.",
        )
        allowed_lateness: Duration = Field(
            0, description="How long after the watermark passes its end a window accepts events."
        )
        idle_shard_after: Duration = Field(
            "5m",
            description="A shard whose watermark is this far behind the most advanced shard no longer "
            "holds windows open (a parent shard after a split, a shard that stopped receiving).",
        )
        max_future: Duration | None = Field(MAX_FUTURE, description=MAX_FUTURE_DOC)
        aggregates: dict[str, Aggregate] = Field(description="Output field → aggregation.")
        emit: Literal["on_close", "every_batch"] = Field(
            "on_close",
            description="on_close: one result per window and key; every_batch: also an early "
            "(final: false) result after each batch that changed it.",
        )
        table: str = Field(
            "squall_windows",
            description="SQL tables of the window state: `<table>_log`, `<table>_shards` and "
            "`<table>_decided`.",
        )
        key_prefix: str = Field("squall:window:", description="Prefix of the Redis keys.")
        name: str | None = Field(
            None, description="Name of this state in the store (default: topology.bolt id)."
        )

        @field_validator("size", "hop", "allowed_lateness", "idle_shard_after", "max_future")
        @classmethod
        def _duration(cls, value: Any, info: ValidationInfo) -> Any:
            """Each duration at its own key (a model check named only the bolt's entry)."""
            if value is not None and duration_ms(value) <= 0 and info.field_name in ("size", "hop"):
                raise ValueError(f"{info.field_name} must be positive")
            return value

        @model_validator(mode="after")
        def _check(self) -> WindowBolt.Config:
            size = duration_ms(self.size)
            hop = duration_ms(self.hop) if self.hop is not None else size
            if size % hop:
                raise ValueError("hop must divide size (e.g. size: 1h, hop: 5m)")
            if size // hop > MAX_WINDOWS_PER_EVENT:
                raise ValueError(
                    f"size / hop puts each event in {size // hop:,} windows (at most "
                    f"{MAX_WINDOWS_PER_EVENT:,}: every event updates each of them); a larger hop"
                )
            if not self.aggregates:
                raise ValueError("aggregates: name at least one")
            names = {p.rsplit(".", 1)[-1] for p in self.key}
            clash = names & ({"window_start", "window_end", "final"} | set(self.aggregates))
            if clash or len(names) < len(self.key):
                raise ValueError(f"result field names clash: {sorted(clash) or self.key}")
            return self

    def __init__(self, config: Config, context: ComponentContext):
        super().__init__(config, context)
        c = config
        self.size = duration_ms(c.size)
        self.hop = duration_ms(c.hop) if c.hop is not None else self.size
        self.lateness = duration_ms(c.allowed_lateness)
        self.idle_after = duration_ms(c.idle_shard_after)
        self._slack = None if c.max_future is None else duration_ms(c.max_future)
        self.name = c.name or f"{context.topology}.{self.id}"
        self._key_getters = [getter(p) for p in c.key]
        self._key_names = [p.rsplit(".", 1)[-1] for p in c.key]
        self._get_time = getter(c.time_field) if c.time_field else None
        self._key_cache: dict[Any, str] = {}
        self._times: dict[int, tuple[str, str]] = {}  # window start -> its start and end as text
        self._time_key = c.time_field if c.time_field and "." not in c.time_field else None
        self._key_field = c.key[0] if len(c.key) == 1 and "." not in c.key[0] else None
        # a count per key per tumbling window: folded inline, without the general path
        self._plain_count = self.hop == self.size and all(
            a.fn == "count" and a.field is None and not a.where for a in c.aggregates.values()
        )
        self._agg_names = list(c.aggregates)
        # What a stored state is (written in every body, see LAYOUT and _relayout): neither the
        # output name nor `q` or `exact_limit` (the same sketch state serves any of them).
        # (as JSON gives it back: a YAML date in a `where` is its text, as read from a body)
        layout = _dumps(
            {
                "key": list(c.key),
                "size": self.size,
                "hop": self.hop,
                "aggs": [
                    [a.fn, a.field, None if a.where is None else _layout_where(a.where)]
                    for a in c.aggregates.values()
                ],
            }
        )
        self._layout = orjson.loads(layout)
        self._layout_id = _layout_id(self._layout)
        self._layout_head = '{"' + LAYOUT + '":' + layout
        self._aggs = [
            window_aggs.make(a.fn, exact_limit=a.exact_limit, q=a.q) for a in c.aggregates.values()
        ]
        # each aggregate's add, and its add of a value it took for another window (``keep``:
        # first/last, whose add checks an object's every level; see _fold)
        self._adds_checked = [agg.add for agg in self._aggs]
        self._keeps = [getattr(agg, "keep", agg.add) for agg in self._aggs]
        # every aggregate a count or sum: states merged by adding, inline (see _fold_bodies)
        self._adds = all(agg.additive for agg in self._aggs)
        self._agg_fields = [getter(a.field) if a.field else None for a in c.aggregates.values()]
        self._agg_where = [
            [
                (getter(p), frozenset(map(_where_value, v if isinstance(v, list) else [v])))
                for p, v in a.where.items()
            ]
            if a.where
            else None
            for a in c.aggregates.values()
        ]
        self.store: WindowStore | None = None
        self._state_resource: str | None = None
        self._reset()

    def _reset(self) -> None:
        self._read: dict[str, tuple[int, int]] = {}  # lineage -> its mark's position as read
        self._floor: int | None = None  # the highest watermark committed (never goes back)
        self._pruned: int | None = None  # the highest bound of a prune (PRUNED_MARK)
        self._token: str | None = None  # names this staged batch's commit (store.commit)
        self._base: dict[str, ShardMark] | None = (
            None  # shard marks as committed, read once per batch
        )
        self._marks: dict[
            str, list[int]
        ] = {}  # shard -> [watermark, sequence, sub] including this batch
        self._seen: dict[
            str, list[tuple[Event, int | None]]
        ] = {}  # shard -> (event, time) in order
        self._accepted: list[
            tuple[Event, int, str, int | None]
        ] = []  # event, time, key, lateness bound
        self._delta: dict[CellId, list[Any]] = {}
        # cells of the delta whose sketches _fold left live (serialized by _freeze)
        self._thawed: set[CellId] = set()
        self._open: dict[int, tuple[int, int]] | None = None  # the store's open windows
        self._read: dict[int, WindowRows] = {}  # windows' rows read during this batch
        # windows whose final results were emitted: (the record ending that call, rows read,
        # the new snapshot); windows to compact at the commit: (rows read, their deltas folded)
        # closing window → (the event closing it, its rows as read, the new snapshot, the keys
        # emitted)
        self._closing: dict[int, tuple[Event, WindowRows, str, list[str]]] = {}
        self._compact: dict[int, tuple[WindowRows, dict[str, list[Any]]]] = {}
        # windows read for early updates only (not compacted): rows as read, their deltas folded
        self._early: dict[int, tuple[WindowRows, dict[str, list[Any]]]] = {}
        self._wm: int | None = None
        # lineage → {(sequence, sub): closed_before}: how the first delivery decided each record
        # a partial commit left to come again (read with the marks; see commit_state)
        self._decided: dict[str, dict[tuple[int, int], int | None]] = {}
        self._decided_raw: dict[str, str] = {}  # the same, as read: [sequence, sub, cb, time]
        self._past_mark: set[str] = set()
        self._flushed = False  # end of input: every window emitted is closed at the commit
        # Marks and decisions saved under a shard id alone (before lineages named their stream,
        # 6 December), and the lineages of this batch taking them over: lineage → (the old
        # name, whether it took its decisions too). See _inherit.
        self._old: set[str] = set()
        self._heirs: dict[str, tuple[str, bool]] = {}

    def open(self, resources: Resources) -> None:
        c = self.config
        self._check_sketches()

        def sql(engine: Any) -> Any:
            self._state_resource = c.store
            return SqlWindowStore(engine, self.name, c.table)

        self.store = resources.open_store(
            c.store,
            (self.context.topology, f"{self.id}.store"),
            sql=sql,
            redis=lambda client: RedisWindowStore(client, self.name, c.key_prefix),
        )

    def _check_sketches(self) -> None:
        """count_distinct (past its exact values) and percentile keep DataSketches sketches: without
        the package every event reaching them would be dead-lettered, so the start stops instead."""
        for name, agg in self.config.aggregates.items():
            if agg.fn in ("count_distinct", "percentile"):
                try:
                    import datasketches  # noqa: F401
                except ImportError as exc:
                    raise TopologyError(
                        self.context.problem(
                            self.id,
                            f"aggregates.{name}.fn",
                            f"{agg.fn} needs datasketches (pip install 'squall[windows]'; "
                            f"squall package --extras windows): {exc}",
                        )
                    ) from exc
                return

    def after_restore(self) -> None:
        """Restored from a snapshot (Lambda SnapStart): the SQL store's token row made at
        ``open`` is the snapshot's, the same in every copy: each copy gets its own."""
        if isinstance(self.store, SqlWindowStore):
            self.store.new_token_row()

    # -- processing ------------------------------------------------------------------------------

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        assert self.store is not None, "open() was not called"
        self._begin()
        undo = self._snapshot()
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            self._stage(batch, out)
        except BaseException:
            # A retry (TransientError) or the engine's poison isolation calls again with these
            # events (or halves of them): what this call staged must not count twice.
            undo()
            self._thawed.clear()  # (the live sketches went with the undone delta)
            raise
        finally:
            if collecting:
                gc.enable()
        return out

    def _begin(self) -> None:
        """Read the shard marks at the first call of a batch (a TransientError here changes nothing)."""
        if self._base is None:
            assert self.store is not None, "open() was not called"
            marks, decided = self.store.read_marks()
            base = dict(marks)
            self._decided_raw = decided
            self._decided = {
                s: {(int(e[0]), e[1]): e[2] for e in orjson.loads(body)}
                for s, body in decided.items()
            }
            floor = base.pop(WATERMARK_MARK, None)
            self._floor = None if floor is None else floor.watermark
            pruned = base.pop(PRUNED_MARK, None)
            self._pruned = None if pruned is None else pruned.watermark
            self._base = base
            # the marks as stored (not as taken over, _inherit): a commit moves them only if
            # they are still these (store.commit's ``expect``)
            self._read = {s: (m.sequence, m.sub) for s, m in base.items()}
            self._marks = {s: [m.watermark, m.sequence, m.sub] for s, m in base.items()}
            self._old = {s for s in (*base, *decided) if is_old_lineage(s)}
            self._wm = _highest(self._watermark(self._marks), self._floor)

    def flush(self, end: Event, final: bool = True) -> Output | None:
        """End of input: emit every window still open, final, whatever the watermark; the commit
        marks them closed. The watermark does not move: an event of such a window coming later
        (more input) reopens it, and it is emitted again, complete, when the watermark closes it."""
        if not final:
            return None
        self._begin()
        out = Output(self.id)
        self._close(out, end, _END_OF_TIME)
        self._flushed = True
        return out

    def _stage(self, batch: list[Event], out: Output) -> None:
        base, marks, seen = self._base, self._marks, self._seen
        accepted, fold, lateness = self._accepted, self._fold, self.lateness
        wm = self._wm
        top = max(
            (m[0] for s, m in marks.items() if not s.startswith(REPLAY_LINEAGE)), default=None
        )
        plain, size, delta, n_aggs = (self._plain_count, self.size, self._delta, len(self._aggs))
        past = self._past_mark  # shards whose records in this batch are all after their mark
        dropped = out.dropped
        time_of, key_of = self._time, self._key
        # the usual shape inline: epoch-ms integer time and text key, top-level fields, key cached
        tf, kf, cache = self._time_key, self._key_field, self._key_cache
        fast = tf is not None and kf is not None
        # max_future: the inline path bounds its times as _time does (the arrival's ms kept
        # while records share it)
        slack, arr_seen, arrived = self._slack, None, None
        closed_before = None if wm is None else wm - lateness  # windows ending by then are closed
        # a record at or below a prune's bound is late, whatever the lateness (or size) is now:
        # its lineage's mark may be gone (see _prune); with the same configuration, a no-op
        shut = -_END_OF_TIME if self._pruned is None else self._pruned + size
        if self._pruned is not None and (closed_before is None or closed_before < shut):
            closed_before = shut
        cur: str | None = None  # the shard of the previous event, its `seen` list and its mark
        bucket: list[tuple[Event, int | None]] = []
        m: list[int] | None = None
        checking = False  # the shard's records may still be at or before its mark
        # the previous event's time in this shard, and its window and whether that is open:
        # an event with the same time moves no watermark and falls in the same window
        last_t, ws, is_open = None, 0, False
        floor, top_ms = _MS_EPOCH_FLOOR, _MS_EPOCH_TOP
        shard = ""
        source: str | None = None  # the previous event's input (see RecordMeta.source)
        replay, stream = 0, ""
        decided = self._decided
        rec = None
        renamed, heirs = self._old, self._heirs  # (see _inherit)
        replays: dict[str, int] = {}  # lineage -> records at or before its mark (not counted)
        for event in batch:
            meta = event.meta
            if (
                meta.shard_id != cur
                or meta.source != source
                or meta.replay != replay
                or meta.stream != stream
                or replay  # a re-driven record is a lineage of its own
            ):
                # Marks are kept per lineage (squall.event.lineage): the shard, and the input of
                # sources numbered from 1 each time (stream and source) — a second file is not
                # the first's replay —, and a record `squall replay` re-drove is counted now, not
                # taken for a replay: it is decided by the watermark as it is, never moving it.
                cur, source, replay, stream = meta.shard_id, meta.source, meta.replay, meta.stream
                name = lineage(meta)
                shard = name if len(name) <= MAX_SHARD_NAME else _long_shard(name)
                if renamed and cur in renamed and source is None and not replay:
                    if shard in heirs or shard not in base:
                        self._inherit(shard, cur)
                elif replay and source is None and shard not in base:
                    shard = self._replayed_before(meta, shard)
                bucket = seen.get(shard) or seen.setdefault(shard, [])
                rec = decided.get(shard)
                m = marks.get(shard)
                checking = shard not in past
                last_t = None
            if checking:
                mark = base.get(shard)
                counted = (
                    mark is not None
                    and meta.sequence_number.isdecimal()
                    and (int(meta.sequence_number), meta.sub_sequence_number)
                    <= (mark.sequence, mark.sub)
                )
                if counted and shard in heirs:  # a mark taken over: maybe another stream's
                    counted = self._counted_before(event, mark)
                if counted:
                    dropped.append(
                        event
                    )  # counted in the committed state already (a replay after the state commit)
                    if source is None:  # a stream's shard (a file read again is no surprise)
                        replays[shard] = replays.get(shard, 0) + 1
                    continue
                if counted is not None:  # (None: no time; it fails below, the next is checked)
                    past.add(shard)  # sequence numbers only grow within a shard
                    checking = False
            key = None
            if fast:
                v = event.value
                if v.__class__ is dict:
                    t = v.get(tf)
                    if t.__class__ is int and floor <= t <= top_ms:
                        k = v.get(kf)
                        if k.__class__ is str:
                            key = cache.get(k)
                            arr = meta.arrival_time
                            if slack is not None and arr is not None:
                                if arr is not arr_seen and arr != arr_seen:
                                    arr_seen, arrived = arr, arrival_bound(arr)
                                if arrived is not None and t > arrived + slack:
                                    t = arrived
            if key is None:
                try:
                    t = time_of(event)
                    key = key_of(event)
                except ValueError as exc:
                    bucket.append((event, None, None))
                    out.fail(event, str(exc))
                    continue
            if t != last_t:
                last_t = t
                # The watermark as of this event: so lateness depends on the order of events, never
                # on where batches begin (a replay after a partial failure starts its batches elsewhere).
                if m is None or t > m[0]:
                    old = None if m is None else m[0]
                    if m is None:
                        m = marks[shard] = [t, 0, 0]
                    else:
                        m[0] = t
                    if replay:
                        pass
                    elif wm is None or top is None or t > top or old is None or old <= wm:
                        top = t if top is None or t > top else top
                        now = t if len(marks) == 1 else self._watermark(marks)
                        if now is not None and (wm is None or now > wm):
                            # never goes back: a shard leaving idleness does not reopen windows
                            wm = now
                            closed_before = wm - lateness if wm - lateness > shut else shut
                ws = t - t % size
                is_open = closed_before is None or ws + size > closed_before
            cb = closed_before
            if rec is not None and meta.sequence_number.isdecimal():
                d = rec.get((int(meta.sequence_number), meta.sub_sequence_number), rec)
                if d is not rec:  # decided as its first delivery was (a partial commit)
                    cb = d
                    last_t = None
                    is_open = cb is None or ws + size > cb
                    if self._closing:
                        self._reopen(t, cb)
            bucket.append((event, t, cb))
            if plain:
                # (not in `accepted`: a partial commit finds these events in `seen` — see
                # _covered_delta — which saves the per-event tuple)
                if is_open:
                    cid = (ws, key)
                    cell = delta.get(cid)
                    if cell is None:
                        delta[cid] = [1] * n_aggs
                    elif n_aggs == 1:
                        cell[0] += 1
                    else:
                        for i in range(n_aggs):
                            cell[i] += 1
                    dropped.append(event)
                    continue
                n = 0
            else:
                try:
                    n = fold(delta, event, t, key, cb)
                except (ValueError, TypeError) as exc:
                    out.fail(event, f"{self.id}: {exc}")
                    continue
            if n:
                accepted.append((event, t, key, cb))
                out.drop(event)  # consumed: its contribution leaves in the window's result
            else:
                out.fail(
                    event,
                    f"late: every window of {format_time(t)} closed (watermark "
                    f"{format_time(wm)}, allowed_lateness {lateness} ms)",
                    LATE,
                )
        self._freeze(delta)
        self._wm = wm
        if replays:
            self._warn_replays(replays)
        if batch:
            self._close(out, batch[-1])

    def _reopen(self, t: int, cb: int | None) -> None:
        """A record decided as its first delivery was (``cb``: a window ending by then was closed
        for it) may go into a window an earlier call of this batch closed already (the engine's
        poison isolation calls ``process`` with halves of the batch; the watermark read at the
        batch's start closes such windows in the first): that close's snapshot lacks it, and
        the commit's replace would have dropped it (its window's result short for ever). The
        window is closed again at the end of this call, with every event of the batch."""
        closing, size = self._closing, self.size
        ws = t - t % self.hop
        while ws > t - size:
            if ws in closing and (cb is None or ws + size > cb):
                del closing[ws]
            ws -= self.hop

    def _warn_replays(self, replays: dict[str, int]) -> None:
        """Say that records of a stream's shard (Kinesis, SQS: a file read again from its first
        line is no surprise) were taken for replays: expected only after a crash or a lost
        answer, and a sign of records of one shard in several batches at once otherwise — a
        Lambda event source mapping with ``ParallelizationFactor`` > 1 delivers a shard's
        partition keys in concurrent batches whose sequence numbers interleave, and a record
        below the mark another batch committed is not counted (docs/windows.md)."""
        for shard, n in replays.items():
            mark = self._base.get(shard)
            log.warning(
                "%s: %d record(s) of %s at or before its mark (sequence %s) taken for replays, "
                "not counted again: expected only when a batch comes again after its commit; "
                "else records of one shard run in several batches at once — a Lambda event "
                "source mapping needs ParallelizationFactor 1 for a window bolt",
                self.id,
                n,
                shard.replace("\x1f", " "),
                None if mark is None else mark.sequence,
            )

    def _inherit(self, name: str, old: str) -> None:
        """Lineage ``name`` (a stream's shard, without a mark of its own) takes over what was
        saved under its shard id alone before lineages named their stream (an upgrade): the mark
        — its records at or before it are replays, counted before the upgrade — and the
        decisions of a partial commit. Another stream's shard of the same id may have written
        that mark (a consumer of two streams, which this naming fixes), so a record the mark
        covers is dropped only if its time is within the mark's watermark too (``_counted_before``).
        The commit that gives ``name`` a mark of its own deletes the old name's (``Retire``).
        Outside the undo of ``process``: run again at each of the lineage's runs, the same."""
        base, marks = self._base, self._marks
        assert base is not None
        mark = base.get(old)
        if name not in self._heirs:
            took = old in self._decided_raw and name not in self._decided_raw
            if took:
                self._decided_raw[name] = self._decided_raw[old]
                self._decided[name] = self._decided[old]
            if mark is not None:
                base[name] = mark
            self._heirs[name] = (old, took)
        if mark is not None:
            marks.setdefault(name, [mark.watermark, mark.sequence, mark.sub])
            marks.pop(old, None)  # (held by its heirs now: the watermark is the same)

    def _replayed_before(self, meta: RecordMeta, shard: str) -> str:
        """The lineage of a re-driven Kinesis or SQS record (``squall replay``): ``shard``, or
        the name the previous version gave it (``replay N``, the shard id alone, the position)
        when a replay before the upgrade left its mark or decisions there — the same replay
        repeated after the upgrade is then recognised, not counted again. One lineage per
        record: it keeps the old name until its mark is pruned."""
        pos = f"{meta.sequence_number}\x1f{meta.sub_sequence_number}"
        old = f"{REPLAY_LINEAGE}{meta.replay}\x1f{meta.shard_id}\x1f{pos}"
        if len(old) > MAX_SHARD_NAME:
            old = _long_shard(old)
        assert self._base is not None
        return old if old in self._base or old in self._decided else shard

    def _counted_before(self, event: Event, mark: ShardMark) -> bool | None:
        """Whether a record a taken-over mark covers (``_inherit``) is a replay: every record
        the mark counted has a time within its watermark; a record of another stream with a
        later time is new. None: the record has no time (it fails, as on any delivery)."""
        try:
            return self._time(event) <= mark.watermark
        except ValueError:
            return None

    def _snapshot(self) -> Callable[[], None]:
        """A function putting this batch's staging back as it is now (before a call's events)."""
        delta = {cid: list(states) for cid, states in self._delta.items()}
        accepted, closing = list(self._accepted), dict(self._closing)
        compact, early = dict(self._compact), dict(self._early)
        seen = {s: list(items) for s, items in self._seen.items()}
        marks = {s: list(m) for s, m in self._marks.items()}
        wm, past = self._wm, set(self._past_mark)

        def undo() -> None:
            self._delta, self._accepted = delta, accepted
            self._closing, self._compact, self._early = closing, compact, early
            self._seen, self._marks, self._wm, self._past_mark = seen, marks, wm, past

        return undo

    def _time(self, event: Event) -> int:
        if not isinstance(event.value, dict):
            raise ValueError(not_an_object(event.value))
        if self._get_time is None:
            return arrival_ms(event.meta.arrival_time)
        tf = self._time_key
        if tf is not None:
            v = event.value
            value = v.get(tf, MISSING)
        else:
            value = self._get_time(event)
        if value.__class__ is int and _MS_EPOCH_FLOOR <= value <= _MS_EPOCH_TOP:
            ms = value  # epoch ms: the common case, without parse_time's checks
        elif value is MISSING:
            raise ValueError(f"no '{self.config.time_field}'")
        else:
            try:
                ms = parse_time(value)
            except ValueError as exc:
                raise ValueError(f"bad '{self.config.time_field}': {exc}") from None
        return not_after_arrival(ms, event.meta.arrival_time, self._slack)

    def _key(self, event: Event) -> str:
        getters = self._key_getters
        if len(getters) == 1:  # the usual case: one field; its text is cached per value
            v = getters[0](event)
            cls = v.__class__
            if cls is str or (cls is int and _INT_MIN <= v <= _INT_MAX):
                key = self._key_cache.get(v)
                if key is None:
                    if len(self._key_cache) >= 1_000_000:
                        self._key_cache.clear()
                    key = self._key_cache[v] = _key_text([v], self.config.key)
                    if len(key) > MAX_KEY_LENGTH:
                        del self._key_cache[v]
                        raise ValueError(f"key longer than {MAX_KEY_LENGTH} characters")
                return key
        values = []
        for path, get in zip(self.config.key, getters, strict=True):
            v = get(event)
            if v is MISSING or v is None or isinstance(v, _CONTAINERS):
                raise ValueError(f"no usable key field '{path}'")
            if v.__class__ not in _KEY_TYPES:  # an IntEnum, a float subclass, a NumPy scalar:
                v = plain(v)  # its value, as in the aggregates (orjson writes none of them)
            if v.__class__ is int and not _INT_MIN <= v <= _INT_MAX:
                raise ValueError(f"key field '{path}': an integer beyond 64 bits")
            if v.__class__ is float:
                if not math.isfinite(v):  # (JSON writes it as null)
                    raise ValueError(f"key field '{path}': not a finite number: {v!r}")
                v = _whole(v)  # 1.0 is the key of 1, -0.0 of 0: one number in JSON
            if v.__class__ not in _KEY_TYPES:  # (a date was its text: a key of another value)
                try:
                    window_aggs.exact(v)
                except ValueError as exc:
                    raise ValueError(f"key field '{path}': {exc}") from None
            values.append(v)
        key = _key_text(values, self.config.key)
        if len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"key longer than {MAX_KEY_LENGTH} characters")
        return key

    def _fold(
        self,
        delta: dict[CellId, list[Any]],
        event: Event,
        t: int,
        key: str,
        closed_before: int | None,
    ) -> int:
        """Add one event to the delta of each of its open windows; how many windows took it.

        All new states are computed before any is stored, so an event that raises changes nothing:
        a sketch (kept live in the delta, changed in place: ``_freeze`` serializes it) takes the
        event's value only once every aggregate of every window has taken it.
        """
        size, hop = self.size, self.hop
        first = t - t % hop
        order = None
        updates = []
        sketches = None  # (index, prepared value) of the live aggregates this event updates
        # each aggregate's add; in the event's other windows, of the value its first window's
        # checked (an object's exact-values check in first/last, ~6 µs, was made in each)
        adds, prepared = self._adds_checked, None
        ws = first
        while ws > t - size:
            end = ws + size
            if closed_before is None or end > closed_before:
                cid = (ws, key)
                states = delta.get(cid)
                if states is None:
                    states = [agg.new() for agg in self._aggs]
                new = list(states)
                for i, agg in enumerate(self._aggs):
                    where = self._agg_where[i]
                    if where is not None and not all(
                        _where_value(get(event)) in values for get, values in where
                    ):
                        continue
                    field = self._agg_fields[i]
                    if field is None:
                        value = None
                    else:
                        value = field(event)
                        if value is MISSING or value is None:
                            continue
                        if value.__class__ not in PLAIN_TYPES:  # an IntEnum, a StrEnum: its value
                            value = plain(value)
                    if agg.live:
                        if prepared is None:  # (the same for each window of the event)
                            if sketches is None:
                                sketches = []
                            sketches.append((i, agg.prepare(value)))  # (raises: nothing changed)
                        continue
                    if order is None:
                        meta = event.meta
                        # the position as (digits, text): numeric order without an int (a
                        # Kinesis sequence number has 56 digits: beyond JSON's 64-bit integers);
                        # then the stream and input: two files' lines of one time and number
                        # tied, and the fold order picked first/last (orders stored before,
                        # without them, come before those with: a tie only)
                        seq = meta.sequence_number if meta.sequence_number.isdecimal() else "0"
                        order = [
                            t,
                            meta.shard_id,
                            len(seq),
                            seq,
                            meta.sub_sequence_number,
                            meta.stream,
                            meta.source or "",
                        ]
                    new[i] = adds[i](new[i], value, order)
                updates.append((cid, new, sketches))
                adds, prepared = self._keeps, sketches
            ws -= hop
        thawed = None
        for cid, new, sketches in updates:
            if sketches is not None:
                aggs = self._aggs
                for i, prepared in sketches:
                    new[i] = aggs[i].put(new[i], prepared)
                thawed = self._thawed
                thawed.add(cid)
            delta[cid] = new
        if thawed is not None and len(thawed) > MAX_LIVE_CELLS:
            self._freeze(delta)  # (a call boundary's images: memory stays bounded)
        return len(updates)

    def _freeze(self, delta: dict[CellId, list[Any]]) -> None:
        """Serialize the live sketches ``_fold`` left in ``delta`` (once per cell and call):
        whatever reads a delta after (closes, early results, the commit, a retry's undo) finds
        JSON states only."""
        thawed = self._thawed
        if not thawed:
            return
        live = [(i, agg) for i, agg in enumerate(self._aggs) if agg.live]
        for cid in thawed:
            states = delta.get(cid)
            if states is not None:
                for i, agg in live:
                    states[i] = agg.freeze(states[i])
        thawed.clear()

    def _covered_delta(self, covered: Callable[[Event], bool]) -> dict[CellId, list[Any]]:
        """The batch's delta of the events ``covered`` accepts only (a partial commit)."""
        delta: dict[CellId, list[Any]] = {}
        if self._plain_count:  # accepted: seen, with a time, and neither late nor failed
            for items in self._seen.values():
                for event, t, _ in items:
                    if t is not None and event.failure is None and covered(event):
                        self._fold(delta, event, t, self._key(event), None)
            return delta
        for event, t, key, closed_before in self._accepted:
            if covered(event):
                self._fold(delta, event, t, key, closed_before)
        self._freeze(delta)
        return delta

    def _watermark(self, marks: dict[str, list[int]] | dict[str, ShardMark]) -> int | None:
        """The lowest watermark of the shards that are not idle (far behind the most advanced)."""
        wms = [
            m[0] if isinstance(m, list) else m.watermark
            for s, m in marks.items()
            if not s.startswith(REPLAY_LINEAGE)  # re-driven records: no shard, no watermark
        ]
        if not wms:
            return None
        top = max(wms)
        low = top - self.idle_after
        pruned = self._pruned  # a mark at or below a prune's bound is idle (as when it was pruned)
        if pruned is not None and pruned >= low:
            low = pruned + 1 if pruned < top else top
        return min(w for w in wms if w >= low)

    def _close(self, out: Output, last: Event, end_before: int | None = None) -> None:
        """Emit the results of windows the watermark closed (and early results when asked);
        with ``end_before``, of the windows ending by then (the end of input: all).

        A closing window's rows are read and folded: its deltas (and the batch's own) give the
        keys to emit, each with the snapshot's states merged in (the snapshot alone was emitted
        already); the new snapshot is kept for the commit. Windows with many deltas are read
        too, to be compacted at the commit."""
        assert self.store is not None
        flushing = end_before is not None
        if end_before is None:
            if self._wm is None:
                return
            end_before = self._wm - self.lateness
        if self._open is None:
            self._open = self.store.open_windows()
        done = self._closing.keys() | self._compact.keys()
        closing = {ws for ws, (end, _) in self._open.items() if end <= end_before}
        starts = set(map(itemgetter(0), self._delta))  # (in C)
        closing.update(ws for ws in starts if ws + self.size <= end_before)
        closing -= self._closing.keys()
        early = set()
        if self.config.emit == "every_batch" and not flushing:
            early = starts - closing - self._closing.keys()
        compact = {ws for ws, (_, n) in self._open.items() if n >= COMPACT_AT} - closing - done
        # (early updates read their windows but append only the batch's delta: compacting each
        # batch would rewrite the whole window every batch; compaction stays at COMPACT_AT)
        need = [ws for ws in sorted(closing | compact | early) if ws not in self._read]
        if need:
            self._read.update(self.store.read(need))
        own = self._by_window(self._delta, starts) if closing or early else {}
        for ws in sorted(closing):
            rows = self._read[ws]
            snapshot = self._load(rows.snapshot) if rows.snapshot else {}
            pending = self._fold_bodies(rows.deltas)
            self._merge_into(pending, own.get(ws))
            if snapshot:
                merge = self.merge
                for key, states in pending.items():
                    done_states = snapshot.get(key)
                    if done_states is not None:
                        pending[key] = merge(done_states, states)
                snapshot.update(pending)
            else:
                snapshot = pending
            self._results(out, last, ws, pending.items(), True)
            self._closing[ws] = (last, rows, self._body(snapshot), list(pending))
        for ws in compact - done:
            rows = self._read[ws]
            self._compact[ws] = (rows, self._fold_bodies(rows.deltas))
        for ws in sorted(early):
            if ws in self._compact:
                rows, pending = self._compact[ws]
            else:
                if ws not in self._early:
                    rows = self._read[ws]
                    self._early[ws] = (rows, self._fold_bodies(rows.deltas))
                rows, pending = self._early[ws]
            snapshot = self._load(rows.snapshot) if rows.snapshot else {}
            updates = []
            for key, states in own.get(ws, {}).items():
                for stored in (pending.get(key), snapshot.get(key)):
                    if stored is not None:
                        states = self.merge(stored, states)
                updates.append((key, states))
            self._results(out, last, ws, updates, False)

    @staticmethod
    def _by_window(
        delta: dict[CellId, list[Any]], starts: set[int] | None = None
    ) -> dict[int, dict[str, list[Any]]]:
        """The batch's delta per window: start → {key: states}."""
        if starts is None:
            starts = set(map(itemgetter(0), delta))
        if len(starts) == 1:  # one window (the usual case): no test per cell
            return {next(iter(starts)): {key: states for (_, key), states in delta.items()}}
        out: dict[int, dict[str, list[Any]]] = {}
        for (ws, key), states in delta.items():
            w = out.get(ws)
            if w is None:
                w = out[ws] = {}
            w[key] = states
        return out

    def _fold_bodies(self, bodies: list[str]) -> dict[str, list[Any]]:
        """Deltas (JSON bodies ``{key: states}``) merged into one ``{key: states}`` (new lists)."""
        acc: dict[str, list[Any]] = {}
        for body in bodies:
            d = self._load(body)
            if not acc:
                acc = d
                continue
            if len(d) > len(acc):
                acc, d = d, acc  # the smaller into the larger
            if self._adds and len(self._aggs) == 1:  # a count or a sum: add in place
                for key, states in d.items():
                    cur = acc.get(key)
                    if cur is None:
                        acc[key] = states
                    else:
                        cur[0] += states[0]
            elif self._adds:  # counts and sums: add in place (the lists are this call's own)
                for key, states in d.items():
                    cur = acc.get(key)
                    if cur is None:
                        acc[key] = states
                    else:
                        for i, x in enumerate(states):
                            cur[i] += x
            else:
                merge = self.merge
                for key, states in d.items():
                    cur = acc.get(key)
                    acc[key] = states if cur is None else merge(cur, states)
        return acc

    def _load(self, body: str) -> dict[str, list[Any]]:
        """A stored body ``{key: states}`` (a delta, a snapshot), its keys as ``_key`` makes them
        now: a body a release before this one stored keyed a whole float by its own text
        (``[1.0]``, ``[-0.0]``), which is the key ``[1]`` (``[0]``) now; the states of keys that
        become one are merged. Only a body holding such a float's text somewhere is looked into."""
        d = orjson.loads(body)
        layout = d.pop(LAYOUT, None)
        if layout is None or _layout_id(layout) != self._layout_id:
            d = self._relayout(d, layout)
        if not _may_hold_whole_float(body):
            return d
        renamed = {}
        for key in d:
            if _may_hold_whole_float(key):
                values = orjson.loads(key)
                whole = [_whole(v) if v.__class__ is float else v for v in values]
                text = orjson.dumps(whole).decode()
                if text != key:
                    renamed[key] = text
        for key, text in renamed.items():
            states = d.pop(key)
            cur = d.get(text)
            d[text] = states if cur is None else self.merge(cur, states)
        return d

    def _body(self, d: dict[str, list[Any]]) -> str:
        """A body to store: ``d`` as JSON, its layout (LAYOUT) first."""
        text = _dumps(d)
        return self._layout_head + ("}" if len(text) == 2 else "," + text[1:])

    def _relayout(self, d: dict[str, list[Any]], layout: Any) -> dict[str, list[Any]]:
        """A body written with other aggregates (the topology changed while its window was open
        or kept): each aggregate's states taken by its ``[fn, field, where]``, an aggregate new
        since starting from nothing (it counts the events from the change on), one gone dropped.
        Another key, size or hop, or a body stored before bodies named their layout whose states
        do not fit, cannot be read: the batch fails (a misconfiguration, not the records')."""
        aggs = self._layout["aggs"]
        if layout is None:  # written before this version: its states are in this order, or not
            first = next(iter(d.values()), None)
            if first is None or len(first) == len(aggs):
                return d
            raise SinkError(
                f"window state '{self.name}': a stored window holds {len(first)} aggregate(s) "
                f"per key, this bolt has {len(aggs)}; it was written by a squall before windows "
                "named their aggregates, which cannot be matched: give the bolt another `name:` "
                "(a new state), or let the windows close and expire before changing `aggregates`"
            )
        if layout.get("key") != self._layout["key"]:
            raise SinkError(
                f"window state '{self.name}': its windows are keyed by {layout.get('key')}, this "
                f"bolt by {self._layout['key']}: give the bolt another `name:` (a new state), or "
                "let the windows close and expire before changing `key`"
            )
        mine = (self.size, self.hop)
        if (layout.get("size"), layout.get("hop")) != mine:
            raise SinkError(
                f"window state '{self.name}': its windows are {layout.get('size')} ms long every "
                f"{layout.get('hop')} ms, this bolt's {mine[0]} ms every {mine[1]} ms: give the "
                "bolt another `name:` (a new state), or let the windows close and expire before "
                "changing `size` or `hop`"
            )
        old: list[Any] = [_agg_id(a) for a in layout.get("aggs", [])]
        where: list[int | None] = []
        for spec in map(_agg_id, aggs):
            j = old.index(spec) if spec in old else None
            if j is not None:
                old[j] = None  # an aggregate twice: each takes one
            where.append(j)
        new = [agg.new for agg in self._aggs]
        return {
            key: [states[j] if j is not None else new[i]() for i, j in enumerate(where)]
            for key, states in d.items()
        }

    def _merge_into(self, acc: dict[str, list[Any]], delta: dict[str, list[Any]] | None) -> None:
        """Merge ``delta`` into ``acc`` without changing ``delta``'s lists (the batch keeps them)."""
        for key, states in (delta or {}).items():
            cur = acc.get(key)
            acc[key] = list(states) if cur is None else self.merge(cur, states)

    def _identity(self) -> list[Any]:
        """States that change nothing when merged (each aggregate's ``new()``)."""
        return [agg.new() for agg in self._aggs]

    def merge(self, stored: list[Any], delta: list[Any]) -> list[Any]:
        return [agg.merge(a, b) for agg, a, b in zip(self._aggs, stored, delta, strict=True)]

    def _results(self, out: Output, origin: Event, ws: int, items: Any, final: bool) -> None:
        """Emit a result per (key, states) of ``items`` for window ``ws`` (invariants hoisted:
        a window closes for all its keys at once)."""
        times = self._times.get(ws)
        if times is None:
            if len(self._times) > 1000:
                self._times.clear()
            times = self._times[ws] = (format_time(ws), format_time(ws + self.size))
        start, end = times
        names, aggs, agg_names = self._key_names, self._aggs, self._agg_names
        one_key = names[0] if len(names) == 1 else None
        # The final result's id is the window's and key's; an early one's also names the record
        # that ends its batch — its lineage (two files, or two streams' shards of one id, end
        # batches at the same numbers) and its position with the sub-sequence (a batch may end
        # inside a KPL aggregate) —, so an insert-mode sink (idempotent on event_id) keeps each
        # once.
        prefix = f"{self.name}\x1f{ws}\x1f"
        om = origin.meta
        suffix = (
            ""
            if final
            else f"\x1fearly\x1f{lineage(om)}\x1f{om.sequence_number}\x1f{om.sub_sequence_number}"
        )
        meta, org, blake2b, loads = origin.meta, origin.origin, hashlib.blake2b, orjson.loads
        bucket = out.streams.setdefault("default", [])
        for key, states in items:
            value: dict[str, Any] = {"window_start": start, "window_end": end}
            if one_key is not None:
                value[one_key] = loads(key)[0]
            else:
                value.update(zip(names, loads(key), strict=True))
            for name, agg, state in zip(agg_names, aggs, states, strict=True):
                value[name] = agg.result(state)
            value["final"] = final
            eid = blake2b((prefix + key + suffix).encode(), digest_size=16).hexdigest()
            bucket.append(Event(b"", meta, eid, org, value))

    # -- the commit sequence ----------------------------------------------------------------------

    stateful = True

    def state_resource(self) -> str | None:
        return self._state_resource

    def commit_state(self, covered: Callable[[Event], bool], connection: Any = None) -> None:
        """Fold the covered events' deltas into the store, close emitted windows, save the shard marks."""
        assert self.store is not None, "open() was not called"
        if self._base is None:
            return
        full = all(covered(items[-1][0]) for items in self._seen.values() if items)
        if full:
            delta = self._delta
            marks = self._marks
        else:  # some records come after a failed record of their shard: they come again
            delta = self._covered_delta(covered)
            marks = {s: [m.watermark, m.sequence, m.sub] for s, m in self._base.items()}
        new_marks: dict[str, ShardMark] = {}
        for shard, items in self._seen.items():
            last = None
            # covered: a prefix of each shard's records, so with every last record covered the
            # marks need only the last (no call per event)
            for event, t, _ in items[-1:] if full else items:
                if not covered(event):
                    break
                last = event
                if not full and t is not None:
                    m = marks.get(shard)
                    if m is None:
                        marks[shard] = [t, 0, 0]
                    elif t > m[0]:
                        m[0] = t
            if last is None:
                continue
            seq = int(last.meta.sequence_number) if last.meta.sequence_number.isdecimal() else 0
            wm = (
                marks[shard][0]
                if shard in marks
                else (self._base[shard].watermark if shard in self._base else 0)
            )
            new_marks[shard] = ShardMark(wm, seq, last.meta.sub_sequence_number)
        read = self._read
        expect = {s: read.get(s) for s in new_marks}
        decided = self._decisions(covered, full, new_marks)
        # The watermark never goes back, across batches too (a shard leaving idleness would
        # lower it and reopen closed windows): the highest reached is saved with the marks.
        wm = _highest(self._watermark(marks), self._floor, self._wm if full else None)
        if wm is not None:
            new_marks[WATERMARK_MARK] = ShardMark(wm, 0, 0)
        end_before = None if wm is None else wm - self.lateness
        # A result emitted in a batch not wholly covered may hold changes of records that come
        # again (in another shard of the batch): such windows stay open and are emitted again.
        size = self.size
        own = self._by_window(delta)
        replaces: dict[int, Replace] = {}
        for ws, (origin, rows, snapshot, emitted) in self._closing.items() if full else ():
            shut = self._flushed or (end_before is not None and ws + size <= end_before)
            if shut and covered(origin):
                mine = own.pop(ws, None)
                # If this close loses to another writer's replace, what it emitted may be an older
                # view than the winner's: the fallback delta names every key it emitted (with the
                # aggregates' identity states where it has no events of its own), so the window
                # stays open for them and a later close emits them again, complete.
                # (only when the winner's snapshot differs from this close's: else every close
                # would reopen the window for the next, and two closers re-emit it forever)
                stale = dict(mine) if mine else {}
                for key in emitted:
                    if key not in stale:
                        stale[key] = self._identity()
                replaces[ws] = Replace(
                    ws + size,
                    rows.rev,
                    rows.ids,
                    snapshot,
                    None,
                    self._body(mine) if mine else None,
                    self._body(stale) if stale else None,
                )
        for ws, (rows, pending) in self._compact.items():
            if ws in replaces:
                continue
            mine = own.pop(ws, None)
            folded = dict(pending)  # (pending's lists are not changed: a retry reuses them)
            self._merge_into(folded, mine)
            replaces[ws] = Replace(
                ws + size,
                rows.rev,
                rows.ids,
                None,
                self._body(folded),
                self._body(mine) if mine else None,
            )
        appends = {ws: (ws + size, self._body(d)) for ws, d in own.items()}
        expire = (end_before if end_before is not None else 0) - size
        if self._token is None:  # one per staged batch: the engine's retry reuses it
            self._token = uuid.uuid4().hex
        prune = self._prune(marks, wm)
        if prune is not None:
            new_marks[PRUNED_MARK] = ShardMark(prune.cutoff, 0, 0)
        retire = Retire()  # old names whose heir gets its own mark (see _inherit)
        for name, (old, _) in self._heirs.items():
            if name in new_marks:
                if old in self._base:
                    retire.marks[old] = self._base[old]
                if old in self._decided_raw:
                    retire.decided[old] = self._decided_raw[old]
        self.store.commit(
            appends,
            replaces,
            new_marks,
            expire,
            connection,
            self._token,
            prune,
            decided,
            retire,
            expect,
        )

    def _decisions(
        self, covered: Callable[[Event], bool], full: bool, new_marks: dict[str, ShardMark]
    ) -> dict[str, str | None]:
        """The decisions to save (lineage → JSON, None: delete) for the records of a partial
        commit that come again, so that each is decided with the watermark its first delivery
        decided it with (``closed_before``): the watermark saved by this commit is that after
        the other shards' committed records, which came after them in the batch — with it, a
        record the first delivery accepted could be late (its shard looking idle behind them).
        A lineage's entry goes once its mark passes every record in it."""
        out: dict[str, str | None] = {}
        for shard, items in self._seen.items():
            rec = self._decided.get(shard)
            if full and rec is None:
                continue
            # taken over from the old name (_inherit): not under this name in the store yet
            stored = None if self._heirs.get(shard, ("", False))[1] else rec
            # (each with its record's time: the entry goes once its windows expired, see _prune)
            keep = self._entries(shard) if rec else {}
            if not full:
                for event, t, cb in items:
                    meta = event.meta
                    if t is None or not meta.sequence_number.isdecimal() or covered(event):
                        continue
                    keep.setdefault((int(meta.sequence_number), meta.sub_sequence_number), (cb, t))
            mark = new_marks.get(shard)
            if mark is not None:
                keep = {k: v for k, v in keep.items() if k > (mark.sequence, mark.sub)}
            if {k: v[0] for k, v in keep.items()} != (stored or {}):
                out[shard] = (
                    _dumps([[str(q), sub, cb, t] for (q, sub), (cb, t) in sorted(keep.items())])
                    if keep
                    else None
                )
        return out

    def _entries(self, shard: str) -> dict[tuple[int, int], tuple[int | None, int | None]]:
        """A lineage's saved decisions as read: (sequence, sub) → (closed before, time)."""
        return {
            (int(e[0]), e[1]): (e[2], e[3] if len(e) > 3 else None)
            for e in orjson.loads(self._decided_raw[shard])
        }

    def _prune(self, marks: dict[str, list[int]], wm: int | None) -> Prune | None:
        """The shard marks this commit may delete: without them nothing is decided differently.

        A mark (watermark W) goes when it is (1) *idle*: W more than ``idle_shard_after`` behind
        the most advanced mark, which is never deleted, so W stays idle. It takes no part in the
        watermark, and a later record of its lineage makes a mark at its own time: idle too when
        below W, the same as with the old mark when above. (2) *closed*: W + size ≤ ``wm`` (the
        watermark this commit saves; it never goes back) − lateness. Its lineage's counted
        records all have times ≤ W: delivered again, they are late (the late stream) instead of
        dropped as replays — counted once either way. Closed alone is not enough: a lineage
        below the saved watermark but not idle (an SQS message of an older time) holds the
        watermark until it is idle. Marks of this batch's lineages wait for a later commit; at
        most ``PRUNE_AT_MOST`` (or twice the batch's lineages) go, lowest first, so a backlog
        drains over commits, never slower than marks are added. The store deletes each only
        while its stored watermark is still ≤ the cutoff (another process may have raised it)."""
        base = self._base
        if wm is None or not base or not marks:
            return None
        top = max((m[0] for s, m in marks.items() if not s.startswith(REPLAY_LINEAGE)), default=wm)
        cutoff = min(top - self.idle_after - 1, wm - self.lateness - self.size)
        seen = self._seen
        pending = self._decided
        # Saved decisions of a lineage that never came back (a producer request the client
        # retried as another, an SQS message moved to its queue's dead letter) go once every
        # window of their records has expired (time + size < cutoff): delivered again, such a
        # record is late — accepted by its old decision, it would emit its expired window again
        # from itself alone. Deleted only while the entry is still the one read.
        gone = {}
        for s in pending.keys() - seen.keys():
            times = [t for _, t in self._entries(s).values()]
            if None not in times and max(times) + self.size < cutoff:
                gone[s] = self._decided_raw[s]
        old = [
            (m.watermark, s)
            for s, m in base.items()
            if m.watermark <= cutoff and s not in seen and (s not in pending or s in gone)
        ]
        if not old and not gone:
            return None
        limit = max(PRUNE_AT_MOST, 2 * len(seen))
        if len(old) > limit:
            old = heapq.nsmallest(limit, old)
        return Prune(cutoff, sorted(s for _, s in old), gone)

    def state_committed(self) -> None:
        self._reset()

    def discard_state(self) -> None:
        self._reset()


def _long_shard(shard: str) -> str:
    """A shard name of ``MAX_SHARD_NAME`` characters standing for a longer one, the same each time."""
    digest = hashlib.sha256(shard.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{shard[: MAX_SHARD_NAME - len(digest) - 1]}#{digest}"


#: How orjson writes a whole float a key held before it was made an integer, as a number of a key's
#: JSON list (followed by ``,`` or ``]``): ``1.0``, ``-0.0``; from 1e16 in its exponent form
#: ``1e+16``, ``1.5e+17``, up to the integers a key holds (~1.8e19, ``e+19``; ``e16`` without the
#: sign for other writers). A stored body or key without it holds no such key (a text holding it,
#: in a string or a state, is parsed and found unchanged).
_WHOLE_FLOAT_TEXT = re.compile(r"(?:\.0|e\+?1[0-9])[,\]]")


def _may_hold_whole_float(text: str) -> bool:
    return _WHOLE_FLOAT_TEXT.search(text) is not None


def _whole(value: float) -> int | float:
    """A float key value as the key holds it: a whole number within the integers a key holds
    as its integer (``1.0`` is ``1``, ``-0.0`` is ``0``), as JSON has one number for them."""
    if value.is_integer() and _INT_MIN <= value <= _INT_MAX:
        return int(value)
    return value


def _key_text(values: list[Any], paths: list[str]) -> str:
    """A key's JSON text; a lone surrogate in a key field (a Python bolt's ``json.loads`` of
    ``"\\ud800"``) is the event's failure, with the field named (orjson's TypeError escaped
    ``process``: the engine bisected the batch to find the record)."""
    try:
        return orjson.dumps(values).decode()
    except TypeError as exc:
        bad = next((p for p, v in zip(paths, values, strict=True) if not _encodable(v)), paths[0])
        why = (
            "not valid UTF-8 text (a lone surrogate)"
            if "UTF-8" in str(exc)
            else f"a value without a JSON form ({exc})"  # (a Decimal, bytes: a Python bolt's)
        )
        raise ValueError(f"key field '{bad}': {why}") from None


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _where_value(value: Any) -> Any:
    """A value as ``where`` compares it: JSON's true is not 1 (Python's True == 1), and an
    object or a list equals no scalar (it matches nothing; it is not the record's failure); a
    NumPy scalar is its Python number (its ``bool_`` was 1, not true)."""
    cls = value.__class__
    if cls is str or cls is int:
        return value
    if cls not in PLAIN_TYPES:
        value = plain(value)
        cls = value.__class__
    if cls is bool:
        return (bool, value)
    if isinstance(value, _CONTAINERS):
        return _NO_MATCH
    return value


def _agg_id(spec: list[Any]) -> tuple[Any, ...]:
    """An aggregate of a layout (``[fn, field, where]``) as what its states count: a `where` by
    the values it matches, as ``_where_value`` compares them (``true`` is not ``1``, which Python's
    ``True == 1`` would say it is; a list's order, or a value alone or in a list, is no other
    filter)."""
    fn, field, where = spec
    if not where:  # `where: {}` counts every event, as no `where` does
        return (fn, field, None)
    return (
        fn,
        field,
        frozenset(
            (path, frozenset(_where_value(_wide(x)) for x in (v if isinstance(v, list) else [v])))
            for path, v in where.items()
        ),
    )


def _layout_where(where: dict[str, Any]) -> dict[str, Any]:
    """A `where` as the layout writes it: what JSON (orjson) does not write as a value of its
    own — an integer beyond 64 bits as ``{"int": its text}``, a text holding a lone surrogate
    (YAML's ``"\\ud800"``) as ``{"str": its JSON text, escaped}`` (a `where` holds no object, so
    neither is a value of its own)."""

    def one(v: Any) -> Any:
        if v.__class__ is int and not _INT_MIN <= v <= _INT_MAX:
            return {"int": str(v)}
        if v.__class__ is str and not _encodable(v):
            return {"str": json.dumps(v)}
        return v

    return {
        path: [one(x) for x in v] if isinstance(v, list) else one(v)
        for path, v in sorted(where.items())
    }


def _wide(value: Any) -> Any:
    """A layout's `where` value as the `where` held it (see _layout_where)."""
    if value.__class__ is dict:
        return int(value["int"]) if "int" in value else json.loads(value["str"])
    return value


def _layout_id(layout: dict[str, Any]) -> tuple[Any, ...]:
    """A layout (LAYOUT) as what its states are: two of the same id read each other's bodies."""
    return (
        layout.get("key"),
        layout.get("size"),
        layout.get("hop"),
        [_agg_id(a) for a in layout.get("aggs", [])],
    )


def _highest(*values: int | None) -> int | None:
    return max((v for v in values if v is not None), default=None)


def _dumps(value: Any) -> str:
    """A state's JSON text (a delta, a snapshot): a ``float`` subclass nested in a first/last
    value (a NumPy ``float64``) as its number, as ``exact_json`` writes it (orjson asks
    ``default`` only for what it cannot write: no cost otherwise)."""
    return orjson.dumps(value, default=plain_numbers).decode()
