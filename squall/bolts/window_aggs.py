"""Aggregations of the window bolt: mergeable, JSON-shaped partial states.

Every aggregation is a small object with ``new() -> state``, ``add(state, value, order) -> state``,
``merge(a, b) -> state`` and ``result(state)``. A state is JSON data (a number, a list, a small
dict) so a batch's partial states are stored as is (a delta in the window's log, SQL or Redis),
and ``merge`` folds the deltas of every writer when the window closes, in any grouping.

``additive``: the states merge by adding numbers (count): the bolt folds those inline. ``sum``
and ``mean`` keep exact sums (see :class:`Sum`): the same result whatever the grouping. A state
is JSON: a value orjson cannot write (an integer beyond 64 bits in min/max/first/last) is the
event's failure when added, never the commit's.
``min``/``max`` order every value the same way: numbers before text, numbers by value, text by
code point.

Sizes (the bound the docs state): count/sum/min/max/mean/first/last are a few dozen bytes;
``count_distinct`` keeps the exact set up to ``exact_limit`` values (default 64) and then an
HLL sketch (Apache DataSketches HLL_8 with lg_k 12: 4 kB, ~1.6 % standard error); ``percentile``
is a DataSketches KLL sketch (k 200: under 4 kB for any number of values, ~1.3 % rank error).

Size (~740 lines): nine aggregations with their exact-sum arithmetic (Shewchuk partials, integer
sums beyond 64 bits as digits), the checks keeping every state writable as JSON, and the live
form of the two sketches during a batch (``prepare``/``put``/``freeze``).
"""

from __future__ import annotations

import base64
import math
from typing import Any, ClassVar

import orjson

from squall import exact_json
from squall.exact_json import plain_numbers

#: Aggregation names accepted in YAML.
FUNCTIONS = ("count", "count_distinct", "sum", "min", "max", "mean", "first", "last", "percentile")
#: Aggregations that need a ``field``.
NEEDS_FIELD = frozenset(FUNCTIONS) - {"count"}
HLL_LG_K = 12
KLL_K = 200


class Count:
    __slots__ = ()
    additive: ClassVar[bool] = True
    #: a state the bolt keeps live during a batch (``prepare``, ``put``, ``freeze``): sketches
    live: ClassVar[bool] = False

    def new(self) -> Any:
        return 0

    def add(self, state: Any, value: Any, order: Any) -> Any:
        return state + 1

    def merge(self, a: Any, b: Any) -> Any:
        return a + b

    def result(self, state: Any) -> Any:
        return state


class Sum(Count):
    """An exact sum, whatever the grouping. Of integers only: an integer, kept as its decimal
    text beyond 64 bits (what JSON stores), so the result is the exact integer whatever the
    order (it was a float once a partial sum left 64 bits: 5 or 5.0 by the order of the same
    values). With floats, ``[integer part, float partials…]`` — the float values' sum held
    exactly as non-overlapping partials (Shewchuk's algorithm, the one behind ``math.fsum``), so
    batches, replays and compaction that group the values differently give the same result to
    the last bit (``math.fsum`` of the parts: correctly rounded)."""

    __slots__ = ()
    additive = False

    def add(self, state: Any, value: Any, order: Any) -> Any:
        value = _number(value)
        if value.__class__ is int and state.__class__ is not list:
            return _whole(_integer(state) + value)
        parts = list(state) if state.__class__ is list else [_integer(state)]
        _add_part(parts, value)
        return _spill(parts)

    def merge(self, a: Any, b: Any) -> Any:
        if a.__class__ is not list and b.__class__ is not list:
            return _whole(_integer(a) + _integer(b))
        if a.__class__ is not list:
            a, b = b, a
        parts = list(a)
        if b.__class__ is not list:
            parts[0] += _integer(b)
        else:
            parts[0] += b[0]
            for x in b[1:]:
                _add_part(parts, x)
        return _spill(parts)

    def result(self, state: Any) -> Any:
        if state.__class__ is int:
            return state
        return int(state) if state.__class__ is str else _total(state)


def _integer(state: int | str) -> int:
    """An integer sum's value: an int, or its decimal text beyond 64 bits."""
    return state if state.__class__ is int else int(state)


def _whole(total: int) -> int | str:
    """An integer sum's state: the int within 64 bits, else its decimal text (exact in JSON)."""
    return total if _INT64_MIN <= total <= _INT64_MAX else str(total)


def _add_part(parts: list[Any], x: int | float) -> None:
    """Add ``x`` to ``[integer, partials…]`` exactly (the partials stay non-overlapping, by
    increasing magnitude)."""
    if x.__class__ is int:
        parts[0] += x
        return
    i = 1
    for y in parts[1:]:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        if not math.isfinite(hi):  # near the float limit: y stays a partial of its own (exact)
            parts[i] = y
            i += 1
            continue
        lo = y - (hi - x)
        if lo:
            parts[i] = lo
            i += 1
        x = hi
    del parts[i:]
    parts.append(x)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _spill(parts: list[Any]) -> list[Any]:
    """Keep the integer part within 64 bits (what JSON stores): the excess moves into the float
    partials, still exactly (each ``float(n)`` holds n's top 53 bits; the rest stays)."""
    n = parts[0]
    if _INT64_MIN <= n <= _INT64_MAX:
        return parts
    parts[0] = 0
    _add_int(parts, n)
    return parts


def _add_int(parts: list[Any], n: int) -> None:
    """Add the integer ``n`` to the float partials exactly, 53 bits at a time."""
    while n:
        f = float(n)
        n -= int(f)
        _add_part(parts, f)


def _total(parts: list[Any]) -> float:
    """The correctly rounded sum (``math.fsum`` would round an integer part above 2⁵³ first)."""
    if -(2**53) <= parts[0] <= 2**53:
        exact = parts
    else:
        exact = [0, *parts[1:]]
        _add_int(exact, parts[0])
    try:
        return math.fsum(exact)
    except OverflowError:  # the sum is beyond a float: ±inf (the sink decides what to do)
        return sum(exact[1:], float(exact[0]))


class Min(Count):
    __slots__ = ()
    additive = False

    @staticmethod
    def _replaces(new: Any, kept: Any) -> bool:
        """Whether ``new`` takes the place of ``kept``: it comes first in the one order of min and
        max, or is the same number in the form they keep (``_preferred``)."""
        return _before(new, kept) or _preferred(new, kept)

    def new(self) -> Any:
        return None

    def add(self, state: Any, value: Any, order: Any) -> Any:
        _comparable(value)
        return value if state is None or self._replaces(value, state) else state

    def merge(self, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return b if a is None else a
        return b if self._replaces(b, a) else a


class Max(Min):
    """``Min`` in the reverse order (the preferred form of equal numbers is the same)."""

    __slots__ = ()
    additive = False

    @staticmethod
    def _replaces(new: Any, kept: Any) -> bool:
        return _before(kept, new) or _preferred(new, kept)


class Mean(Count):
    __slots__ = ()
    additive = False

    def new(self) -> Any:
        return [0, 0]

    def add(self, state: Any, value: Any, order: Any) -> Any:
        return [_SUM.add(state[0], value, None), state[1] + 1]

    def merge(self, a: Any, b: Any) -> Any:
        return [_SUM.merge(a[0], b[0]), a[1] + b[1]]

    def result(self, state: Any) -> Any:
        if not state[1]:
            return None
        total = state[0]
        # an integer sum divided exactly (int / int is correctly rounded, whatever its size)
        return (_integer(total) if total.__class__ is not list else _total(total)) / state[1]


class First(Count):
    """The value of the earliest event (event time, then shard position): ``[order, value]``.

    Merged here, not by the stores: the order holds Kinesis sequence numbers (up to 56 digits),
    which SQLite's JSON functions and the Redis script's numbers (doubles) cannot compare exactly."""

    __slots__ = ()
    additive = False

    def new(self) -> Any:
        return None

    def add(self, state: Any, value: Any, order: Any) -> Any:
        _storable(value)  # (every value: whether an event fails must not depend on the others)
        return [order, value] if state is None or order < state[0] else state

    def keep(self, state: Any, value: Any, order: Any) -> Any:
        """``add`` of a value ``add`` took already (for the event's other windows): unchecked."""
        return [order, value] if state is None or order < state[0] else state

    def merge(self, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return b if a is None else a
        return b if b[0] < a[0] else a

    def result(self, state: Any) -> Any:
        """The kept value; an object or list as a copy of its own: the state holds the event's
        own value (and an event's hopping windows one value), so a later bolt changing one
        result changed the others and the state the commit then wrote — not so after a restart,
        whose values come from the store, each its own. A Python bolt's dict or list subclass
        (a ``defaultdict``, an ``OrderedDict``) too: a plain one, as the store gives back."""
        if state is None:
            return None
        value = state[1]
        if isinstance(value, dict | list):
            # (exact: ``_storable`` took it; a nested float subclass comes back a plain float)
            return orjson.loads(orjson.dumps(value, default=plain_numbers))
        return value


class Last(First):
    __slots__ = ()

    def add(self, state: Any, value: Any, order: Any) -> Any:
        _storable(value)  # (every value: whether an event fails must not depend on the others)
        return [order, value] if state is None or order >= state[0] else state

    def keep(self, state: Any, value: Any, order: Any) -> Any:
        return [order, value] if state is None or order >= state[0] else state

    def merge(self, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return b if a is None else a
        return b if b[0] >= a[0] else a


class CountDistinct(Count):
    """Exact (a sorted list) up to ``limit`` values, then an HLL sketch: ``{"h": base64}``.

    ``live``: while a batch folds its events, a state past the exact list is a live sketch
    (``prepare``, then ``put``), serialized once by ``freeze`` — not decoded and encoded per
    event. An HLL image is the same as the per-event round trip's once the sketch holds its
    registers (a few hundred values, lg_k 12); before, the same hashes in another order."""

    __slots__ = ("limit",)
    additive = False
    live: ClassVar[bool] = True

    def __init__(self, limit: int):
        self.limit = limit

    def new(self) -> Any:
        return []

    def add(self, state: Any, value: Any, order: Any) -> Any:
        return self.freeze(self.put(state, self.prepare(value)))

    def prepare(self, value: Any) -> str:
        """What ``put`` adds for ``value``; raises for a value the aggregate refuses (the
        event's failure: nothing is changed yet)."""
        return _distinct_text(value)

    def put(self, state: Any, text: str) -> Any:
        """Add a prepared value: a new exact list, or the live sketch (changed in place, never
        raises but for memory)."""
        if state.__class__ is list:
            if text in state:
                return state
            if len(state) < self.limit:
                return [*state, text]  # a new list: an event that fails later changes nothing
            state = _hll_of(state)
        elif state.__class__ is dict:
            state = _hll_load(state)
        state.update(text)
        return state

    def freeze(self, state: Any) -> Any:
        """The JSON state of a live one (others as they are)."""
        if state.__class__ is list or state.__class__ is dict:
            return state
        return {"h": _b64(state.serialize_compact())}

    def merge(self, a: Any, b: Any) -> Any:
        if a.__class__ is list and b.__class__ is list:
            merged = sorted(set(_canonical_texts(a)) | set(_canonical_texts(b)))
            if len(merged) <= self.limit:
                return merged
            return {"h": _b64(_hll_of(merged).serialize_compact())}
        from datasketches import hll_union, tgt_hll_type

        union = hll_union(HLL_LG_K)
        for side in (a, b):
            union.update(_hll_of(side) if side.__class__ is list else _hll_load(side))
        return {"h": _b64(union.get_result(tgt_hll_type.HLL_8).serialize_compact())}

    def result(self, state: Any) -> Any:
        if state.__class__ is list:
            return len(_canonical_texts(state))
        return int(round(_hll_estimate(state)))


class Percentile(Count):
    """A KLL sketch of the values, ``{"k": base64}``; the result is the value at quantile ``q``.

    ``live`` as :class:`CountDistinct`: a batch updates a live sketch, serialized once."""

    __slots__ = ("q",)
    additive = False
    live = True

    def __init__(self, q: float):
        self.q = q

    def new(self) -> Any:
        return None

    def add(self, state: Any, value: Any, order: Any) -> Any:
        return self.freeze(self.put(state, self.prepare(value)))

    def prepare(self, value: Any) -> float:
        return float(_number(value))

    def put(self, state: Any, value: float) -> Any:
        if state is None or state.__class__ is dict:
            state = _kll_load(state)
        state.update(value)
        return state

    def freeze(self, state: Any) -> Any:
        if state is None or state.__class__ is dict:
            return state
        return {"k": _b64(state.serialize())}

    def merge(self, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return b if a is None else a
        sketch = _kll_load(a)
        sketch.merge(_kll_load(b))
        return {"k": _b64(sketch.serialize())}

    def result(self, state: Any) -> Any:
        # inclusive: the smallest value with at least q of the values at or below it (SQL's
        # PERCENTILE_DISC; the sketch's default, exclusive, gave the value a rank above).
        # + 0.0: a zero is 0.0 — the sketch keeps 0.0 and -0.0 apart (equal: whichever came
        # first of them was the answer, so a replay's other grouping gave the other form)
        return None if state is None else _kll_load(state).get_quantile(self.q, True) + 0.0


def make(function: str, *, exact_limit: int = 64, q: float = 0.5) -> Count:
    """The aggregation object for a function name of ``FUNCTIONS``."""
    if function == "count_distinct":
        return CountDistinct(exact_limit)
    if function == "percentile":
        return Percentile(q)
    return {
        "count": Count,
        "sum": Sum,
        "min": Min,
        "max": Max,
        "mean": Mean,
        "first": First,
        "last": Last,
    }[function]()


#: Integers a sum or percentile takes: within a float's range (the json bolt keeps wider exact).
_WIDEST = 2**1000


def _number(value: Any) -> int | float:
    if value.__class__ is int:
        if -_WIDEST < value < _WIDEST:
            return value
        raise ValueError(f"an integer beyond a float's range ({len(str(abs(value)))} digits)")
    if value.__class__ is float:
        if math.isfinite(value):
            return value
        raise ValueError(f"not a finite number: {value!r}")
    raise ValueError(f"not a number: {value!r}")


_SUM = Sum()


#: ``plain`` (``exact_json.plain``): a field's value as the aggregates and key fields take it.
PLAIN_TYPES = exact_json.PLAIN_TYPES
plain = exact_json.plain


def _comparable(value: Any) -> None:
    if value.__class__ not in (int, float, str):
        raise ValueError(f"not a number or string: {value!r}")
    if value.__class__ is int and not _INT64_MIN <= value <= _UINT64_MAX:
        raise ValueError(_WIDE)
    if value.__class__ is str:
        _utf8(value)
    elif value.__class__ is float:
        _finite(value)


_UINT64_MAX = 2**64 - 1
_WIDE = "an integer beyond 64 bits (min, max, first and last keep what JSON stores)"


def _storable(value: Any) -> None:
    """first/last keep their value in the state (JSON) and give it back: an integer beyond 64
    bits (the json bolt keeps it exact) is that event's failure, not the commit's (orjson cannot
    write it) — so is a value a Python bolt made that JSON has no form for (a Decimal, bytes, a
    set: each failed every commit of its batch before 6 December's live-sketches review), and
    one JSON keeps in another form (see :func:`exact`)."""
    if value.__class__ is int:
        if not _INT64_MIN <= value <= _UINT64_MAX:
            raise ValueError(_WIDE)
    elif value.__class__ is str:
        _utf8(value)
    elif value.__class__ is float:
        _finite(value)
    elif value.__class__ is not bool:  # objects, lists, and whatever a Python bolt put there
        exact(value, above=_STATE_DEPTH)


#: orjson writes containers nested this deep, not deeper ("Recursion limit reached").
_JSON_DEPTH = 254
#: Levels a first/last value is stored under: a window's delta or snapshot is ``{key: [state,
#: …]}`` and the state ``[order, value]`` — a value as deep as JSON keeps alone (252 to 254
#: levels) failed every commit of its batch (orjson: "Recursion limit reached").
_STATE_DEPTH = 3


class _Inexact(ValueError):
    """A value without an exact JSON form, with where it is inside the value (``[2]['x']``)."""

    def __init__(self, reason: str, at: str = ""):
        super().__init__(reason)
        self.reason, self.at = reason, at


def exact(value: Any, wide: bool = False, above: int = 0) -> None:
    """Raise ``ValueError`` (the event's failure, with a reason and where in the value) unless
    ``value`` comes back from JSON as itself, at every depth: a NaN or an infinity inside an
    object or a list (written null), a tuple (a list), a date, a time or another object orjson
    writes in another form (a UUID, an enum: its text or number), and what JSON has no form for
    (a Decimal, bytes, a set) — kept by first/last, each gave back something else than came in
    (6 December); counted by count_distinct, each was one value with its JSON's twin (NaN with
    null, a tuple with its list, a date with its text); in a key field, a key of another value.
    ``wide``: integers beyond 64 bits are exact (count_distinct writes their digits). ``above``:
    the levels of JSON the value is written under (it may nest ``_JSON_DEPTH - above``)."""
    try:
        text = orjson.dumps(value, default=plain_numbers)
    except TypeError:  # (no JSON form, or an integer beyond 64 bits: the walk tells)
        pass
    else:
        # What orjson writes and reads back equal is exact (it keeps each scalar's JSON type:
        # no 1 for 1.0 or true), unless too deep for where it goes: an object's or a list's
        # walk in Python cost ~1 µs a value (22 µs per event of a 20-field object, 4× the event).
        shallow = not above or text.count(b"[") + text.count(b"{") <= _JSON_DEPTH - above
        if shallow and orjson.loads(text) == value:
            return
    try:
        _walk(value, wide, _JSON_DEPTH - above)
    except _Inexact as exc:
        reason = exc.reason
        if reason == _DEEP:
            reason = f"{_DEEP} ({_JSON_DEPTH - above} levels)"
        raise ValueError(f"{reason} (at {exc.at})" if exc.at else reason) from None


_DEEP = "nested deeper than JSON keeps"


def _walk(value: Any, wide: bool, room: int) -> None:
    """Raise ``_Inexact`` unless ``value`` comes back from JSON as itself; ``room``: the levels
    of objects and lists it may still nest."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        try:
            _utf8(value)
        except ValueError as exc:
            raise _Inexact(str(exc)) from None
    elif isinstance(value, int):
        if not wide and not _INT64_MIN <= value <= _UINT64_MAX:
            raise _Inexact(_WIDE)
    elif isinstance(value, float):  # a float subclass too (NumPy's float64): written as its number
        if not math.isfinite(value):
            raise _Inexact(f"not a finite number: {float.__repr__(value)}")
    elif isinstance(value, (list, dict)):
        if room <= 0:
            raise _Inexact(_DEEP)
        if isinstance(value, list):
            items: Any = enumerate(value)
        else:
            items = value.items()
            for k in value:  # (a text subclass too: orjson writes none as a key)
                if k.__class__ is not str:
                    raise _Inexact(f"a value without a JSON form (an object's key is {_kind(k)})")
        for k, v in items:
            try:
                if k.__class__ is not int:
                    _utf8(k)
                _walk(v, wide, room - 1)
            except ValueError as exc:
                reason, at = (exc.reason, exc.at) if isinstance(exc, _Inexact) else (str(exc), "")
                raise _Inexact(reason, f"[{k!r:.40}]{at}") from None
    else:
        try:
            back = orjson.loads(orjson.dumps(value, default=plain_numbers))
        except TypeError as exc:
            raise _Inexact(f"a value without a JSON form ({exc})") from None
        if back == value:  # (an enum of floats: its value, equal — as the quick check takes it)
            return
        raise _Inexact(
            f"a value without an exact JSON form ({_kind(value)}: it would come back"
            f" as {_kind(back)})"
        )


def _kind(value: Any) -> str:
    """A type's name as orjson's messages write it: ``tuple``, ``decimal.Decimal``."""
    cls = value.__class__
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


_NOT_UTF8 = "not valid UTF-8 text (a lone surrogate: a state keeps what JSON stores)"


def _finite(value: float) -> None:
    """NaN and the infinities (a Python bolt's ``json.loads`` of ``NaN``) have no JSON form: kept
    in a state (min, max, first, last) they were written as null — min of NaN, 1, 2 said null,
    of 1, NaN, 2 said 1 —, and count_distinct took all three for one value (their text,
    ``null``). That event's failure, as in sum, mean and percentile."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")


def _utf8(text: str) -> None:
    """A text a state keeps (min, max, first, last, count_distinct's exact list) or hashes into
    its sketch must have a UTF-8 form: a lone surrogate (a Python bolt's ``json.loads`` of
    ``"\\ud800"``) is that event's failure — kept, it failed every commit of the batch (orjson
    cannot write it); hashed, DataSketches refused it after the event's other sketches took
    their value."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ValueError(_NOT_UTF8) from None


def _before(a: Any, b: Any) -> bool:
    """``a < b`` in the one order of min/max: numbers before text (no TypeError between them)."""
    a_text, b_text = a.__class__ is str, b.__class__ is str
    if a_text is b_text:
        return a < b
    return b_text


#: Starts the text count_distinct keeps for a value that is not a string (its JSON after it):
#: a number or true is not the string of its JSON ("1", "true"), as a key 1 is not a key "1".
#: A string starting with it gets it twice (no value's JSON starts with it): one text per value.
DISTINCT_MARK = "\x1f"


def _distinct_text(value: Any) -> str:
    """The text count_distinct keeps (exactly, or hashed into its sketch) for ``value``: an
    object's canonical JSON (keys sorted, at every depth), so ``{"a":1,"b":2}`` and
    ``{"b":2,"a":1}`` are one value; a scalar's (or a list of scalars') text is what it always
    was (sorting keys changes only objects), so the states written before read the same."""
    if value.__class__ is str:
        _utf8(value)
        return DISTINCT_MARK + value if value.startswith(DISTINCT_MARK) else value
    if value.__class__ is float:
        _finite(value)
    elif value.__class__ is not int and value.__class__ is not bool:
        if isinstance(value, str):  # a StrEnum, a Python bolt's str type: the text JSON writes
            return _distinct_text(str.__str__(value))  # (its JSON was taken: "red" in quotes)
        # an object or a list: its canonical JSON, written once — read back equal, it is exact
        # (``exact``'s quick check: sorted keys read back to an equal dict); else ``exact`` says
        # why not, or lets integers beyond 64 bits through (written as digits below). Checked
        # and then written, the value was serialized twice (a 20-field object's event: 9.6 µs,
        # now 8.5, measured).
        try:
            text = orjson.dumps(value, default=plain_numbers, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # (no JSON form, too deep, an integer beyond 64 bits: ``exact`` tells)
            pass
        else:
            if orjson.loads(text) == value:
                return DISTINCT_MARK + text.decode()
        exact(value, wide=True)  # (a tuple was its list, a nested NaN null, a date its text)
    return DISTINCT_MARK + exact_json.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


#: How the text of an object or a list starts (a string's never does: see ``DISTINCT_MARK``),
#: and the text an earlier version kept for a text subclass (a StrEnum member: its JSON, quoted)
_CONTAINERS = (DISTINCT_MARK + "{", DISTINCT_MARK + "[", DISTINCT_MARK + '"')


def _canonical_texts(texts: list[str]) -> list[str]:
    """An exact list with each object's text in canonical form, once: in a state an earlier
    version wrote, an object's text kept its keys in the order the event had them, so a stored
    list may hold one object in two orders, or in another order than a new event's; a text
    subclass's text was its JSON (``\x1f"red"``: counted apart from ``red``). ``texts`` itself
    (unchanged) when it holds no object, list or such text — every other state of scalars."""
    if not any(t.startswith(_CONTAINERS) for t in texts):
        return texts
    return list(
        dict.fromkeys(
            _distinct_text(exact_json.loads(t[1:])) if t.startswith(_CONTAINERS) else t
            for t in texts
        )
    )


def _preferred(a: Any, b: Any) -> bool:
    """Of two equal numbers in two forms (1 and 1.0, 0.0 and -0.0), whether ``a`` is the one min
    and max keep — the integer, else 0.0 — so that the order values come in (a replay groups
    them otherwise) never changes the result."""
    if a != b or a.__class__ is b.__class__ is not float:
        return False
    return _form(a) > _form(b)


def _form(v: int | float) -> int:
    return 2 if v.__class__ is int else 1 if math.copysign(1.0, v) > 0 else 0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _hll_of(values: list[str]) -> Any:
    from datasketches import hll_sketch, tgt_hll_type

    sketch = hll_sketch(HLL_LG_K, tgt_hll_type.HLL_8)
    for v in _canonical_texts(values):
        sketch.update(v)
    return sketch


def _hll_load(state: dict[str, str]) -> Any:
    from datasketches import hll_sketch

    return hll_sketch.deserialize(base64.b64decode(state["h"]))


def _hll_estimate(state: dict[str, str]) -> float:
    """A sketch's estimate from its registers alone, the same whatever grouping of batches,
    merges and replays built it: a sketch filled value by value (one batch's delta, never
    merged) gave its HIP estimate, which follows the order the values came in, and a union of
    two (deltas folded at the close) its composite one — 1000 distinct values gave 1000 from one
    batch and 998 from two. The image is read marked out of order (what a union's result is:
    flags byte 5, bit 16, of the DataSketches HLL preamble, in HLL mode — byte 7's low bits 2;
    the list and set modes estimate from their coupons, whatever the flag): the composite
    estimate (~1.6 % error), always — that of a union of the sketch with itself, without its
    cost (tests/bolts/test_window_sketches.py compares the two)."""
    from datasketches import hll_sketch

    image = base64.b64decode(state["h"])
    if image[7] & 3 == 2 and not image[5] & 16:
        marked = bytearray(image)
        marked[5] |= 16
        image = bytes(marked)
    return hll_sketch.deserialize(image).get_estimate()


def _kll_load(state: dict[str, str] | None) -> Any:
    from datasketches import kll_doubles_sketch

    if state is None:
        return kll_doubles_sketch(KLL_K)
    return kll_doubles_sketch.deserialize(base64.b64decode(state["k"]))
