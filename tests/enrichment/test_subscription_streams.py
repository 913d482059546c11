"""The subscription bolt fed by two Kinesis streams whose shards share ids (every stream has a
``shardId-000000000000``): positions count per stream and shard. And states saved before
lineages named the stream (the bare shard id) read by this version."""

from __future__ import annotations

from pathlib import Path

from squall.deploy.lambda_consumer import make_handler
from squall.enrichment.state import SubscriptionState, decode, encode
from squall.enrichment.subscription import SubscriptionBolt
from squall.event import Event, RecordMeta, derive_event_id, lineage
from squall.testing import MemorySink
from tests.factories import kinesis_lambda_event

from .test_subscription import ev, make_bolt, resources

SHARD = "shardId-000000000000"
CLICKS, VIEWS = 10**21, 10**20  # the first sequence numbers of two streams: views' are lower

TOPOLOGY = """
name: subs
resources:
  state: {{url: "sqlite:///{state}"}}
spout: {{type: stdin}}
bolts:
  - {{id: decode, type: json}}
  - {{id: subscription, type: subscription, store: state}}
sinks:
  - {{id: out, type: 'squall.testing:MemorySink', name: "{tag}"}}
"""


def test_a_read_from_a_second_stream_sees_the_latest_state_not_an_earlier_one(
    tmp_path: Path, unique_name: str
):
    """One Lambda function, two Kinesis event source mappings (clicks, views). A device
    registers and subscribes on clicks (shard 0, high sequence numbers); then a page view of it
    comes on views (shard 0 too, lower sequence numbers). It is no re-delivery from before the
    subscription: it sees the subscribed state. (Compared as one shard, it was enriched as of
    a position before the register: "unknown".)"""
    path = tmp_path / "subs.yaml"
    path.write_text(TOPOLOGY.format(state=tmp_path / "state.db", tag=unique_name))

    def invoke(stream: str, payloads: list[dict], start: int) -> None:
        handler = make_handler(path)
        try:
            event = kinesis_lambda_event(payloads, shard=SHARD, stream=stream, start=start)
            assert handler(event, None) == {"batchItemFailures": []}
        finally:
            handler.engine.close()

    invoke(
        "clicks",
        [ev("register", "K"), ev("subscribe", "K", "2024-05-01T10:01:00Z", topics=["news"])],
        CLICKS,
    )
    invoke("views", [ev("page_view", "K", "2024-05-01T10:02:00Z")], VIEWS)
    seen = [e.value["subscription"] for e in MemorySink.stores[unique_name]]
    assert [s["status"] for s in seen] == ["registered", "subscribed", "subscribed"]
    assert seen[2]["topics"] == ["news"]


def test_a_redelivered_event_of_one_stream_still_sees_the_state_as_of_it(tmp_path: Path):
    """Within one stream and shard positions still compare: a page view delivered again (its
    position before the subscribe that made the latest state) sees the state its first delivery
    saw."""
    bolt = make_bolt(resources(state=f"sqlite:///{tmp_path / 'state.db'}"))
    assert _statuses(bolt, "clicks", [(1, ev("register", "K")), (2, ev("page_view", "K"))]) == [
        "registered",
        "registered",
    ]
    assert _statuses(bolt, "clicks", [(3, ev("subscribe", "K", "2024-05-01T10:01:00Z"))]) == [
        "subscribed"
    ]
    assert _statuses(bolt, "views", [(2, ev("page_view", "K"))]) == ["subscribed"]
    assert _statuses(bolt, "clicks", [(2, ev("page_view", "K"))]) == ["registered"]


# -- upgrade: states saved with the bare shard id as their positions' lineage ------------------------


def _statuses(bolt: SubscriptionBolt, stream: str, items: list[tuple[int, dict]]) -> list[str]:
    batch = []
    for i, (seq, value) in enumerate(items):
        meta = RecordMeta(stream, SHARD, str(seq), 0, "pk")
        batch.append(Event(b"", meta, derive_event_id(meta), i, value))
    out = bolt.process(batch)
    bolt.commit_state(lambda event: True)
    bolt.state_committed()
    return [e.value["subscription"]["status"] for e in out.streams["default"]]


def _as_saved_before(state: SubscriptionState) -> SubscriptionState:
    """The state as the previous version saved it: every position's lineage the bare shard id."""

    def old(s: SubscriptionState) -> SubscriptionState:
        p = s.position
        return s if p is None else _replace(s, (p[0].split("\x1f")[0], p[1], p[2]))

    history = tuple(encode(old(decode(h))) for h in state.history)
    return _replace(old(state), old(state).position, history)


def _replace(s: SubscriptionState, position, history=None) -> SubscriptionState:
    return SubscriptionState(
        s.status,
        s.subscribed,
        s.topics,
        s.registered_at,
        s.changed_at,
        s.version,
        s.event_id,
        position,
        s.history if history is None else history,
    )


def test_a_state_saved_before_the_upgrade_is_read_by_position_for_its_own_stream_only(
    tmp_path: Path,
):
    """A state the previous version saved names its positions by the shard id alone. Read by
    this version, a re-delivered event of the stream that made it (the update's event id is
    the one that stream's record at that position has) still sees the state as of its position;
    an event of another stream sharing the shard id sees the latest state."""
    first = make_bolt(resources(state=f"sqlite:///{tmp_path / 'first.db'}"))
    _statuses(first, "clicks", [(1, ev("register", "K"))])
    _statuses(first, "clicks", [(3, ev("subscribe", "K", "2024-05-01T10:01:00Z"))])
    saved = first.store.load(["K"])["K"]
    assert saved.position == (lineage(RecordMeta("clicks", SHARD, "3")), 3, 0)
    bolt = make_bolt(resources(state=f"sqlite:///{tmp_path / 'state.db'}"))
    bolt.store.save({"K": _as_saved_before(saved)})
    assert bolt.store.load(["K"])["K"].position == (SHARD, 3, 0)

    assert _statuses(bolt, "clicks", [(2, ev("page_view", "K"))]) == ["registered"]
    assert _statuses(bolt, "views", [(2, ev("page_view", "K"))]) == ["subscribed"]
    assert _statuses(bolt, "clicks", [(4, ev("page_view", "K"))]) == ["subscribed"]
    assert _statuses(bolt, "views", [(5, ev("register", "K", "2024-05-01T10:00:30Z"))]) == [
        "subscribed"  # an older update (by time) of another stream: not a re-delivery
    ]
    # an event id from a payload field (not the record's): nothing tells the stream, the latest
    meta = RecordMeta("clicks", SHARD, "3", 0, "pk")
    first.process([Event(b"", meta, "from-the-payload", 0, ev("subscribe", "L"))])
    first.commit_state(lambda event: True)
    first.state_committed()
    bolt.store.save({"L": _as_saved_before(first.store.load(["L"])["L"])})
    assert _statuses(bolt, "clicks", [(2, ev("page_view", "L"))]) == ["subscribed"]
