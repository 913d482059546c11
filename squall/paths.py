"""Dotted paths into an event, compiled once: ``user.id`` reads the payload, ``meta.shard_id`` the metadata."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator

from squall.errors import RecordError
from squall.event import Event

MISSING: Any = type(
    "Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False}
)()

META_FIELDS = (
    "event_id",
    "stream",
    "shard_id",
    "sequence_number",
    "sub_sequence_number",
    "partition_key",
    "arrival_time",
    "explicit_hash_key",
)


def validate_path(path: str) -> str:
    """Check a dotted path at load time; returns it unchanged or raises ``ValueError``."""
    if not path or any(not part for part in path.split(".")):
        raise ValueError(f"'{path}' is not a dotted path (like 'user.id' or 'meta.shard_id')")
    if ", " in path:  # `key: app_id, user.id`: one path named "app_id, user" then "id"
        raise ValueError(
            f"'{path}' is one dotted path, not several: write a list ([a, b]) where several are taken"
        )
    parts = path.split(".")
    if any(part != part.strip() for part in parts):  # `user. id`: a key " id" no event has
        raise ValueError(f"'{path}': a part of the path starts or ends with a space")
    if parts[0] == "meta" and (len(parts) != 2 or parts[1] not in META_FIELDS):
        raise ValueError(f"'{path}': metadata fields are meta.{{{', '.join(META_FIELDS)}}}")
    return path


def validate_payload_path(path: str) -> str:
    """``validate_path`` for a path that is written: it must name the payload, not the metadata."""
    validate_path(path)
    if path.split(".")[0] == "meta":
        raise ValueError(f"'{path}': metadata is read-only; name a payload path")
    return path


#: A config field holding a dotted path into an event (``user.id``, ``meta.shard_id``), checked
#: at load time (a bad one is a located config error). Use it in every component ``Config``
#: instead of a hand-written validator; ``DottedPath | None`` for optional ones.
DottedPath = Annotated[str, AfterValidator(validate_path)]
#: A dotted path that is written to, so never ``meta.…`` (targets, projected fields).
PayloadPath = Annotated[str, AfterValidator(validate_payload_path)]


def payload_keys(path: str) -> tuple[str, ...] | None:
    """The keys ``path`` walks in the payload, or None when it reads the metadata (``getter``'s rules);
    for code that walks many paths per event without a call per path (the warehouse rows)."""
    parts = path.split(".")
    if parts[0] == "meta" and len(parts) == 2 and parts[1] in META_FIELDS:
        return None
    if parts[0] == "payload":
        parts = parts[1:]
    return tuple(parts)


def getter(path: str) -> Callable[[Event], Any]:
    """A function returning the value at ``path`` of an event, or ``MISSING``."""
    parts = path.split(".")
    if parts[0] == "meta" and len(parts) == 2 and parts[1] in META_FIELDS:
        name = parts[1]
        if name == "event_id":
            return lambda ev: ev.event_id
        return lambda ev: getattr(ev.meta, name)
    if parts[0] == "payload":  # explicit prefix, for payloads that have their own 'meta' key
        parts = parts[1:]
    if len(parts) == 1:
        key = parts[0]

        def get1(ev: Event) -> Any:
            v = ev.value
            return v.get(key, MISSING) if isinstance(v, dict) else MISSING

        return get1
    keys = tuple(parts)

    def get(ev: Event) -> Any:
        v = ev.value
        for k in keys:
            if not isinstance(v, dict):
                return MISSING
            v = v.get(k, MISSING)
            if v is MISSING:
                return MISSING
        return v

    return get


def setter(path: str) -> Callable[[Event, Any], None]:
    """A function setting the payload value at ``path`` (creating parent objects)."""
    parts = path.split(".")
    if parts[0] == "payload":
        parts = parts[1:]
    *parents, last = parts

    def set_(ev: Event, value: Any) -> None:
        if not isinstance(ev.value, dict):
            raise TypeError("payload is not an object")
        d = ev.value
        for k in parents:
            nxt = d.get(k)
            if nxt is None:
                nxt = d[k] = {}
            elif not isinstance(nxt, dict):  # never overwrite data to make room
                raise RecordError(
                    f"cannot set '{path}': '{k}' holds a {type(nxt).__name__}, not an object"
                )
            d = nxt
        d[last] = value

    return set_


def deleter(path: str) -> Callable[[Event], Any]:
    """A function removing the payload value at ``path``; returns it (or ``MISSING``)."""
    parts = path.split(".")
    if parts[0] == "payload":
        parts = parts[1:]
    *parents, last = parts

    def delete(ev: Event) -> Any:
        d = ev.value
        for k in parents:
            if not isinstance(d, dict):
                return MISSING
            d = d.get(k)
        if isinstance(d, dict):
            return d.pop(last, MISSING)
        return MISSING

    return delete
