"""``project`` bolt: select, rename, drop fields and set defaults — in that order."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from squall.bolts.base import RecordBolt
from squall.component import ComponentConfig
from squall.errors import RecordError
from squall.event import Event, deep_copy
from squall.paths import MISSING, PayloadPath, deleter, getter, setter


class ProjectConfig(ComponentConfig):
    select: list[PayloadPath] | None = Field(
        None, description="Keep only these paths (others are removed)."
    )
    rename: dict[PayloadPath, PayloadPath] = Field(
        default_factory=dict, description="Move the value at a path to another path."
    )
    drop: list[PayloadPath] = Field(default_factory=list, description="Remove these paths.")
    defaults: dict[PayloadPath, Any] = Field(
        default_factory=dict, description="Set these paths when missing or null."
    )

    @model_validator(mode="after")
    def _check(self) -> ProjectConfig:
        if self.select is None and not (self.rename or self.drop or self.defaults):
            raise ValueError("a project bolt needs at least one of select, rename, drop, defaults")
        return self


class ProjectBolt(RecordBolt):
    """Reshape payloads: select, rename, drop, defaults."""

    Config = ProjectConfig
    summary = "Select, rename and drop payload fields; set defaults."

    def __init__(self, config: ProjectConfig, context):
        super().__init__(config, context)
        self._select = (
            [(getter(p), setter(p)) for p in config.select] if config.select is not None else None
        )
        self._rename = [(deleter(src), setter(dst)) for src, dst in config.rename.items()]
        self._drop = [deleter(p) for p in config.drop]
        self._defaults = [(getter(p), setter(p), v) for p, v in config.defaults.items()]

    def process_event(self, event: Event) -> str:
        if not isinstance(event.value, dict):
            # a rejection on purpose, its reason as before: a TypeError would be taken for a
            # bug and get the location in this file (RecordBolt), in a producer's answer too
            raise RecordError("TypeError: payload is not an object")
        if self._select is not None:
            kept = [(put, v) for get, put in self._select if (v := get(event)) is not MISSING]
            event.value = {}
            for put, v in kept:
                put(event, v)
        for take, put in self._rename:
            v = take(event)
            if v is not MISSING:
                put(event, v)
        for take in self._drop:
            take(event)
        for get, put, default in self._defaults:
            if get(event) in (MISSING, None):
                # each event its own copy of an object or list default: one shared object would
                # carry what a later bolt writes into one event to every other event (and batch)
                put(event, deep_copy(default) if isinstance(default, dict | list) else default)
        return "default"
