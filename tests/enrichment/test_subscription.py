"""The subscription bolt through real stores: SQLite, PostgreSQL, Redis, and SQL behind Redis."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime

import pydantic
import pytest
import redis
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from squall.component import ComponentContext
from squall.enrichment.state import UNKNOWN_STATE, Action, Update, apply, version
from squall.enrichment.subscription import SubscriptionBolt
from squall.errors import TopologyError, TransientError
from squall.event import lineage
from squall.times import parse_time
from tests.ports import free_port

from .support import Text, make_batch, make_event, resources

T0 = "2024-05-01T10:00:00Z"


@pytest.fixture(
    params=["sqlite", "postgresql", "redis", "sqlite+redis-cache", "postgresql+redis-cache"]
)
def backend(request, tmp_path):
    """(resources, options) of a subscription bolt on one real back end."""
    kind = request.param
    urls, options = {}, {}
    if kind.startswith("sqlite"):
        urls["state"] = f"sqlite:///{tmp_path / 'state.db'}"
    elif kind.startswith("postgresql"):
        urls["state"] = request.getfixturevalue("pg_url_psycopg2")
        options["table"] = request.getfixturevalue("pg_table")
    if "redis" in kind:
        url = request.getfixturevalue("redis_url")
        options["key_prefix"] = request.getfixturevalue("redis_prefix")
        if kind == "redis":
            urls["state"] = url
        else:
            urls["cache"] = url
            options["cache"] = "cache"
    return resources(**urls), options


def make_bolt(res, **options) -> SubscriptionBolt:
    bolt = SubscriptionBolt(
        SubscriptionBolt.Config(id="subs", type="subscription", store="state", **options),
        ComponentContext("test"),
    )
    bolt.open(res)
    return bolt


def run(bolt, values, start=1):
    """One batch as the engine runs it: process, then the commit sequence's state step."""
    out = bolt.process(make_batch(values, start))
    bolt.commit_state(lambda event: True)
    bolt.state_committed()
    failed = {e.origin: e.failure.reason for e in out.streams.get("error", [])}
    ok = {e.origin: e.value.get("subscription") for e in out.streams.get("default", [])}
    return ok, failed


def ev(kind, token, t=T0, **extra):
    return {"event_type": kind, "device_token": token, "timestamp": t, **extra}


def test_lifecycle_in_one_batch_enriches_each_event_with_the_state_as_of_it(backend):
    res, options = backend
    bolt = make_bolt(res, **options)
    ok, failed = run(
        bolt,
        [
            ev("app_open", "tok"),
            ev("register", "tok"),
            ev("subscribe", "tok", "2024-05-01T10:00:05Z", topics=["news", "sport"]),
            ev("app_open", "tok"),
            ev("unsubscribe", "tok", "2024-05-01T10:00:09Z", topics="news"),
            ev("unsubscribe", "tok", "2024-05-01T10:00:10Z"),
        ],
    )
    assert failed == {}
    assert ok[1] == {
        "status": "unknown",
        "subscribed": False,
        "topics": [],
        "registered_at": None,
        "last_change_at": None,
    }
    assert ok[2] == {
        "status": "registered",
        "subscribed": False,
        "topics": [],
        "registered_at": "2024-05-01T10:00:00.000Z",
        "last_change_at": "2024-05-01T10:00:00.000Z",
    }
    assert ok[3]["status"] == ok[4]["status"] == "subscribed"
    assert ok[3]["topics"] == ok[4]["topics"] == ["news", "sport"]
    assert ok[4]["last_change_at"] == "2024-05-01T10:00:05.000Z"
    assert (ok[5]["topics"], ok[5]["subscribed"]) == (["sport"], True)
    assert ok[6] == {
        "status": "unsubscribed",
        "subscribed": False,
        "topics": [],
        "registered_at": "2024-05-01T10:00:00.000Z",
        "last_change_at": "2024-05-01T10:00:10.000Z",
    }


def test_text_with_a_lone_surrogate_is_that_events_failure_not_the_commits(backend):
    """A Python bolt's ``json.loads`` turns "\\ud800" into a lone surrogate, which no store's
    driver encodes: the state write of a key or topic holding one raised in the commit sequence
    (the batch failed, every retry: the shard stalled), a read-only event's key in the load."""
    res, options = backend
    bolt = make_bolt(res, **options)
    ok, failed = run(
        bolt,
        [
            ev("register", "tok\udc80"),
            ev("subscribe", "t-1", topics=["news", "a\ud800"]),
            ev("page_view", "r\udc80"),
            ev("register", "t-2"),
        ],
    )
    assert failed == {
        1: "register event whose 'device_token' is not valid UTF-8 text (a lone surrogate)",
        2: "subscribe event with bad 'topics': a topic is not valid UTF-8 text (a lone surrogate)",
    }
    assert ok[3]["status"] == "unknown"  # like a key holding NUL: no state to read
    assert ok[4]["status"] == "registered"
    again, _ = run(make_bolt(res, **options), [ev("page_view", "t-2")], start=10)
    assert again[10]["status"] == "registered"  # the batch's state was committed


def test_state_persists_across_batches_and_processes(backend):
    res, options = backend
    run(make_bolt(res, **options), [ev("subscribe", "a", topics=["x"]), ev("register", "b")])
    fresh = make_bolt(res, **options)  # a new process: nothing in memory
    ok, _ = run(fresh, [ev("click", "a"), ev("click", "b"), ev("click", "c")], start=10)
    assert [ok[i]["status"] for i in (10, 11, 12)] == ["subscribed", "registered", "unknown"]
    assert ok[10]["topics"] == ["x"]


def test_retried_and_replayed_batches_change_nothing(backend):
    res, options = backend
    bolt = make_bolt(res, **options)
    values = [
        ev("register", "a"),
        ev("subscribe", "a", topics=["x"]),
        ev("click", "a"),
        ev("unsubscribe", "a", "2024-05-01T10:01:00Z"),
    ]
    first = run(bolt, values)
    again = run(bolt, values)  # the engine retried, or the shard was re-read after a crash
    assert again == first
    later = run(bolt, [ev("click", "a")], start=50)
    assert later[0][50]["status"] == "unsubscribed"


def test_events_without_key_are_unknown_and_state_changes_without_key_fail(backend):
    res, options = backend
    bolt = make_bolt(res, **options)
    ok, failed = run(
        bolt,
        [
            {"event_type": "click"},
            {"event_type": "click", "device_token": None},
            {"event_type": "click", "device_token": ""},
            {"event_type": "subscribe", "timestamp": T0},
            {"event_type": "register", "device_token": {"nested": 1}, "timestamp": T0},
        ],
    )
    assert [ok[i]["status"] for i in (1, 2, 3)] == ["unknown"] * 3
    assert failed == {
        4: "subscribe event without a usable 'device_token'",
        5: "register event without a usable 'device_token'",
    }


def test_keys_longer_than_the_key_column_fail_state_changes_and_read_nothing(backend):
    res, options = backend
    bolt = make_bolt(res, **options)
    long_key = "k" * 513
    ok, failed = run(
        bolt, [ev("subscribe", long_key), ev("click", long_key), ev("subscribe", "k" * 512)]
    )
    assert failed == {1: "subscribe event whose 'device_token' is longer than 512 characters"}
    assert (ok[2]["status"], ok[3]["status"]) == ("unknown", "subscribed")


def test_every_event_of_an_unusable_key_is_treated_as_its_first(backend):
    """Keys are checked once per distinct key of a call: each repeat of a key no store can keep
    (too long, NUL, a lone surrogate) is refused or reads nothing like its first event, and a
    usable key's repeats — its text padded, an integer key and its text — share its state."""
    res, options = backend
    bolt = make_bolt(res, **options)
    values = []
    for bad in ("k" * 513, "a\x00b", "s\udc80"):
        values += [ev("click", bad), ev("subscribe", bad), ev("click", bad), ev("register", bad)]
    values += [ev("subscribe", 7, topics=["x"]), ev("click", "7"), ev("click", " 7 ")]
    ok, failed = run(bolt, values)
    assert sorted(failed) == [2, 4, 6, 8, 10, 12]
    assert [ok[i]["status"] for i in (1, 3, 5, 7, 9, 11)] == ["unknown"] * 6
    assert [(ok[i]["status"], ok[i]["topics"]) for i in (13, 14, 15)] == [("subscribed", ["x"])] * 3


def test_a_key_of_another_type_equal_to_a_usable_key_is_that_key(backend):
    """A key equal to a usable one but of another type — a subclass of ``str`` (a Python bolt's
    own text type, a ``StrEnum`` member), NumPy's ``int64`` — is the key its plain value is
    (as the window bolt's key fields take them): it was no key at all ("without a usable
    'device_token'", its reads the unknown state) while its plain text shared the state. A
    float, a NumPy float or ``bool_`` still give no key, as their plain values do."""
    import enum

    import numpy as np

    class Token(enum.StrEnum):
        A = "a"

    res, options = backend
    bolt = make_bolt(res, **options)
    values = [
        ev("register", Text(" a ")),
        ev("click", "a"),
        ev("subscribe", "a", "2024-05-01T10:01:00Z", topics=["x"]),
        ev("click", Token.A),
        ev("subscribe", np.int64(7), topics=["y"]),
        ev("click", 7),
        ev("click", Text("7")),
        ev("register", np.float64(7.0)),
        ev("click", np.bool_(True)),
    ]
    ok, failed = run(bolt, values)
    assert failed == {8: "register event without a usable 'device_token'"}
    assert [ok[i]["status"] for i in (1, 2, 3, 4)] == ["registered"] * 2 + ["subscribed"] * 2
    assert [(ok[i]["status"], ok[i]["topics"]) for i in (5, 6, 7)] == [("subscribed", ["y"])] * 3
    assert ok[9]["status"] == "unknown"
    # stored under the plain keys: a later batch's plain keys read them
    ok, _ = run(bolt, [ev("click", "a"), ev("click", "7")], start=20)
    assert [(ok[i]["status"], ok[i]["topics"]) for i in (20, 21)] == [
        ("subscribed", ["x"]),
        ("subscribed", ["y"]),
    ]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            {"timestamp": "soon"},
            "subscribe event with a bad 'timestamp': not an ISO-8601 time: 'soon'",
        ),
        ({"timestamp": None}, "subscribe event with a bad 'timestamp': not a time: None"),
        ({"timestamp": -5}, "subscribe event with a bad 'timestamp': not a time: -5"),
        ({"timestamp": "MISSING"}, "subscribe event with a bad 'timestamp': missing"),
        (
            {"topics": 7},
            "subscribe event with bad 'topics': topics must be a string or a list of strings",
        ),
    ],
)
def test_bad_state_changes_fail_and_change_no_state(tmp_path, bad, reason):
    res = resources(state=f"sqlite:///{tmp_path / 's.db'}")
    bolt = make_bolt(res)
    value = {**ev("subscribe", "a", topics=["x"]), **bad}
    if value.get("timestamp") == "MISSING":
        del value["timestamp"]
    ok, failed = run(
        bolt, [value, ev("click", "a"), ev("click", "a", timestamp="not a time either")]
    )
    assert failed == {1: reason}
    assert (
        ok[2]["status"] == ok[3]["status"] == "unknown"
    )  # a bad time matters only where it is used


def test_custom_fields_action_mapping_and_arrival_time(tmp_path):
    res = resources(state=f"sqlite:///{tmp_path / 's.db'}")
    bolt = make_bolt(
        res,
        key="user.id",
        type_field="kind",
        topics_field="push.channels",
        time_field=None,
        target="push",
        actions={"install": "register", "opt_in": "subscribe", "opt_out": "unsubscribe"},
        table="push_state",
    )
    arrival = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    batch = [
        make_event({"kind": "install", "user": {"id": 42}}, 1, arrival=arrival),
        make_event(
            {"kind": "opt_in", "user": {"id": 42}, "push": {"channels": ["promo"]}},
            2,
            arrival=arrival,
        ),
        make_event({"kind": "subscribe", "user": {"id": 42}}, 3),
    ]  # not mapped: reads only
    out = bolt.process(batch)
    bolt.commit_state(lambda event: True)
    bolt.state_committed()
    blocks = [e.value["push"] for e in out.streams["default"]]
    assert blocks[0]["registered_at"] == "2024-06-01T08:30:00.000Z"
    assert blocks[1]["topics"] == blocks[2]["topics"] == ["promo"]
    with sa.create_engine(f"sqlite:///{tmp_path / 's.db'}").connect() as conn:
        assert conn.execute(sa.text("select key, status from push_state")).all() == [
            ("42", "subscribed")
        ]


def test_one_store_round_trip_per_batch(tmp_path, monkeypatch):
    res = resources(state=f"sqlite:///{tmp_path / 's.db'}")
    bolt = make_bolt(res)
    calls = []
    for name in ("load", "save"):
        real = getattr(bolt.store, name)
        monkeypatch.setattr(
            bolt.store, name, lambda *a, _n=name, _r=real: calls.append((_n, len(a[0]))) or _r(*a)
        )
    run(bolt, [ev("subscribe", f"k{i % 7}", topics=[f"t{i}"]) for i in range(100)])
    assert calls == [("load", 7), ("save", 7)]
    calls.clear()
    run(bolt, [ev("click", "k1")], start=200)
    assert calls == [
        ("load", 1),
        ("save", 0),
    ]  # nothing changed: save gets nothing to write (it returns at once)


# -- dependency failures: TransientError, and no event changed ----------------------------------


def assert_transient_and_untouched(bolt, values):
    batch = make_batch(values)
    before = copy.deepcopy([e.value for e in batch])
    with pytest.raises(TransientError):
        bolt.process(batch)
    assert [e.value for e in batch] == before
    assert all(e.failure is None for e in batch)


def test_redis_store_down(tmp_path):
    bolt = make_bolt(resources(state=f"redis://127.0.0.1:{free_port()}/0"))
    assert_transient_and_untouched(bolt, [ev("register", "a"), ev("click", "a")])


def test_redis_cache_down_in_front_of_sql(tmp_path):
    res = resources(
        state=f"sqlite:///{tmp_path / 's.db'}", cache=f"redis://127.0.0.1:{free_port()}/0"
    )
    bolt = make_bolt(res, cache="cache")
    assert_transient_and_untouched(bolt, [ev("subscribe", "a"), ev("click", "a")])


def test_postgresql_down():
    bolt = make_bolt(
        resources(state=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/test")
    )
    assert_transient_and_untouched(bolt, [ev("subscribe", "a")])


def test_store_write_failure_in_the_commit_is_transient_and_the_batch_again_sees_the_same_state(
    tmp_path,
):
    import sqlite3

    path = tmp_path / "s.db"
    res = resources(state=f"sqlite:///{path}")
    res.configs["state"] = res.configs["state"].model_copy(update={"connect_timeout": 0.1})
    bolt = make_bolt(res)
    run(bolt, [ev("register", "a")], start=1)
    values = [ev("subscribe", "a", "2024-05-01T11:00:00Z", topics=["x"]), ev("click", "a")]
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        out = bolt.process(make_batch(values, 10))  # reading works; nothing is written here
        first = [e.value["subscription"] for e in out.streams["default"]]
        with pytest.raises(TransientError, match="database is locked"):
            bolt.commit_state(lambda event: True)
        bolt.discard_state()  # the engine: the batch is not committed
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    ok, failed = run(bolt, values, start=10)  # the batch delivered again
    assert failed == {}
    assert [ok[10], ok[11]] == first
    assert ok[10]["status"] == ok[11]["status"] == "subscribed"


def test_redis_write_lost_after_sql_commit_is_repaired_by_the_retry(
    tmp_path, redis_url, redis_prefix
):
    """SQL committed the batch, the write to Redis did not happen: Redis holds the older state."""
    sql_url = f"sqlite:///{tmp_path / 's.db'}"
    cached = make_bolt(
        resources(state=sql_url, cache=redis_url), cache="cache", key_prefix=redis_prefix
    )
    run(cached, [ev("register", "a")], start=1)  # Redis and SQL: registered
    batch = [ev("subscribe", "a", "2024-05-01T11:00:00Z", topics=["x"]), ev("click", "a")]
    sql_only = make_bolt(resources(state=sql_url))
    first = run(sql_only, batch, start=10)  # what the first attempt computed and committed to SQL
    retry = run(cached, batch, start=10)  # the engine's retry sees the stale Redis entry
    assert retry == first
    client = redis.Redis.from_url(redis_url)
    assert client.hget(f"{redis_prefix}cache:a", "version") is None  # the stale entry is gone …
    client.close()
    later = run(cached, [ev("click", "a")], start=20)
    assert later[0][20]["status"] == "subscribed"  # … so the next read sees SQL's state


# -- replays through a real store (property) ----------------------------------------------------

TIMES = [f"2024-05-01T10:00:{s:02d}Z" for s in range(0, 20)]


@st.composite
def deliveries(draw):
    """Events of a few keys in stream order, and a delivery: prefixes replayed, in batches of any size."""
    n = draw(st.integers(1, 25))
    events = []
    for seq in range(1, n + 1):
        kind = draw(st.sampled_from(["register", "subscribe", "unsubscribe", "click"]))
        value = ev(kind, draw(st.sampled_from(["a", "b", "c"])), draw(st.sampled_from(TIMES)))
        topics = draw(st.lists(st.sampled_from(["n", "s", "w"]), max_size=2))
        if topics:
            value["topics"] = topics
        events.append((seq, value))
    replays = draw(st.lists(st.integers(0, n), max_size=3))
    delivered = [e for k in replays for e in events[:k]] + events
    cuts = sorted(
        draw(st.lists(st.integers(1, max(1, len(delivered) - 1)), max_size=5, unique=True))
    )
    batches = [
        delivered[i:j]
        for i, j in zip([0, *cuts], [*cuts, len(delivered)], strict=True)
        if delivered[i:j]
    ]
    return events, batches


def expected_states(events):
    """The pure model, applying every event once in stream order: each key's final state, and
    the state each event should see."""
    states, as_of = {}, {}
    for seq, value in events:
        key = value["device_token"]
        if value["event_type"] != "click":
            event = make_event(value, seq)
            t = parse_time(value["timestamp"])
            update = Update(
                Action(value["event_type"]),
                t,
                version(t, str(seq), 0, event.event_id),
                event.event_id,
                tuple(sorted(set(value["topics"]))) if value.get("topics") else None,
                (lineage(event.meta), seq, 0),
            )
            states[key] = apply(states.get(key, UNKNOWN_STATE), update)
        as_of[seq] = states.get(key, UNKNOWN_STATE).block()
    return states, as_of


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgresql+redis-cache"])
def test_replayed_deliveries_through_a_real_store_end_in_the_state_of_one_delivery(
    kind, request, tmp_path
):
    urls, base = {}, {}
    if kind == "sqlite":
        urls["state"] = f"sqlite:///{tmp_path / 'state.db'}"
    elif kind == "redis":
        urls["state"] = request.getfixturevalue("redis_url")
        base["key_prefix"] = request.getfixturevalue("redis_prefix")
    else:
        urls["state"] = request.getfixturevalue("pg_url_psycopg2")
        urls["cache"] = request.getfixturevalue("redis_url")
        base.update(
            table=request.getfixturevalue("pg_table"),
            cache="cache",
            key_prefix=request.getfixturevalue("redis_prefix"),
        )
    res = resources(**urls)

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(deliveries())
    def check(case):
        events, batches = case
        run_id = uuid.uuid4().hex[:8]  # fresh keys for each example, same store
        bolt = make_bolt(res, history=len(events), **base)
        seen = {}
        for batch in batches:
            values = [{**v, "device_token": f"{run_id}-{v['device_token']}"} for _, v in batch]
            out = bolt.process(
                [make_event(v, seq) for (seq, _), v in zip(batch, values, strict=True)]
            )
            bolt.commit_state(lambda event: True)
            bolt.state_committed()
            assert not out.streams.get("error")
            for e in out.streams["default"]:
                seen.setdefault(e.origin, []).append(e.value["subscription"])
        # Every delivery of an event was enriched with the state as of that event.
        expected, as_of = expected_states(events)
        assert {seq: blocks for seq, blocks in seen.items()} == {
            seq: [as_of[seq]] * len(seen[seq]) for seq in seen
        }
        stored = bolt.store.load([f"{run_id}-{k}" for k in expected])
        assert {k.split("-", 1)[1]: s for k, s in stored.items()} == expected
        # The event delivered last for a key saw the final state of that key.
        final = make_bolt(res, **base)
        ok, _ = run(
            final,
            [{"event_type": "click", "device_token": f"{run_id}-{k}"} for k in expected],
            10_000,
        )
        assert [b for b in ok.values()] == [expected[k].block() for k in expected]

    check()


@st.composite
def shuffled_deliveries(draw):
    """Updates of a few keys, delivered in any order (a re-drive, a lagging clock, another
    shard), some again, in batches of any size."""
    events = [(seq, v) for seq, v in draw(deliveries())[0] if v["event_type"] != "click"] or [
        (1, ev("register", "a"))
    ]
    order = draw(st.permutations(events))
    for i in draw(st.lists(st.integers(0, len(order) - 1), max_size=3)):
        order.insert(draw(st.integers(i + 1, len(order))), order[i])
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(order) - 1)), max_size=5, unique=True)))
    bounds = [0, *cuts, len(order)]
    return order, [order[i:j] for i, j in zip(bounds, bounds[1:], strict=False) if j > i]


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgresql", "postgresql+redis-cache"])
def test_updates_in_any_order_and_batches_store_the_pure_states(kind, request, tmp_path):
    """The late-update merge (``state._merged``: composed versions, the stores' version guards
    and their checks of the version each change was computed from) through each real store:
    updates delivered in any order, some again, in any batches, store the states the pure
    function gives for that order, and the same states whatever the batches."""
    urls, base = {}, {}
    if kind == "sqlite":
        urls["state"] = f"sqlite:///{tmp_path / 'state.db'}"
    elif kind == "redis":
        urls["state"] = request.getfixturevalue("redis_url")
        base["key_prefix"] = request.getfixturevalue("redis_prefix")
    else:
        urls["state"] = request.getfixturevalue("pg_url_psycopg2")
        base["table"] = request.getfixturevalue("pg_table")
        if kind.endswith("cache"):
            urls["cache"] = request.getfixturevalue("redis_url")
            base.update(cache="cache", key_prefix=request.getfixturevalue("redis_prefix"))
    res = resources(**urls)

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(shuffled_deliveries())
    def check(case):
        order, batches = case
        run_id = uuid.uuid4().hex[:8]
        bolt = make_bolt(res, history=4, **base)
        for batch in batches:
            values = [{**v, "device_token": f"{run_id}-{v['device_token']}"} for _, v in batch]
            out = bolt.process(
                [make_event(v, seq) for (seq, _), v in zip(batch, values, strict=True)]
            )
            bolt.commit_state(lambda event: True)
            bolt.state_committed()
            assert not out.streams.get("error")
        expected = {}
        for seq, value in order:
            key = value["device_token"]
            event = make_event(value, seq)
            t = parse_time(value["timestamp"])
            update = Update(
                Action(value["event_type"]),
                t,
                version(t, str(seq), 0, event.event_id),
                event.event_id,
                tuple(sorted(set(value["topics"]))) if value.get("topics") else None,
                (lineage(event.meta), seq, 0),
            )
            expected[key] = apply(expected.get(key, UNKNOWN_STATE), update)
        stored = bolt.store.load([f"{run_id}-{k}" for k in expected])
        assert {k.split("-", 1)[1]: s for k, s in stored.items()} == expected

    check()


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("urls", "options", "message"),
    [
        (
            {"state": "redis://127.0.0.1:6379/0", "cache": "redis://127.0.0.1:6379/0"},
            {"cache": "cache"},
            "`cache` needs a SQL `store`",
        ),
        (
            {"state": "sqlite:///x.db", "cache": "sqlite:///y.db"},
            {"cache": "cache"},
            "is not Redis",
        ),
        ({"other": "sqlite:///x.db"}, {}, "no resource named 'state'"),
    ],
)
def test_store_configuration_errors(tmp_path, urls, options, message):
    urls = {k: v.replace("sqlite:///", f"sqlite:///{tmp_path}/") for k, v in urls.items()}
    with pytest.raises(TopologyError, match=message):
        make_bolt(resources(**urls), **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "store\n  Field required"),
        (
            {"store": "s", "actions": {"x": "delete"}},
            "Input should be 'register', 'subscribe' or 'unsubscribe'",
        ),
        ({"store": "s", "actions": {}}, "map at least one event type"),
        ({"store": "s", "cache": "s"}, "different resource"),
        ({"store": "s", "cache_ttl": 0}, "greater than or equal to 1"),
        ({"store": "s", "key": ""}, "not a dotted path"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        SubscriptionBolt.Config(id="subs", type="subscription", **options)


def test_redis_keys_use_the_configured_prefix(redis_url, redis_prefix):
    bolt = make_bolt(resources(state=redis_url), key_prefix=redis_prefix)
    run(bolt, [ev("register", "tok-1")])
    client = redis.Redis.from_url(redis_url)
    assert client.hget(f"{redis_prefix}tok-1", "status") == b"registered"
    assert client.ttl(f"{redis_prefix}tok-1") == -1  # Redis as the store: no expiry
    client.close()


def test_read_only_batches_fill_the_cache_so_sql_is_read_once(tmp_path, redis_url, redis_prefix):
    res = resources(state=f"sqlite:///{tmp_path / 'state.db'}", cache=redis_url)
    bolt = make_bolt(res, cache="cache", key_prefix=redis_prefix)
    run(bolt, [ev("register", "known")])
    sql_loads: list[list[str]] = []
    real = bolt.store.store.load
    bolt.store.store.load = lambda keys: sql_loads.append(list(keys)) or real(keys)
    for i in range(3):  # read-only events: one unknown key, one known but evicted from Redis
        if i == 0:
            assert redis.Redis.from_url(redis_url).delete(redis_prefix + "cache:known") == 1
        ok, failed = run(
            bolt, [ev("app_open", "nobody"), ev("app_open", "known")], start=10 + 2 * i
        )
        assert not failed and sorted(v["status"] for v in ok.values()) == ["registered", "unknown"]
    assert sql_loads == [["nobody", "known"]]  # after the first batch both come from Redis


def test_events_seeing_one_state_each_get_their_own_block_and_topics_list(tmp_path):
    """Events that see the same state (read-only, after an update in the batch, keyless) are
    enriched per group from one rendered block: changing one event's block or topics changes no
    other event's."""
    bolt = make_bolt(resources(state=f"sqlite:///{tmp_path / 'state.db'}"))
    run(bolt, [ev("subscribe", "a", topics=["news", "sport"])])
    ok, failed = run(
        bolt,
        [
            ev("app_open", "a"),  # read-only key: one group seeing the stored state
            ev("app_open", "a"),
            ev("subscribe", "b", topics=["tech"]),  # updated key: one state per event
            ev("app_open", "b"),
            ev("app_open", "b"),
            {"event_type": "app_open"},  # keyless: the unknown state
            {"event_type": "app_open", "device_token": " "},
        ],
        start=10,
    )
    assert not failed
    groups = [(10, 11), (13, 14), (15, 16)]
    for first, second in groups:
        assert ok[first] == ok[second]
        ok[first]["topics"].append("changed")
        ok[first]["status"] = "changed"
        assert "changed" not in ok[second]["topics"]
        assert ok[second]["status"] != "changed"
    assert ok[11]["topics"] == ["news", "sport"] and ok[11]["status"] == "subscribed"
    assert ok[14]["topics"] == ["tech"] and ok[12]["topics"] == ["tech"]
    assert ok[16] == UNKNOWN_STATE.block()
    for first, second in groups:  # and the other way (the first event's block is the rendered one)
        ok[second]["topics"].append("other")
        assert "other" not in ok[first]["topics"]


def test_records_of_two_producer_requests_do_not_compare_positions(tmp_path):
    """The Lambda producer numbers each request's records from 1 (shard "api"): record 1 of a
    later request is not a re-delivery from before record 2 of an earlier one — its source (the
    request id) makes another lineage, so it sees the latest state."""
    from squall.event import Event, RecordMeta, derive_event_id

    bolt = make_bolt(resources(state=f"sqlite:///{tmp_path / 'state.db'}"))

    def request(rid: str, values: list[dict]) -> list[dict]:
        batch = []
        for i, v in enumerate(values):
            meta = RecordMeta(f"api:{rid}", "api", str(i + 1), 0, rid, None, source=rid)
            batch.append(Event(b"", meta, derive_event_id(meta), i, v))
        out = bolt.process(batch)
        bolt.commit_state(lambda event: True)
        bolt.state_committed()
        return [e.value["subscription"]["status"] for e in out.streams["default"]]

    assert request("r1", [ev("register", "K"), ev("subscribe", "K", "2024-05-01T10:01:00Z")]) == [
        "registered",
        "subscribed",
    ]
    assert request("r2", [ev("page_view", "K", "2024-05-01T10:02:00Z")]) == ["subscribed"]


def test_the_bolts_inline_positions_are_position_of_the_lineage():
    from squall.enrichment.positions import position, positions_of
    from squall.enrichment.state import position_of
    from squall.event import Event, RecordMeta, lineage

    metas = (
        RecordMeta("s", "shardId-000000000001", "4959033827149025660855969253836157109592", 3),
        RecordMeta("s", "file", "17", 0, "", None, None, "f" * 32, None, "a" * 32),
        RecordMeta("api:r1", "api", "2", 0, "r1", None, source="r1"),
        RecordMeta("q", "msg-x", "not-a-number", 0),
        RecordMeta("s", "shardId-000000000001", "49590338", 0, replay=1),
        RecordMeta("s", "file", "17", 0, "", None, None, "f" * 32, None, "a" * 32, 2),
    )
    # A re-driven record (``replay`` > 0) is where it was first read: its original lineage.
    want = [
        position_of(lineage(m._replace(replay=0)), m.sequence_number, m.sub_sequence_number)
        for m in metas
    ]
    events = [Event(b"", meta, "id", 0, {}) for meta in metas]
    assert [position(e) for e in events] == want
    # A batch's positions at once: the first one too when the batch is of one lineage, in order.
    assert positions_of(events) == (want, None)
    for meta, p in zip(metas, want, strict=True):
        one = [Event(b"", meta._replace(sub_sequence_number=n), "id", 0, {}) for n in (1, 1, 2)]
        got = [position(e) for e in one]
        assert positions_of(one) == (got, None if p is None or meta.replay else got[0])
        assert positions_of(one[::-1])[1] is None  # not in order
    s = metas[1]
    assert (
        positions_of([Event(b"", s, "i", 0), Event(b"", s._replace(source="b" * 32), "j", 1)])[1]
        is None
    )  # two inputs
    # One lineage, numbers tested at once: an empty or a non-digit number among digits, another
    # stream, shard or replay count in the batch — each event's own position, no first.
    k = metas[0]
    for other in (
        k._replace(sequence_number=""),
        k._replace(sequence_number="12a"),
        k._replace(sequence_number="١٢"),  # Arabic-Indic digits: isdigit, and int() reads them
        k._replace(stream="t"),
        k._replace(shard_id="shardId-000000000002"),
        k._replace(source="b" * 32),
        k._replace(replay=1),
    ):
        batch = [Event(b"", m, "id", 0, {}) for m in (k, other, k._replace(sub_sequence_number=4))]
        want = [position(e) for e in batch]
        assert positions_of(batch) == (want, None)
    batch = [Event(b"", k._replace(sequence_number=str(n)), "id", 0, {}) for n in (9, 10, 10)]
    assert positions_of(batch) == ([position(e) for e in batch], position(batch[0]))
    # Computed when indexed (``lazy``): the same positions and first, whatever the numbers.
    for numbers, subs in [
        (("998", "999", "1000"), (0, 0, 0)),  # lengths differ: compared as numbers
        (("0998", "0999", "1000"), (0, 0, 0)),  # one length: compared as text
        (("17", "17", "18"), (1, 2, 0)),  # a number twice, its sub-sequences in order
        (("17", "17"), (2, 1)),
        (("18", "17"), (0, 0)),
        (("١٧", "١٨"), (0, 0)),  # not ASCII
        (("5",), (3,)),
    ]:
        for meta in (k, metas[1]):
            batch = [
                Event(b"", meta._replace(sequence_number=n, sub_sequence_number=s), "id", 0, {})
                for n, s in zip(numbers, subs, strict=True)
            ]
            got, first = positions_of(batch, lazy=True)
            want, want_first = positions_of(batch)
            assert [got[i] for i in range(len(batch))] == want == [position(e) for e in batch]
            assert first == want_first


def test_a_sequence_number_of_digits_int_cannot_read_has_no_position(tmp_path):
    """A sequence number of Unicode digits that are not decimal ("²", "①": ``str.isdigit`` takes
    them, ``int`` does not) — a custom spout's, or a dead letter's edited for ``squall replay`` —
    raised ValueError out of ``process`` for the whole batch (``position`` and the batch's
    positions read it with ``int``). Like any non-numeric number it has no position: its event is
    enriched and its update applied (its version ordered by time and event id)."""
    from squall.enrichment.state import position_of
    from squall.event import Event, RecordMeta, derive_event_id

    assert position_of("s", "²", 0) is None and position_of("s", "١٧", 0) == ("s", 17, 0)
    bolt = make_bolt(resources(state=f"sqlite:///{tmp_path / 'state.db'}"))
    for replay, numbers in [(0, ["1", "2²", "3"]), (1, ["①"]), (0, ["²", "²"])]:
        batch = []
        for i, n in enumerate(numbers):
            meta = RecordMeta("s", "shardId-000000000000", n, 0, "pk", replay=replay)
            batch.append(
                Event(b"", meta, derive_event_id(meta), i, ev("subscribe", "k", topics=[n]))
            )
        out = bolt.process(batch)
        bolt.commit_state(lambda event: True)
        bolt.state_committed()
        assert not out.streams.get("error")
        assert [e.value["subscription"]["status"] for e in out.streams["default"]] == [
            "subscribed"
        ] * len(numbers)


K0 = "shardId-000000000000"
_NUMBERS = st.one_of(
    st.integers(0, 10**4).map(str),  # lengths that differ: 9 and 10, 99 and 100
    st.integers(0, 10**4).map(lambda n: str(n).zfill(5)),  # leading zeros
    st.integers(10**55, 10**55 + 50).map(str),  # Kinesis' 56 digits, and past them:
    st.integers(10**56 - 20, 10**56 + 20).map(str),
    st.sampled_from(["", "x-1", "١٧", "007", "²", "12①"]),  # (digits int() cannot read)
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            _NUMBERS,
            st.integers(0, 3),  # KPL sub-sequence numbers
            st.sampled_from(["shardId-000000000000"] * 5 + ["shardId-000000000001"]),
            st.sampled_from([None] * 5 + ["f" * 32]),  # a Kinesis shard, another input's lines
            st.sampled_from([0] * 9 + [1]),  # a record re-driven by ``squall replay``
        ),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
)
@example([("10", 0, K0, None, 0), ("9", 0, K0, None, 0)], False)  # in order as text only
@example([("99", 0, K0, None, 0), ("100", 0, K0, None, 0)], False)  # in order as numbers only
@example([("07", 1, K0, None, 0), ("07", 0, K0, None, 0)], False)  # a KPL aggregate, reversed
def test_lazy_positions_are_the_eager_ones_on_any_batch(rows, sort):
    """``positions_of(lazy=True)`` (the numbers compared as text, each position made when
    indexed) gives every event's ``position`` and the batch's first one exactly when the batch
    is of one lineage and in order — on numbers of several lengths, leading zeros, Kinesis'
    lengths, a number repeated (a re-sent record, a KPL aggregate's records), two shards or
    inputs interleaved, replays, numbers out of order."""
    from squall.enrichment.positions import position, positions_of
    from squall.event import Event, RecordMeta

    if sort:  # mostly in order, as a spout delivers
        rows = sorted(rows, key=lambda r: (r[0].isdecimal() and int(r[0]), r[1]))
    batch = [
        Event(b"", RecordMeta("s", shard, n, sub, source=src, replay=rp), "id", i, {})
        for i, (n, sub, shard, src, rp) in enumerate(rows)
    ]
    want = [position(e) for e in batch]
    # (re-driven records have their original lineage's positions, but no first: ``play`` then
    # compares each event's)
    one = (
        None not in want
        and len({p[0] for p in want}) == 1
        and not any(e.meta.replay for e in batch)
    )
    in_order = one and all(a <= b for a, b in zip(want, want[1:], strict=False))
    for lazy in (True, False):
        got, first = positions_of(batch, lazy=lazy)
        assert len(got) == len(batch)
        assert [got[i] for i in range(len(batch))] == want
        assert first == (want[0] if in_order else None)


def test_a_caches_entries_are_apart_from_a_redis_stores_hashes(tmp_path, redis_url, redis_prefix):
    """Moving `store` from Redis to SQL with a Redis `cache` (same `key_prefix`): the cache read the
    Redis store's hashes as cached states and set its TTL on them — the states then expired,
    existing nowhere else, and SQL got no row for their keys (found by the walkthrough review)."""
    on_redis = make_bolt(resources(state=redis_url), key_prefix=redis_prefix)
    run(on_redis, [ev("register", "moved")])  # a Redis store's hash: no expiry
    sql_url = f"sqlite:///{tmp_path / 's.db'}"
    cached = make_bolt(
        resources(state=sql_url, cache=redis_url), cache="cache", key_prefix=redis_prefix
    )
    run(cached, [ev("subscribe", "moved", "2024-05-01T11:00:00Z")], start=10)
    client = redis.Redis.from_url(redis_url)
    assert client.ttl(f"{redis_prefix}moved") == -1  # the store's hash keeps no expiry
    assert client.ttl(f"{redis_prefix}cache:moved") > 0  # the cache's entry has one
    client.close()
    with sa.create_engine(sql_url).connect() as conn:
        rows = conn.execute(sa.text("select key, status from squall_subscriptions")).all()
    assert rows == [("moved", "subscribed")]  # SQL holds the state


def test_an_event_id_holding_the_version_separator_is_refused(tmp_path):
    """A state's version is ``compose``d with U+001F separators, and read back by
    ``split_version`` from its end. An event id (a decode bolt's ``event_id_field``: a client's
    text) holding U+001F made a plain version that read as composed: a subscribe whose id ended
    ``\\x1f\\x1f`` + 15 dashes + ``\\x1f00000`` was read as a state no subscribe or unsubscribe
    had set, so an older unsubscribe (a dead letter re-driven) turned the device's newer
    subscribe off. Such an update is refused, located, and changes no state."""
    from squall.event import Event

    bolt = make_bolt(resources(state=f"sqlite:///{tmp_path / 'state.db'}"))
    evil = "x\x1f\x1f" + "-" * 15 + "\x1f00000"
    (subscribe,) = make_batch([ev("subscribe", "K", "2024-05-01T10:02:00Z")])
    subscribe = Event(b"", subscribe.meta, evil, 1, subscribe.value)
    out = bolt.process([subscribe])
    bolt.commit_state(lambda event: True)
    bolt.state_committed()
    assert [e.failure.reason for e in out.streams["error"]] == [
        "subscribe event whose event id contains a U+001F character (it would be read as the "
        "separator of the state's version)"
    ]
    ok, failed = run(bolt, [ev("click", "K")], start=2)
    assert (ok[2]["status"], failed) == ("unknown", {})


def test_a_topology_without_a_decode_bolt_says_so_in_each_dead_letter(tmp_path):
    """Found wiring push notifications from docs/sinks.md's `unsubscribe` snippet (a
    `subscription` bolt, no `json` bolt before it): every line of a JSON-lines file, each a JSON
    object, was dead-lettered as "payload is not a JSON object"."""
    import json

    from squall.testing import records_from, run_topology

    run_topology(
        f"""
name: undecoded
resources: {{state: {{url: "sqlite:///{tmp_path / "state.db"}"}}}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts: [{{id: subscription, type: subscription, store: state}}]
sinks:
  - {{id: out, type: 'squall.testing:MemorySink'}}
  - {{id: dl, type: dead_letter, path: "{tmp_path / "dl.jsonl"}"}}
""",
        records_from([{"event_type": "register", "device_token": "t1"}]),
    )
    [line] = (tmp_path / "dl.jsonl").read_text().splitlines()
    assert json.loads(line)["reason"] == (
        "payload is not a JSON object (it is none: is there a `json` bolt before this one to "
        "decode the record?)"
    )
