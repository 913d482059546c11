"""Helpers of the enrichment tests: events as the engine builds them, MMDB writers, resources."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet
from redis.backoff import NoBackoff
from redis.retry import Retry

from squall.event import Event, RecordMeta, derive_event_id
from squall.topology.resources import ResourceConfig, Resources


def make_event(
    value: Any,
    seq: int = 1,
    *,
    shard: str = "shardId-000000000000",
    stream: str = "s",
    arrival: datetime | None = None,
) -> Event:
    """An event as the engine hands it to a bolt, with a deterministic event id."""
    # Arrival after the events' times (2024-05-01): an event time later than its arrival is not
    # believed beyond `max_future` (squall.times.not_after_arrival).
    meta = RecordMeta(stream, shard, str(seq), 0, "pk", arrival or datetime(2024, 5, 2, tzinfo=UTC))
    return Event(raw=b"", meta=meta, event_id=derive_event_id(meta), origin=seq, value=value)


def make_batch(values: list[Any], start: int = 1) -> list[Event]:
    return [make_event(v, start + i) for i, v in enumerate(values)]


class Text(str):
    """A str subclass, as a user bolt may set."""


def outcome(bolt: Any, values: list) -> Any:
    """What a bolt's ``process`` makes of ``values`` (each a payload, copied first): the kept
    events' (origin, value) and the failed ones' (origin, reason), or what it raised — for the
    tests comparing a bolt's inline paths with its general path on the same inputs."""
    batch = [make_event(copy.deepcopy(v), i + 1) for i, v in enumerate(values)]
    try:
        out = bolt.process(batch)
    except Exception as exc:  # compared too: both paths must raise alike
        return ("raised", type(exc).__name__)
    ok = [(e.origin, e.value) for e in out.streams.get("default", [])]
    failed = [(e.origin, e.failure.reason) for e in out.streams.get("error", [])]
    return ok, failed


def resources(**urls: str) -> Resources:
    """Resources as the loader builds them from ``resources:`` in YAML (name=url)."""
    configs = {}
    for name, url in urls.items():
        # redis-py 8 retries 10 times with backoff by default (~4 s against a closed port); the
        # engine retries the whole batch itself, so the tests keep one attempt per call.
        options = {"retry": Retry(NoBackoff(), 0)} if url.startswith("redis") else {}
        configs[name] = ResourceConfig(url=url, connect_timeout=2, options=options)
    return Resources(configs)


def _place(names: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"names": names, **extra}


CITY_NETWORKS: dict[str, dict[str, Any]] = {
    # A /16 with a more specific /24 inside it: the /24 must win for its addresses only.
    "1.2.0.0/16": {
        "continent": _place({"en": "Oceania", "de": "Ozeanien"}, code="OC"),
        "country": _place({"en": "Australia", "de": "Australien"}, iso_code="AU"),
        "location": {
            "latitude": -33.494,
            "longitude": 143.2104,
            "accuracy_radius": 1000,
            "time_zone": "Australia/Sydney",
        },
    },
    "1.2.3.0/24": {
        "city": _place({"en": "Sydney", "de": "Sydney"}),
        "continent": _place({"en": "Oceania", "de": "Ozeanien"}, code="OC"),
        "country": _place({"en": "Australia", "de": "Australien"}, iso_code="AU"),
        "subdivisions": [_place({"en": "New South Wales"}, iso_code="NSW")],
        "postal": {"code": "2000"},
        "location": {
            "latitude": -33.8688,
            "longitude": 151.2093,
            "accuracy_radius": 20,
            "time_zone": "Australia/Sydney",
        },
    },
    "81.2.69.0/24": {
        "city": _place({"en": "London", "de": "London"}),
        "continent": _place({"en": "Europe", "de": "Europa"}, code="EU"),
        "country": _place({"en": "United Kingdom", "de": "Vereinigtes Königreich"}, iso_code="GB"),
        "subdivisions": [
            _place({"en": "England", "de": "England"}, iso_code="ENG"),
            _place({"en": "Greater London"}, iso_code="GLA"),
        ],
        "postal": {"code": "EC1A"},
        "location": {
            "latitude": 51.5142,
            "longitude": -0.0931,
            "accuracy_radius": 10,
            "time_zone": "Europe/London",
        },
    },
    "2a00:1450::/32": {
        "continent": _place({"en": "Europe"}, code="EU"),
        "country": _place({"en": "Ireland", "de": "Irland"}, iso_code="IE"),
        "location": {
            "latitude": 53.0,
            "longitude": -8.0,
            "accuracy_radius": 200,
            "time_zone": "Europe/Dublin",
        },
    },
    "2a00:1450:4001::/48": {
        "city": _place({"en": "Dublin", "de": "Dublin"}),
        "continent": _place({"en": "Europe"}, code="EU"),
        "country": _place({"en": "Ireland", "de": "Irland"}, iso_code="IE"),
        "location": {
            "latitude": 53.3331,
            "longitude": -6.2489,
            "accuracy_radius": 50,
            "time_zone": "Europe/Dublin",
        },
    },
}

ASN_NETWORKS: dict[str, dict[str, Any]] = {
    "1.2.0.0/16": {
        "autonomous_system_number": 13335,
        "autonomous_system_organization": "CLOUDFLARENET",
    },
    "2a00:1450::/32": {
        "autonomous_system_number": 15169,
        "autonomous_system_organization": "GOOGLE",
    },
}


def write_mmdb(
    path: Path, networks: dict[str, dict[str, Any]], database_type: str, *, ip_version: int = 6
) -> Path:
    writer = MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en", "de"],
        description="squall test database",
    )
    # Supernets first: mmdb_writer fills the rest of a supernet around a later, more specific network.
    for cidr in sorted(networks, key=lambda c: int(c.rsplit("/", 1)[1])):
        writer.insert_network(IPSet([cidr]), networks[cidr])
    writer.to_db_file(str(path))
    return path
