"""The geo bolt: country, region, city, location and ASN of an IP address, from MaxMind DB files.

Per batch, each distinct address string is resolved once: first from a cache of addresses, then
from a cache of database networks (the reader returns the prefix length of the network it
matched, so one lookup serves every address of that network), and only then from the
``maxminddb`` C reader. Private and malformed addresses are not failures: the event gets an
empty block and a ``status`` saying why. A corrupt record in a database file is the failure of
the events that need it (dead-lettered, with a reason naming the file), never of the batch.
Each file's type is read from its metadata at open, and a file of the wrong kind is refused.

Size (~600 lines): the bolt, its two caches and the address parsing they need, used nowhere else.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from marshal import dumps as _marshal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import maxminddb
from pydantic import Field, model_validator

from squall.bolts.base import Bolt, Output
from squall.cache import LRUCache
from squall.component import ComponentConfig, ComponentContext
from squall.enrichment import addresses
from squall.enrichment.networks import MISSING as NOT_CACHED
from squall.enrichment.networks import NetworkCache
from squall.errors import RecordError, TopologyError
from squall.event import Event, not_an_object
from squall.paths import MISSING, DottedPath, deleter, getter, payload_keys, setter

if TYPE_CHECKING:
    from squall.topology.resources import Resources

log = logging.getLogger("squall.enrichment.geo")

OK, NOT_FOUND, PRIVATE, INVALID, MISSING_IP = "ok", "not_found", "private", "invalid", "missing"
#: The lookup key of an address value that is not text (a number, a list, an object): invalid.
NOT_TEXT = "<not text>"
#: Longest address text kept in the address cache: a bracketed IPv6 with an embedded IPv4, a zone
#: and a port is ~60 characters (+ the zone's name). Longer texts are resolved, not cached.
MAX_CACHED_TEXT = 128

#: Keys of the output block, always present (None when unknown), in this order.
CITY_FIELDS = (
    "country_code",
    "country",
    "subdivision_code",
    "subdivision",
    "city",
    "postal_code",
    "latitude",
    "longitude",
    "accuracy_radius",
    "time_zone",
    "continent_code",
    "continent",
)
ASN_FIELDS = ("asn", "as_org")
#: The location fields: a record that fills none of them (e.g. one holding only ``traits``) is
#: reported ``not_found``, never ``ok`` with an empty location.
LOCATION_FIELDS = CITY_FIELDS

#: The database types (metadata ``database_type``) each option accepts: City, Country and
#: Enterprise files of MaxMind and their compatible producers (e.g. ``DBIP-City-Lite``) for
#: ``database``; ASN and ISP files (which carry the ASN fields) for ``asn_database``.
ACCEPTED_TYPES = {
    "database": re.compile(r"City|Country|Enterprise", re.IGNORECASE),
    "asn_database": re.compile(r"ASN|ISP", re.IGNORECASE),
}
_WRONG_FOR_LOCATION = re.compile(
    r"Anonymous|ASN|ISP|Connection|Domain|Risk|Residential|Density|User-Count|Static-IP",
    re.IGNORECASE,
)


def bundled_database() -> Path:
    """Path of the GeoLite2-City file shipped by the ``maxminddb-geolite2`` package (July 2018)."""
    from _maxminddb_geolite2 import geolite2_database  # the package's file-locating module

    return Path(geolite2_database())


class _Database:
    """One open MaxMind DB and the cache of its networks' answers (``convert``-ed records).

    Networks of one place give equal answers (2.3 networks per distinct answer over the
    example's first 200k events): equal answers are kept once, their text interned, so a cached
    network costs its cache entries, not a block of its own. The table of distinct answers is
    cleared when it holds ``cache_size`` of them (answers already shared stay shared).
    """

    def __init__(self, path: Path, cache_size: int, convert: Callable[[dict], dict[str, Any]]):
        self.path = path
        self.convert = convert
        self._answers: dict[bytes, dict[str, Any]] = {}
        self._answers_max = cache_size
        self.reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
        meta = self.reader.metadata()
        self.type: str = meta.database_type
        self.built = datetime.fromtimestamp(meta.build_epoch, UTC)
        self.ip_version: int = meta.ip_version
        self.networks = NetworkCache(cache_size)

    def lookup(self, version: int, n: int) -> tuple[dict[str, Any] | None, bool]:
        """``(fields, from_cache)`` for one public address; fields None when the database has none.

        Raises :class:`CorruptRecord` when the file's record for the address cannot be decoded.
        """
        hit = self.networks.find(version, n)
        if hit is not NOT_CACHED:
            return hit, True
        if version == 6 and self.ip_version == 4:
            return None, False  # an IPv4-only database cannot answer
        try:
            record, prefix = self.reader.get_with_prefix_len(addresses.to_object(version, n))
        except (maxminddb.InvalidDatabaseError, ValueError, UnicodeDecodeError) as exc:
            raise CorruptRecord(
                f"corrupt record in MaxMind DB {self.path.name} ({self.type}): {exc}"
            ) from exc
        fields = self._shared(self.convert(record)) if record else None
        self.networks.add(version, n, prefix, fields)
        return fields, False

    def _shared(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The one kept copy of an answer equal to ``fields``; its strings interned.

        Equal means the same values of the same types, bit for bit: the key is the values'
        ``marshal`` form (version 2: no back-references, so it does not depend on which objects
        are shared), which tells 7 from 7.0 and True, and 0.0 from -0.0. A value ``marshal``
        cannot write (a subclass, in a file of another producer) is not shared. (A key of the
        values and their types cost ~1.35× as much: a 26-item tuple of the record's fresh
        strings to hash, and each value compared with 0 to keep -0.0 apart.)"""
        try:
            key = _marshal(tuple(fields.values()), 2)
        except ValueError:
            return fields
        kept = self._answers.get(key)
        if kept is not None:
            return kept
        for name, value in fields.items():
            if value.__class__ is str:
                fields[name] = sys.intern(value)
        if len(self._answers) >= self._answers_max:
            self._answers.clear()
        self._answers[key] = fields
        return fields

    def close(self) -> None:
        self.reader.close()


class CorruptRecord(Exception):
    """A database file's record for an address cannot be decoded (the message names the file)."""


class _Resolved:
    """What one address string resolves to: a status, the output block, and its anonymized text.

    ``error`` is set when a database record could not be read: the events that need this
    address fail with it as their reason.
    """

    __slots__ = ("status", "block", "anonymized", "public", "error")

    def __init__(
        self,
        status: str,
        block: dict[str, Any],
        anonymized: str | None,
        error: str | None = None,
    ):
        self.status = status
        self.block = block
        self.anonymized = anonymized
        self.public = status in (OK, NOT_FOUND)
        self.error = error


class GeoBolt(Bolt):
    """Adds a geo block to each event from the event's IP address (or X-Forwarded-For chain)."""

    summary: ClassVar[str] = (
        "Geolocates IP addresses with MaxMind GeoIP2/GeoLite2 City (and ASN) databases."
    )

    @classmethod
    def packages(cls, config: Any) -> frozenset[str]:
        """The MaxMind reader, and the bundled GeoLite2 when ``database`` is not set or empty
        (``open`` opens the bundled file then)."""
        return frozenset(
            {"maxminddb"} | ({"_maxminddb_geolite2"} if not config.database else set())
        )

    @classmethod
    def payload_writes(cls, config: Any) -> tuple[str, ...]:
        """The geo block at ``target``; the address fields when anonymized."""
        return tuple(p for p in (config.target, config.ip_field, config.xff_field) if p)

    class Config(ComponentConfig):
        ip_field: DottedPath | None = Field(
            "ip",
            description="Dotted path of the client IP address (IPv4 or IPv6). Null to use only `xff_field`.",
        )
        xff_field: DottedPath | None = Field(
            None,
            description="Dotted path of an X-Forwarded-For chain (a comma-separated string or a list); "
            "the first public address in it is used, before `ip_field`.",
        )
        database: str | None = Field(
            None,
            description="Path of a GeoIP2/GeoLite2 City, Country or Enterprise .mmdb file, relative to the "
            "topology file; another type (ISP, ASN, Anonymous-IP) is refused at start. "
            "Default: the GeoLite2-City bundled with the maxminddb-geolite2 package (from 2018: use a current one).",
        )
        asn_database: str | None = Field(
            None,
            description="Path of a GeoLite2/GeoIP2 ASN or ISP .mmdb file; adds `asn` and `as_org`.",
        )
        language: str = Field(
            "en",
            description="Language of place names (en, de, es, fr, ja, pt-BR, ru, zh-CN); falls back to en.",
        )
        target: DottedPath = Field("geo", description="Dotted path where the geo block is written.")
        anonymize_ip: bool = Field(
            False,
            description="After the lookup, zero the last IPv4 octet / last 80 IPv6 bits of the stored "
            "address(es); a malformed address becomes null, a malformed chain entry is removed.",
        )
        drop_ip: bool = Field(
            False, description="After the lookup, remove `ip_field` and `xff_field` from the event."
        )
        cache_size: int = Field(
            20_000,
            ge=1,
            description="Addresses, and networks (and /24 or /48 buckets) per database, kept in "
            "memory (LRU). An address and its network cost about 0.7 kB together (a network's "
            "block is shared by its addresses, and equal blocks of different networks are kept "
            "once): ~15-20 MB at the default.",
        )

        @model_validator(mode="after")
        def _check(self) -> GeoBolt.Config:
            if self.ip_field is None and self.xff_field is None:
                raise ValueError("set ip_field, xff_field or both")
            if self.anonymize_ip and self.drop_ip:
                raise ValueError(
                    "anonymize_ip and drop_ip exclude each other: drop_ip already removes the address"
                )
            if self.anonymize_ip or self.drop_ip:
                for name in ("ip_field", "xff_field"):
                    path = getattr(self, name)
                    if path and path.split(".")[0] == "meta":
                        raise ValueError(
                            f"{name} '{path}' is record metadata: it cannot be anonymized or dropped"
                        )
            return self

    def __init__(self, config: Config, context: ComponentContext):
        super().__init__(config, context)
        c = config
        self._get_ip = getter(c.ip_field) if c.ip_field else None
        self._get_xff = getter(c.xff_field) if c.xff_field else None
        self._set_target = setter(c.target)
        self._ip_name = _single_key(c.ip_field)
        self._target_name = _single_key(c.target)
        self._anonymize_inline = (
            c.anonymize_ip and self._ip_name is not None and c.xff_field is None
        )
        self._fields = CITY_FIELDS + (ASN_FIELDS if c.asn_database else ())
        self._empty = dict.fromkeys(("status", *self._fields))
        self._status_blocks = {
            status: {**self._empty, "status": status} for status in (PRIVATE, INVALID, MISSING_IP)
        }
        self._not_found = {**self._empty, "status": NOT_FOUND}
        self._rewrites = [
            (getter(p), setter(p), deleter(p), p == c.xff_field)
            for p in (c.ip_field, c.xff_field)
            if p and (c.anonymize_ip or c.drop_ip)
        ]
        self._addresses: LRUCache[str, _Resolved] = LRUCache(c.cache_size)
        self.city: _Database | None = None
        self.asn: _Database | None = None
        self.lookups = 0  # reader lookups, for tests and benchmarks
        # the bundled database's age is said once: a KCL shard opening its topology again and
        # again while the warehouse is down repeated it at each attempt, between the outage's lines
        self._said_bundled = False

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, resources: Resources | None) -> None:
        c = self.config
        city_path = self.context.path(c.database) if c.database else bundled_database()
        self.city = self._open(city_path, "database")
        if c.asn_database:
            self.asn = self._open(self.context.path(c.asn_database), "asn_database")
        if c.database is None and not self._said_bundled:
            self._said_bundled = True
            log.warning(
                "%s: using the bundled %s built %s; set `database:` to a current GeoLite2/GeoIP2 City file",
                self.id,
                self.city.type,
                self.city.built.date(),
            )

    def _open(self, path: Path, option: str) -> _Database:
        language, empty = self.config.language, self._empty
        convert = (
            _asn_fields
            if option == "asn_database"
            else (lambda record: _city_block(record, language, empty))
        )
        try:
            db = _Database(path, self.config.cache_size, convert)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise self._problem(option, f"cannot open MaxMind DB {path}: {exc}") from exc
        accepted = ACCEPTED_TYPES[option].search(db.type)
        if not accepted or (option == "database" and _WRONG_FOR_LOCATION.search(db.type)):
            db.close()
            wanted = (
                "a City, Country or Enterprise database (e.g. GeoLite2-City)"
                if option == "database"
                else "an ASN or ISP database (e.g. GeoLite2-ASN)"
            )
            raise self._problem(
                option,
                f"MaxMind DB {path} is of type {db.type!r}; {option} needs {wanted}",
            )
        return db

    def _problem(self, option: str, message: str) -> TopologyError:
        return TopologyError(self.context.problem(self.id, option, message))

    def close(self) -> None:
        for db in (self.city, self.asn):
            if db is not None:
                db.close()
        self.city = self.asn = None

    # -- batch -------------------------------------------------------------------------------

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        get_ip, get_xff, ip_name = self._get_ip, self._get_xff, self._ip_name
        # Per event: None (not an object), "" (no address), one address, or a list (XFF chain, then IP).
        candidates: list[Any] = []
        unique: dict[str, None] = {}
        for event in batch:
            value = event.value
            if not isinstance(value, dict):
                candidates.append(None)
                continue
            if ip_name is not None:  # a one-level path (the usual "ip"), read inline
                ip = value.get(ip_name, MISSING)
            else:
                ip = get_ip(event) if get_ip is not None else None
            if ip.__class__ is not str:
                ip = _address_text(ip)
            if get_xff is None:
                candidates.append(ip)
                unique[ip] = None
                continue
            chain = _chain(get_xff(event))
            if ip:
                chain.append(ip)
            candidates.append(chain)
            for text in chain:
                unique[text] = None
        unique.pop("", None)

        resolved = self.resolve(unique)

        blocks, set_target, target_name, rewrites = (
            self._status_blocks,
            self._set_target,
            self._target_name,
            self._rewrites,
        )
        # Addresses are rewritten (dropped, anonymized) only once every event has its block: a
        # call that raises half-way must leave the events as they came, since the engine then
        # processes them again (poison isolation) and needs their addresses.
        emitted: list[Event] = []
        for event, found in zip(batch, candidates, strict=True):
            if found is None:
                out.fail(event, not_an_object(event.value))
                continue
            error = None
            if found.__class__ is str:  # one address: the usual case
                r = resolved[found] if found else None
                block = (
                    dict(r.block)
                    if r is not None and r.public
                    else dict(blocks[r.status if r else MISSING_IP])
                )
                if r is not None:
                    error = r.error
            else:
                block = None
                fallback = MISSING_IP
                for text in found:
                    r = resolved[text]
                    if r.public:
                        block = dict(r.block)
                        error = r.error
                        break
                    if fallback != PRIVATE:
                        fallback = r.status
                if block is None:
                    block = dict(blocks[fallback])
            if error is not None:
                out.fail(event, error)
                continue
            if target_name is not None:  # a one-level path (the usual "geo"): no parent to check
                event.value[target_name] = block
            else:
                try:
                    set_target(event, block)
                except (
                    RecordError
                ) as exc:  # the target's parent holds a value: this event's problem
                    out.fail(event, exc.reason)
                    continue
            emitted.append(event)
        # Rewrites: anonymize_ip of a one-level ip_field without XFF inline, others per event.
        if rewrites and self._anonymize_inline:
            for event in emitted:
                value = event.value
                ip = value.get(ip_name, MISSING)
                if ip is not MISSING and ip is not None and ip != "":
                    value[ip_name] = resolved[
                        ip if ip.__class__ is str else _address_text(ip)
                    ].anonymized
        elif rewrites:
            for event in emitted:
                self._rewrite(event, resolved)
        out.emit_all(emitted)
        return out

    def resolve(self, texts: dict[str, None] | list[str]) -> dict[str, _Resolved]:
        """The resolution of each address string, from the cache or the databases.

        A text longer than ``MAX_CACHED_TEXT`` is resolved but not kept: the cache is bounded by
        entries, and a client's junk header must not make each entry cost its whole length."""
        cache = self._addresses
        found, missing = cache.get_many(texts)
        if missing:
            fresh = {text: self._resolve_one(text) for text in missing}
            found.update(fresh)
            if max(map(len, fresh)) > MAX_CACHED_TEXT:
                fresh = {t: r for t, r in fresh.items() if len(t) <= MAX_CACHED_TEXT}
            cache.put_many(fresh)
        return found

    def _resolve_one(self, text: str) -> _Resolved:
        parsed = addresses.parse(text)
        if parsed is None:
            return _Resolved(INVALID, self._empty, None)
        version, n = parsed
        anonymized = (
            addresses.to_text(version, addresses.anonymize(version, n))
            if self.config.anonymize_ip
            else None
        )
        if not addresses.is_public(version, n):
            return _Resolved(PRIVATE, self._empty, anonymized)
        assert self.city is not None, "open() was not called"
        try:
            city, cached = self.city.lookup(version, n)
            self.lookups += not cached
            if self.asn is not None:
                asn, cached = self.asn.lookup(version, n)
                self.lookups += not cached
            else:
                asn = None
        except CorruptRecord as exc:
            return _Resolved(OK, self._empty, anonymized, error=str(exc))
        # The city block is the network's, shared by every address of it (the cache holds one
        # block per network, not one per address); events get copies. "ok" means at least one
        # location field is filled: a record with only `traits` (or an empty one) is
        # "not_found", with the ASN fields still filled when the ASN file has them.
        block = city if city is not None else self._not_found
        if asn:
            block = {**block, **asn}
        return _Resolved(block["status"], block, anonymized)

    def _rewrite(self, event: Event, resolved: dict[str, _Resolved]) -> None:
        drop = self.config.drop_ip
        for get, set_, delete, is_chain in self._rewrites:
            if drop:
                delete(event)
                continue
            value = get(event)
            if value is MISSING or value is None or value == "":
                continue
            if is_chain:
                texts = _chain(value)
                kept = [a for a in (resolved[t].anonymized for t in texts) if a]
                set_(event, kept if isinstance(value, list) else ", ".join(kept))
            else:
                text = value if value.__class__ is str else _address_text(value)
                set_(event, resolved[text].anonymized)


def _single_key(path: str | None) -> str | None:
    """The payload key of a one-level path (read or written inline per event), else None."""
    keys = payload_keys(path) if path else None
    return keys[0] if keys is not None and len(keys) == 1 else None


def _address_text(value: Any) -> str:
    """The text an ``ip_field`` value is looked up (and anonymized) by, when it is not a str:
    "" when absent, a str subclass's own text, else ``NOT_TEXT`` (which resolves as invalid; no
    repr: a list or an object of any size or depth is one small key)."""
    if value is MISSING or value is None:
        return ""
    return str.__str__(value) if isinstance(value, str) else NOT_TEXT


def _chain(value: Any) -> list[str]:
    """The addresses of an X-Forwarded-For value, client first."""
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if isinstance(value, list):
        # Entries stripped first: a blank one (" ") is no address, like an empty one.
        texts = (v.strip() if isinstance(v, str) else "" if v is None else NOT_TEXT for v in value)
        return [text for text in texts if text]
    return []


def _asn_fields(record: dict) -> dict[str, Any]:
    return {
        "asn": record.get("autonomous_system_number"),
        "as_org": record.get("autonomous_system_organization"),
    }


def _city_block(record: dict, language: str, empty: dict[str, Any]) -> dict[str, Any]:
    """The output block of a GeoIP2 City/Country record: every key of ``empty``, and its status.

    A place's name is in ``language``, else in English (also when empty). The fields are read
    into locals and the block made at once: this runs per reader lookup, and a copy of
    ``empty`` filled key by key, names read by a function call and the status by a generator
    cost ~15 % more."""
    country_code = country = subdivision_code = subdivision = city = postal_code = None
    latitude = longitude = accuracy_radius = time_zone = continent_code = continent = None
    found = record.get("country")
    if found:
        country_code = found.get("iso_code")
        names = found.get("names")
        if names:
            country = names.get(language) or names.get("en")
    found = record.get("subdivisions")
    if found:
        found = found[0]
        subdivision_code = found.get("iso_code")
        if found:
            names = found.get("names")
            if names:
                subdivision = names.get(language) or names.get("en")
    found = record.get("city")
    if found:
        names = found.get("names")
        if names:
            city = names.get(language) or names.get("en")
    found = record.get("postal")
    if found:
        postal_code = found.get("code")
    found = record.get("location")
    if found:
        latitude = found.get("latitude")
        longitude = found.get("longitude")
        accuracy_radius = found.get("accuracy_radius")
        time_zone = found.get("time_zone")
    found = record.get("continent")
    if found:
        continent_code = found.get("code")
        names = found.get("names")
        if names:
            continent = names.get(language) or names.get("en")
    # "ok" when any of LOCATION_FIELDS (all of CITY_FIELDS) is known
    located = (
        country_code is not None
        or country is not None
        or subdivision_code is not None
        or subdivision is not None
        or city is not None
        or postal_code is not None
        or latitude is not None
        or longitude is not None
        or accuracy_radius is not None
        or time_zone is not None
        or continent_code is not None
        or continent is not None
    )
    return {
        **empty,
        "status": OK if located else NOT_FOUND,
        "country_code": country_code,
        "country": country,
        "subdivision_code": subdivision_code,
        "subdivision": subdivision,
        "city": city,
        "postal_code": postal_code,
        "latitude": latitude,
        "longitude": longitude,
        "accuracy_radius": accuracy_radius,
        "time_zone": time_zone,
        "continent_code": continent_code,
        "continent": continent,
    }
