"""The examples/pistats chain written by hand, without squall: the baseline squall must beat.

    python benchmarks/hand_loop.py --variant optimized --input events.jsonl \\
        --warehouse sqlite:///out/w.db --state sqlite:///out/s.db --rejects out/rejects.jsonl

It does exactly what examples/pistats/topology.yaml does, and stores the same rows, the same
subscription states and the same dead letters (benchmarks/check.py compares them):

- read the JSON-lines file (gzip or not); a record's stream is the file name, its shard "file",
  its sequence number the line number, its fingerprint a SHA-256 of the bytes read so far (as
  squall's file spout);
- decode (orjson; objects only; the event id is ``message_id``, or the blake2b id squall derives
  from stream, shard and sequence);
- validate against examples/pistats/schemas/event.json (fastjsonschema for the verdict,
  jsonschema's best match for the reason of an invalid event);
- drop duplicate event ids within a batch;
- geo: country, city and status from the bundled GeoLite2-City; private, malformed and missing
  addresses get "private" / "invalid" / "missing"; the stored address is anonymised (last IPv4
  octet, last 80 IPv6 bits); a malformed one is removed;
- device: ua-parser (the fastest resolver installed) for browser and OS; the device class and
  bot flag come from ``squall.enrichment.device.classify`` — imported, because its rules *are*
  the definition of those values and re-typing 60 lines of rules would only risk drift;
- subscription state per device token with squall's rules (register / subscribe / unsubscribe,
  versions ordered by event time then position then id, an older update merged where only
  registers came after it, four earlier states kept per key), in a
  ``squall_subscriptions`` table with the same columns and values;
- one warehouse row per event (20 columns, same types), insert-or-ignore on the event id;
- dead letters as JSON lines with the same fields.

Two variants:

``optimized`` — what a good engineer writes: per-batch work, dict caches for addresses and user
agents, states loaded with one query per batch, ``executemany`` (SQLite) or COPY into a temporary
table (PostgreSQL), one transaction per batch per database (SQLite: warehouse and state are two
files, as in the example; PostgreSQL: rows and states in one transaction), fsync of the dead
letters per batch.

``naive`` — one event at a time and no caches: a geo lookup and a user-agent parse per event, a
SELECT and an UPSERT per state change, an INSERT per row; still one commit per batch (a commit
per event would measure fsync, not code).

Not covered (squall does these; this data never needs them): re-delivered records (a state's
history is written but never read back), X-Forwarded-For chains, gzip-compressed records.
Prints one JSON line: events read, rows written, dead letters, seconds, CPU seconds.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import ipaddress
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

#: JSON's names of the types a decoded payload can have, as squall's reasons give them.
_JSON_NAMES = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "pistats" / "schemas" / "event.json"
HISTORY = 4  # earlier states kept per key (the subscription bolt's default)
ACTIONS = {"register": "register", "subscribe": "subscribe", "unsubscribe": "unsubscribe"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
MAX_KEY = 512

COLUMNS = (
    "event_id",
    "event_type",
    "occurred_at",
    "app_id",
    "user_id",
    "device_token",
    "sdk_version",
    "page_url",
    "click_target",
    "topics",
    "ip",
    "country",
    "city",
    "geo_status",
    "device_class",
    "os",
    "browser",
    "is_bot",
    "subscribed",
    "subscription_status",
)
STATE_COLUMNS = (
    "key",
    "status",
    "subscribed",
    "topics",
    "registered_at_ms",
    "changed_at_ms",
    "version",
    "event_id",
    "position",
    "history",
)

SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS {events} (
    event_id TEXT NOT NULL PRIMARY KEY, event_type TEXT NOT NULL, occurred_at DATETIME NOT NULL,
    app_id TEXT, user_id TEXT, device_token TEXT, sdk_version TEXT, page_url TEXT, click_target TEXT,
    topics TEXT, ip TEXT, country TEXT, city TEXT, geo_status TEXT, device_class TEXT, os TEXT,
    browser TEXT, is_bot BOOLEAN, subscribed BOOLEAN, subscription_status TEXT);
CREATE INDEX IF NOT EXISTS ix_{events}_event_type ON {events} (event_type);
"""
PG_DDL = """
CREATE TABLE IF NOT EXISTS {events} (
    event_id TEXT NOT NULL PRIMARY KEY, event_type TEXT NOT NULL, occurred_at TIMESTAMPTZ NOT NULL,
    app_id TEXT, user_id TEXT, device_token TEXT, sdk_version TEXT, page_url TEXT, click_target TEXT,
    topics JSONB, ip TEXT, country TEXT, city TEXT, geo_status TEXT, device_class TEXT, os TEXT,
    browser TEXT, is_bot BOOLEAN, subscribed BOOLEAN, subscription_status TEXT);
CREATE INDEX IF NOT EXISTS ix_{events}_event_type ON {events} (event_type);
"""
STATE_DDL = """
CREATE TABLE IF NOT EXISTS {state} (
    key VARCHAR(512) NOT NULL PRIMARY KEY, status VARCHAR(16) NOT NULL, subscribed BOOLEAN NOT NULL,
    topics TEXT NOT NULL, registered_at_ms BIGINT, changed_at_ms BIGINT, version TEXT {collate} NOT NULL,
    event_id TEXT NOT NULL, position TEXT NOT NULL, history TEXT NOT NULL)
"""
UNKNOWN = ("unknown", False, (), None, None, "", "", None, ())  # status … position, history


# -- reading ------------------------------------------------------------------------------------


def read_batches(path: Path, size: int):
    """Lists of ``(line number, bytes, fingerprint)``, as squall's file spout numbers, strips and
    fingerprints them (a SHA-256 of every byte read so far: part of derived event ids)."""
    digest = hashlib.sha256()
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        fh = gzip.GzipFile(fileobj=raw) if gz else raw
        batch = []
        update, hexdigest = digest.update, digest.hexdigest
        for number, line in enumerate(fh, start=1):
            update(line)
            data = line.rstrip(b"\r\n")
            if not data.strip():
                continue
            batch.append((number, data, hexdigest()[:32]))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


def derived_id(stream: str, seq: int, fingerprint: str) -> str:
    return hashlib.blake2b(
        f"{stream}\x1ffile\x1f{seq}\x1f0\x1f{fingerprint}".encode(), digest_size=16
    ).hexdigest()


# -- validation ---------------------------------------------------------------------------------


class Validator:
    def __init__(self):
        import fastjsonschema
        import jsonschema

        schema = orjson.loads(SCHEMA.read_bytes())
        self._fast = fastjsonschema.compile({k: v for k, v in schema.items() if k != "$schema"})
        self._error = fastjsonschema.JsonSchemaException
        cls = jsonschema.validators.validator_for(schema)
        self._full = cls(schema, format_checker=cls.FORMAT_CHECKER)
        self._best = jsonschema.exceptions.best_match

    def reason(self, value: dict) -> str | None:
        try:
            self._fast(value)
            return None
        except self._error:
            error = self._best(self._full.iter_errors(value))
            where = error.json_path if error.absolute_path else "$"
            return f"schema: {where}: {error.message}"


# -- geo ----------------------------------------------------------------------------------------


class Geo:
    """``(status, country code, city, anonymised address)`` of an address string."""

    def __init__(self, cache: bool):
        import maxminddb
        from _maxminddb_geolite2 import geolite2_database

        self.reader = maxminddb.open_database(geolite2_database(), maxminddb.MODE_AUTO)
        self.cache: dict[str, tuple] | None = {} if cache else None

    def __call__(self, text: str) -> tuple:
        cache = self.cache
        if cache is not None:
            hit = cache.get(text)
            if hit is not None:
                return hit
        found = self._resolve(text)
        if cache is not None:
            cache[text] = found
        return found

    def _resolve(self, text: str) -> tuple:
        s = text.strip()
        try:
            addr = ipaddress.ip_address(s)
        except ValueError:
            addr = None
            if s.startswith("["):
                s = s[1:].partition("]")[0]
            elif s.count(":") == 1:
                s = s.partition(":")[0]
            try:
                addr = ipaddress.ip_address(s.partition("%")[0])
            except ValueError:
                return ("invalid", None, None, None)
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr.version == 4:
            anon = str(ipaddress.IPv4Address(int(addr) & 0xFFFFFF00))
            public = addr.is_global and not addr.is_multicast and int(addr) != 0xFFFFFFFF
        else:
            anon = str(ipaddress.IPv6Address(int(addr) & ~((1 << 80) - 1)))
            public = (int(addr) >> 125 == 1 and addr.is_global) and not addr.is_multicast
        if not public:
            return ("private", None, None, anon)
        record = self.reader.get(addr)
        if not record:
            return ("not_found", None, None, anon)
        country = record.get("country") or {}
        city = ((record.get("city") or {}).get("names") or {}).get("en")
        return ("ok" if _has_location(record) else "not_found", country.get("iso_code"), city, anon)


def _has_location(record: dict) -> bool:
    """A record with at least one location field (country, subdivision, city, postal code,
    coordinates, time zone, continent): squall's geo bolt calls the others "not_found"."""

    def name(obj):
        names = (obj or {}).get("names") or {}
        return names.get("en")

    country, continent = record.get("country"), record.get("continent")
    subdivision = (record.get("subdivisions") or [None])[0]
    location, postal = record.get("location") or {}, record.get("postal") or {}
    values = [
        name(record.get("city")),
        postal.get("code"),
        *(location.get(k) for k in ("latitude", "longitude", "accuracy_radius", "time_zone")),
    ]
    if country:
        values += [country.get("iso_code"), name(country)]
    if subdivision:
        values += [subdivision.get("iso_code"), name(subdivision)]
    if continent:
        values += [continent.get("code"), name(continent)]
    return any(v is not None for v in values)


# -- device -------------------------------------------------------------------------------------


class Device:
    """``(device class, os, browser, is bot)`` of a user-agent string."""

    UNKNOWN = ("unknown", "unknown", "unknown", False)

    def __init__(self, cache: bool):
        import ua_parser
        from ua_parser import Domain

        from squall.enrichment.device import classify  # the definition of device class and bot

        self.classify = classify
        self.domain = Domain.ALL
        lazy = ua_parser.RegexResolver is not None or ua_parser.Re2Resolver is not None
        self.resolver = ua_parser.BestAvailableResolver(
            ua_parser.load_lazy_builtins() if lazy else ua_parser.load_builtins()
        )
        self.cache: dict[str, tuple] | None = {} if cache else None

    def __call__(self, ua: Any) -> tuple:
        if ua.__class__ is not str:
            return self.UNKNOWN
        ua = ua.strip()[:512]
        if not ua:
            return self.UNKNOWN
        cache = self.cache
        if cache is not None:
            hit = cache.get(ua)
            if hit is not None:
                return hit
        r = self.resolver(ua, self.domain)
        browser = r.user_agent.family if r.user_agent else "Other"
        os_ = r.os.family if r.os else "Other"
        dev = r.device
        cls = self.classify(
            ua,
            browser,
            os_,
            dev.family if dev else "Other",
            dev.brand if dev else None,
            dev.model if dev else None,
        )
        found = (cls, os_, browser, cls == "bot")
        if cache is not None:
            cache[ua] = found
        return found


# -- subscription state -------------------------------------------------------------------------
# A state is a tuple: (status, subscribed, topics, registered_at, changed_at, version, event_id,
# position, history); position is (shard, sequence, sub-sequence), history a tuple of JSON texts.


def encode(s: tuple) -> str:
    p = s[7]
    return orjson.dumps(
        [s[0], s[1], s[2], s[3], s[4], s[5], s[6], None if p is None else [p[0], str(p[1]), p[2]]]
    ).decode()


def apply(
    s: tuple,
    action: str,
    time_ms: int,
    ver: str,
    event_id: str,
    given: tuple | None,
    position: tuple,
) -> tuple:
    """squall's rules (squall/enrichment/state.py ``apply``), with the history kept."""
    status, subscribed, old_topics, registered_at = s[0], s[1], s[2], s[3]
    topics = old_topics
    if action == "register":
        if registered_at is None:
            registered_at = time_ms
        if status == "unknown":
            status = "registered"
    elif action == "subscribe":
        if given:
            topics = tuple(sorted(set(old_topics).union(given)))
        subscribed, status = True, "subscribed"
    else:
        if given:
            remaining = tuple(t for t in old_topics if t not in given)
            if old_topics and not remaining:
                subscribed, status = False, "unsubscribed"
            topics = remaining
        else:
            topics, subscribed, status = (), False, "unsubscribed"
        if status == "unknown":
            status = "unsubscribed"
    history = (*s[8], encode(s))[-HISTORY:]
    if action == "register":  # keeps the version of the update that set the subscription
        ver = compose(ver, split_version(s[5])[1], registered_at)
    return (status, subscribed, topics, registered_at, time_ms, ver, event_id, position, history)


SEP = "\x1f"


def compose(newest: str, subscription: str, registered_at: int | None) -> str:
    """squall's ``state.compose``: a register-made (or merged) state's version."""
    reg = "-" * 15 if registered_at is None else "%015d" % (10**15 - 1 - registered_at)  # noqa: UP031
    return f"{newest}{SEP}{subscription}{SEP}{reg}{SEP}{len(subscription):05d}"


def split_version(v: str) -> tuple[str, str]:
    """squall's ``state.split_version``."""
    if len(v) <= 22 or v[-6] != SEP or v[-22] != SEP or not v[-5:].isdecimal():
        return v, v
    end = len(v) - 22
    start = end - int(v[-5:])
    if start < 1 or v[start - 1] != SEP:
        return v, v
    return v[: start - 1], v[start:end]


def merge(
    s: tuple,
    action: str,
    time_ms: int,
    ver: str,
    event_id: str,
    given: tuple | None,
    position: tuple,
) -> tuple | None:
    """squall's ``state._merged``: an update older than the state; None when it changes nothing."""
    if ver == s[5]:
        return None
    newest, sub = split_version(s[5])
    status, subscribed, topics, registered_at = s[0], s[1], s[2], s[3]
    if action == "register":
        if registered_at is not None and registered_at <= time_ms:
            return None
        registered_at = time_ms
        if status == "unknown":
            status = "registered"
    else:
        if ver <= sub:
            return None
        made = apply(s, action, time_ms, ver, event_id, given, position)
        status, subscribed, topics, sub = made[0], made[1], made[2], ver
    at, was = position, s[7]
    # (squall: the same lineage, after, or before but for a register)
    here = was is None or (at[0] == was[0] and (at > was or action != "register"))
    return (
        status,
        subscribed,
        topics,
        registered_at,
        s[4],
        compose(newest, sub, registered_at),
        event_id if here else s[6],
        at if here else was,
        (*s[8], encode(s))[-HISTORY:],
    )


def parse_time(value: str) -> int:
    dt = datetime.fromisoformat(value.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = (dt - EPOCH) // ONE_MS
    if ms < 0:
        raise ValueError(f"time before 1970: {value!r}")
    return ms


def parse_topics(value: Any) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError("topics must be a string or a list of strings")
    return tuple(sorted({t.strip() for t in value if t.strip()})) or None


def state_row(key: str, s: tuple) -> tuple:
    p = s[7]
    return (
        key,
        s[0],
        s[1],
        orjson.dumps(s[2]).decode(),
        s[3],
        s[4],
        s[5],
        s[6],
        "" if p is None else f"{p[0]}/{p[1]}/{p[2]}",
        "\n".join(s[8]),
    )


def state_from_row(row: tuple) -> tuple:
    _, status, subscribed, topics, reg, changed, ver, event_id, position, history = row
    pos = None
    if position:
        shard, seq, sub = position.rsplit("/", 2)
        pos = (shard, int(seq), int(sub))
    return (
        status,
        bool(subscribed),
        tuple(orjson.loads(topics)),
        reg,
        changed,
        ver,
        event_id,
        pos,
        tuple(history.split("\n")) if history else (),
    )


def update_of(p: dict, kind: str, key: str | None, seq: int, event_id: str):
    """``(time_ms, version, topics)`` of a state-changing event, or the reason it is rejected."""
    if key is None:
        return f"{kind} event without a usable 'device_token'"
    if len(key) > MAX_KEY:
        return f"{kind} event whose 'device_token' is longer than {MAX_KEY} characters"
    try:
        value = p.get("timestamp")
        if value is None and "timestamp" not in p:
            raise ValueError("missing")
        time_ms = parse_time(value)
    except ValueError as exc:
        return f"{kind} event with a bad 'timestamp': {exc}"
    try:
        topics = parse_topics(p.get("topics"))
    except ValueError as exc:
        return f"{kind} event with bad 'topics': {exc}"
    s = str(seq)
    return time_ms, f"{time_ms:015d}.{len(s):03d}{s}.{0:010d}.{event_id}", topics


def key_of(p: dict) -> str | None:
    k = p.get("device_token")
    if k.__class__ is str:
        return k.strip() or None
    if isinstance(k, int) and not isinstance(k, bool):
        return str(k)
    return None


# -- warehouse rows -----------------------------------------------------------------------------


def occurred_at(v: Any) -> datetime:
    s = v.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    d = datetime.fromisoformat(s)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def text(v: Any) -> Any:
    if v is None or v.__class__ is str:
        return v
    if isinstance(v, dict | list):
        return orjson.dumps(v).decode()
    return str(v).lower() if isinstance(v, bool) else str(v)


# -- the loop -----------------------------------------------------------------------------------


class Loop:
    def __init__(self, args):
        self.args = args
        self.optimized = args.variant == "optimized"
        self.validator = Validator()
        self.geo = Geo(cache=self.optimized)
        self.device = Device(cache=self.optimized)
        self.stream = Path(args.input).name
        self.source: str | None = None
        self.lineage: str | None = None
        self.pg = args.warehouse.startswith("postgresql")
        self.events_table = args.events_table
        self.state_table = args.state_table
        self._open_databases()
        rejects = Path(args.rejects)
        rejects.parent.mkdir(parents=True, exist_ok=True)
        self.rejects = open(rejects, "ab")  # noqa: SIM115 - closed in close()
        self.read = self.rows = self.dead = 0
        self.cpu: dict[str, float] = {}  # CPU seconds per part of the work

    def _open_databases(self) -> None:
        a = self.args
        if self.pg:
            import psycopg2

            self.wdb = psycopg2.connect(a.warehouse.replace("postgresql+psycopg2", "postgresql"))
            self.sdb = self.wdb  # rows and states: one transaction per batch
            with self.wdb, self.wdb.cursor() as cur:
                cur.execute(PG_DDL.format(events=self.events_table))
                cur.execute(STATE_DDL.format(state=self.state_table, collate='COLLATE "C"'))
            self.mark = "%s"
        else:
            self.wdb = _sqlite_connect(a.warehouse)
            if not a.state or _sqlite_path(a.state) == _sqlite_path(a.warehouse):
                self.sdb = self.wdb  # one file, as in the example: one transaction per batch
            else:
                self.sdb = _sqlite_connect(a.state)
            self.wdb.executescript(SQLITE_DDL.format(events=self.events_table))
            self.sdb.executescript(STATE_DDL.format(state=self.state_table, collate=""))
            self.mark = "?"
        m = self.mark
        cols = ", ".join(STATE_COLUMNS[1:])
        self.insert_sql = (
            f"INSERT INTO {self.events_table} ({', '.join(COLUMNS)}) VALUES "
            f"({', '.join([m] * len(COLUMNS))}) ON CONFLICT (event_id) DO NOTHING"
        )
        self.upsert_sql = (
            f"INSERT INTO {self.state_table} (key, {cols}) VALUES ({', '.join([m] * 10)}) "
            f"ON CONFLICT (key) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS[1:])
            + f" WHERE {self.state_table}.version < excluded.version"
        )
        self.select_sql = f"SELECT {', '.join(STATE_COLUMNS)} FROM {self.state_table} WHERE key "

    def run(self) -> None:
        for batch in read_batches(Path(self.args.input), self.args.batch):
            self.read += len(batch)
            self.batch(batch)

    def batch(self, batch: list[tuple[int, bytes, str]]) -> None:
        clock = time.process_time
        t0 = clock()
        dead: list[tuple] = []  # (event id, component, stream, reason, seq, bytes)
        events: list[tuple] = []  # (seq, bytes, event id, payload)
        seen: set[str] = set()
        loads, stream, validate = orjson.loads, self.stream, self.validator.reason
        self.fingerprints = fingerprints = {}
        if self.lineage is None:  # where positions count: the shard and the input itself (its
            # name and first record's fingerprint), as squall's ``event.lineage``
            self.source = batch[0][2]
            self.lineage = f"file\x1f{self.stream}\x1f{self.source}"
        for seq, data, fp in batch:
            fingerprints[seq] = fp
            try:
                p = loads(data)
            except orjson.JSONDecodeError as exc:
                dead.append(
                    (
                        derived_id(stream, seq, fp),
                        "decode",
                        "error",
                        f"invalid JSON: {exc}",
                        seq,
                        data,
                    )
                )
                continue
            if p.__class__ is not dict:
                dead.append(
                    (
                        derived_id(stream, seq, fp),
                        "decode",
                        "error",
                        f"payload is a JSON {_JSON_NAMES.get(type(p), type(p).__name__)}, "
                        "not an object",
                        seq,
                        data,
                    )
                )
                continue
            eid = p.get("message_id")
            eid = str(eid) if eid is not None and eid != "" else derived_id(stream, seq, fp)
            reason = validate(p)
            if reason is not None:
                dead.append((eid, "validate", "invalid", reason, seq, data))
                continue
            if eid in seen:
                continue
            seen.add(eid)
            events.append((seq, data, eid, p))
        t1 = clock()
        states = self.subscription(events, dead)
        t2 = clock()
        rows = self.build_rows(events, states, dead)
        t3 = clock()
        self.write(rows, states, dead)
        t4 = clock()
        for part, t in (
            ("decode + validate + dedupe", t1 - t0),
            ("subscription (load + rules)", t2 - t1),
            ("rows (geo + device + values)", t3 - t2),
            ("write (dead letters, rows, states, commits)", t4 - t3),
        ):
            self.cpu[part] = self.cpu.get(part, 0.0) + t

    def subscription(self, events: list[tuple], dead: list[tuple]) -> dict:
        """The state each event sees (by position in ``events``), and the changed states by key."""
        updates: list[Any] = [None] * len(events)
        keys: list[str | None] = [None] * len(events)
        bad: set[int] = set()
        for i, (seq, data, eid, p) in enumerate(events):
            key = key_of(p)
            keys[i] = key if key is None or len(key) <= MAX_KEY else None
            kind = p.get("event_type")
            if kind.__class__ is str and kind in ACTIONS:
                u = update_of(p, kind, key, seq, eid)
                if u.__class__ is str:
                    dead.append((eid, "subscription", "error", u, seq, data))
                    bad.add(i)
                    continue
                updates[i] = (ACTIONS[kind], *u)
        wanted = list(dict.fromkeys(k for k in keys if k is not None))
        current = self.load_states(wanted)
        changed: dict[str, tuple] = {}
        seen_states: list[tuple] = [UNKNOWN] * len(events)
        for i, key in enumerate(keys):
            if key is None:
                continue
            s = current.get(key, UNKNOWN)
            u = updates[i]
            if u is not None:
                seq, eid = events[i][0], events[i][2]
                step = apply if u[2] > s[5] else merge  # (an older update: squall's merge)
                after = step(s, u[0], u[1], u[2], eid, u[3], (self.lineage, seq, 0))
                if after is not None:
                    s = current[key] = changed[key] = after
            seen_states[i] = s
        return {"seen": seen_states, "changed": changed, "bad": bad}

    def load_states(self, keys: list[str]) -> dict[str, tuple]:
        if not keys:
            return {}
        found = {}
        if self.optimized:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                sql = self.select_sql + f"IN ({', '.join([self.mark] * len(chunk))})"
                for row in self._query(sql, chunk):
                    found[row[0]] = state_from_row(row)
        else:
            for key in keys:  # one query per key
                for row in self._query(self.select_sql + f"= {self.mark}", [key]):
                    found[row[0]] = state_from_row(row)
        return found

    def _query(self, sql: str, params: list) -> list:
        if self.pg:
            with self.sdb.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        return self.sdb.execute(sql, params).fetchall()

    def build_rows(self, events: list[tuple], states: dict, dead: list[tuple]) -> list[tuple]:
        rows = []
        geo, device, bad, seen = self.geo, self.device, states["bad"], states["seen"]
        dumps = orjson.dumps
        for i, (seq, data, eid, p) in enumerate(events):
            if i in bad:
                continue
            ip = p.get("ip")
            if ip is None or ip == "":
                status, country, city, stored = "missing", None, None, ip
            else:
                status, country, city, stored = geo(ip)
            dev_class, os_, browser, is_bot = device(p.get("user_agent"))
            s = seen[i]
            try:
                when = occurred_at(p["timestamp"])
            except (ValueError, TypeError, AttributeError):
                dead.append(
                    (
                        eid,
                        "events",
                        "error",
                        f"column 'occurred_at': cannot store "
                        f"{_describe(p['timestamp'])} from 'timestamp' as timestamp",
                        seq,
                        data,
                    )
                )
                continue
            sdk, page, click, topics = p.get("sdk"), p.get("page"), p.get("click"), p.get("topics")
            rows.append(
                (
                    eid,
                    text(p["event_type"]),
                    when,
                    text(p.get("app_id")),
                    text(p.get("user_id")),
                    text(p.get("device_token")),
                    text(sdk.get("version")) if sdk.__class__ is dict else None,
                    text(page.get("url")) if page.__class__ is dict else None,
                    text(click.get("target")) if click.__class__ is dict else None,
                    None
                    if topics is None
                    else (dumps(topics).decode() if not self.pg else _Json(topics)),
                    stored,
                    country,
                    city,
                    status,
                    dev_class,
                    os_,
                    browser,
                    is_bot,
                    s[1],
                    s[0],
                )
            )
        return rows

    def write(self, rows: list[tuple], states: dict, dead: list[tuple]) -> None:
        changed = [state_row(k, s) for k, s in states["changed"].items()]
        if dead:  # dead letters first: on disk before the rows (squall's commit order)
            now = datetime.now(UTC).isoformat
            lines = []
            for eid, component, stream, reason, seq, data in dead:
                doc = {
                    "event_id": eid,
                    "component": component,
                    "stream": stream,
                    "reason": reason,
                    "failed_at": now(),
                    "meta": {
                        "stream": self.stream,
                        "shard_id": "file",
                        "sequence_number": str(seq),
                        "sub_sequence_number": 0,
                        "partition_key": "",
                        "arrival_time": None,
                        "explicit_hash_key": None,
                        "fingerprint": self.fingerprints[seq],
                        "source": self.source,
                    },
                }
                try:
                    doc["record"] = data.decode("utf-8")
                except UnicodeDecodeError:
                    import base64

                    doc["record_base64"] = base64.b64encode(data).decode("ascii")
                lines.append(orjson.dumps(doc))
            self.rejects.write(b"\n".join(lines) + b"\n")
            self.rejects.flush()
            os.fsync(self.rejects.fileno())
            self.dead += len(dead)
        if self.pg:
            self._write_pg(rows, changed)
        else:
            self._write_sqlite(rows, changed)
        self.rows += len(rows)

    def _write_sqlite(self, rows: list[tuple], changed: list[tuple]) -> None:
        w, s = self.wdb, self.sdb
        w.execute("BEGIN")
        if self.optimized:
            w.executemany(self.insert_sql, rows)
        else:
            for row in rows:
                w.execute(self.insert_sql, row)
        if s is w:  # one database: the states join the rows' transaction
            if changed:
                if self.optimized:
                    w.executemany(self.upsert_sql, changed)
                else:
                    for row in changed:
                        w.execute(self.upsert_sql, row)
            w.execute("COMMIT")
            return
        w.execute("COMMIT")
        if changed:
            s.execute("BEGIN")
            if self.optimized:
                s.executemany(self.upsert_sql, changed)
            else:
                for row in changed:
                    s.execute(self.upsert_sql, row)
            s.execute("COMMIT")

    def _write_pg(self, rows: list[tuple], changed: list[tuple]) -> None:
        import io

        from psycopg2.extras import execute_values

        with self.wdb, self.wdb.cursor() as cur:
            if self.optimized:
                buf = io.StringIO()
                for row in rows:
                    buf.write("\t".join(_copy_value(v) for v in row))
                    buf.write("\n")
                buf.seek(0)
                cur.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS hand_stage (LIKE {self.events_table}) "
                    "ON COMMIT DELETE ROWS"
                )
                cur.copy_expert(f"COPY hand_stage ({', '.join(COLUMNS)}) FROM STDIN", buf)
                cur.execute(
                    f"INSERT INTO {self.events_table} SELECT * FROM hand_stage "
                    "ON CONFLICT (event_id) DO NOTHING"
                )
                if changed:
                    execute_values(
                        cur,
                        self.upsert_sql.replace(f"({', '.join(['%s'] * 10)})", "%s"),
                        changed,
                        page_size=len(changed),
                    )
            else:
                for row in rows:
                    cur.execute(self.insert_sql, row)
                for row in changed:
                    cur.execute(self.upsert_sql, row)

    def close(self) -> None:
        self.rejects.close()
        self.wdb.close()
        if self.sdb is not self.wdb:
            self.sdb.close()
        self.geo.reader.close()


class _Json:
    """A JSON value for psycopg2 (jsonb)."""

    def __init__(self, value):
        self.value = value

    def __conform__(self, proto):
        from psycopg2.extensions import ISQLQuote

        if proto is ISQLQuote:
            return self

    def getquoted(self):
        from psycopg2.extensions import QuotedString

        return QuotedString(orjson.dumps(self.value).decode()).getquoted() + b"::jsonb"


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(v: Any) -> str:
    if v is None:
        return "\\N"
    if v.__class__ is str:
        return v.translate(_COPY_ESCAPES)
    if v.__class__ is bool:
        return "t" if v else "f"
    if isinstance(v, _Json):
        return orjson.dumps(v.value).decode().translate(_COPY_ESCAPES)
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


def _describe(v: Any) -> str:
    shown = repr(v)
    return shown if len(shown) <= 80 else shown[:77] + "..."


#: The journal squall's SQLite connections use (``squall.topology.sqlite_driver.CONNECTION_PRAGMAS``;
#: tests/benchmarks/test_harness.py checks they are the same): the same durability (every commit
#: fsync'd) and the same I/O. SQLite's default rollback journal costs more CPU per commit.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA wal_autocheckpoint=10000",
)


def _sqlite_connect(url: str) -> Any:
    import sqlite3

    db = sqlite3.connect(_sqlite_path(url), isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        db.execute(pragma)
    return db


def _sqlite_path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise SystemExit(f"not a SQLite URL: {url}")
    return url[len("sqlite:///") :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=("optimized", "naive"), default="optimized")
    ap.add_argument(
        "--input", required=True, help="JSON-lines file of SDK events (.gz is decompressed)"
    )
    ap.add_argument("--warehouse", required=True, help="sqlite:///path or postgresql://… URL")
    ap.add_argument("--state", help="state database URL (SQLite; PostgreSQL uses the warehouse's)")
    ap.add_argument("--rejects", required=True, help="dead-letter JSON-lines file")
    ap.add_argument("--events-table", default="events")
    ap.add_argument("--state-table", default="squall_subscriptions")
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args(argv)
    if not args.warehouse.startswith("postgresql") and not args.state:
        ap.error("--state is required with a SQLite warehouse")
    wall, cpu = time.perf_counter(), time.process_time()
    loop = Loop(args)
    loop.run()
    loop.close()
    print(
        orjson.dumps(
            {
                "variant": args.variant,
                "read": loop.read,
                "rows": loop.rows,
                "dead_letters": loop.dead,
                "seconds": time.perf_counter() - wall,
                "cpu_seconds": time.process_time() - cpu,
                "cpu_per_part": loop.cpu,
            }
        ).decode()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
