"""Integers beyond 64 bits: decoded exactly by the json bolt and the lookup sources, written
exactly by ``squall.exact_json.dumps``; never a silently rounded float, never a failed batch."""

from __future__ import annotations

import gzip
import json

import orjson
import pytest
import redis
import sqlalchemy as sa

from squall import exact_json
from squall.deploy.produce import _key_of
from squall.topology.outcomes import Outcome
from tests.bolts.test_builtin_bolts import run
from tests.bolts.test_lookup import Endpoint, make_bolt
from tests.bolts.test_lookup import run as lookup
from tests.enrichment.support import resources

BIG = 123456789012345678901234567890
HUGE = 7 * 10**399  # 400 digits: orjson cannot read it at all ("number is infinity")


def test_orjson_rounds_or_refuses_what_exact_json_keeps():
    """Why this exists, and the two orjson messages exact_json relies on."""
    assert orjson.loads(b"18446744073709551616") == 1.8446744073709552e19
    assert isinstance(orjson.loads(b"-9223372036854775809"), float)
    with pytest.raises(orjson.JSONDecodeError) as err:
        orjson.loads(str(HUGE).encode())
    assert exact_json.recoverable(err.value)
    with pytest.raises(orjson.JSONEncodeError, match="64-bit"):
        orjson.dumps(2**64)


def test_json_bolt_keeps_integers_beyond_64_bits_exactly():
    payloads = [
        b'{"id": 123456789012345678901234567890}',
        b'{"n": -9223372036854775809, "m": 18446744073709551616}',
        b'{"lo": -9223372036854775808, "hi": 18446744073709551615}',  # the bounds: orjson's ints
        b'{"n": [1, {"deep": -99999999999999999999}], "f": 1.5}',
        gzip.compress(b'{"gz": 18446744073709551616}'),
        b'{"huge": ' + str(HUGE).encode() + b"}",
        b'{"s": "123456789012345678901234567890", "f": 3.14159265358979323846264}',
    ]
    outcomes, stores = run("  - {id: decode, type: json}", payloads)
    assert [o.outcome for o in outcomes] == [Outcome.COMMITTED] * len(payloads)
    values = [ev.value for ev in stores["out"]]
    assert values == [
        {"id": BIG},
        {"n": -(2**63) - 1, "m": 2**64},
        {"lo": -(2**63), "hi": 2**64 - 1},
        {"n": [1, {"deep": -99999999999999999999}], "f": 1.5},
        {"gz": 2**64},
        {"huge": HUGE},
        {"s": "123456789012345678901234567890", "f": 3.141592653589793},
    ]
    assert type(values[0]["id"]) is int and type(values[5]["huge"]) is int


def test_what_cannot_be_decoded_exactly_is_the_records_dead_letter_with_the_reason():
    payloads = [
        b'{"n": 1' + b"0" * 5000 + b"}",  # over Python's 4,300 digits
        b'{"n": ' + str(HUGE).encode() + b', "x": 1e999}',  # not JSON orjson reads elsewhere
        b'{"n": ' + str(HUGE).encode() + b', "s": "\\ud800"}',
        b'{"ok": 18446744073709551616}',
    ]
    outcomes, stores = run("  - {id: decode, type: json}", payloads)
    assert [o.outcome for o in outcomes] == [Outcome.DEAD_LETTERED] * 3 + [Outcome.COMMITTED]
    reasons = [ev.failure.reason for ev in stores["dlq"]]
    assert reasons[0] == (
        "an integer beyond 64 bits cannot be decoded exactly: "
        "an integer of 5001 digits is over the 4300 digits Python reads"
    )
    assert reasons[1].startswith("invalid JSON: number is infinity")
    assert reasons[2].startswith("invalid JSON: no low surrogate")
    assert stores["out"][0].value == {"ok": 2**64}


def test_the_depth_limit_still_counts_both_kinds_of_bracket():
    """The bracket count now comes from the digit map's pass: '{' and '[' both count."""
    mixed = b'{"a":[' * 40 + b"1" + b"]}" * 40  # 80 levels, 40 of each
    outcomes, stores = run("  - {id: decode, type: json}", [mixed])
    assert outcomes[0].outcome == Outcome.DEAD_LETTERED
    assert stores["dlq"][0].failure.reason == "payload nested 80 levels deep, over max_depth (64)"


def test_exact_loads_decodes_again_only_an_integer_literal_out_of_range(monkeypatch):
    calls = []
    real = exact_json.exact
    monkeypatch.setattr(exact_json, "exact", lambda *a, **k: calls.append(a) or real(*a, **k))
    ordinary = [
        b'{"id": 1234567890123456789}',  # 19 digits, in range
        b'{"s": "12345678901234567890123"}',  # digits in a string
        b'{"f": 1.00000000000000000000001, "e": 1e0000000000000000000002}',  # float literals
        b'{"neg": -9223372036854775808}',
    ]
    assert [exact_json.loads(d) for d in ordinary] == [orjson.loads(d) for d in ordinary]
    assert calls == []
    assert exact_json.loads(b"[-9223372036854775809]") == [-(2**63) - 1] and len(calls) == 1
    assert exact_json.loads(str(HUGE)) == HUGE


def test_exact_dumps_writes_the_digits_and_everything_else_as_orjson_does():
    doc = {"b": 2**64, "a": [-(2**63) - 1, 1.5, float("nan"), True], "s": "é"}
    text = exact_json.dumps(doc, option=orjson.OPT_SORT_KEYS)
    assert (
        text
        == b'{"a":[-9223372036854775809,1.5,null,true],"b":18446744073709551616,"s":"\xc3\xa9"}'
    )
    assert json.loads(text) == {**doc, "a": [-(2**63) - 1, 1.5, None, True]}
    assert exact_json.dumps({"n": 1}) == orjson.dumps({"n": 1})
    with pytest.raises(orjson.JSONEncodeError, match="Dict key must be str"):
        exact_json.dumps({1: 2})  # other refusals stay orjson's
    with pytest.raises(orjson.JSONEncodeError, match="4300"):
        exact_json.dumps({"n": 10**5000})


def test_produce_partition_key_from_an_integer_beyond_64_bits_keeps_its_digits():
    assert _key_of(b'{"user": {"id": 123456789012345678901234567890}}', "user.id") == str(BIG)
    assert _key_of(b'{"id": ' + str(HUGE).encode() + b"}", "id") == str(HUGE)


# -- lookup sources and the shared cache ---------------------------------------------------------


def test_http_lookup_records_keep_integers_beyond_64_bits():
    record = {"id": 2**70, "n": -(2**63) - 1}
    with Endpoint({"1": record}) as ep:
        per_key = make_bolt(
            resources(), key="app_id", source={"type": "http", "url": ep.url + "/apps/{key}"}
        )
        batch = make_bolt(
            resources(),
            key="app_id",
            source={
                "type": "http",
                "url": ep.url + "/apps/{key}",
                "batch_url": ep.url + "/apps:batch",
            },
        )
        for bolt in (per_key, batch):
            found, failed, _ = lookup(bolt, [{"app_id": 1}])
            assert failed == {} and found == {0: record}
            bolt.close()
        assert [method for method, _ in ep.requests] == ["GET", "POST"]


def test_redis_json_source_and_the_shared_cache_keep_integers_beyond_64_bits(
    pg_url_psycopg2, unique_name, redis_url, redis_prefix
):
    client = redis.Redis.from_url(redis_url)
    client.set(f"{redis_prefix}j:1", b'{"id": 123456789012345678901234567890}')
    engine = sa.create_engine(pg_url_psycopg2)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{unique_name}" (app_id integer, big numeric(40, 0))')
        conn.exec_driver_sql(f'INSERT INTO "{unique_name}" VALUES (1, {BIG})')
    try:
        source = make_bolt(
            resources(r=redis_url),
            key="app_id",
            source={
                "type": "redis",
                "resource": "r",
                "data": "json",
                "key_prefix": f"{redis_prefix}j:",
            },
        )
        assert lookup(source, [{"app_id": 1}])[:2] == ({0: {"id": BIG}}, {})
        options = dict(
            key="app_id",
            source={"type": "sql", "resource": "db", "table": unique_name, "columns": ["big"]},
            shared_cache={"resource": "cache", "key_prefix": f"{redis_prefix}c:"},
        )
        first = make_bolt(resources(db=pg_url_psycopg2, cache=redis_url), **options)
        assert lookup(first, [{"app_id": 1}])[:2] == ({0: {"big": BIG}}, {})
        assert client.get(f"{redis_prefix}c:1") == b'[{"big":%d}]' % BIG
        second = make_bolt(resources(db=pg_url_psycopg2, cache=redis_url), **options)
        assert lookup(second, [{"app_id": 1}])[:2] == ({0: {"big": BIG}}, {})
        assert second.stats["shared_hits"] == 1
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{unique_name}"')
        engine.dispose()
        client.close()
