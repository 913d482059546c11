"""``route`` bolt: send each event to a named stream chosen by a field's value."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from pydantic import Field, field_validator

from squall.bolts.base import DEFAULT, ERROR, Bolt, Output
from squall.component import ComponentConfig
from squall.event import Event
from squall.paths import MISSING, DottedPath, getter
from squall.redact import redact_text


class RouteConfig(ComponentConfig):
    field: DottedPath = Field(description="Dotted path whose value picks the stream.")
    routes: dict[str, str] = Field(
        description="Field value → stream name. Values compare as strings (`true`/`false` for "
        "booleans); a number compares as a number, exactly, with a route written as one (`1` "
        "is `1.0`; `9007199254740993.0` is not 2**53)."
    )
    default: str = Field(
        DEFAULT, description="Stream for values not in 'routes' and for missing fields."
    )

    @field_validator("routes")
    @classmethod
    def _streams(cls, v: dict[str, str]) -> dict[str, str]:
        for stream in v.values():
            _check_stream(stream)
        numbers: dict[int | float, str] = {}
        for key in v:
            number = _number(key)
            if number is None:
                continue
            first = numbers.setdefault(number, key)
            if v[first] != v[key]:
                raise ValueError(
                    f"routes {first!r} and {key!r} are the same number, sent to different "
                    f"streams ({v[first]!r}, {v[key]!r}): a number matches either"
                )
        return v

    @field_validator("default")
    @classmethod
    def _default_stream(cls, v: str) -> str:
        # `default: error` sent unmatched events to the dead letter as "stream 'error' … is not
        # wired" (the error stream carries failures, not emitted events)
        return _check_stream(v)


def _check_stream(stream: str) -> str:
    if stream == ERROR:
        raise ValueError("'error' is reserved for failed events")
    if not stream:
        raise ValueError("stream names cannot be empty")
    return stream


class RouteBolt(Bolt):
    """Route events to named streams by a field value; wire the streams in ``streams:``."""

    Config = RouteConfig

    @classmethod
    def payload_writes(cls, config: Any) -> tuple[str, ...]:
        """It changes no payload (load-time path checks look through it)."""
        return ()

    summary = "Route events to named streams by the value of a field."

    @classmethod
    def output_streams(cls, config: Any) -> tuple[str, ...]:
        # Only the streams events are sent to: `default` only when it is a target (else
        # `squall validate` warned that it is not wired, though nothing is ever sent there).
        targets = (config.default, *config.routes.values())
        return (DEFAULT, ERROR, *targets) if DEFAULT in targets else (ERROR, *targets)

    def __init__(self, config: RouteConfig, context):
        super().__init__(config, context)
        self._get = getter(config.field)
        self._routes = dict(config.routes)
        self._default = config.default
        # A JSON number matches a route written as that number whatever its spelling: a kiosk
        # sending `"priority": 1.0` was routed to the default stream past `routes: {"1": high}`.
        # Python's int/float equality is exact (and equal numbers hash alike), so 1.0 finds 1
        # and 2**63 + 1 does not find 9.223372036854776e18.
        self._numbers: dict[int | float, str] = {}
        for key, stream in config.routes.items():
            number = _number(key)
            if number is not None:
                self._numbers.setdefault(number, stream)

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        routes, default, get, stream = self._routes, self._default, self._get, self._stream
        for ev in batch:
            v = get(ev)
            out.emit(ev, routes.get(v, default) if v.__class__ is str else stream(v))
        return out

    def _stream(self, v: Any) -> str:
        """The stream of a value that is not a string."""
        if v.__class__ in (int, float) and self._numbers:
            found = self._numbers.get(v)
            if found is not None:
                return found
        key = _key(v)
        return self._routes.get(key, self._default) if key is not None else self._default

    def unwired_reason(self, event: Event, stream: str) -> str | None:
        """The routed value and why it went to ``stream`` (the engine masks and bounds it)."""
        v = self._get(event)
        key = v if isinstance(v, str) else _key(v)
        field = self.config.field
        nobody = "which no bolt or sink consumes"
        if key is None:
            what = "missing" if v is MISSING else "null"
            return f"{field} is {what}: sent to the default stream '{stream}', {nobody}"
        shown = f"{field} = {_shown(key)}"
        if key in self._routes or (v.__class__ in (int, float) and v in self._numbers):
            return f"{shown} is routed to '{stream}', {nobody}"
        return f"{shown} is not in routes: sent to the default stream '{stream}', {nobody}"


def _key(v: Any) -> str | None:
    """The string a non-string value compares as (``true``/``false`` for booleans); None when
    the field is missing or null."""
    if v is MISSING or v is None:
        return None
    return str(v).lower() if isinstance(v, bool) else str(v)


def _number(key: str) -> int | float | None:
    """A route key written as a JSON number, as the number an event's value must equal (None for
    any other text): an integral one as an exact int, whatever its spelling (`1e2` is 100,
    `9007199254740993.0` is 2**53 + 1 — read as a float it was 2**53, and an event's 2**53 took
    its route), another as the float an event's number written so reads as (`2.5`).

    Raises ``ValueError`` for a key no event's number can be told apart by: a fraction whose
    nearest float is an integer or zero (`9007199254740993.5` is the float 2**53 + 2, `1e-400`
    is 0.0: events of those integers took the route) or infinite, and an integer of more digits
    than an event can carry."""
    if not _NUMBER.fullmatch(key):
        return None
    exact = Decimal(key)
    if exact.adjusted() >= MAX_DIGITS:
        raise ValueError(
            f"route {_shown(key)} is a number of more than {MAX_DIGITS} digits: no event's "
            "number can equal it"
        )
    if exact == exact.to_integral_value():
        return int(exact)
    near = float(exact)
    if near == 0 or not math.isfinite(near):
        why = f"reads as the float {near!r}"
    elif near.is_integer():
        why = f"is not an integer, but its nearest float, {near!r}, is one"
    else:
        return near
    raise ValueError(
        f"route {_shown(key)} {why}: an event's number cannot be told apart from it; write the "
        "number an event carries"
    )


#: Longest integer route key: Python's limit on converting integer text (``sys.int_info``).
MAX_DIGITS = 4300
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

#: Longest routed value quoted in a reason.
MAX_SHOWN = 120


def _shown(key: str) -> str:
    """A routed value quoted for a reason: passwords masked, then cut to ``MAX_SHOWN``."""
    text = redact_text(key)
    if len(text) > MAX_SHOWN:
        text = f"{text[:MAX_SHOWN]}… [{len(text)} chars]"
    return repr(text)
