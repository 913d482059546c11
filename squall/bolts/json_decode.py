"""``json`` bolt: decode record bytes (optionally gzip-compressed) into the event payload with orjson.

An integer beyond 64 bits stays a Python int, exact (``squall.exact_json``): orjson would make it
a float. The check shares the pass over the bytes that bounds the nesting (one ``translate`` for
what were two ``count``s) and adds one ``find`` for 19 digits in a row: +0.35–0.5 µs an event on
the example's (docs/performance.md). Only a payload holding such an integer is decoded again.
"""

from __future__ import annotations

import gzip
import re
import zlib
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator

from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig
from squall.event import Event
from squall.exact_json import DIGIT_RUN, SCAN, exact, recoverable, wide_spans
from squall.limits import DEFAULT_MAX_DEPTH, MAX_EVENT_ID_BYTES, nesting_depth
from squall.paths import MISSING, DottedPath, getter, payload_keys
from squall.safe_json import json_type

GZIP_MAGIC = b"\x1f\x8b"
_NOT_ZERO = re.compile(rb"[^\x00]")
_GZIP_FIRST = GZIP_MAGIC[0]
INEXACT = "an integer beyond 64 bits cannot be decoded exactly"


class JsonConfig(ComponentConfig):
    gzip: Literal["auto", "always", "never"] = Field(
        "auto", description="Decompress gzip payloads: 'auto' detects the gzip header."
    )
    object_only: bool = Field(True, description="Reject payloads that are not JSON objects.")
    event_id_field: DottedPath | None = Field(
        None,
        description="Payload field holding a stable event id (e.g. the SDK's message id); "
        "records without it keep the id derived from stream, shard and sequence.",
    )
    max_bytes: int = Field(
        1_048_576 * 10,
        ge=1,
        description="Largest payload accepted (after decompression), in bytes.",
    )
    max_depth: int = Field(
        DEFAULT_MAX_DEPTH,
        ge=1,
        le=1000,
        description="Deepest nesting of objects and arrays accepted; a deeper "
        "payload is the record's failure.",
    )

    @field_validator("event_id_field", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return v or None  # `event_id_field: ""` has always meant "none"


class JsonBolt(Bolt):
    """Decode JSON payloads; bad JSON, bad gzip and non-objects go to the error stream."""

    Config = JsonConfig
    summary = "Decode JSON (orjson), optionally gzip-compressed, into the event payload."

    def __init__(self, config: JsonConfig, context):
        super().__init__(config, context)
        self._id_of = getter(config.event_id_field) if config.event_id_field else None
        # A payload key of one level (the usual ``message_id``) is read inline in ``process``,
        # not through the getter's call (``squall.paths.getter``'s rules: None otherwise).
        keys = payload_keys(config.event_id_field) if config.event_id_field else None
        self._id_key = keys[0] if keys is not None and len(keys) == 1 else None

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        cfg = self.config
        loads = orjson.loads
        # Settings read once per batch, not per event.
        max_depth, max_bytes, object_only = cfg.max_depth, cfg.max_bytes, cfg.object_only
        always, auto = cfg.gzip == "always", cfg.gzip == "auto"
        passed: list[Event] = []
        emit, id_of, id_key = passed.append, self._id_of, self._id_key
        scan_map, run = SCAN, DIGIT_RUN
        short = MAX_EVENT_ID_BYTES // 4  # at most 4 bytes a character: an id this long is under
        for ev in batch:
            defect = ev.meta.defect
            if defect:  # the spout could not deliver the record whole (e.g. an over-long line)
                out.fail(ev, defect)
                continue
            data = ev.raw
            # The first byte alone rules out gzip for almost every payload (no slice to build).
            if always or (auto and data and data[0] == _GZIP_FIRST and data[:2] == GZIP_MAGIC):
                try:
                    data = gunzip(data, max_bytes)
                except (OSError, EOFError, zlib.error, ValueError, OverflowError) as exc:
                    out.fail(ev, f"invalid gzip payload: {exc}")
                    continue
            elif len(data) > max_bytes:
                out.fail(ev, f"payload of {len(data)} bytes exceeds max_bytes ({max_bytes})")
                continue
            try:
                value = loads(data)
                exact_yet = False
            except orjson.JSONDecodeError as exc:
                value = _beyond_double(ev, data, exc, out)
                if value is _FAILED:
                    continue
                exact_yet = True
            if object_only and not isinstance(value, dict):
                out.fail(ev, f"payload is a JSON {json_type(value)}, not an object")
                continue
            # One C-speed pass maps digits to '0' and brackets to '{': more brackets than the
            # limit and only then is the payload walked (brackets inside strings only make this
            # check cautious); no 19 digits in a row and no integer is beyond 64 bits.
            scan = data.translate(scan_map)
            if scan.count(b"{") > max_depth:
                depth = nesting_depth(value)
                if depth > max_depth:
                    out.fail(
                        ev, f"payload nested {depth} levels deep, over max_depth ({max_depth})"
                    )
                    continue
            if scan.find(run) >= 0 and not exact_yet and (spans := wide_spans(data, scan)):
                try:  # orjson made it a float: decode again, exactly
                    value = exact(data, spans)
                except ValueError as why:
                    out.fail(ev, f"{INEXACT}: {why}")
                    continue
            ev.value = value
            if id_of is not None:
                if id_key is not None:
                    eid = value.get(id_key, MISSING) if isinstance(value, dict) else MISSING
                else:
                    eid = id_of(ev)
                # The usual id: text, not empty, short enough to be under the limit whatever its
                # characters, no NUL (its tests below in fewer steps).
                if eid.__class__ is str and 0 < len(eid) <= short and "\x00" not in eid:
                    ev._event_id = eid
                elif eid is not MISSING and eid is not None and eid != "":
                    eid = str(eid)
                    # At most 4 bytes a character: only a long id needs encoding to be measured.
                    if len(eid) > short:
                        size = len(eid.encode("utf-8", "surrogatepass"))
                        if size > MAX_EVENT_ID_BYTES:
                            out.fail(
                                ev,
                                f"{cfg.event_id_field} is {size} bytes, over the event id limit "
                                f"({MAX_EVENT_ID_BYTES} bytes)",
                            )
                            continue
                    if "\x00" in eid:  # no SQL text key (PostgreSQL) can hold it
                        out.fail(ev, f"{cfg.event_id_field} contains a NUL character")
                        continue
                    ev._event_id = eid  # Event.event_id's setter, without the property's call
            emit(ev)
        out.emit_all(passed)
        return out


def _invalid_json(data: bytes, exc: orjson.JSONDecodeError) -> str:
    """The reason a payload is not JSON (``json_error``'s)."""
    return f"invalid JSON: {json_error(data, exc)}"


def json_error(data: bytes, exc: orjson.JSONDecodeError) -> str:
    """What is wrong with ``data``, orjson's message. For bytes that are not UTF-8 orjson says
    "str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)" whatever the byte
    and wherever it is: name the first such byte and its place instead."""
    if "not valid UTF-8" in str(exc):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            at = err.start
            line = data.count(b"\n", 0, at) + 1
            column = at - data.rfind(b"\n", 0, at)
            return f"not UTF-8: byte 0x{data[at]:02X} at offset {at} (line {line}, column {column})"
    return str(exc)


_FAILED = object()


def _beyond_double(ev: Event, data: bytes, exc: orjson.JSONDecodeError, out: Output) -> Any:
    """The payload orjson refused, decoded exactly if an integer of 310 digits or more was the
    reason (the standard library reads it); else ``_FAILED``, the event failed with the reason."""
    spans = wide_spans(data, data.translate(SCAN)) if recoverable(exc) else None
    if not spans:
        out.fail(ev, _invalid_json(data, exc))
        return _FAILED
    try:
        return exact(data, spans, checked=False)
    except orjson.JSONDecodeError as why:  # not JSON elsewhere (1e999)
        out.fail(ev, f"invalid JSON: {why}")
    except ValueError as why:
        out.fail(ev, f"{INEXACT}: {why}")
    return _FAILED


def gunzip(data: bytes, limit: int) -> bytes:
    """The decompressed payload: every member of a multi-member stream (concatenated gzip files
    are one gzip file, RFC 1952), as ``gzip.decompress`` reads it; zero bytes (padding) after a
    member are ignored, before another member or at the end, and any other data after the stream
    is an error, not dropped silently. Raises
    ``OverflowError`` past ``limit`` bytes (never holding more), ``EOFError`` for a truncated
    stream, ``ValueError``/``zlib.error`` for data that is not gzip (the producer's body too).
    Stricter than ``gzip.decompress`` where zlib checks the header: a header CRC (FHCRC) that
    does not match, or reserved flag bits set, is a ``zlib.error`` (``gzip.decompress`` skips
    both); an empty input is a truncated stream (``gzip.decompress``: ``b""``).

    Each member is fed a window of the input that doubles from 64 bytes: at a member's end zlib
    copies what it was given past it (``unused_data``), so feeding the rest of the input was a
    copy of it per member, quadratic — 4 MB of empty members (a producer body) took 14 s."""
    parts: list[bytes] = []
    size = 0
    view = memoryview(data)
    pos, end = 0, len(data)
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        window = 64
        while not d.eof:
            if pos >= end:
                raise EOFError("truncated gzip stream")
            chunk = view[pos : pos + window]
            part = d.decompress(chunk, limit + 1 - size)
            size += len(part)
            if size > limit:  # (so an unconsumed_tail, output cut at max_length, is never left)
                raise OverflowError(f"decompressed payload exceeds {limit} bytes")
            parts.append(part)
            pos += len(chunk) - len(d.unused_data)
            window = min(window * 2, 1 << 20)
        # zero bytes after a member are padding, between members too (as gzip.decompress and
        # GzipFile read them): found by a search from pos, never a copy of the rest per member
        found = _NOT_ZERO.search(data, pos)
        if found is None:
            break
        if data[found.start() : found.start() + 2] != GZIP_MAGIC:
            raise ValueError(f"{end - pos} bytes after the end of the gzip stream")
        pos = found.start()
    return parts[0] if len(parts) == 1 else b"".join(parts)


__all__ = ["JsonBolt", "JsonConfig", "gunzip", "gzip"]
