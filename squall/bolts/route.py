"""``route`` bolt: send each event to a named stream chosen by a field's value."""

from __future__ import annotations

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
        description="Field value → stream name. Values compare as strings."
    )
    default: str = Field(
        DEFAULT, description="Stream for values not in 'routes' and for missing fields."
    )

    @field_validator("routes")
    @classmethod
    def _streams(cls, v: dict[str, str]) -> dict[str, str]:
        for stream in v.values():
            _check_stream(stream)
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

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        routes, default, get = self._routes, self._default, self._get
        for ev in batch:
            v = get(ev)
            key = v if isinstance(v, str) else _key(v)
            out.emit(ev, routes.get(key, default) if key is not None else default)
        return out

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
        if key in self._routes:
            return f"{shown} is routed to '{stream}', {nobody}"
        return f"{shown} is not in routes: sent to the default stream '{stream}', {nobody}"


def _key(v: Any) -> str | None:
    """The string a non-string value compares as (``true``/``false`` for booleans); None when
    the field is missing or null."""
    if v is MISSING or v is None:
        return None
    return str(v).lower() if isinstance(v, bool) else str(v)


#: Longest routed value quoted in a reason.
MAX_SHOWN = 120


def _shown(key: str) -> str:
    """A routed value quoted for a reason: passwords masked, then cut to ``MAX_SHOWN``."""
    text = redact_text(key)
    if len(text) > MAX_SHOWN:
        text = f"{text[:MAX_SHOWN]}… [{len(text)} chars]"
    return repr(text)
