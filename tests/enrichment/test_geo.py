"""The geo bolt against real MMDB files: small generated ones (exact answers) and the bundled GeoLite2-City."""

from __future__ import annotations

import logging
from pathlib import Path

import pydantic
import pytest

from squall.component import ComponentContext
from squall.enrichment.geo import ASN_FIELDS, CITY_FIELDS, GeoBolt, bundled_database
from squall.errors import TopologyError

from .support import make_batch, make_event


def geo_bolt(context: ComponentContext, **options) -> GeoBolt:
    bolt = GeoBolt(GeoBolt.Config(id="geo", type="geo", **options), context)
    bolt.open(None)
    return bolt


@pytest.fixture
def city(mmdb_dir: Path, tmp_path: Path) -> ComponentContext:
    """A context whose directory holds the generated databases, so relative paths are tested too."""
    for name in ("city.mmdb", "asn.mmdb", "city-v4.mmdb", "broken.mmdb"):
        (tmp_path / name).symlink_to(mmdb_dir / name)
    return ComponentContext("test", tmp_path)


def run(bolt: GeoBolt, values: list) -> list[dict]:
    out = bolt.process(make_batch(values))
    assert not out.streams.get("error"), [e.failure for e in out.streams.get("error", [])]
    return [e.value for e in out.streams["default"]]


def test_exact_answer_for_an_ipv4_address_in_a_nested_network(city):
    bolt = geo_bolt(city, database="city.mmdb")
    [value] = run(bolt, [{"ip": "1.2.3.4"}])
    assert value["geo"] == {
        "status": "ok",
        "country_code": "AU",
        "country": "Australia",
        "subdivision_code": "NSW",
        "subdivision": "New South Wales",
        "city": "Sydney",
        "postal_code": "2000",
        "latitude": -33.8688,
        "longitude": 151.2093,
        "accuracy_radius": 20,
        "time_zone": "Australia/Sydney",
        "continent_code": "OC",
        "continent": "Oceania",
    }
    assert value["ip"] == "1.2.3.4"  # untouched without anonymize_ip / drop_ip


def test_supernet_answers_outside_its_more_specific_network(city):
    bolt = geo_bolt(city, database="city.mmdb")
    sydney, outside = run(bolt, [{"ip": "1.2.3.200"}, {"ip": "1.2.200.1"}])
    assert sydney["geo"]["city"] == "Sydney"
    assert outside["geo"]["status"] == "ok"
    assert outside["geo"]["country_code"] == "AU"
    assert outside["geo"]["city"] is None
    assert outside["geo"]["accuracy_radius"] == 1000


def test_ipv6_networks_nested_and_not(city):
    bolt = geo_bolt(city, database="city.mmdb")
    dublin, ireland, unknown = run(
        bolt, [{"ip": "2a00:1450:4001:81a::200e"}, {"ip": "2a00:1450:9::1"}, {"ip": "2a01:4f8::1"}]
    )
    assert (dublin["geo"]["city"], dublin["geo"]["country_code"]) == ("Dublin", "IE")
    assert (
        ireland["geo"]["city"],
        ireland["geo"]["country_code"],
        ireland["geo"]["accuracy_radius"],
    ) == (None, "IE", 200)
    assert unknown["geo"]["status"] == "not_found"
    assert all(unknown["geo"][f] is None for f in CITY_FIELDS)


def test_first_subdivision_is_the_largest(city):
    [value] = run(geo_bolt(city, database="city.mmdb"), [{"ip": "81.2.69.142"}])
    assert (value["geo"]["subdivision_code"], value["geo"]["subdivision"]) == ("ENG", "England")


def test_names_in_the_configured_language_fall_back_to_english(city):
    [value] = run(geo_bolt(city, database="city.mmdb", language="de"), [{"ip": "1.2.3.4"}])
    assert value["geo"]["country"] == "Australien"
    assert value["geo"]["continent"] == "Ozeanien"
    assert value["geo"]["subdivision"] == "New South Wales"  # no German name: English


def test_asn_database_adds_number_and_organisation(city):
    bolt = geo_bolt(city, database="city.mmdb", asn_database="asn.mmdb")
    v4, v6, none = run(
        bolt, [{"ip": "1.2.3.4"}, {"ip": "2a00:1450:4001::1"}, {"ip": "81.2.69.142"}]
    )
    assert (v4["geo"]["asn"], v4["geo"]["as_org"]) == (13335, "CLOUDFLARENET")
    assert (v6["geo"]["asn"], v6["geo"]["as_org"]) == (15169, "GOOGLE")
    assert (none["geo"]["asn"], none["geo"]["as_org"], none["geo"]["city"]) == (
        None,
        None,
        "London",
    )


def test_without_asn_database_there_are_no_asn_fields(city):
    [value] = run(geo_bolt(city, database="city.mmdb"), [{"ip": "1.2.3.4"}])
    assert not set(ASN_FIELDS) & set(value["geo"])


@pytest.mark.parametrize(
    ("ip", "status"),
    [
        ("10.0.0.1", "private"),
        ("192.168.1.20", "private"),
        ("127.0.0.1", "private"),
        ("169.254.10.1", "private"),
        ("224.0.0.251", "private"),
        ("240.1.2.3", "private"),
        ("::1", "private"),
        ("fe80::1", "private"),
        ("fd00::1", "private"),
        ("ff02::1", "private"),
        ("not-an-ip", "invalid"),
        ("1.2.3.999", "invalid"),
        (12345, "invalid"),
        (None, "missing"),
        ("", "missing"),
        ("8.8.8.8", "not_found"),
    ],
)
def test_non_public_and_malformed_addresses_get_an_empty_block_and_a_status(city, ip, status):
    bolt = geo_bolt(city, database="city.mmdb")
    [value] = run(bolt, [{"ip": ip}])
    assert value["geo"]["status"] == status
    assert all(value["geo"][f] is None for f in CITY_FIELDS)


def test_missing_ip_field_is_not_a_failure(city):
    [value] = run(geo_bolt(city, database="city.mmdb"), [{"other": 1}])
    assert value["geo"]["status"] == "missing"


def test_payload_that_is_not_an_object_is_that_events_failure(city):
    bolt = geo_bolt(city, database="city.mmdb")
    batch = [make_event(["a list"], 1), make_event({"ip": "1.2.3.4"}, 2)]
    out = bolt.process(batch)
    assert [e.failure.reason for e in out.streams["error"]] == ["payload is not a JSON object"]
    assert out.streams["default"][0].value["geo"]["city"] == "Sydney"


def test_xff_chain_uses_the_first_public_address(city):
    bolt = geo_bolt(
        city, database="city.mmdb", ip_field="remote_addr", xff_field="headers.x-forwarded-for"
    )
    values = [
        {
            "remote_addr": "10.0.0.5",
            "headers": {"x-forwarded-for": "192.168.0.7, 81.2.69.142, 1.2.3.4"},
        },
        {"remote_addr": "1.2.3.4", "headers": {"x-forwarded-for": ["unknown", "10.1.1.1"]}},
        {"remote_addr": "10.0.0.5", "headers": {"x-forwarded-for": "junk, 172.16.0.1"}},
        {"remote_addr": "[2a00:1450:4001::1]:443"},
    ]
    london, sydney, private, dublin = run(bolt, values)
    assert london["geo"]["city"] == "London"
    assert sydney["geo"]["city"] == "Sydney"  # no public address in the chain: ip_field
    assert private["geo"]["status"] == "private"  # private wins over invalid as the reason
    assert dublin["geo"]["city"] == "Dublin"


def test_blank_entries_of_an_xff_list_are_skipped_like_empty_ones(city):
    """A list entry of spaces was kept as an empty address that nothing resolved: the whole call
    raised KeyError, and the event (its address valid) was dead-lettered by isolation."""
    bolt = geo_bolt(city, database="city.mmdb", xff_field="xff", anonymize_ip=True)
    listed, blank = run(
        bolt, [{"xff": [" ", "1.2.3.4", "\t"]}, {"ip": "81.2.69.142", "xff": [" "]}]
    )
    assert listed["geo"]["city"] == "Sydney"
    assert listed["xff"] == ["1.2.3.0"]  # the blank entries removed, like malformed ones
    assert blank["geo"]["city"] == "London"


def test_anonymize_ip_rewrites_the_stored_addresses_after_the_lookup(city):
    bolt = geo_bolt(city, database="city.mmdb", xff_field="xff", anonymize_ip=True)
    values = [
        {"ip": "1.2.3.4"},
        {"ip": "2a00:1450:4001:81a::200e"},
        {"ip": "10.9.8.7", "xff": "81.2.69.142, bogus, 10.0.0.1"},
        {"ip": "nonsense"},
        {"xff": ["1.2.3.77"]},
    ]
    v4, v6, chain, bad, listed = run(bolt, values)
    assert (v4["ip"], v4["geo"]["city"]) == ("1.2.3.0", "Sydney")
    assert (v6["ip"], v6["geo"]["city"]) == ("2a00:1450:4001::", "Dublin")
    assert (chain["ip"], chain["xff"], chain["geo"]["city"]) == (
        "10.9.8.0",
        "81.2.69.0, 10.0.0.0",
        "London",
    )
    assert bad["ip"] is None
    assert listed["xff"] == ["1.2.3.0"]
    assert "ip" not in listed


def test_drop_ip_removes_the_address_fields(city):
    bolt = geo_bolt(city, database="city.mmdb", ip_field="client.ip", xff_field="xff", drop_ip=True)
    [value] = run(bolt, [{"client": {"ip": "1.2.3.4", "port": 1}, "xff": "1.2.3.4"}])
    assert value == {"client": {"port": 1}, "geo": value["geo"]}
    assert value["geo"]["city"] == "Sydney"


def test_target_is_configurable_and_blocks_are_not_shared_between_events(city):
    bolt = geo_bolt(city, database="city.mmdb", target="enriched.location")
    a, b = run(bolt, [{"ip": "1.2.3.4"}, {"ip": "1.2.3.4"}])
    assert a["enriched"]["location"]["city"] == "Sydney"
    a["enriched"]["location"]["city"] = "changed downstream"
    assert b["enriched"]["location"]["city"] == "Sydney"
    [c] = run(bolt, [{"ip": "1.2.3.4"}])
    assert c["enriched"]["location"]["city"] == "Sydney"


def test_one_reader_lookup_per_network(city):
    bolt = geo_bolt(city, database="city.mmdb")
    run(bolt, [{"ip": f"1.2.3.{i}"} for i in range(1, 200)])
    assert bolt.lookups == 1
    run(
        bolt,
        [
            {"ip": "1.2.3.250"},
            {"ip": "1.2.200.1"},
            {"ip": "1.2.200.2"},
            {"ip": "2a00:1450:4001::1"},
            {"ip": "2a00:1450:4001:ffff::1"},
        ],
    )
    assert bolt.lookups == 3  # the /24 again: cached; one /17 of the /16; one /48


def test_network_cache_answers_like_the_reader(city, mmdb_dir):
    """Whatever the cache state, every address gets the same answer as an uncached bolt."""
    cached = geo_bolt(city, database="city.mmdb")
    ips = [f"1.2.{a}.{b}" for a in (0, 3, 4, 128, 255) for b in (0, 1, 254)] + [
        "2a00:1450:4001::1",
        "2a00:1450:4002::1",
        "2a00:1451::1",
        "81.2.69.1",
        "81.2.70.1",
        "8.8.8.8",
    ]
    first = run(cached, [{"ip": ip} for ip in ips])
    again = run(cached, [{"ip": ip} for ip in reversed(ips)])
    for ip, value in zip(ips, first, strict=True):
        fresh = geo_bolt(city, database="city.mmdb", cache_size=1)
        assert run(fresh, [{"ip": ip}])[0]["geo"] == value["geo"], ip
    assert [v["geo"] for v in reversed(again)] == [v["geo"] for v in first]


def test_caches_stay_bounded(city):
    bolt = geo_bolt(city, database="city.mmdb", cache_size=16)
    run(bolt, [{"ip": f"1.2.{a}.{b}"} for a in range(0, 256, 8) for b in range(0, 256, 64)])
    assert len(bolt._addresses) <= 16
    assert len(bolt.city.networks) <= 16


def test_long_or_non_text_address_values_cost_the_cache_a_small_key(city):
    """The address cache is bounded by entries: a junk header of 100 kB was kept whole per entry,
    and a value that is not text by its repr (a 10,000-item list: 60 kB; a list nested 1,000 deep,
    which a json bolt with max_depth 1000 passes, raised RecursionError for the whole call)."""
    bolt = geo_bolt(city, database="city.mmdb", xff_field="xff", anonymize_ip=True)
    deep: list = []
    for _ in range(1000):
        deep = [deep]
    values = [
        {"ip": " " * 100_000 + "1.2.3.4"},
        {"ip": "x" * 100_000, "xff": "y" * 100_000},
        {"ip": list(range(10_000)), "xff": [deep, {"a": "b" * 1000}]},
        {"ip": deep},
    ]
    padded, junk, listed, nested = run(bolt, values)
    assert padded["geo"]["city"] == "Sydney"  # still resolved, just not kept
    assert padded["ip"] == "1.2.3.0"
    assert [v["geo"]["status"] for v in (junk, listed, nested)] == ["invalid"] * 3
    assert (junk["ip"], junk["xff"], listed["ip"], listed["xff"]) == (None, "", None, [])
    assert max(len(text) for text in bolt._addresses._data) <= 128


def test_ipv6_address_against_an_ipv4_only_database_is_not_found(city):
    bolt = geo_bolt(city, database="city-v4.mmdb")
    v4, v6 = run(bolt, [{"ip": "1.2.3.4"}, {"ip": "2a00:1450:4001::1"}])
    assert v4["geo"]["city"] == "Sydney"
    assert v6["geo"]["status"] == "not_found"


@pytest.mark.parametrize("option", ["database", "asn_database"])
@pytest.mark.parametrize("path", ["missing.mmdb", "broken.mmdb"])
def test_unreadable_database_is_a_configuration_error(city, option, path):
    options = {"database": "city.mmdb", option: path}
    with pytest.raises(TopologyError, match=f"geo.{option}: cannot open MaxMind DB"):
        geo_bolt(city, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ip_field": None}, "set ip_field, xff_field or both"),
        ({"anonymize_ip": True, "drop_ip": True}, "exclude each other"),
        ({"ip_field": "meta.partition_key", "drop_ip": True}, "record metadata"),
        ({"ip_field": "a..b"}, "not a dotted path"),
        ({"languages": "en"}, "Extra inputs are not permitted"),
        ({"cache_size": 0}, "greater than or equal to 1"),
    ],
)
def test_invalid_options_are_rejected_at_load_time(options, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        GeoBolt.Config(id="geo", type="geo", **options)


# -- the bundled GeoLite2-City ------------------------------------------------------------------


@pytest.fixture(scope="module")
def geolite() -> GeoBolt:
    bolt = GeoBolt(GeoBolt.Config(id="geo", type="geo"), ComponentContext("test"))
    bolt.open(None)
    yield bolt
    bolt.close()


def test_bundled_database_is_found_on_disk():
    path = bundled_database()
    assert path.name == "GeoLite2-City.mmdb"
    assert path.stat().st_size > 1_000_000


@pytest.mark.parametrize(
    ("ip", "country", "continent"),
    [
        ("8.8.8.8", "US", "NA"),
        ("1.1.1.1", "AU", "OC"),
        ("81.2.69.142", "GB", "EU"),
        ("89.160.20.128", "SE", "EU"),
        ("2001:4860:4860::8888", "US", "NA"),
        ("::ffff:8.8.8.8", "US", "NA"),
    ],
)
def test_well_known_public_addresses_in_the_bundled_geolite2(geolite, ip, country, continent):
    [value] = run(geolite, [{"ip": ip}])
    assert value["geo"]["status"] == "ok"
    assert (value["geo"]["country_code"], value["geo"]["continent_code"]) == (country, continent)
    assert isinstance(value["geo"]["latitude"], float)


def test_bundled_geolite2_city_level_answer(geolite):
    [value] = run(geolite, [{"ip": "2001:4860:4860::8888"}])
    assert (value["geo"]["city"], value["geo"]["subdivision_code"], value["geo"]["time_zone"]) == (
        "Mountain View",
        "CA",
        "America/Los_Angeles",
    )


def test_using_the_bundled_database_logs_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="squall.enrichment.geo"):
        bolt = GeoBolt(GeoBolt.Config(id="geo", type="geo"), ComponentContext("test"))
        bolt.open(None)
        bolt.close()
    assert "bundled GeoLite2-City built 2018" in caplog.text


def test_the_bundled_database_warning_is_said_once_however_often_the_bolt_opens(caplog):
    """A KCL shard process opens its topology again after each failed attempt while the
    warehouse is down at its start (1 s doubling to 30 s): the SRE rehearsal's log had the geo
    warning once per attempt, interleaved with the outage's lines."""
    with caplog.at_level(logging.WARNING, logger="squall.enrichment.geo"):
        bolt = GeoBolt(GeoBolt.Config(id="geo", type="geo"), ComponentContext("test"))
        for _ in range(3):
            bolt.open(None)
        bolt.close()
    assert caplog.text.count("bundled GeoLite2-City built 2018") == 1


# -- MaxMind's published test databases (github maxmind/MaxMind-DB, test-data/, MIT or Apache-2.0)


MAXMIND = Path(__file__).parent / "data" / "maxmind"


@pytest.fixture
def maxmind() -> ComponentContext:
    return ComponentContext("test", MAXMIND)


def test_maxmind_city_and_asn_test_databases(maxmind):
    bolt = geo_bolt(
        maxmind, database="GeoIP2-City-Test.mmdb", asn_database="GeoLite2-ASN-Test.mmdb"
    )
    london, linkoping = run(bolt, [{"ip": "81.2.69.160"}, {"ip": "89.160.20.112:443"}])
    assert (london["geo"]["status"], london["geo"]["city"], london["geo"]["asn"]) == (
        "ok",
        "London",
        None,
    )
    assert (linkoping["geo"]["city"], linkoping["geo"]["asn"], linkoping["geo"]["as_org"]) == (
        "Linköping",
        29518,
        "Bredband2 AB",
    )


def test_an_isp_database_is_accepted_as_asn_database(maxmind):
    bolt = geo_bolt(
        maxmind, database="GeoIP2-Country-Test.mmdb", asn_database="GeoIP2-ISP-Test.mmdb"
    )
    [value] = run(bolt, [{"ip": "1.128.0.1"}])
    assert (value["geo"]["asn"], value["geo"]["as_org"]) == (1221, "Telstra Pty Ltd")


@pytest.mark.parametrize(
    ("option", "path", "found"),
    [
        ("database", "GeoIP2-ISP-Test.mmdb", "GeoIP2-ISP"),
        ("database", "GeoIP2-Anonymous-IP-Test.mmdb", "GeoIP2-Anonymous-IP"),
        ("database", "GeoLite2-ASN-Test.mmdb", "GeoLite2-ASN"),
        ("asn_database", "GeoIP2-City-Test.mmdb", "GeoIP2-City"),
        ("asn_database", "GeoIP2-Anonymous-IP-Test.mmdb", "GeoIP2-Anonymous-IP"),
    ],
)
def test_a_database_of_the_wrong_type_is_refused_at_setup(maxmind, option, path, found):
    options = {"database": "GeoIP2-City-Test.mmdb", option: path}
    with pytest.raises(
        TopologyError, match=f"geo.{option}: MaxMind DB .* is of type '{found}'; {option} needs"
    ):
        geo_bolt(maxmind, **options)


def test_a_corrupt_record_fails_only_the_events_that_need_it(maxmind):
    """MaxMind's "broken double format" file: every record with a location fails to decode."""
    values = [
        {"ip": "81.2.69.160"},
        {"ip": "214.1.1.1"},
        {"ip": "10.0.0.1"},
        {"ip": "81.2.69.160:notaport"},
        {"xff": "89.160.20.112, 10.0.0.2"},
    ]
    bolt = geo_bolt(maxmind, database="GeoIP2-City-Test-Broken-Double-Format.mmdb", xff_field="xff")
    for _ in range(2):  # the second batch is answered from the address cache: same outcome
        out = bolt.process(make_batch(values))
        failed = {e.value.get("ip") or e.value.get("xff"): e.failure for e in out.streams["error"]}
        assert sorted(failed) == ["81.2.69.160", "89.160.20.112, 10.0.0.2"]
        for failure in failed.values():
            assert "GeoIP2-City-Test-Broken-Double-Format.mmdb (GeoIP2-City)" in str(failure)
        statuses = [e.value["geo"]["status"] for e in out.streams["default"]]
        assert statuses == ["not_found", "private", "invalid"]


def test_a_record_with_only_traits_is_not_found_with_asn_fields_kept(maxmind):
    bolt = geo_bolt(
        maxmind, database="GeoIP2-City-Test.mmdb", asn_database="GeoLite2-ASN-Test.mmdb"
    )
    [value] = run(bolt, [{"ip": "214.1.1.1"}])
    geo = value["geo"]
    assert geo["status"] == "not_found"
    assert all(geo[f] is None for f in CITY_FIELDS)
    assert (geo["asn"], geo["as_org"]) == (721, "DoD Network Information Center")


def test_an_address_with_a_bad_port_is_invalid(maxmind):
    bolt = geo_bolt(maxmind, database="GeoIP2-City-Test.mmdb")
    values = [{"ip": t} for t in ("81.2.69.160:notaport", "81.2.69.160:65536", "81.2.69.160:80")]
    assert [v["geo"]["status"] for v in run(bolt, values)] == ["invalid", "invalid", "ok"]


def test_addresses_of_one_network_share_its_cached_block_while_each_event_gets_its_own(city):
    bolt = geo_bolt(city, database="city.mmdb")
    a, b, c = run(bolt, [{"ip": "1.2.3.4"}, {"ip": "1.2.3.5"}, {"ip": "1.2.3.4"}])
    assert bolt.lookups == 1  # the second address came from the network cache
    cached = bolt.resolve(["1.2.3.4", "1.2.3.5"])
    assert cached["1.2.3.4"].block is cached["1.2.3.5"].block  # one block per network
    assert a["geo"] == b["geo"] == c["geo"] and a["geo"]["city"] == "Sydney"
    a["geo"]["city"] = "changed downstream"
    assert b["geo"]["city"] == c["geo"]["city"] == "Sydney"
    assert run(bolt, [{"ip": "1.2.3.4"}])[0]["geo"]["city"] == "Sydney"


def test_equal_answers_of_different_networks_are_kept_once_and_stay_bounded():
    """The bundled GeoLite2: many networks of one place give equal answers, kept once (the cache
    holds one block per distinct answer, strings interned); every address still gets what an
    uncached bolt gives it, and the table of distinct answers stays within ``cache_size``."""
    ips = [f"{a}.{b}.{c}.7" for a in (24, 73, 81, 98) for b in range(0, 256, 17) for c in (1, 90)]
    bolt = geo_bolt(ComponentContext("test"), ip_field="ip", cache_size=64)
    first = run(bolt, [{"ip": ip} for ip in ips])
    blocks = [b for b in bolt.city.networks.answers() if b is not None]
    assert len({id(b) for b in blocks}) < len(blocks)  # shared
    assert len({id(b) for b in blocks}) == len({tuple(b.items()) for b in blocks})  # equal: one
    assert len(bolt.city._answers) <= 64
    fresh = geo_bolt(ComponentContext("test"), ip_field="ip", cache_size=1)
    for ip, value in zip(ips[:40], first[:40], strict=True):
        assert run(fresh, [{"ip": ip}])[0]["geo"] == value["geo"], ip


def test_answers_equal_only_by_python_equality_are_not_shared(tmp_path: Path):
    """-0.0 and 0.0, 7 and 7.0 compare equal; a list cannot be a key. A file of another producer
    may hold such values: each network still gets its own answer, and nothing raises."""
    from mmdb_writer import MmdbF64, MmdbU16

    from .support import write_mmdb

    def located(lat, lon) -> dict:
        return {
            "country": {"iso_code": "XX", "names": {"en": "X"}},
            "location": {"latitude": lat, "longitude": lon},
        }

    networks = {
        "11.0.0.0/24": located(MmdbF64(0.0), MmdbF64(5.5)),
        "12.0.0.0/24": located(MmdbF64(-0.0), MmdbF64(5.5)),
        "13.0.0.0/24": located(MmdbF64(7.0), MmdbF64(5.5)),
        "14.0.0.0/24": located(MmdbU16(7), MmdbF64(5.5)),
        "15.0.0.0/24": {"country": {"iso_code": ["X", "Y"], "names": {"en": "X"}}},
    }
    write_mmdb(tmp_path / "odd.mmdb", networks, "GeoIP2-City")
    context = ComponentContext("test", tmp_path)
    ips = ["11.0.0.1", "12.0.0.1", "13.0.0.1", "14.0.0.1", "15.0.0.1"]
    shared = geo_bolt(context, database="odd.mmdb", cache_size=100)
    for ip in ips:
        [value] = run(shared, [{"ip": ip}])
        [alone] = run(geo_bolt(context, database="odd.mmdb", cache_size=100), [{"ip": ip}])
        got, want = value["geo"], alone["geo"]
        assert repr(got) == repr(want), ip  # repr: -0.0 and 7 vs 7.0 are told apart


def test_equal_answers_holding_a_zero_are_kept_once_and_minus_zero_apart(tmp_path: Path):
    """Answers are shared when their values are equal bit for bit, zeros included: 0.0 twice is
    one answer, -0.0 (equal to 0.0 in Python) another, the integer 0 a third."""
    from mmdb_writer import MmdbF64, MmdbU16

    from .support import write_mmdb

    def located(lat) -> dict:
        return {
            "country": {"iso_code": "XX", "names": {"en": "X"}},
            "location": {"latitude": lat, "longitude": MmdbF64(0.0)},
        }

    networks = {
        "11.0.0.0/24": located(MmdbF64(0.0)),
        "12.0.0.0/24": located(MmdbF64(0.0)),
        "13.0.0.0/24": located(MmdbF64(-0.0)),
        "14.0.0.0/24": located(MmdbU16(0)),
    }
    write_mmdb(tmp_path / "zeros.mmdb", networks, "GeoIP2-City")
    bolt = geo_bolt(ComponentContext("test", tmp_path), database="zeros.mmdb", cache_size=100)
    values = run(bolt, [{"ip": f"{a}.0.0.1"} for a in (11, 12, 13, 14)])
    assert [repr(v["geo"]["latitude"]) for v in values] == ["0.0", "0.0", "-0.0", "0"]
    resolved = bolt.resolve(["11.0.0.1", "12.0.0.1", "13.0.0.1", "14.0.0.1"])
    blocks = [resolved[f"{a}.0.0.1"].block for a in (11, 12, 13, 14)]
    assert blocks[0] is blocks[1]  # equal: kept once
    assert len({id(b) for b in blocks}) == 3
    assert len(bolt.city._answers) == 3


@pytest.mark.parametrize("language", ["en", "de", "ja"])
def test_city_block_reads_every_field_and_falls_back_to_english(language):
    """The block of a record, field by field, as its rules say: a name in the language, else
    in English (also when the language's is empty); a missing or empty part leaves its fields
    None; the status is not_found only when no location field is known."""
    from squall.enrichment.geo import LOCATION_FIELDS, _city_block

    empty = dict.fromkeys(("status", *CITY_FIELDS, *ASN_FIELDS))
    full = {
        "country": {"iso_code": "DE", "names": {"en": "Germany", "de": "Deutschland", "ja": ""}},
        "subdivisions": [{"iso_code": "BE", "names": {"en": "Land Berlin"}}, {"iso_code": "X"}],
        "city": {"names": {"en": "Berlin", "de": "Berlin (Stadt)"}},
        "postal": {"code": "10115"},
        "location": {
            "latitude": 52.5,
            "longitude": 13.4,
            "accuracy_radius": 5,
            "time_zone": "Europe/Berlin",
        },
        "continent": {"code": "EU", "names": {"de": "Europa"}},
        "traits": {"is_anycast": True},
    }
    block = _city_block(full, language, empty)
    assert list(block) == list(empty)  # every key, in the block's order; the ASN's stay None
    assert block == {
        **empty,
        "status": "ok",
        "country_code": "DE",
        "country": "Deutschland" if language == "de" else "Germany",
        "subdivision_code": "BE",
        "subdivision": "Land Berlin",
        "city": "Berlin (Stadt)" if language == "de" else "Berlin",
        "postal_code": "10115",
        "latitude": 52.5,
        "longitude": 13.4,
        "accuracy_radius": 5,
        "time_zone": "Europe/Berlin",
        "continent_code": "EU",
        "continent": "Europa" if language == "de" else None,
    }
    assert _city_block({"traits": {"is_anycast": True}}, language, empty) == {
        **empty,
        "status": "not_found",
    }
    assert _city_block(
        {"country": {}, "subdivisions": [{}], "city": {"names": {}}}, language, empty
    ) == {
        **empty,
        "status": "not_found",
    }
    # Each location field alone makes the answer "ok".
    for field, record in {
        "country_code": {"country": {"iso_code": "FR"}},
        "country": {"country": {"names": {"en": "France"}}},
        "subdivision_code": {"subdivisions": [{"iso_code": "IDF"}]},
        "subdivision": {"subdivisions": [{"names": {"en": "Île-de-France"}}]},
        "city": {"city": {"names": {"en": "Paris"}}},
        "postal_code": {"postal": {"code": "75001"}},
        "latitude": {"location": {"latitude": 0.0}},
        "longitude": {"location": {"longitude": 0.0}},
        "accuracy_radius": {"location": {"accuracy_radius": 0}},
        "time_zone": {"location": {"time_zone": "Europe/Paris"}},
        "continent_code": {"continent": {"code": "EU"}},
        "continent": {"continent": {"names": {"en": "Europe"}}},
    }.items():
        block = _city_block(record, language, empty)
        assert block["status"] == "ok" and block[field] is not None, field
        assert [f for f in LOCATION_FIELDS if block[f] is not None] == [field]
