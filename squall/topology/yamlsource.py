"""Safe YAML reading that keeps every node's line and column, with ``${VAR}`` substitution.

The loader composes the YAML node tree (never constructing arbitrary Python objects), converts it
to plain data, and records where each value and each mapping key sits, so that every later error
(pydantic, registry, graph) can name ``file:line:column`` and the path in the document. Secret
references (``${ssm:…}``, ``${secretsmanager:…}``) are substituted here too, from the source the
loader is given (``squall.topology.references``).

Size (~820 lines): reading, converting with marks, and substituting are one walk of the node
tree; the YAML 1.1 surprises, the substitution's errors and the parser's are said where they are
found (a key without its ': ' at its own line, not at the next one where the parser gave up).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import yaml

from squall import redact
from squall.errors import Problem
from squall.topology import references
from squall.topology.references import SecretSource, SecretUnavailable

Path_ = tuple[str | int, ...]

#: ``$$``, ``${VAR}``, ``${VAR:-default}``; a secret reference ``${ssm:…}`` or
#: ``${secretsmanager:…}`` (a ``:`` not followed by ``-``: ``${ssm:-x}`` is the variable ``ssm``
#: with a default, as ever; see ``squall.topology.references``); then any other ``${``
#: (``${VAR-x}``, ``${VAR:=x}``, ``${ VAR }``, an unclosed ``${VAR``): refused rather than kept as
#: text.
_VAR = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}"
    r"|\$\{(ssm|secretsmanager):(?!-)([^}]*)\}|\$\{"
)
_NULL = "tag:yaml.org,2002:null"
_START = re.compile(r"\$\{\s*[A-Za-z0-9_]*.?")


def format_path(path: Path_) -> str:
    """``("bolts", 2, "type")`` → ``bolts[2].type``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Locator:
    """Where each path of a document sits in its file (1-based line and column)."""

    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    #: Unquoted values YAML read as another type than text: what it read (``a number``).
    typed: dict[Path_, str] = field(default_factory=dict)
    #: Those of them YAML 1.1 read as few expect (``NO`` is false, ``2024-01-05`` a date): what
    #: to say where an option takes any value.
    surprises: dict[Path_, str] = field(default_factory=dict)
    #: Those of them that are another number than their digits show (``0100`` is 64 in octal,
    #: ``8:20`` is 500 in base 60), or a boolean (``on``): what to say where an option wants a
    #: number.
    numbers: dict[Path_, str] = field(default_factory=dict)
    #: The same values, and what to say where an option wants a duration (``max_future: 010``
    #: is 8 seconds, ``size: 1:30`` 90 seconds).
    durations: dict[Path_, str] = field(default_factory=dict)
    #: Values that hold a ``${VAR}`` or a secret reference: another value when deployed than at
    #: this load (``squall package`` keeps what any value of such an option may need).
    variables: set[Path_] = field(default_factory=set)
    #: Those of them that may be empty when deployed (nothing but ``${VAR}``, ``${VAR:-}`` or a
    #: secret reference: ``${VAR:-default}`` takes its default for an empty variable too), so
    #: also null when unquoted, and the unquoted ones whose defaults are YAML's null
    #: (``${GEO_DB:-~}``): ``database: "/opt/${GEO_FILE:-city.mmdb}"`` never is.
    may_be_empty: set[Path_] = field(default_factory=set)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The mark of ``path`` or of its nearest located ancestor."""
        p = tuple(path)
        while True:
            if key and p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            if not p:
                return (0, 0)
            p = p[:-1]

    def problem(self, path: Path_, message: str, *, key: bool = False) -> Problem:
        line, col = self.where(path, key=key)
        return Problem(self.file, line, col, format_path(path), message)


class _Loader(yaml.SafeLoader):
    """Safe loading that remembers which scalars carried an explicit tag (``!!str ${A:-5}``)."""

    def compose_scalar_node(self, anchor: str | None) -> yaml.ScalarNode:
        explicit = self.peek_event().tag not in (None, "!")
        node = super().compose_scalar_node(anchor)
        node.explicit_tag = explicit  # type: ignore[attr-defined]
        return node


def read_yaml(
    text: str, file: str, env: Mapping[str, str] | None, secrets: SecretSource | None = None
) -> tuple[Any, Locator, list[Problem]]:
    """Parse ``text`` into plain data; returns the data, its locator and the problems found.
    ``env`` None: no ``${VAR}`` substitution (a schema file is data, not configuration).
    ``secrets`` gives the value of each ``${ssm:…}`` / ``${secretsmanager:…}`` reference (None:
    a reference is a problem)."""
    loc = Locator(file)
    problems: list[Problem] = []
    try:  # the reader refuses a control character (NUL, ESC of a pasted colour code) up front
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        what = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        problems.append(
            Problem(file, line, col, "", f"the character {what} is not allowed in YAML: remove it")
        )
        return None, loc, problems
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        problems.append(_syntax_problem(text, file, exc))
        return None, loc, problems
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        problems.append(Problem(file, 0, 0, "", f"YAML error: {exc}"))
        return None, loc, problems
    except RecursionError:  # PyYAML composes nested collections recursively
        problems.append(_too_deep(file, loader))
        return None, loc, problems
    finally:
        loader.dispose()
    if node is None:
        problems.append(Problem(file, 1, 1, "", "the file is empty"))
        return None, loc, problems
    try:
        source = (
            _StopAtOutage(secrets)
            if secrets is not None and not isinstance(secrets, references.Placeholders)
            else secrets
        )
        data = _Converter(loc, env, problems, source).convert(node, ())
    except RecursionError:
        problems.append(Problem(file, 0, 0, "", "the YAML is nested too deeply"))
        return None, loc, problems
    return data, loc, problems


#: What the parser's "expected <block end>, but found …" found, in a data engineer's words.
_FOUND = {
    "'?'": "a key",
    "'<block mapping start>'": "a key",
    "'<block sequence start>'": "a list entry",
    "'-'": "a list entry",
}


def _syntax_problem(text: str, file: str, exc: yaml.MarkedYAMLError) -> Problem:
    """The parser's error at the line to change, with what to change there. The parser's own
    mark is where it gave up, which for a key without its ': ' is the line after it."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or ""
    what = problem or str(exc)
    if exc.context:
        what = f"{what} ({exc.context})"
    if problem == "could not find expected ':'" and exc.context_mark is not None:
        # `  events.jsonl.gz` or `  type:file` alone on its line: the parser says so at the next
        # line; the key it could not finish starts here
        mark = exc.context_mark
        what += "; this line has no ': ' after its key: write `key: value` (or '- ' before a list entry)"
    elif problem == "mapping values are not allowed here":
        start = _key_run_on(text, mark.index) if mark else None
        if start is not None:  # `type file` (or `type:file`), then `path: x` on the next line
            where = mark.line + 1
            mark = start
            what += (
                f"; this line has no ': ' after its key, so YAML read it and what follows as one "
                f"text up to the ':' on line {where}: write `key: value`, with a space after ':'"
            )
        else:  # `description: note: this`, or a key indented one space too far
            what += (
                "; a value holding ': ' needs quotes, or this line is indented deeper than the "
                "key it belongs with"
            )
    elif mark and text[max(mark.index - 1, 0) : mark.index + 1] == "${":
        # `settings: {batch_size: ${N:-500}}`: in a flow collection `{` starts a mapping
        what += '; inside { } or [ ], write a variable in quotes: "${VAR}"'
    elif problem.startswith("found unknown escape character"):
        # `regex: "^\\d+$"`: in double quotes a backslash starts an escape
        what += "; write a regex in single quotes ('^\\d+$'), or double its backslashes"
    elif problem.startswith("found character '\\t'"):
        start = text.rfind("\n", 0, mark.index) + 1 if mark else 0
        if mark and text[start : mark.index].strip(" \t"):
            # `type:<tab>stdin`, or a tab after the value at the end of the line
            what += "; YAML takes no tab between or after values either: type a space (or none)"
        else:
            what += "; indent with spaces, not tabs"
    elif problem.endswith("that cannot start any token"):
        # `description: @team owns it`: YAML reserves '@' and '`' (and '%' opens a directive)
        what += "; a value starting with this character needs quotes ('…')"
    elif exc.context == "while scanning an alias" or problem.startswith("found undefined alias"):
        # `path: *.jsonl`: a plain value starting with '*' is an alias
        mark = exc.context_mark or mark
        what += "; '*' starts an alias (of an '&anchor'): quote a value starting with '*' ('*…')"
    elif exc.context in ("while parsing a flow mapping", "while parsing a flow sequence") and (
        cut := _comment_in_flow(text, exc.context_mark, exc.problem_mark)
    ):
        # `{field: tag, equals: #launch}`: ' #' starts a comment, to the end of the line
        mark = cut
        what += "; ' #' starts a comment, which cut the { } or [ ] short here: quote a value holding '#'"
    elif exc.context in ("while parsing a flow mapping", "while parsing a flow sequence") and (
        end := _unclosed_on_its_line(text, exc.context_mark, exc.problem_mark)
    ):
        # `spout: {type: stdin` then `sinks:`: the parser gave up on the next line
        opened, close = ("{", "}") if exc.context.endswith("mapping") else ("[", "]")
        what += (
            f"; the '{opened}' opened at column {exc.context_mark.column + 1} is not closed on "
            f"its line: add the '{close}' at its end (or a ',' if it goes on)"
        )
        mark = end
    elif exc.context == "while scanning a quoted scalar" and problem.startswith(
        "found unexpected end of stream"
    ):
        # said at the end of the file: the quote that is never closed opens here
        mark = exc.context_mark or mark
        what += "; this quote is never closed: add the closing quote"
    elif problem.endswith("but found '<scalar>'") and _after_quote(text, mark):
        # `description: 'it's here'`: the quote closed at `it'`
        what += (
            "; text follows a closing quote: inside '…' write a quote twice ('it''s'), or put "
            'the value in "…"'
        )
    elif problem.startswith("expected <block end>, but found ") and (
        problem.removeprefix("expected <block end>, but found ") in _FOUND
    ):
        found = _FOUND[problem.removeprefix("expected <block end>, but found ")]
        what += (
            f"; {found} here is indented to no level of the lines above: line it up with the "
            "keys of the mapping it belongs to (or the '-' of its list)"
        )
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    return Problem(file, line, col, "", f"YAML syntax error: {what}")


def _key_run_on(text: str, index: int) -> yaml.Mark | None:
    """Where a plain text in a key's place starts, when it runs from an earlier line up to the
    ':' at ``index`` (a key without its ': ', read together with the next line); else None."""
    tokens: list[yaml.Token] = []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.start_mark.index >= index:
                break
            tokens.append(token)
    except yaml.YAMLError:
        pass
    if len(tokens) < 2 or not isinstance(tokens[-1], yaml.ScalarToken):
        return None
    scalar, before = tokens[-1], tokens[-2]
    first = before.end_mark.line < scalar.start_mark.line  # the first on its line: a key's place
    if scalar.style is not None or not (first or isinstance(before, yaml.BlockEntryToken)):
        return None  # a value that runs on: the next line is indented too deep (said as ever)
    if scalar.start_mark.line >= text.count("\n", 0, index):
        return None
    return scalar.start_mark


def _unclosed_on_its_line(
    text: str, start: yaml.Mark | None, stop: yaml.Mark | None
) -> yaml.Mark | None:
    """The end of the line where a { } or [ ] opened at ``start`` when the parser gave up (at
    ``stop``) on a later line and that line does not go on (it ends in no ',', '{' or '['):
    where its closing bracket is missing."""
    if start is None or stop is None or stop.line <= start.line:
        return None
    end = text.find("\n", start.index)
    end = len(text) if end < 0 else end
    line = text[start.index : end].rstrip(" \r")
    if not line or line.endswith((",", "{", "[")):
        return None
    at = start.index + len(line)
    return yaml.Mark(start.name, at, start.line, start.column + len(line), None, None)


def _after_quote(text: str, mark: yaml.Mark | None) -> bool:
    """Whether the text before ``mark`` on its line ends with a closing quote."""
    if mark is None:
        return False
    before = text[text.rfind("\n", 0, mark.index) + 1 : mark.index].rstrip()
    return before.endswith(("'", '"')) and before.count(before[-1]) >= 2


def _comment_in_flow(
    text: str, start: yaml.Mark | None, stop: yaml.Mark | None
) -> yaml.Mark | None:
    """The mark of a ' #' on the line where a { } or [ ] opened at ``start`` when the parser gave
    up (at ``stop``) on a later line and a closing bracket follows it: a comment that ate the end
    of the collection."""
    if start is None or stop is None or stop.line <= start.line:
        return None
    end = text.find("\n", start.index)
    line = text[start.index : end if end >= 0 else len(text)]
    at = line.find(" #")
    if at < 0 or not any(c in line[at:] for c in "}]"):
        return None
    return yaml.Mark(
        start.name, start.index + at + 1, start.line, start.column + at + 1, None, None
    )


def variables_in(text: str) -> list[tuple[str, str | None]]:
    """``(name, default)`` of each ``${VAR}`` the loader replaces, in the order written: in
    values only, not in comments or keys, ``$$`` skipped (what ``squall package`` makes template
    parameters of). ``yaml.YAMLError`` for text that is no YAML."""
    return [(m[1], m[2]) for m in _substitutions(text) if m[1] is not None]


def references_in(text: str) -> list[references.SecretRef]:
    """Each secret reference the loader resolves (in values only, as ``variables_in``), once, in
    the order written: what ``squall package`` grants the role to read. One that does not parse
    is left out (loading reports it). ``yaml.YAMLError`` for text that is no YAML."""
    return list(reference_marks(text))


def reference_marks(text: str) -> dict[references.SecretRef, tuple[int, int]]:
    """Each secret reference of ``text``'s values (as ``references_in``) with the 1-based line and
    column of the first value holding it: where a problem with what it stands for is said."""
    out: dict[references.SecretRef, tuple[int, int]] = {}
    for m, node in _substitutions_at(text):
        if m[3] is not None:
            try:
                ref = references.parse(m[3], m[4])
            except ValueError:
                continue
            out.setdefault(ref, (node.start_mark.line + 1, node.start_mark.column + 1))
    return out


def variable_marks(text: str) -> dict[tuple[int, int], list[tuple[str, int]]]:
    """The ``${VAR}`` names of each value of ``text`` (as ``variables_in``: ``$$`` skipped, not
    secret references), each with its offset in the value as written, keyed by the 1-based line
    and column where the value starts — the ``Locator``'s mark of it, wherever its variables are
    (a folded scalar's next line, one of several values on a line). ``yaml.YAMLError`` for text
    that is no YAML."""
    out: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for m, node in _substitutions_at(text):
        if m[1] is not None:
            at = (node.start_mark.line + 1, node.start_mark.column + 1)
            out.setdefault(at, []).append((m[1], m.start()))
    return out


def _substitutions(text: str) -> list[re.Match[str]]:
    """The ``_VAR`` matches of the values of ``text``'s YAML, in the order written."""
    return [m for m, _ in _substitutions_at(text)]


def _substitutions_at(text: str) -> list[tuple[re.Match[str], yaml.ScalarNode]]:
    """The ``_VAR`` matches of the values of ``text``'s YAML with their node, in the order written."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    out: list[tuple[re.Match[str], yaml.ScalarNode]] = []
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias: its variables are those of its anchor
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            if "$" in node.value and node.tag in _RETYPED:
                out += [(m, node) for m in _VAR.finditer(node.value)]
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
        else:
            stack.extend(reversed([v for k, v in node.value]))
    return out


def _too_deep(file: str, loader: yaml.SafeLoader) -> Problem:
    """Where the parser was when the nesting ran out of stack."""
    try:
        m = loader.get_mark()
    except Exception:  # noqa: BLE001 - the mark is a courtesy
        return Problem(file, 0, 0, "", "the YAML is nested too deeply")
    return Problem(file, m.line + 1, m.column + 1, "", "the YAML is nested too deeply")


#: Nodes converted per document at most: a few lines of nested aliases ("billion laughs") must not
#: expand into gigabytes.
MAX_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_RETYPED = (
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
)


class _Converter:
    """YAML nodes → plain data, recording marks; every problem is located, nothing raises."""

    def __init__(
        self,
        loc: Locator,
        env: Mapping[str, str] | None,
        problems: list[Problem],
        secrets: SecretSource | None = None,
    ):
        self.loc, self.env, self.problems, self.secrets = loc, env, problems, secrets
        self.ctor = yaml.SafeLoader("")
        self.count = 0
        self.active: set[int] = set()  # nodes being converted: an alias back into one is a cycle

    def convert(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                self.problems.append(
                    self.loc.problem(
                        path, f"document too large: more than {MAX_NODES} values (aliases expanded)"
                    )
                )
            return None
        if id(node) in self.active:
            self.problems.append(self.loc.problem(path, "recursive alias"))
            return None
        self.loc.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        plain = _SEQ if isinstance(node, yaml.SequenceNode) else _MAP
        if node.tag != plain:  # `!!set {a, b}`, `!Ref [x]`, `!!python/object/apply:…`: not dropped
            self.problems.append(self.loc.problem(path, _unsupported(node.tag)))
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._mapping(node, path)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        explicit: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *base` or `<<: [*a, *b]`: explicit keys win
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        self._problem(
                            key_node, path, "a merge key '<<' needs a mapping or a list of mappings"
                        )
                        continue
                    for k, v in (self.convert(source, path) or {}).items():
                        merged.setdefault(k, v)
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            kpath = (*path, key)
            if key in explicit:
                line, column = self.loc.keys[kpath]  # PyYAML would keep the last, silently
                self._problem(
                    key_node,
                    kpath,
                    f"duplicate key (first at line {line}, column {column}): keep one of them",
                )
                continue
            self.loc.keys[kpath] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            self.loc.values.pop(kpath, None)  # an explicit value overrides a merged one's place
            explicit[key] = self.convert(value_node, kpath)
        return {**merged, **explicit}

    def _key(self, key_node: yaml.Node, path: Path_) -> str | None:
        if not isinstance(key_node, yaml.ScalarNode):
            self._problem(key_node, path, "a mapping key must be a plain value")
            return None
        try:
            key = self.ctor.construct_object(key_node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self._problem(key_node, path, f"cannot read key: {_reason(exc)}")
            return None
        if isinstance(key, str) and key_node.style is None and _at_an_edge(key):
            # `\u00a0 type: stdin` (indented with a pasted no-break space) was the key ' type';
            # one inside a key is the data's (`rename: {Prix\u00a0TTC: price}`), as in a value
            self._problem(key_node, path, f"the key {key!r} {_lookalike(key)}")
            return None
        if isinstance(key, bool):
            if key_node.style is None and key_node.value.lower() not in ("true", "false"):
                kpath = (*path, key_node.value)
                self._problem(key_node, kpath, word_problem(key_node.value, key, "key"))
            return "true" if key else "false"  # as YAML wrote it, not Python's True
        variable = self.env is not None and isinstance(key, str)
        if variable and any(m.group(0) != "$$" for m in _VAR.finditer(key)):
            # `routes: {"${VIP_TIER}": vip}` matched no event, silently: keys are not replaced
            self._problem(
                key_node,
                (*path, key),
                "variables are not replaced in a mapping key, only in values: write the key itself",
            )
        return "null" if key is None else str(key)

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        value = node.value
        if "$" in value and node.tag in _RETYPED and self.env is not None:
            substituted = _substitute(value, path, self.loc, self.env, self.problems, self.secrets)
            if any(m.group(0) != "$$" for m in _VAR.finditer(value)):
                self.loc.variables.add(path)
                bare = _VAR.sub(lambda m: "$" if m.group(0) == "$$" else m[2] or "", value)
                if not bare or (  # `${GEO_DB:-~}` unquoted: its default is YAML's null
                    node.style is None
                    and not getattr(node, "explicit_tag", False)
                    and not any(m[3] for m in _VAR.finditer(value))
                    and self.ctor.resolve(yaml.ScalarNode, bare, (True, False)) == _NULL
                ):
                    self.loc.may_be_empty.add(path)
            if substituted != value:
                if any(m[3] for m in _VAR.finditer(value)):  # a secret is text: never retyped
                    tag = "tag:yaml.org,2002:str"
                elif getattr(node, "explicit_tag", False):  # `!!str ${A:-5}` stays a string
                    tag = node.tag
                elif node.style is None:  # plain scalar: `batch_size: ${N:-500}` becomes an int
                    tag = self.ctor.resolve(yaml.ScalarNode, substituted, (True, False))
                else:
                    tag = "tag:yaml.org,2002:str"
                node = yaml.ScalarNode(tag, substituted, node.start_mark, node.end_mark, node.style)
        try:
            value = self.ctor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.problems.append(self.loc.problem(path, f"cannot read value: {_reason(exc)}"))
            return None
        if isinstance(value, bytes):  # `!!binary`: no JSON value, no text option takes it
            self.problems.append(self.loc.problem(path, _unsupported(node.tag)))
            return None
        if (
            node.style is None and isinstance(value, str) and _at_an_edge(value)
        ):  # `type: json\u00a0`: YAML trims spaces around a plain value, not these
            shown = "the value of its variable" if path in self.loc.variables else "the value"
            shown += "" if path in self.loc.variables else f" {value!r}"  # a password, maybe
            self.problems.append(self.loc.problem(path, f"{shown} {_lookalike(value, edge=True)}"))
            return None
        if node.style is None and not getattr(node, "explicit_tag", False):
            what = _TYPED.get(node.tag)
            if what is not None:
                self.loc.typed[path] = what
                surprise = _surprise(node.tag, node.value, value)
                if surprise is not None:
                    self.loc.surprises[path] = surprise
                    if _not_decimal(node.value, value):
                        self.loc.numbers[path] = _other_number(node.value, value)
                        self.loc.durations[path] = _other_duration(node.value, value)
                if isinstance(value, bool):  # `attempts: on` was 1, `initial_backoff: off` 0
                    read = (
                        f"YAML reads the unquoted {node.value} as the boolean {str(value).lower()}"
                    )
                    self.loc.numbers[path] = f"{read}, which is no number: write the number meant"
                    self.loc.durations[path] = (
                        f"{read}, which is no duration: write the duration meant (e.g. 30s, 5m)"
                    )
        return value

    def _problem(self, node: yaml.Node, path: Path_, message: str) -> None:
        self.problems.append(
            Problem(
                self.loc.file,
                node.start_mark.line + 1,
                node.start_mark.column + 1,
                format_path(path),
                message,
            )
        )


_TYPED = {
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}
_OCTAL = re.compile(r"[-+]?0[0-7_]+")


def _surprise(tag: str, text: str, value: Any) -> str | None:
    """What to say of an unquoted value YAML 1.1 read where few would expect it, else None."""
    if tag == "tag:yaml.org,2002:bool" and text.lower() not in ("true", "false"):
        return word_problem(text, value, "value")  # yes, no, on, off: `country: NO`
    how = None
    if tag == "tag:yaml.org,2002:timestamp":
        how = "a date, which no JSON value equals"
    elif tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and ":" in text:
        how = "a number in base 60 (12:30 is 750)"
    elif tag == "tag:yaml.org,2002:int" and _OCTAL.fullmatch(text):
        how = "an octal number (01234 is 668)"
    return how and f"YAML reads this unquoted value as {how}: write it in quotes for the text"


def _not_decimal(text: str, value: Any) -> bool:
    """Whether YAML read a number other than the decimal one its digits show (``07`` is 7 in
    octal too)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return ":" in text or int(text.replace("_", ""), 10) != value
    except ValueError:
        return True


#: Characters that look like a space (or like nothing) and that YAML does not read as one:
#: pasted from a web page, a document or a chat (no-break, thin, zero-width spaces, a BOM).
_LOOKALIKE = re.compile("[\u00a0\u1680\u2000-\u200b\u202f\u205f\u2060\u3000\ufeff]")


def _at_an_edge(text: str) -> bool:
    """Whether ``text`` starts or ends with a look-alike space: where YAML would have trimmed
    the space meant (inside a key or a value it is the data's: `10\u00a0km`)."""
    return bool(_LOOKALIKE.match(text) or _LOOKALIKE.match(text[-1:]))


def _lookalike(text: str, edge: bool = False) -> str:
    """What to say of a key (or, ``edge``, a value starting or ending with one) holding one."""
    found = _LOOKALIKE.search(text)
    code = f"U+{ord(found.group(0)):04X}" if found else "a character"
    where = "starts or ends with" if edge else "holds"
    return (
        f"{where} {code}, which looks like a space (or nothing) but is none to YAML (pasted "
        "from a web page or a document?): type an ordinary space, or none"
    )


def _other_number(text: str, value: float) -> str:
    """What to say of ``0100`` (64) or ``8:20`` (500) where an option wants a number: few mean
    octal or base 60 (`batch_size: 0500` ran batches of 320)."""
    if ":" in text:
        return (
            f"YAML reads the unquoted {text} as a number in base 60, {value}: write the number "
            f"in decimal digits ({value} if that is the one meant)"
        )
    decimal = ("-" if text.startswith("-") else "") + (text.lstrip("+-").lstrip("0_") or "0")
    return (
        f"YAML reads the unquoted {text} as an octal number, {value}: write {decimal} without "
        f"the leading 0 (or {value} if that is the one meant)"
    )


def _other_duration(text: str, value: float) -> str:
    """What to say of ``010`` (8) or ``1:30`` (90) where an option wants a duration, which a
    number gives in seconds: ``max_future: 010`` was 8 seconds, ``size: 1:30`` 90. A negative
    reading (``-010``) is no duration at all: no ``-10s`` to suggest, which is refused too."""
    if value < 0:
        how = "a number in base 60" if ":" in text else "an octal number"
        return (
            f"YAML reads the unquoted {text} as {how}, {value} seconds, and a duration is never "
            "negative: write 0 or more with its unit (e.g. 10s, 5m)"
        )
    if ":" in text:
        meant = f"{_seconds(value)} if that is the one meant"
        if text.count(":") == 1 and not isinstance(value, float):  # `1:30`: m:ss, or h:mm?
            meant += f"; {_seconds(value * 60)} for {text} as hours and minutes"
        return (
            f"YAML reads the unquoted {text} as a number in base 60, {value} seconds: write the "
            f"duration with its unit ({meant})"
        )
    decimal = text.lstrip("+").lstrip("0_") or "0"
    return (
        f"YAML reads the unquoted {text} as an octal number, {value} seconds: write {decimal}s "
        f"(or {_seconds(value)} if that is the one meant)"
    )


def _seconds(value: float) -> str:
    """A number of seconds as a duration's text in its largest whole unit (5400 → ``90m``)."""
    if isinstance(value, int) and value:
        for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
            if value % size == 0:
                return f"{value // size}{unit}"
    return f"{value}s"


def word_problem(text: str, value: bool, where: str) -> str:
    """A ``yes``/``no``/``on``/``off`` that YAML 1.1 reads as a boolean where text may be meant."""
    flag = "true" if value else "false"
    return (
        f"YAML reads the {where} {text} as the boolean {flag}: "
        f"write '{text}' in quotes for the text, or {flag} for the boolean"
    )


def _unsupported(tag: str) -> str:
    shown = (
        "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,") else tag
    )
    return f"the tag '{shown}' is not supported: write a plain list, mapping or value"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        return exc.problem or str(exc)
    return str(exc)


def _substitute(
    value: str,
    path: Path_,
    loc: Locator,
    env: Mapping[str, str],
    problems: list[Problem],
    secrets: SecretSource | None = None,
) -> str:
    """``${VAR}`` (an error when unset), ``${VAR:-default}`` (also when empty, as in a shell), ``$$`` → ``$``,
    a secret reference → its value from ``secrets``."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group(3) is not None:
            first = m.start() == 0  # a stand-in opening a URL option is a URL (Placeholders.at)
            found = _resolve(m.group(3), m.group(4), path, first, loc, problems, secrets)
            if found and in_userinfo(value, m.start(), m.end()):
                # `postgresql://app:${ssm:/pw}@db/x`: the value is the password itself (one
                # Secrets Manager generates and rotates may hold '%', '#', '@', '/'), so it is
                # encoded as a URL's user info must be; every driver decodes it back.
                if _CONTROL.search(found):  # encoded, the server only said "authentication failed"
                    problems.append(
                        loc.problem(
                            path,
                            f"${{{m.group(3)}:{m.group(4)}}}: its value holds a line break or "
                            "another control character, which no user or password of a URL holds "
                            "(stored with its trailing newline, as `put-parameter --value "
                            "file://…` keeps it?): store it without",
                        )
                    )
                    return ""
                user, colon, password = found.partition(":")  # `${ssm:/userinfo}`: user:password
                if not value[: m.start()].endswith("://"):
                    user, colon, password = found, "", ""  # a password (or a user) alone
                encoded = quote(user, safe="") + colon + quote(password, safe="")
                if not isinstance(found, references.Plain):
                    if encoded != found:
                        redact.remember(encoded)
                    if colon:  # the password alone, as a driver or its error may show it
                        redact.remember(password)
                        redact.remember(quote(password, safe=""))
                        redact.remember_part(user)  # and the user, as its error names it
                return encoded
            return str(found)
        name, default = m.group(1), m.group(2)
        if name is None:  # `${DLQ_PATH-dlq.jsonl}` was kept as a file name, `${STAGE-dev}` as data
            # Quoted up to the name only: what follows may be a password (`${PW-hunter2}`).
            start = _START.match(value, m.start())
            shown = start.group(0) if start else "${"
            problems.append(
                loc.problem(
                    path,
                    f"'{shown}…' is no variable squall replaces: write ${{VAR}} or "
                    "${VAR:-default} (a name of letters, digits and '_'), or $${ for a literal '${'",
                )
            )
            return ""
        if default is None:
            if name in env:
                return env[name]
            problems.append(
                loc.problem(
                    path,
                    f"environment variable '{name}' is not set (write ${{{name}:-default}} to give a default)",
                )
            )
            return ""
        if "${" in default:
            problems.append(
                loc.problem(
                    path,
                    f"the default of ${{{name}}} contains '${{': nested variables "
                    "are not supported",
                )
            )
            return ""
        if "{" in default:  # `${RX:-^a{2}$}`: the default ends at the first '}', giving `^a{2$}`
            problems.append(
                loc.problem(
                    path,
                    f"the default of ${{{name}}} contains '{{': a default ends at the first '}}', "
                    f"so it cannot hold braces; set {name} in the environment instead",
                )
            )
            return ""
        return env[name] if env.get(name) else default.replace("$$", "$")

    return _VAR.sub(repl, value)


#: What no URL holds: a line break, another control character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: A URL up to its user info: a scheme, ``://`` and no end of the authority (``/ ? #``) nor ``@``.
_BEFORE_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#@]*")


def in_userinfo(value: str, start: int, end: int) -> bool:
    """Whether ``value[start:end]`` (a secret reference) is in the user info of the URL ``value``:
    after ``scheme://``, before the ``@`` that ends it (the other ``${…}`` around it are opaque)."""
    before = _VAR.sub("x", value[:start])
    after = re.split(r"[/?#]", _VAR.sub("x", value[end:]), maxsplit=1)[0]
    return _BEFORE_USERINFO.fullmatch(before) is not None and "@" in after


class _StopAtOutage:
    """A load's source, asked nothing more of a service once it was unreachable or throttled:
    each reference would wait through the same retries again (a Lambda in a VPC with no route to
    SSM: three 5 s connection timeouts apiece, past Lambda's 10 s init)."""

    def __init__(self, source: SecretSource):
        self.source, self.down = source, dict[str, str]()

    def __call__(self, ref: references.SecretRef) -> str:
        earlier = self.down.get(ref.service)
        if earlier is not None:
            raise SecretUnavailable(f"not read, as an earlier reference: {earlier}", outage=True)
        try:
            return self.source(ref)
        except SecretUnavailable as exc:
            if exc.outage:
                self.down[ref.service] = exc.reason
            raise


def _resolve(
    service: str,
    body: str,
    path: Path_,
    first: bool,
    loc: Locator,
    problems: list[Problem],
    secrets: SecretSource | None,
) -> str:
    """The value of ``${service:body}``, remembered by ``redact`` unless the source says it is
    ``Plain`` (masked in every message and log line from now on); a located problem naming the
    reference (never a value) when there is none."""
    try:
        ref = references.parse(service, body)
    except ValueError as exc:
        problems.append(loc.problem(path, str(exc)))
        return ""
    if secrets is None:
        problems.append(
            loc.problem(
                path,
                f"{ref}: secret references are resolved by squall's commands and runners; "
                "this load was given no secret source (load(..., secrets=…))",
            )
        )
        return ""
    try:
        if isinstance(secrets, references.Placeholders):
            value = secrets.at(ref, path, first)
        else:
            value = secrets(ref)
    except SecretUnavailable as exc:
        problems.append(replace(loc.problem(path, f"{ref}: {exc.reason}"), outage=exc.outage))
        return ""
    if not isinstance(value, references.Plain):
        redact.remember(value)
        if first and path[:1] == ("resources",) and path[-1:] == ("url",):
            # a resource's whole URL (or its start): its user and host too, as a driver's
            # error names them without the rest (`for user "app_writer"`)
            redact.remember_url(value)
    return value  # a Plain one stays so for the caller (not remembered encoded either)
