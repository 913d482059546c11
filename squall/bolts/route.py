"""``route`` bolt: send each event to a named stream chosen by a field's value."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from squall.bolts.base import DEFAULT, ERROR, Bolt, Output
from squall.component import ComponentConfig
from squall.event import Event
from squall.paths import MISSING, DottedPath, getter


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
            if stream == ERROR:
                raise ValueError("'error' is reserved for failed events")
            if not stream:
                raise ValueError("stream names cannot be empty")
        return v


class RouteBolt(Bolt):
    """Route events to named streams by a field value; wire the streams in ``streams:``."""

    Config = RouteConfig
    summary = "Route events to named streams by the value of a field."

    @classmethod
    def output_streams(cls, config: Any) -> tuple[str, ...]:
        return (DEFAULT, ERROR, config.default, *config.routes.values())

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
            key = (
                v
                if isinstance(v, str)
                else (
                    None
                    if v is MISSING or v is None
                    else str(v).lower()
                    if isinstance(v, bool)
                    else str(v)
                )
            )
            out.emit(ev, routes.get(key, default) if key is not None else default)
        return out
