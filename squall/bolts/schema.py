"""``schema`` bolt: JSON Schema validation; failures go to the ``invalid`` stream with the reason.

jsonschema (~45 ms of imports: attrs, referencing, rpds) is imported only when it is needed: to
check a schema at load time, to validate when the schema is beyond what fastjsonschema compiles,
and to word the reason of an invalid event. A Lambda package built by ``squall package`` lists
the digests of the schemas checked when it was built (``CHECKED_FILE`` beside the topology), so
its init does not check them again; a schema changed since (another digest) is checked as usual.
Elsewhere a schema that passed the check leaves an empty file named by its digest (its content,
squall's version and checking code — this module's bytes —, the checker's versions) in
``checked-schemas/`` under the cache folder (``SQUALL_CACHE_DIR``; default
``$XDG_CACHE_HOME/squall`` or ``~/.cache/squall``; empty: none), so the next load of the same
schema neither imports jsonschema (~40 ms of CPU) nor checks it. Only a check that passed writes
one; an invalid schema is checked at every load.

A ``pattern`` (and a ``patternProperties`` name) is an ECMA-262 regular expression, whose ``$``
matches at the end of the text only; Python's also matches before a final line break
(``^[A-Z]{3}$`` took ``"EUR\\n"``). Its ``\\d`` is [0-9] and ``\\w`` [A-Za-z0-9_] (``\\b``
their boundary), where Python's ``re`` takes any Unicode digit and letter (``^\\d+$`` took
``"٣"``); its ``\\s`` and ``.`` know other line terminators and white space than Python's. Both
validators get the schema with each such ``$`` written ``\\Z`` and these classes spelt out in
ASCII (``ecma_schema``) when the bolt is built; a pattern asking for Python's multiline mode
(``(?m)``) keeps its ``$`` a line's end, ``(?s)`` its ``.`` any character, and a comment
(``(?#…)``, ``(?x)``'s ``#``) is left as written. A backreference to a group that took part in
no match matches the empty text, as ECMA-262's does (Python's fails). The caches above record
only that a schema passed the check, never a verdict: a schema they hold validates with these
patterns too.

Size (~850 lines): loading a schema file (JSON or YAML, duplicate keys refused), the check and
its two caches (the package's list, the cache folder), the fast validator's limits, the patterns'
``$``, classes and backreferences, the formats left unchecked for want of a package, the bolt.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import orjson
from pydantic import Field, ValidationInfo, field_validator

from squall import __version__, safe_json
from squall.bolts.base import Bolt, Output
from squall.component import INVALID, ComponentConfig
from squall.digests import small_sha256
from squall.event import Event

log = logging.getLogger("squall.bolts")

#: Written beside the topology in a Lambda package: ``{"schemas": [digest, ...]}``.
CHECKED_FILE = ".squall-checked-schemas.json"


#: squall's code that checks a schema: this module (``check_schema`` and its helpers). Its content
#: is in every digest, so a change to the check between two commits of a development checkout
#: (one version) checks again what an older check passed. A wheel install and a Lambda zip (built
#: from the same wheel: ``squall package`` still lists the digests its init computes) hold the
#: same bytes; their timestamps differ (a zip's are 1980's), so the content, not mtime and size.
_CHECK_MODULE = Path(__file__)
_check_code: str | None = None


def _check_code_digest() -> str:
    """The digest of ``_CHECK_MODULE``'s bytes, read once per process (18 kB: 0.07-0.1 ms); empty
    when the source cannot be read (bytecode alone): no digest then, every load checks."""
    global _check_code
    if _check_code is None:
        try:
            _check_code = small_sha256(_CHECK_MODULE.read_bytes()).hexdigest()
        except OSError:
            _check_code = ""
    return _check_code


def schema_digest(schema: dict[str, Any]) -> str | None:
    """A digest of a schema's content, this squall version and its checking code (this module's
    bytes); None when it cannot be serialised, or the code cannot be read."""
    code = _check_code_digest()
    if not code:
        return None
    try:
        # Only JSON's own types: a YAML date or a non-string key raises, so that schema is always
        # checked (it would share a digest with the JSON spelling of the same value).
        body = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME)
    except TypeError:
        return None
    return small_sha256(f"squall {__version__} {code}\n".encode() + body).hexdigest()


def _checked_when_packaged(base_dir: Path) -> frozenset[str]:
    try:
        return frozenset(orjson.loads((base_dir / CHECKED_FILE).read_bytes())["schemas"])
    except (OSError, ValueError, KeyError, TypeError):
        return frozenset()


def write_checked(schemas: list[dict[str, Any]], folder: Path) -> None:
    """Record ``schemas`` (each already checked: its topology loaded) in ``folder/CHECKED_FILE``."""
    digests = sorted({d for d in map(schema_digest, schemas) if d is not None})
    (folder / CHECKED_FILE).write_bytes(orjson.dumps({"schemas": digests}))


def _cache_entry(schema: dict[str, Any]) -> Path | None:
    """The file whose presence says ``schema`` passed ``check_schema`` with the installed
    jsonschema, referencing and meta-schemas; None when there is no cache or no digest."""
    folder = os.environ.get("SQUALL_CACHE_DIR")
    if folder is None:
        home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(home, "squall")
    if not folder:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:  # the checker's versions (the meta-schemas are jsonschema-specifications'), read
        # without importing it: another release of any of them checks again
        checker = " ".join(
            f"{name} {version(name)}"
            for name in ("jsonschema", "referencing", "jsonschema-specifications")
        )
    except PackageNotFoundError:
        return None
    digest = schema_digest({"checker": checker, "schema": schema})
    return None if digest is None else Path(folder, "checked-schemas", digest)


def check_schema_once(schema: dict[str, Any]) -> None:
    """``check_schema``, unless the cache says this schema passed it with these versions."""
    entry = _cache_entry(schema)
    try:  # a folder that cannot be read (another user's, mode 700; a name too long) is no cache
        if entry is not None and entry.is_file():  # (is_file raises for EACCES, ENAMETOOLONG)
            return
    except OSError:
        entry = None
    check_schema(schema)  # raises for an invalid schema: nothing is written
    if entry is not None:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.touch()
        except OSError:  # a read-only home: checked each time, as before
            pass


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``schema`` is a valid JSON Schema of its draft (jsonschema decides)."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        # Where in the schema (a JSON path), not only what: "'numbr' is not valid under any of
        # the given schemas" alone left the reader to search the whole schema for it.
        where = f" at {exc.json_path}" if exc.path else ""
        message = exc.message
        if exc.validator == "format" and exc.validator_value == "regex":
            message += _regex_problem(exc.instance)
        raise ValueError(f"invalid JSON Schema{where}: {message}") from None
    _check_refs(schema, validator(schema, registry=_offline_registry()))


def _regex_problem(pattern: Any) -> str:
    """Why Python's ``re`` refuses ``pattern`` (a ``pattern`` or a ``patternProperties`` name
    that is "not a 'regex'"): a valid ECMA-262 pattern may be one (``\\p{L}``, ``[^]``)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return (
            f" (Python's re, which reads the schema's patterns: {exc}; ECMA-262 syntax it has "
            "not, such as \\p{…}, \\u{…}, \\cX, (?<name>…), \\k<name> or [^], is refused)"
        )
    except Exception:  # not a string
        return ""
    return ""


def _offline_registry() -> Any:
    """A ``referencing`` registry that never retrieves: without one, jsonschema fetches a remote
    ``$ref`` over HTTP (deprecated, but still done), at load time and again during validation."""
    from referencing import Registry

    return Registry()  # no `retrieve`: a document not in the schema is Unresolvable


#: Keywords whose values are data, not subschemas: a "$ref" key inside them is no reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})


def _check_refs(schema: dict[str, Any], validator: Any) -> None:
    """Raise ``ValueError`` for a ``$ref`` that jsonschema cannot resolve (a missing definition,
    a remote document: ``validator`` has an offline registry, nothing is fetched). Such a schema
    passes the meta-schema, and then every event reaching the reference raised, one by one.
    References under a nested ``$id`` (another base URI) are left to the validator (offline too).
    """
    from referencing.exceptions import Unresolvable

    refs: list[str] = []

    def walk(node: Any, top: bool) -> None:
        if isinstance(node, dict):
            if not top and isinstance(node.get("$id", node.get("id")), str):
                return
            ref = node.get("$ref")
            if isinstance(ref, str):
                refs.append(ref)
            for key, value in node.items():
                if key not in _DATA_KEYWORDS:
                    walk(value, False)
        elif isinstance(node, list):
            for value in node:
                walk(value, False)

    walk(schema, True)
    # jsonschema's resolver (referencing), rooted at the schema as validation roots it; a
    # jsonschema without one (before 4.18) leaves the references to the validator.
    resolver = getattr(validator, "_resolver", None)
    for ref in dict.fromkeys(refs) if resolver is not None else ():
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise ValueError(
                f"invalid JSON Schema: $ref {ref!r} cannot be resolved ({type(exc).__name__}; "
                "only references inside the schema are followed)"
            ) from None


#: Python's global inline flags (at the start of a pattern) and a group's scoped ones.
_GLOBAL_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
_SCOPED_FLAGS = re.compile(r"\(\?([aiLmsux]*)(?:-([imsx]+))?:")
#: Python's ``$`` in multiline mode (before each line break, and at the end), without a ``$``:
#: fastjsonschema rewrites every unescaped ``$`` of a ``pattern`` to ``\Z``.
_LINE_END = r"(?=\n|\Z)"
#: ECMA-262's character class escapes in Python's spelling, as the inside of a class (``re``
#: reads ``\d``, ``\w`` and ``\s`` of a str pattern as Unicode's: ``\d`` took ``"٣"``), and
#: whether the escape is the complement (``\D``): ``\d`` is [0-9], ``\w`` [A-Za-z0-9_], ``\s``
#: ECMA's WhiteSpace and LineTerminator (Python's also holds U+001C-U+001F and U+0085, not
#: U+FEFF). The same with the ``u`` flag (JSON Schema 2020-12's advice) as without it.
_WORD = "A-Za-z0-9_"
_SPACE = r"\t\n\x0b\x0c\r\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_CLASS_ESCAPES = {
    "d": ("0-9", False),
    "D": ("0-9", True),
    "w": (_WORD, False),
    "W": (_WORD, True),
    "s": (_SPACE, False),
    "S": (_SPACE, True),
}
#: ECMA-262's word boundaries, between a [A-Za-z0-9_] character and another one (or an end).
#: ``\b`` is Python's under its ASCII flag, whose word characters are those (``re``'s own test:
#: 3.7 µs a search of ``\bfoo\b`` in 204 characters, where two look-arounds took 28 µs and
#: Python's Unicode ``\b`` 10.5); not ``\B``, which in Python never matches the empty text.
_BOUNDARIES = {
    "b": r"(?a:\b)",
    "B": f"(?:(?<=[{_WORD}])(?=[{_WORD}])|(?<![{_WORD}])(?![{_WORD}]))",
}
#: A backreference as Python's ``re`` reads one outside a class: ``\\`` and one or two digits,
#: the first not 0 (``\\0``, ``\\012`` and ``\\123``, three octal digits, are characters).
_GROUP_REF = re.compile(r"\\(?![0-7]{3})([1-9][0-9]?)")
#: ECMA-262's ``.`` (no s flag): any character but a line terminator; Python's only leaves out
#: ``\n``.
_DOT = r"[^\n\r\u2028\u2029]"


def _ecma_class(pattern: str, i: int) -> tuple[str, int]:
    """The character class opening at ``pattern[i]`` (a ``[``) with ECMA-262's ``\\d``, ``\\w``,
    ``\\s`` and their complements, and a ``$`` written ``\\$``; and where it ends. Python reads a
    ``]`` first in a class (``[]a]``, ``[^]a]``) as a literal. A complement beside other members
    (``[a\\D]``, ``[^\\S]``) has no spelling inside one class: it becomes an alternation
    (``(?:[a]|[^0-9])``) or, negated, look-aheads before the last complement's class."""
    n = len(pattern)
    j = i + 1
    negated = pattern.startswith("^", j)
    j += negated
    members: list[str] = []  # as written (ASCII classes for \d \w \s)
    complements: list[str] = []  # the insides of \D \W \S
    first = True
    while j < n and (pattern[j] != "]" or first):
        first = False
        c = pattern[j]
        if c == "\\":
            escape = _CLASS_ESCAPES.get(pattern[j + 1 : j + 2])
            if escape is None:
                members.append(pattern[j : j + 2])
            elif escape[1]:
                complements.append(escape[0])
            elif escape[0][0].isdigit() and members and members[-1][-1].isdigit():
                # "0-9" after an octal escape would extend it ([\0\d] is not [\00-9], the
                # range from NUL to "9")
                members.append("\\x30" + escape[0][1:])
            else:
                members.append(escape[0])
            j += 2
            continue
        members.append("\\$" if c == "$" else c)
        j += 1
    if j >= n:  # no end: re refused it when the schema was checked
        return pattern[i:], n
    inside = "".join(members)
    if not complements:
        return f"[{'^' if negated else ''}{inside}]", j + 1
    if inside.startswith("^"):  # a literal "^", first once the complements are taken out
        inside = "\\" + inside
    if not negated:  # in any of them
        alternatives = ([f"[{inside}]"] if inside else []) + [f"[^{s}]" for s in complements]
        return f"(?:{'|'.join(alternatives)})", j + 1
    # in none of them: not a member, and in every complemented set
    ahead = (f"(?![{inside}])" if inside else "") + "".join(f"(?=[{s}])" for s in complements[:-1])
    return f"(?:{ahead}[{complements[-1]}])", j + 1


def ecma_pattern(pattern: str) -> str:
    """``pattern`` read as ECMA-262 reads it, in Python's spelling: its ``$`` (no ``m`` flag:
    the end of the text) as ``\\Z`` (Python's ``$`` also matches before a final line break), its
    ``\\d``, ``\\w``, ``\\s``, ``\\b``, their complements and ``.`` as ASCII and ECMA's line
    terminators make them (``_CLASS_ESCAPES``, ``_BOUNDARIES``, ``_DOT``), in a character class
    too; a literal character (``é``, ``٣``) still matches itself. A ``$`` in a character class
    is a literal ``$`` in both (written ``\\$``, which fastjsonschema's own ``$`` rewrite leaves
    alone); an escaped one (``\\$``) too. A backreference (``\\1``) to a group that took part
    in no match matches the empty text, as ECMA-262's does (``(?(1)\\1)``; Python's fails),
    but in a look-behind, which Python's ``re`` takes of a fixed width only.

    Python's inline flags (``re`` compiles them for both validators; ECMA-262 has none) keep
    their meaning: under ``m`` (``(?m)``, ``(?m:…)``) a ``$`` is a line's end (written
    ``(?=\\n|\\Z)``), under ``s`` a ``.`` any character; a comment (``(?#…)``, or ``#`` to the
    line's end under ``x``) is copied as written — a ``[`` there opens no class."""
    if "$" not in pattern and "\\" not in pattern and "." not in pattern:
        return pattern
    out: list[str] = []
    i, n = 0, len(pattern)
    multiline = verbose = dotall = behind = False
    while (flags := _GLOBAL_FLAGS.match(pattern, i)) is not None:
        multiline, verbose = multiline or "m" in flags[1], verbose or "x" in flags[1]
        dotall = dotall or "s" in flags[1]
        out.append(flags[0])
        i = flags.end()
    # the flags outside each open group, and whether that is in a look-behind
    groups: list[tuple[bool, bool, bool, bool]] = []
    while i < n:
        c = pattern[i]
        if c == "\\":
            e = pattern[i + 1 : i + 2]
            if not behind and (ref := _GROUP_REF.match(pattern, i)) is not None:
                # ECMA-262's backreference to a group that took part in no match matches the
                # empty text; Python's fails ("^(a)?\\1$" refused ""). Not in a look-behind,
                # which takes a fixed width only (the group's, there): left as written.
                out.append(f"(?({ref[1]}){ref[0]})")
                i = ref.end()
                continue
            if e in _CLASS_ESCAPES:
                inside, complement = _CLASS_ESCAPES[e]
                out.append(f"[{'^' if complement else ''}{inside}]")
            else:
                out.append(_BOUNDARIES.get(e) or pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            text, i = _ecma_class(pattern, i)
            out.append(text)
            continue
        if c == "(" and pattern.startswith("(?#", i):  # a comment: to the first ")"
            j = pattern.find(")", i)
            j = n if j < 0 else j + 1
            out.append(pattern[i:j])
            i = j
            continue
        if c == "#" and verbose:  # a comment: to the line's end
            j = pattern.find("\n", i)
            j = n if j < 0 else j
            out.append(pattern[i:j])
            i = j
            continue
        if c == "(":
            groups.append((multiline, verbose, dotall, behind))
            behind = behind or pattern.startswith(("(?<=", "(?<!"), i)
            if (scoped := _SCOPED_FLAGS.match(pattern, i)) is not None:
                on, off = scoped[1], scoped[2] or ""
                multiline = "m" in on or (multiline and "m" not in off)
                verbose = "x" in on or (verbose and "x" not in off)
                dotall = "s" in on or (dotall and "s" not in off)
                out.append(scoped[0])
                i = scoped.end()
                continue
        elif c == ")":
            if groups:
                multiline, verbose, dotall, behind = groups.pop()
        elif c == "$":
            c = _LINE_END if multiline else "\\Z"
        elif c == "." and not dotall:
            c = _DOT
        out.append(c)
        i += 1
    return "".join(out)


def ecma_schema(node: Any, rewritten: dict[int, dict[str, str]] | None = None) -> Any:
    """A copy of the schema whose ``pattern`` values and ``patternProperties`` names are
    ``ecma_pattern``'s (``propertyNames`` is a subschema: its ``pattern`` is one of them); data
    (``enum``, ``const``, ``default``, ``examples``) is left as written. ``rewritten`` collects,
    by the ``id`` of each subschema of the copy, its changed patterns (Python's spelling → the
    schema's), to word a reason as the schema does: per subschema, as two patterns may be spelt
    alike in Python (``^\\d$`` and ``^[\\d]$``).
    A ``$ref`` whose JSON pointer names a ``patternProperties`` entry names it as rewritten."""

    def pattern(p: str, changed: dict[str, str]) -> str:
        q = ecma_pattern(p)
        if q != p:
            changed[q] = p
        return q

    def copy(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            changed: dict[str, str] = {}
            for key, value in node.items():
                if key == "pattern" and isinstance(value, str):
                    out[key] = pattern(value, changed)
                elif key == "patternProperties" and isinstance(value, dict):
                    out[key] = {pattern(k, changed): copy(v) for k, v in value.items()}
                elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
                    out[key] = {k: copy(v) for k, v in value.items()}
                elif key in _DATA_KEYWORDS:
                    out[key] = value
                elif key == "$ref" and isinstance(value, str):
                    out[key] = _ecma_ref(value, root)
                else:
                    out[key] = copy(value)
            if changed and rewritten is not None:
                rewritten[id(out)] = changed
            return out
        if isinstance(node, list):
            return [copy(v) for v in node]
        return node

    root = node
    return copy(node)


def _ecma_ref(ref: str, root: Any) -> str:
    """``ref`` naming, through ``root`` (the document before ``ecma_schema``), each
    ``patternProperties`` entry it passes as ``ecma_pattern`` renamed it; as written when it
    passes none or does not resolve in ``root`` (another document, a nested ``$id``'s base)."""
    uri, sep, fragment = ref.partition("#")
    if not sep or not fragment.startswith("/") or not {"$", "\\", "."} & set(unquote(fragment)):
        return ref
    segments = [s.replace("~1", "/").replace("~0", "~") for s in unquote(fragment[1:]).split("/")]
    out: list[str] = []
    at, kind = root, "schema"  # what ``at`` is: a schema, a map of names, of patterns, data
    for segment in segments:
        if isinstance(at, dict) and segment in at:
            child = at[segment]
        elif isinstance(at, list) and segment.isdigit() and int(segment) < len(at):
            child = at[int(segment)]
        else:
            return ref
        out.append(ecma_pattern(segment) if kind == "patterns" else segment)
        if kind == "schema" and isinstance(at, dict):
            kind = (
                "patterns"
                if segment == "patternProperties"
                else "names"
                if segment in _SUBSCHEMA_MAPS
                else "data"
                if segment in _DATA_KEYWORDS
                else "schema"
            )
        elif kind != "data":
            kind = "schema"
        at = child
    if out == segments:
        return ref
    escaped = (quote(s.replace("~", "~0").replace("/", "~1"), safe="~") for s in out)
    return f"{uri}#/" + "/".join(escaped)


def full_validator(
    schema: dict[str, Any], rewritten: dict[int, dict[str, str]] | None = None
) -> Any:
    """jsonschema's validator of the schema's draft, with its format checker; its patterns'
    ``$`` is ECMA-262's (``ecma_schema``, which fills ``rewritten``)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    return cls(
        ecma_schema(schema, rewritten),
        format_checker=cls.FORMAT_CHECKER,
        registry=_offline_registry(),
    )


class SchemaConfig(ComponentConfig):
    schema_: str | dict[str, Any] = Field(
        alias="schema",
        description="A JSON Schema: a path to a .json/.yaml file (relative to the topology) or inline.",
    )

    model_config = {**ComponentConfig.model_config, "populate_by_name": True}

    @field_validator("schema_")
    @classmethod
    def _load(cls, v: str | dict, info: ValidationInfo) -> dict[str, Any]:
        named = f"schema file '{v}': " if isinstance(v, str) else ""
        if isinstance(v, str):
            base = (info.context or {}).get("base_dir") or Path.cwd()
            path = Path(v) if Path(v).is_absolute() else Path(base) / v
            try:
                text = path.read_bytes()
            except OSError as exc:
                where = "" if Path(v).is_absolute() else f" (relative to the topology: {path})"
                raise ValueError(f"cannot read schema file '{v}'{where}: {exc.strerror}") from None
            if path.suffix in (".yaml", ".yml"):
                v = _yaml_schema(text, v)
            else:
                try:
                    name, v = v, orjson.loads(text)
                except Exception as exc:
                    raise ValueError(f"schema file '{v}' is not valid: {exc}") from None
                _no_duplicate_keys(text, name)
        if not isinstance(v, dict):
            raise ValueError("a JSON Schema must be an object")
        base = (info.context or {}).get("base_dir")
        digest = schema_digest(v) if base is not None else None
        if digest is None or digest not in _checked_when_packaged(Path(base)):
            try:
                check_schema_once(v)
            except ValueError as exc:
                raise ValueError(f"{named}{exc}") from None
        return v


def _no_duplicate_keys(raw: bytes, name: str) -> None:
    """JSON parsers keep the last of two equal keys of an object: a schema file whose `age` is
    written twice would check the second only, silently."""
    import json

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise ValueError(f"schema file '{name}' has the key {key!r:.80} twice in an object")
            seen.add(key)
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)


def _yaml_schema(raw: bytes, name: str) -> Any:
    """A YAML schema file read as the topology is (no ``${VAR}`` here: a schema is data): a
    duplicate key is refused, not the last one kept, and so are YAML 1.1's surprising readings
    (``enum: [NO, SE]`` holds the boolean false), each with its line in the file."""
    from squall.topology.yamlsource import read_yaml

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"schema file '{name}' is not UTF-8 text") from None
    data, loc, problems = read_yaml(text, name, None)
    problems += [loc.problem(path, how) for path, how in loc.surprises.items()]
    if data is None and not problems:
        raise ValueError(f"schema file '{name}' is empty")
    if problems:
        shown = "; ".join(
            f"line {p.line}, column {p.column}: {p.path + ': ' if p.path else ''}{p.message}"
            for p in problems[:5]
        )
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"schema file '{name}' is not valid: {shown}{more}")
    return data


#: Keywords newer than draft 7, which fastjsonschema does not implement: schemas using them are
#: validated by jsonschema alone.
NEWER_KEYWORDS = frozenset(
    {
        "prefixItems",
        "unevaluatedProperties",
        "unevaluatedItems",
        "dependentRequired",
        "dependentSchemas",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
        "minContains",
        "maxContains",
        "$anchor",
        "$vocabulary",
    }
)


def _keywords(node: Any) -> set[str]:
    if isinstance(node, dict):
        out = set(node)
        for v in node.values():
            out |= _keywords(v)
        return out
    if isinstance(node, list):
        return set().union(*(_keywords(v) for v in node)) if node else set()
    return set()


def _ref_with_siblings(node: Any) -> bool:
    """True when some subschema has ``$ref`` beside other keywords: draft 7 (fastjsonschema) ignores
    those siblings, drafts 2019-09 and later apply them."""
    if isinstance(node, dict):
        if "$ref" in node and set(node) - {
            "$ref",
            "$comment",
            "description",
            "title",
            "$schema",
            "$id",
        }:
            return True
        return any(_ref_with_siblings(v) for v in node.values())
    if isinstance(node, list):
        return any(_ref_with_siblings(v) for v in node)
    return False


def _self_contained(node: Any, top: bool = True) -> bool:
    """True when every ``$ref`` is a fragment (``#/definitions/x``) and no subschema sets its own
    ``$id``: fastjsonschema fetches any other reference with urllib while it compiles."""
    if isinstance(node, dict):
        if not top and isinstance(node.get("$id", node.get("id")), str):
            return False
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return False
        return all(_self_contained(v, False) for k, v in node.items() if k not in _DATA_KEYWORDS)
    if isinstance(node, list):
        return all(_self_contained(v, False) for v in node)
    return True


def _compiled(schema: dict[str, Any]):
    """fastjsonschema's compiled validator (raising ``JsonSchemaException`` on an invalid value),
    or None when the schema needs jsonschema. Its patterns' ``$`` is ECMA-262's (``ecma_schema``:
    fastjsonschema rewrites a ``pattern``'s ``$``, but not a ``patternProperties`` name's)."""
    if (
        _keywords(schema) & NEWER_KEYWORDS
        or "format" in _keywords(schema)
        or _ref_with_siblings(schema)
        or not _self_contained(schema)
    ):
        return None
    try:
        import fastjsonschema

        return fastjsonschema.compile(
            ecma_schema({k: v for k, v in schema.items() if k != "$schema"})
        )
    except Exception:  # any schema fastjsonschema cannot compile falls back to jsonschema
        return None


def fast_check(schema: dict[str, Any]):
    """A compiled validity check (fastjsonschema, ~10x faster), or None when the schema needs jsonschema."""
    compiled = _compiled(schema)
    if compiled is None:
        return None
    import fastjsonschema

    def check(value: Any) -> bool:
        try:
            compiled(value)
            return True
        except fastjsonschema.JsonSchemaException:
            return False

    return check


#: Formats jsonschema checks only when a package of its own is installed; without it, a value of
#: that format passes unchecked, silently. squall depends on rfc3339-validator (date-time, time:
#: the usual formats of event data), so those are checked wherever squall is installed, a Lambda
#: package included; the others depend on what else the environment holds.
FORMAT_PACKAGES = {
    "date-time": "rfc3339-validator",
    "time": "rfc3339-validator",
    "hostname": "fqdn",
    "idn-hostname": "idna",
    "uri": "rfc3987 or rfc3986-validator",
    "uri-reference": "rfc3987 or rfc3986-validator",
    "iri": "rfc3987 or rfc3987-syntax",
    "iri-reference": "rfc3987 or rfc3987-syntax",
    "json-pointer": "jsonpointer",
    "relative-json-pointer": "jsonpointer",
    "uri-template": "uri-template",
    "color": "webcolors",
    "duration": "isoduration",
}
#: Keywords whose value is a map of names to subschemas (the names are data, not keywords);
#: draft 7's ``dependencies`` maps a name to a subschema or a list of names.
_SUBSCHEMA_MAPS = (
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
)
#: Keywords whose value is data: a ``format`` inside is not a keyword.
_DATA_VALUES = ("enum", "const", "default", "examples", "format")


def formats(node: Any) -> set[str]:
    """The ``format`` keywords' values of a schema and its subschemas."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("format"), str):
            found.add(node["format"])
        for key, value in node.items():
            if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
                for sub in value.values():
                    found |= formats(sub)
            elif key not in _DATA_VALUES:
                found |= formats(value)
    elif isinstance(node, list):
        for value in node:
            found |= formats(value)
    return found


def unchecked_formats(schema: dict[str, Any]) -> dict[str, str]:
    """The schema's formats that jsonschema does not check here: format → why — the package it
    needs that this environment lacks, or, when some draft's checker has it (its package is
    here), that the schema's draft does not define it (``time`` in draft 4 or 6, ``duration``
    before 2019-09): installing would change nothing. Imports jsonschema only for a schema with
    a ``format``."""
    used = formats(schema) & set(FORMAT_PACKAGES)
    if not used:
        return {}
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    here, anywhere = cls.FORMAT_CHECKER.checkers, jsonschema.FormatChecker().checkers
    draft = _draft_name(cls)
    return {
        f: (
            f"not a format of {draft}: a later draft's $schema checks it"
            if f in anywhere
            else f"needs {FORMAT_PACKAGES[f]}"
        )
        for f in sorted(used)
        if f not in here
    }


def _draft_name(cls: Any) -> str:
    """``Draft4Validator`` → ``JSON Schema draft 4``, ``Draft201909Validator`` → ``… 2019-09``."""
    number = cls.__name__.removeprefix("Draft").removesuffix("Validator")
    if len(number) == 6 and number.isdigit():
        number = f"{number[:4]}-{number[4:]}"
    return f"JSON Schema draft {number}"


#: Longest reason kept from jsonschema's message.
MAX_REASON = 1000


def _best_match(errors: Any) -> Any:
    from jsonschema.exceptions import best_match

    return best_match(errors)


class SchemaBolt(Bolt):
    """Validate payloads against a JSON Schema; invalid events go to ``invalid`` with the first error.

    Valid events are recognised by a compiled validator when the schema allows it; the error
    message of an invalid event (and every verdict for newer-draft schemas) comes from jsonschema.
    A ``pattern``'s ``$`` matches at the end of the text only, as JSON Schema's ECMA-262 regular
    expressions do (not before a final line break, as Python's ``re`` does); its ``\\d``, ``\\w``,
    ``\\b``, ``\\s`` and ``.`` are ECMA-262's too (``\\d`` is [0-9], not any Unicode digit).
    """

    Config = SchemaConfig
    summary = "Validate payloads against a JSON Schema; failures go to the 'invalid' stream."
    streams = (INVALID,)

    @classmethod
    def payload_writes(cls, config: SchemaConfig) -> tuple[str, ...]:
        """It changes no payload."""
        return ()

    @classmethod
    def payload_schema(cls, config: SchemaConfig) -> dict[str, Any]:
        """Every event on ``default`` is valid against the schema (the invalid go to ``invalid``)."""
        return config.schema_

    def __init__(self, config: SchemaConfig, context):
        super().__init__(config, context)
        # fastjsonschema's validator, called inline per event (``fast_check`` without its call).
        self._fast = _compiled(config.schema_)
        # The patterns jsonschema's validator holds in Python's spelling → the schema's, by the
        # subschema holding them (ecma_schema), for the reasons.
        self._patterns: dict[int, dict[str, str]] = {}
        # With a compiled check, jsonschema serves only invalid events: built at the first one.
        self._validator = (
            None if self._fast is not None else full_validator(config.schema_, self._patterns)
        )
        if self._fast is None and (unchecked := unchecked_formats(config.schema_)):
            needs = {f: why for f, why in unchecked.items() if why.startswith("needs ")}
            if needs:
                listed = ", ".join(f"'{f}' ({why})" for f, why in needs.items())
                problem = context.problem(
                    self.id,
                    "schema",
                    f"format {listed} is not checked: jsonschema checks a format only when its "
                    "package is installed, and it is not installed here, so any value passes as "
                    "that format (install it; for a Lambda package: squall package --with PACKAGE)",
                )
                log.warning("%s", problem)
            if undefined := {f: why for f, why in unchecked.items() if f not in needs}:
                listed = ", ".join(f"'{f}' ({why})" for f, why in undefined.items())
                problem = context.problem(
                    self.id,
                    "schema",
                    f"format {listed} is not checked: the schema's draft does not define it, so "
                    "any value passes as that format",
                )
                log.warning("%s", problem)

    def warm_up(self) -> None:
        """Build jsonschema's validator (the reasons of invalid events) now, not at the first
        invalid event."""
        if self._validator is None:
            self._validator = full_validator(self.config.schema_, self._patterns)

    def process(self, batch: list[Event]) -> Output:
        out = Output(self.id)
        validator, fast = self._validator, self._fast
        passed: list[Event] = []
        emit = passed.append
        if fast is not None:
            from fastjsonschema import JsonSchemaException as not_valid
        for ev in batch:
            if fast is not None:
                try:
                    fast(ev.value)
                except not_valid:
                    pass
                else:
                    emit(ev)
                    continue
            if validator is None:
                validator = self._validator = full_validator(self.config.schema_, self._patterns)
            error = _best_match(validator.iter_errors(ev.value))
            if error is None:
                emit(ev)
            else:
                where = error.json_path if error.absolute_path else "$"
                message = error.message
                for python, written in self._patterns.get(id(error.schema), {}).items():
                    message = message.replace(repr(python), repr(written))
                # jsonschema's message holds a repr of the value: bound it (a 50k-item list is 400 KB).
                out.fail(ev, safe_json.text(f"schema: {where}: {message}", MAX_REASON), INVALID)
        out.emit_all(passed)
        return out
