"""Serialising for reasons and dead letters, in a way that never raises.

A dead letter or a failure reason is written *because* a record is odd: a payload nested a
thousand levels deep, a string with lone surrogates, an object a user bolt put in the payload.
Writing it must not fail in turn. ``dumps`` tries orjson first (the usual case: no cost); an
integer beyond 64 bits is then written exactly, as its digits (``exact_json``: valid JSON, read
back exactly by ``squall replay``); on any other error, each offending value is replaced by a
bounded ``reprlib`` rendering marked with ``TRUNCATED``, so the document is still JSON and still
says what it could.
"""

from __future__ import annotations

import reprlib
from typing import Any

import orjson

from squall import exact_json

#: Marks a value that could not be serialised as it was.
TRUNCATED = "[squall: not serialisable, truncated repr]"
#: Longest text kept for a value that cannot be serialised, or for a reason.
MAX_TEXT = 4096

_OPTIONS = orjson.OPT_NON_STR_KEYS
_repr = reprlib.Repr()  # keyword arguments need Python 3.12; Lambda still runs 3.11
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 6, 20, 20, 20, 20
_repr.maxstring, _repr.maxother, _repr.maxlong = 200, 200, 100


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as bounded, valid UTF-8 text: a string as it is (cut at ``limit``), anything else a short repr."""
    try:
        s = value if isinstance(value, str) else _repr.repr(value)
    except Exception:  # noqa: BLE001 - a __repr__ that raises: say what it was, never fail here
        s = f"<{type(value).__name__}>"
    if len(s) > limit:
        s = s[:limit] + f"… [cut at {limit} of {len(s)} characters]"
    # Lone surrogates (from "\udc80"-style escapes or surrogateescape) are not UTF-8, and
    # PostgreSQL text cannot hold NUL: escape both, so the text is storable anywhere.
    return s.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _default(value: Any) -> Any:
    number = exact_json.as_number(value)  # a float subclass, a NumPy scalar: replayable
    return text(value) if number is exact_json.NOT_A_NUMBER else number


def _message(exc: BaseException) -> str:
    try:
        return str(exc) or type(exc).__name__
    except Exception:  # noqa: BLE001 - an exception whose __str__ raises
        return type(exc).__name__


def _marked(value: Any, exc: BaseException) -> dict[str, str]:
    return {
        "squall_truncated": TRUNCATED,
        "type": type(value).__name__,
        "error": text(_message(exc), 200),
        "repr": text(value),
    }


def _dumps(value: Any) -> bytes:
    # exact_json: orjson, except that an integer beyond 64 bits is written as its digits.
    return exact_json.dumps(value, default=_default, option=_OPTIONS)


#: The start of orjson's message for a key it cannot write (``OPT_NON_STR_KEYS`` too).
_KEY_REFUSED = "Dict key must"


def _float_keys(value: Any) -> Any:
    """``value`` with each ``float`` subclass key (NumPy's ``float64``: a pandas
    ``value_counts().to_dict()``) as its float: orjson writes a float key (``OPT_NON_STR_KEYS``)
    but refuses a subclass's, and asks no ``default`` for a key."""
    if isinstance(value, dict):
        return {_key(k): _float_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_float_keys(v) for v in value]
    return value


def _key(key: Any) -> Any:
    """A key orjson writes (``OPT_NON_STR_KEYS``): a float subclass's or NumPy scalar's number."""
    if key.__class__ in (str, int, float, bool) or key is None:
        return key
    number = exact_json.as_number(key)
    return key if number is exact_json.NOT_A_NUMBER else number


def dumps(doc: Any) -> bytes:
    """JSON bytes of ``doc``; a value that cannot be serialised becomes a marked, truncated repr. Never raises."""
    try:
        return _dumps(doc)
    except Exception as exc:  # noqa: BLE001 - JSONEncodeError, TypeError, RecursionError…: all fall back
        problem: BaseException = exc
    if _message(problem).startswith(_KEY_REFUSED):  # a float subclass key: its number, replayable
        try:
            doc = _float_keys(doc)
            return _dumps(doc)
        except Exception as exc:  # noqa: BLE001 - another key or value: the fallback below
            problem = exc
    if isinstance(doc, dict):
        # Keep what serialises; replace only the offending fields.
        fixed: dict[str, Any] = {}
        for key, value in doc.items():
            try:
                _dumps(value)
                fixed[text(key, 200)] = value
            except Exception as inner:  # noqa: BLE001 - whatever it is, it is replaced
                fixed[text(key, 200)] = _marked(value, inner)
        try:
            return _dumps(fixed)
        except Exception as again:  # noqa: BLE001
            problem = again
    return orjson.dumps(_marked(doc, problem))


def dumps_text(doc: Any) -> str:
    """``dumps`` as a ``str`` (for a SQL text column)."""
    return dumps(doc).decode("utf-8")


#: JSON's names of the types a decoded document holds (RFC 8259), for reasons a user reads:
#: "a JSON null", not Python's "a JSON NoneType".
_JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number"}
_JSON_TYPES.update({str: "string", list: "array", dict: "object"})


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type (``null``, ``boolean``, ``number``, ``string``, ``array``,
    ``object``); for anything else, its Python type's name."""
    for kind, name in _JSON_TYPES.items():
        if type(value) is kind:
            return name
    for kind, name in reversed(_JSON_TYPES.items()):  # a subclass: bool before int
        if isinstance(value, kind):
            return name
    return type(value).__name__
