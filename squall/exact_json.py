"""JSON whose integers beyond 64 bits stay exact: orjson's speed, the standard library's range.

orjson reads an integer literal outside ``-2**63`` … ``2**64 - 1`` as a float
(``18446744073709551616`` → ``1.8446744073709552e+19``: digits lost, silently), refuses one of
310 digits or more ("number is infinity"), and cannot write a Python int outside that range
(``TypeError``). Such integers are rare, so orjson stays the decoder and the encoder:

* ``loads``/``exact``: such a literal has at least 19 digits in a row. A payload whose digit map
  (``SCAN``, one ``translate``) holds no run of 19 is decoded by orjson alone; only one holding an
  integer literal out of that range (digits in a string may look like one: no matter) is decoded
  again by the standard ``json`` module, whose integers are Python ints of any size.
* ``dumps``: orjson; only when it refuses an integer beyond 64 bits are those integers written
  as their digits (``orjson.Fragment``), everything else as orjson writes it.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import orjson

from squall.limits import INT_MAX, INT_MIN

#: Digits to ``0``, ``{`` and ``[`` to ``{``, every other byte to ``.``: in one pass, a run of 19
#: ``0`` is a run of 19 digits, and the count of ``{`` bounds the nesting (the json bolt uses both).
SCAN = bytes(0x30 if 0x30 <= b <= 0x39 else 0x7B if b in b"{[" else 0x2E for b in range(256))
#: The fewest digits an integer outside the 64-bit range has (-9223372036854775809).
DIGIT_RUN = b"0" * 19
_DIGITS = re.compile(rb"[0-9]+")
_BEFORE = frozenset((b"", b":", b",", b"[", b" ", b"\t", b"\n", b"\r"))
_AFTER = frozenset((b"", b",", b"}", b"]", b" ", b"\t", b"\n", b"\r"))
#: orjson's messages for the two cases (checked by tests/bolts/test_json_wide_ints.py).
_TOO_BIG_TO_READ = "number is infinity"
_TOO_BIG_TO_WRITE = "64-bit"


def wide_spans(data: bytes, scan: bytes) -> list[tuple[int, int]]:
    """(start, end) of each run of digits in ``data`` that reads as an integer literal outside the
    64-bit range (a leading ``-`` included); ``scan`` is ``data.translate(SCAN)``. A run inside a
    string may be listed if it stands between spaces (decoding it again changes nothing); an
    integer literal is never left out: it stands after ``:``, ``,``, ``[``, white space or at the
    start, and before ``,``, ``}``, ``]``, white space or at the end."""
    spans: list[tuple[int, int]] = []
    pos = scan.find(DIGIT_RUN)
    while pos >= 0:
        end = _DIGITS.match(data, pos).end()  # type: ignore[union-attr]
        start = pos - 1 if pos and data[pos - 1] == 0x2D else pos
        if (
            data[start - 1 : start] in _BEFORE
            and data[end : end + 1] in _AFTER
            and (end - pos > 20 or not INT_MIN <= int(data[start:end]) <= INT_MAX)
        ):
            spans.append((start, end))
        pos = scan.find(DIGIT_RUN, end)
    return spans


def exact(data: bytes, spans: list[tuple[int, int]], checked: bool = True) -> Any:
    """``data`` decoded by the standard library, every integer exact; ``spans`` from ``wide_spans``
    (not empty). ``checked``: orjson read ``data`` (else it is checked here first, the wide
    integers aside). Raises ``ValueError`` (``orjson.JSONDecodeError`` when orjson refuses the
    rest) with the reason."""
    limit = sys.get_int_max_str_digits()
    for start, end in spans:
        digits = end - start - (data[start] == 0x2D)
        if limit and digits > limit:
            raise ValueError(
                f"an integer of {digits} digits is over the {limit} digits Python reads"
            )
    if not checked:  # everything but those integers must be JSON orjson reads
        parts, last = [], 0
        for start, end in spans:
            parts += (data[last:start], b"0")
            last = end
        orjson.loads(b"".join(parts) + data[last:])
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply to decode its integers beyond 64 bits") from None


def recoverable(exc: orjson.JSONDecodeError) -> bool:
    """Whether orjson refused a payload for a number too large for a double: maybe an integer
    of 310 digits or more, which ``exact`` reads (``checked=False``)."""
    return exc.msg.startswith(_TOO_BIG_TO_READ)


def loads(data: bytes | str) -> Any:
    """``orjson.loads``, but an integer beyond 64 bits is a Python int, exact (see module doc).
    Raises ``ValueError`` (``orjson.JSONDecodeError`` for text that is not JSON)."""
    if not isinstance(data, bytes):
        data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if not recoverable(exc) or not (spans := wide_spans(data, data.translate(SCAN))):
            raise
        return exact(data, spans, checked=False)
    scan = data.translate(SCAN)
    if scan.find(DIGIT_RUN) >= 0 and (spans := wide_spans(data, scan)):
        return exact(data, spans)
    return value


#: What ``as_number`` returns for a value that is not a number orjson misses.
NOT_A_NUMBER: Any = object()
#: NumPy dtype kinds of scalars that are JSON numbers (and booleans): bool, int, uint, float.
_NUMPY_NUMBERS = frozenset("biuf")
#: What ``item()`` gives for those, but ``longdouble`` (itself).
_PYTHON_NUMBERS = frozenset((int, float, bool))


def as_number(value: Any) -> Any:
    """The Python number (or bool) of a value orjson hands to ``default`` but which is one: a
    ``float`` subclass (NumPy's ``float64``: orjson writes subclasses of ``int`` and ``str`` as
    their base type, not of ``float``) and NumPy's other scalar numbers (``int64``, ``float32``,
    ``bool_``: no subclass of Python's; a pandas or NumPy computation in a Python bolt gives them),
    exact (``item()``: a ``float32`` is its double); ``NOT_A_NUMBER`` for anything else —
    ``longdouble`` too, whose ``item()`` is itself (no double holds it exactly; returned, every
    caller asking again looped to the recursion limit)."""
    if isinstance(value, float):
        return float.__float__(value)  # the base type's value, not a subclass's __float__
    if (
        type(value).__module__ == "numpy"
        and getattr(value, "shape", None) == ()
        and getattr(getattr(value, "dtype", None), "kind", None) in _NUMPY_NUMBERS
    ):
        number = value.item()
        if number.__class__ in _PYTHON_NUMBERS:
            return number
    return NOT_A_NUMBER


#: The scalar types ``plain`` returns as they are; it turns their subclasses into them.
PLAIN_TYPES = frozenset({int, float, str, bool, dict, list, type(None)})


def plain(value: Any) -> Any:
    """A value as the window's aggregates and key fields and the sqs sink's attributes take it:
    a subclass of ``int``, ``float`` or ``str`` (an ``IntEnum`` or ``StrEnum`` member, a Python
    bolt's own text type, NumPy's ``float64``) and NumPy's other scalar numbers (``int64``,
    ``float32``, ``bool_``: ``as_number``) as the plain value JSON writes for it — so the
    window's ``min``/``max``/``sum``/
    ``mean``/``percentile`` take it as its number or text, a key is the plain value's, and
    ``first``/``last`` give back the same type live as after a restart (from the store);
    anything else as it is (``bool`` stays ``bool``, and NumPy's ``bool_`` is one: JSON's
    ``true`` is no number)."""
    cls = value.__class__
    if cls in PLAIN_TYPES:
        return value
    if isinstance(value, bool):
        return value
    # the base type's own conversion: a subclass's ``__str__`` (a ``(str, Enum)`` member's is
    # ``Cls.NAME``) or ``__int__`` is not what JSON writes for it
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, str):
        return str.__str__(value)
    number = as_number(value)  # a float subclass's float, a NumPy scalar's number
    return value if number is NOT_A_NUMBER else number


def numbers_first(default: Any = None) -> Any:
    """An orjson ``default`` that writes a number orjson does not know as one (``as_number``: a
    ``float`` subclass, a NumPy scalar — they were written as text, ``"3"``, or refused), then
    asks ``default``; without one, refuses as orjson does."""

    def call(value: Any) -> Any:
        number = as_number(value)
        if number is not NOT_A_NUMBER:
            return number
        if default is None:
            raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
        return default(value)

    return call


#: The ``default`` of :func:`dumps`: a ``float`` subclass or a NumPy scalar as its number,
#: anything else refused.
plain_numbers = numbers_first()
#: ``default=str`` that writes a ``float`` subclass or a NumPy scalar as its number (JSON-lines
#: sinks).
text_default = numbers_first(str)


def dumps(value: Any, default: Any = None, option: int | None = None) -> bytes:
    """``orjson.dumps``, but an integer beyond 64 bits is written as its digits (valid JSON; the
    reader decides what to make of it) and a ``float`` subclass as its number
    (:func:`numbers_first`). Raises ``orjson.JSONEncodeError`` as orjson does."""
    default = plain_numbers if default is None else default
    try:
        return orjson.dumps(value, default=default, option=option)
    except orjson.JSONEncodeError as exc:
        if _TOO_BIG_TO_WRITE not in str(exc):
            raise
    try:
        fixed = _fragments(value)
    except (ValueError, RecursionError) as exc:  # over Python's digit limit; absurdly deep
        raise orjson.JSONEncodeError(f"cannot write an integer beyond 64 bits: {exc}") from None
    return orjson.dumps(fixed, default=default, option=option)


def owned(data: bytes) -> bytes:
    """A copy of ``data`` (orjson's output) of its own size, for bytes kept beyond the call that
    made them: the bytes orjson returns hold its whole output buffer, ~4 KB however short the
    JSON (``bytes(data)`` and ``data[:]`` return the same object). ~40 ns for a short text;
    docs/performance.md, hAB."""
    return b"".join((data, b""))


def _fragments(value: Any) -> Any:
    """``value`` with each integer beyond 64 bits replaced by its digits as an ``orjson.Fragment``."""
    if isinstance(value, dict):
        return {k: _fragments(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fragments(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        return orjson.Fragment(str(int(value)).encode())
    return value
