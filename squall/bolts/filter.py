"""``filter`` bolt: keep (or drop) events by declarative conditions — no eval."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from squall.bolts.base import Bolt, Output
from squall.component import ComponentConfig
from squall.event import Event
from squall.paths import MISSING, DottedPath, getter

OPERATORS = ("equals", "not_equals", "in", "not_in", "exists", "gt", "gte", "lt", "lte", "regex")


class Condition(BaseModel):
    """One test on one field; exactly one operator."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )

    field: DottedPath = Field(description="Dotted path into the payload, or meta.<field>.")
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    exists: bool | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        return v

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [
            op
            for op in OPERATORS
            if op in self.model_fields_set or (op == "in" and "in_" in self.model_fields_set)
        ]
        if len(given) != 1:
            raise ValueError(
                f"a condition needs exactly one operator of {', '.join(OPERATORS)} (got {len(given)})"
            )
        return self

    def compile(self) -> Callable[[Event], bool]:
        get = getter(self.field)
        s = self.model_fields_set
        if "equals" in s:
            want = _key(self.equals)
            return lambda ev: _key(get(ev)) == want
        if "not_equals" in s:
            want = _key(self.not_equals)
            return lambda ev: _key(get(ev)) != want
        if "in_" in s:
            allowed = _lookup(self.in_ or [])
            return lambda ev: _member(get(ev), allowed)
        if "not_in" in s:
            banned = _lookup(self.not_in or [])
            return lambda ev: (v := get(ev)) is not MISSING and not _member(v, banned)
        if "exists" in s:
            want_exists = bool(self.exists)
            return lambda ev: (get(ev) not in (MISSING, None)) is want_exists
        if "regex" in s:
            rx = re.compile(self.regex or "")
            return lambda ev: isinstance(v := get(ev), str) and rx.search(v) is not None
        for op, fn in (
            ("gt", float.__gt__),
            ("gte", float.__ge__),
            ("lt", float.__lt__),
            ("lte", float.__le__),
        ):
            if op in s:
                bound = float(getattr(self, op))
                return lambda ev, fn=fn, bound=bound: (
                    _number(get(ev)) is not None and fn(_number(get(ev)), bound)
                )
        raise AssertionError("unreachable: validated to one operator")


def _key(v: Any) -> Any:
    """A comparison key in which booleans equal only booleans (JSON's true is not 1)."""
    return (bool, v) if isinstance(v, bool) else v


def _lookup(values: list[Any]) -> tuple[set, list]:
    hashable, other = set(), []
    for v in map(_key, values):
        try:
            hashable.add(v)
        except TypeError:
            other.append(v)
    return hashable, other


def _member(v: Any, allowed: tuple[set, list]) -> bool:
    v = _key(v)
    try:
        if v in allowed[0]:
            return True
    except TypeError:
        pass
    return v in allowed[1]


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


class FilterConfig(ComponentConfig):
    where: list[Condition] = Field(
        default_factory=list, description="Conditions that must all hold."
    )
    any: list[Condition] = Field(
        default_factory=list, description="Conditions of which at least one must hold."
    )
    action: Literal["keep", "drop"] = Field(
        "keep", description="Keep the matching events, or drop them."
    )

    @model_validator(mode="after")
    def _some(self) -> FilterConfig:
        if not self.where and not self.any:
            raise ValueError("a filter needs 'where' or 'any' conditions")
        return self


class FilterBolt(Bolt):
    """Keep or drop events by conditions; dropped events are counted as filtered, not errors."""

    Config = FilterConfig

    @classmethod
    def payload_writes(cls, config: Any) -> tuple[str, ...]:
        """It changes no payload (load-time path checks look through it)."""
        return ()

    summary = "Keep or drop events by conditions (equals, in, exists, numeric comparisons, regex)."

    def __init__(self, config: FilterConfig, context):
        super().__init__(config, context)
        self._all = [c.compile() for c in config.where]
        self._any = [c.compile() for c in config.any]
        self._keep = config.action == "keep"

    def matches(self, ev: Event) -> bool:
        return all(t(ev) for t in self._all) and (not self._any or any(t(ev) for t in self._any))

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        for ev in batch:
            if self.matches(ev) is self._keep:
                out.emit(ev)
            else:
                out.drop(ev)
        return out
