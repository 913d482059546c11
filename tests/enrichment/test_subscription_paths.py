"""The subscription bolt's fast paths against its general path, on the same inputs.

``process`` reads one-level key/type paths inline, writes a one-level target inline, and gives
keys that only read (every event after the state's last update) their latest state without
``play`` or staging. Each must behave exactly as the general path: the getters/setters and
``play`` for every key (what a bolt with the fast paths switched off does).
"""

from __future__ import annotations

import copy
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from squall.component import ComponentContext
from squall.enrichment import subscription
from squall.enrichment.state import SubscriptionState
from squall.enrichment.subscription import SubscriptionBolt
from squall.event import Event, RecordMeta, derive_event_id


class MemoryStore:
    """A state store in a dict, version-guarded like the real ones."""

    def __init__(self) -> None:
        self.states: dict[str, SubscriptionState] = {}
        self.loads: list[list[str]] = []

    def load(self, keys: list[str]) -> dict[str, SubscriptionState]:
        self.loads.append(list(keys))
        return {k: self.states[k] for k in keys if k in self.states}

    def save(self, changed: dict[str, SubscriptionState], connection=None, base=None) -> None:
        for key, s in changed.items():
            old = self.states.get(key)
            if old is None or old.version < s.version:
                self.states[key] = s

    def flush(self) -> None:
        pass

    def discard(self) -> None:
        pass


def bolt(fast: bool, key: str, target: str, history: int) -> SubscriptionBolt:
    b = SubscriptionBolt(
        SubscriptionBolt.Config(
            id="subs", type="subscription", store="state", key=key, target=target, history=history
        ),
        ComponentContext("test"),
    )
    b.store = MemoryStore()
    if not fast:
        b._key_name = b._type_name = b._target_name = None
    return b


def put(value: dict, path: str, v) -> dict:
    *parents, last = path.removeprefix("payload.").split(".")
    d = value
    for k in parents:
        d = d.setdefault(k, {})
    d[last] = v
    return value


def get(value: dict, path: str):
    for k in path.removeprefix("payload.").split("."):
        value = value[k]
    return value


TIMES = [f"2024-05-01T10:00:{s:02d}Z" for s in range(6)]
KEYS = st.sampled_from(["a", "b", " a ", 7, None, True, "", ["a"]])
SEQ = st.one_of(st.integers(1, 12).map(str), st.sampled_from(["x-1", "0"]))


@st.composite
def records(draw, key_path: str):
    value = {
        "event_type": draw(st.sampled_from(["register", "subscribe", "unsubscribe", "click"])),
        "timestamp": draw(st.sampled_from(TIMES)),
    }
    k = draw(KEYS)
    if k is not None:
        put(value, key_path, k)
    topics = draw(st.lists(st.sampled_from(["n", "s"]), max_size=2))
    if topics:
        value["topics"] = topics
    shard = draw(st.sampled_from(["shardId-0", "shardId-1"]))
    return value, shard, draw(SEQ)


def make(value, shard, seq, origin) -> Event:
    meta = RecordMeta("s", shard, seq, 0, "pk")
    return Event(b"", meta, derive_event_id(meta), origin, copy.deepcopy(value))


def step(b: SubscriptionBolt, fast: bool, batch: list[Event], parts: list[list[Event]]):
    """One batch as the engine may run it: process on parts (after a failed whole-batch call,
    poison isolation), then the commit sequence's state step."""
    out = []
    with (
        mock.patch.object(
            subscription, "all_after", subscription.all_after if fast else (lambda *a: False)
        ),
        mock.patch.object(
            subscription, "made_before", subscription.made_before if fast else (lambda *a: False)
        ),
    ):
        for part in parts:
            o = b.process(part)
            out += [(e.origin, "ok", e.value) for e in o.streams.get("default", [])]
            out += [(e.origin, "error", e.failure.reason) for e in o.streams.get("error", [])]
    b.commit_state(lambda event: True)
    b.state_committed()
    # Each event has its own block and topics list: a later bolt may change one event's.
    blocks = [get(v, b.config.target) for _, kind, v in out if kind == "ok"]
    assert len({id(x) for x in blocks}) == len(blocks)
    assert len({id(x["topics"]) for x in blocks}) == len(blocks)
    return sorted(out, key=lambda t: t[0])


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    key_path=st.sampled_from(["device_token", "payload.device_token", "user.id"]),
    target=st.sampled_from(["subscription", "payload.sub", "enriched.sub"]),
    history=st.integers(0, 3),
)
def test_fast_paths_equal_the_general_path(data, key_path, target, history):
    fast, slow = bolt(True, key_path, target, history), bolt(False, key_path, target, history)
    origin = 0
    for _ in range(data.draw(st.integers(1, 4))):
        recs = data.draw(st.lists(records(key_path), min_size=1, max_size=8))
        cuts = sorted(data.draw(st.lists(st.integers(1, len(recs)), max_size=3, unique=True)))
        spans = list(zip([0, *cuts], [*cuts, len(recs)], strict=True))
        got = []
        for b, is_fast in ((fast, True), (slow, False)):
            batch = [make(v, sh, sq, origin + i) for i, (v, sh, sq) in enumerate(recs)]
            parts = [batch[i:j] for i, j in spans if batch[i:j]]
            got.append(step(b, is_fast, batch, parts))
        origin += len(recs)
        assert got[0] == got[1]
        assert fast.store.states == slow.store.states
        assert {k: s.history for k, s in fast.store.states.items()} == {
            k: s.history for k, s in slow.store.states.items()
        }


@settings(max_examples=200, deadline=None)
@given(data=st.data(), history=st.integers(0, 3))
def test_in_order_batches_and_their_redeliveries_equal_the_general_path(data, history):
    """One shard's records in order, as spouts deliver them (the fast path of keys with updates),
    batch by batch; some batches are delivered again later (their keys' states then made after
    their first records: ``play`` looks positions up in the history)."""
    fast = bolt(True, "device_token", "subscription", history)
    slow = bolt(False, "device_token", "subscription", history)
    recs = data.draw(st.lists(records("device_token"), min_size=1, max_size=24))
    stream = [make(v, "shardId-0", str(n), n) for n, (v, _, _) in enumerate(recs, 1)]
    cuts = sorted(data.draw(st.lists(st.integers(1, len(stream)), max_size=4, unique=True)))
    spans = [(i, j) for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True) if i < j]
    for n in data.draw(st.lists(st.integers(0, len(spans) - 1), max_size=3)):
        spans.insert(data.draw(st.integers(n + 1, len(spans))), spans[n])  # a re-delivery
    for i, j in spans:
        got = [
            step(b, is_fast, batch, [batch])
            for b, is_fast in ((fast, True), (slow, False))
            for batch in [
                [
                    Event(e.raw, e.meta, e.event_id, e.origin, copy.deepcopy(e.value))
                    for e in stream[i:j]
                ]
            ]
        ]
        assert got[0] == got[1]
        assert fast.store.states == slow.store.states
        assert {k: s.history for k, s in fast.store.states.items()} == {
            k: s.history for k, s in slow.store.states.items()
        }
