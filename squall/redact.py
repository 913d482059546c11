"""Secrets out of logs and errors: the one helper every URL-like value goes through before it is shown.

``redact_url`` masks the password of one URL; ``redact_text`` masks in free text — a driver's
error message, a botocore log line, a rendered dict of request headers — every
``scheme://user:password@``, every ``password=…`` (``token=``, ``access_token=``, ``api_key=``,
``Signature=``, …), every credential header or key (``Authorization: Bearer …``, ``X-Api-Key:
…``, ``'X-Amz-Security-Token': b'…'``, ``"password": "…"``, ``Cookie: …``) and STS's
``<SecretAccessKey>``. ``SquallError`` applies ``redact_text`` to every message, and
``RedactingFilter`` (installed by the CLI and the Lambda handlers) to every log record, whatever
library wrote it and at any verbosity (the exception a formatter reads itself, a failed
format's arguments too); ``mask_uncaught`` to the traceback of an error nothing caught or
Python could not raise (the CLI, a KCL shard process, a Lambda function).

Size (~540 lines): the one place that knows what to mask — the credential patterns (a long
comment each: what they match and what not), the remembered secret values and URL
parts, and the hooks that apply them to logs and tracebacks."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "***"
# scheme://user:password@ — the password runs to the last '@' of the URL (an unescaped '@', '/',
# '#' or '?' in a password is still masked whole, as SQLAlchemy reads such a URL; a URL without a
# password but with an '@' in its path may lose a little more than its password).
# The pattern starts at '://' (after a scheme's character), which the regex engine finds at
# C speed: one starting at the scheme tried every letter of the text (100 ns a character;
# unbounded, it tried a scheme from every letter of a long run — a base64 blob in a message — to
# its end, quadratic in the run's length: seconds per 100 KB).
_USERINFO = re.compile(r"(?<=[A-Za-z0-9+.\-_])(?P<head>://[^\s:/@]*:)[^\s]*@")
# Credentials in free text, found in one scan (one pattern: two cost twice as much per character
# of every log line that names one). A name starts after no letter or digit (after a repr's
# '\r\n' escape too), and is either
# - ``name=``: password=… in a query string or a libpq-style key/value string, also as the last
#   word of a longer name (access_token=, client_secret=, X-Amz-Security-Token=, api_key=: a URL a
#   team's own bolt calls, quoted by its HTTP client's error; SQUALL_PROD_EU_WAREHOUSE_DB_PASSWORD=),
#   whatever the name before it (a pattern matching the name's words from a word boundary missed
#   names of five words or one word over 40 characters, and tried every word of a run like
#   ``a-a-a-…``). ``key=`` alone is too common a name to mask; ``mytoken=``, ``max_tokens=`` are
#   no secret, nor is ``device_token=`` (a push registration token addresses an app install; it
#   opens nothing). ``signature=`` (a presigned URL's ``Signature=``, ``X-Amz-Signature=``) and
#   ``sig=`` (a SAS URL) are credentials, as is ``authorization=`` (its scheme kept:
#   ``authorization=Basic ***``). Spaces may surround the ``=`` (``aws_secret_access_key = …`` of
#   a credentials file; ``==`` is no assignment). A quoted value (a Python repr,
#   ``Lookup(api_key='…')``; libpq's ``password='a b'``) is masked to its closing quote, looked
#   for within 1024 characters (a quote never closed costs no scan to the text's end per pair);
#   past that, as an unquoted value (a long token in quotes still is masked). An unquoted value
#   ends at a space, ``&``, a quote or a repr's ``\r``/``\n`` escape, and leaves its closing
#   brackets and commas (``(password=***)``).
# - ``name:``, a header (``Authorization: Bearer …``, ``X-Api-Key: …``, botocore's canonical
#   ``x-amz-security-token:…``) or the key of a rendered dict or JSON (``'X-Amz-Security-Token':
#   b'…'``, ``"password": "…"``, ``\"apiKey\": \"…\"`` inside a JSON string), or ``<name>``, an
#   XML element (``<SecretAccessKey>`` of an STS answer in botocore's debug log). Here the whole
#   name is matched, not its last word: ``device_token``, a bare ``token`` (the FCM message's
#   device token), ``NextToken`` (a page) and ``key`` stay. A quoted value is masked to its
#   closing quote (within 4096 characters); an unquoted one as a ``name=`` value is, except an
#   ``Authorization`` or ``Cookie`` header's, masked to the end of its line (or of a repr's
#   ``\r\n``: ``AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…``, ``a=1; sid=…``).
#   An ``Authorization`` value keeps its scheme (``Bearer ***``).
_RUN = r"(?:[^\s'\"&\\]|\\(?![rn]))*(?:[^\s'\"&\\,;)\]}>]|\\(?![rn]))"
_SCHEMES = (
    r"(?:basic|bearer|digest|negotiate|ntlm|token|bot|oauth|dpop|mac|hoba|ssws|apikey|key"
    r"|aws4-hmac-sha256|aws4-ecdsa-p256-sha256|aws|googlelogin)[ \t]+(?=[^\s'\"])"
)
# Each alternative starts with a letter of its own (no optional prefix): see _SECRET_SOURCE.
_NAMES = (
    r"api[-_]?key|x-api-key|x-goog-api-key|x-amz-security-token|x-amz-signature|signature"
    r"|password|passwd|pwd|secret|client[-_]?secret|access[-_]?token|refresh[-_]?token"
    r"|id[-_]?token|auth[-_]?token|x-auth-token|session[-_]?token|secret[-_]?access[-_]?key"
    r"|aws[-_]?secret[-_]?access[-_]?key|aws[-_]?session[-_]?token"
    r"|private[-_]?key"  # a Google service account's (the push sink's FCM credentials)
)
_WHOLE = r"authorization|proxy-authorization|cookie|set-cookie"  # a header value with spaces: to its line's end
# Lowercase, matched against the text's lowercase copy after a space: without IGNORECASE, the
# regex engine skips an alternative at its first letter, and it finds the character before a
# name (no letter or digit; an 'n' or 'r' only as a repr's '\r\n' escape) at C speed, where a
# leading lookbehind was tried at every character (~40 ns each).
_SECRET_SOURCE = (
    r"[^a-mo-qs-z0-9](?<![^\\][nr])(?=[pstacrix<'\"\\])(?:"
    # name=value
    r"(?P<head>(?:password|passwd|pwd|secret|(?<!device[_-])token|api[_-]?key|access_key"
    r"|secret_key|signature|sig)[ \t]*=[ \t]*"
    rf"|(?:authorization|proxy-authorization)[ \t]*=[ \t]*(?:{_SCHEMES})?)"
    r"(?:'(?P<sq>)[^'\n]{0,1024}'|\"(?P<dq>)[^\"\n]{0,1024}\"|['\"]?(?!=)" + _RUN + ")"
    # <name>value</
    rf"|(?<![_-])<(?P<tag>{_WHOLE}|{_NAMES})>[^<]{{1,4096}}(?=</)"
    # name: value, 'name': 'value', "name": "value"
    # (after a '.', only a quoted value: 'sinks[0].headers.Authorization: Input should be a
    # valid string' is a located config error, its message no secret; 'schema: $.password:
    # 'hunter2' is too short' quotes the value)
    rf"|(?:(?<=\.)(?P<dot>)|(?<![_.-]))(?P<kq>\\?[\"']?)(?:(?P<whole>{_WHOLE})|{_NAMES})(?P=kq)"
    r"[ \t]*:(?:[ \t]*|\n(?=[0-9a-f]{64}(?:\n|$)))"  # botocore's 'Signature:\n<hex>'
    r"(?:b?(?P<vq>\\?[\"'])(?P<quoted>(?:\\.|[^\\\n]){0,4096}?)(?P=vq)"
    r"|(?(dot)(?!)|(?:b?\\?[\"'])?(?(whole)(?P<line>(?:[^\r\n'\"\\]|\\(?![rn]))+)|(?P<word>"
    + _RUN
    + "))))"
    r")"
)
_SECRET = re.compile(_SECRET_SOURCE)
_SECRET_ANY_CASE = re.compile(_SECRET_SOURCE, re.IGNORECASE)  # a text whose lowercase is longer
_SCHEME = re.compile(_SCHEMES, re.IGNORECASE)
_SECRET_NAME = re.compile(rf"{_WHOLE}|{_NAMES}", re.IGNORECASE)
#: Words a credential's name holds (lowercase): a text with none of them is not scanned.
_HINTS = ("pass", "pwd", "secret", "token", "key", "auth", "sig", "cookie")


def _mask_secrets(text: str, lower: str) -> str:
    if len(lower) == len(text):
        found = _SECRET.finditer(" " + lower)
    else:  # 'İ' lowercases to two characters: match the text itself
        found = _SECRET_ANY_CASE.finditer(" " + text)
    out: list[str] = []
    last = 0
    for match in found:  # its spans are one past the text's (the space); its first character stays
        out += (text[last : match.start()], _masked(match, text))
        last = match.end() - 1
    return "".join(out) + text[last:] if out else text


def _masked(match: re.Match[str], text: str) -> str:
    """The replacement of ``match`` (found in ``" " + text`` or its lowercase), cut from ``text``."""

    def cut(start: int, end: int) -> str:
        return text[start - 1 : end - 1]

    if match["head"] is not None:
        quote = "'" if match["sq"] is not None else '"' if match["dq"] is not None else ""
        return f"{cut(match.start() + 1, match.end('head'))}{quote}{MASK}{quote}"
    if match["tag"] is not None:
        return f"{cut(match.start() + 1, match.end('tag') + 1)}{MASK}"
    group = "quoted" if match["vq"] is not None else "line" if match["whole"] else "word"
    head = cut(match.start() + 1, match.start(group))
    value = cut(match.start(group), match.end(group))
    return head + masked_secret(match["whole"] or "", value) + (match["vq"] or "")


def is_secret_name(name: str) -> bool:
    """Whether a header, field or key called ``name`` holds a credential (``Authorization``,
    ``X-Api-Key``, ``password``, ``access_token``, ``aws_secret_access_key``, ``Cookie``, …)."""
    return _SECRET_NAME.fullmatch(name) is not None


def masked_secret(name: str, value: str) -> str:
    """``value`` of the credential ``name`` masked, an ``Authorization`` keeping its scheme."""
    scheme = _SCHEME.match(value) if name.lower().endswith("authorization") else None
    return (scheme.group(0) if scheme else "") + MASK


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and error messages; a URL holding a
    ``remember``-ed value (a secret that is the whole URL, or its start) with that value masked
    whole (its password alone masked first, it no longer held the value: the secret's user, host
    and database showed)."""
    if _known and any(value in url for value in _known):
        return redact_text(url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not parseable as a URL (a bad port): mask by pattern
        return redact_text(url)
    if password is None:
        return redact_text(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return redact_text(urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}")))


def redact_url_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` masked (to the URL's last ``@``)."""
    return _USERINFO.sub(rf"\g<head>{MASK}@", text) if "://" in text else text


#: Values known to be secrets wherever they appear (``remember``), longest first.
_known: tuple[str, ...] = ()
#: Shorter values are not remembered: masking every ``abc`` of every message would hide more
#: than secrets (a shorter secret is still masked where its place says it is one).
MIN_REMEMBERED = 4


def remember(value: str) -> None:
    """Mask ``value`` wherever it appears in any text ``redact_text`` sees from now on (a secret
    resolved from SSM or Secrets Manager, whatever option it was written in). Process-wide.

    Also as a message shows it escaped — a repr, a bytes repr, a JSON string: a secret stored
    with its trailing newline was quoted whole by h11's ``Illegal header value b'…\\n'`` — and
    without the spaces and line breaks around it (a library that trims it before quoting)."""
    global _known
    if not isinstance(value, str) or len(value.strip()) < MIN_REMEMBERED:
        return  # its escaped forms too: `10\n` quoted as `10\\n` is no secret's sign
    forms = {
        value,
        value.strip(),
        repr(value)[1:-1],
        repr(value.encode("utf-8", "backslashreplace"))[2:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    new = {f for f in forms if len(f) >= MIN_REMEMBERED} - set(_known)
    if new:
        _known = tuple(sorted({*_known, *new}, key=len, reverse=True))


def remembered_heads(value: str) -> list[str]:
    """The ``remember``-ed values ``value`` starts with (``value`` itself among them): a secret
    that is a URL's start (``"${ssm:/db}?sslmode=require"``) or the whole URL, remembered as
    rewritten too when the URL's scheme is (a ``postgres://`` URL as ``postgresql://``)."""
    return [known for known in _known if value.startswith(known)]


def _mask_known(text: str) -> str:
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    return text


#: The user names, hosts, databases and query values of secret URLs (``remember_url``), masked
#: as whole names only.
_parts: tuple[str, ...] = ()
_parts_pattern: re.Pattern[str] | None = None
#: User names every installation has (PostgreSQL's superuser, Redis's ACL user): they tell
#: nothing, and as words of messages they are everywhere (``${VAR:-default}``).
COMMON_USERS = frozenset({"postgres", "default"})
#: Settings of a URL's query whose values are one of a few words every installation writes
#: (``sslmode=require``): masked, they would mask those words in every message (so are
#: ``PUBLIC_VALUES`` and numbers, whatever the setting).
PUBLIC_SETTINGS = frozenset(
    {
        "sslmode",
        "gssencmode",
        "channel_binding",
        "target_session_attrs",
        "load_balance_hosts",
        "sslnegotiation",
        "sslcompression",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "require_auth",
        "client_encoding",
        "replication",
        "protocol",
        "ssl_cert_reqs",
        "decode_responses",
    }
)
#: Values of settings that are words every installation writes (``?ssl=true``,
#: ``?ssl_cert_reqs=required``): masked as names, they would mask those words in every message.
PUBLIC_VALUES = frozenset(
    {"true", "false", "none", "null", "disable", "disabled", "allow", "prefer", "require"}
    | {"required", "optional", "verify-ca", "verify-full", "any", "read-write", "read-only"}
    | {"primary", "standby", "prefer-standby", "utf8", "utf-8"}
)
#: A URL's authority (after its user info) and its path.
_AUTHORITY_PATH = re.compile(r"([^/?#]*)(/[^?#]*)?")
#: A quoted masked host followed by the address it resolved to, as libpq names a server
#: (``connection to server at "db.internal" (10.0.0.5), port 5432 failed``).
_MASKED_AT_ADDRESS = re.compile(r'(?<="\*\*\*" \()[0-9A-Fa-f.:]+(?:%[\w.-]+)?(?=\))')


def remember_url(url: str) -> None:
    """Also mask every part of the URL ``url``, a secret's value (a resource's whole URL, or its
    start): a driver's error names them without the rest of the URL (libpq's ``connection to
    server at "db.internal.example.com" (10.0.0.5), port 5432 failed: FATAL: password
    authentication failed for user "app_writer"``, ``database "orders_prod" does not exist``,
    redis-py's ``Error 111 connecting to cache.internal:6379``). The password wherever it
    appears (``remember``), and so a SQLite file's path (its run lock is ``<path>.<topology>
    .lock``); the user name, the host(s), the database and the query's values
    (``?application_name=…``, ``sslrootcert=/path``; not those of ``PUBLIC_SETTINGS``, nor
    ``PUBLIC_VALUES`` and numbers) as whole names (not ``db.internal`` in ``mydb.internal``,
    nor ``postgres`` in ``postgresql``), and with them the address libpq shows after a masked
    host. Values under ``MIN_REMEMBERED`` characters (``db``, ``app``, a Redis database ``8``)
    and ``COMMON_USERS`` are not remembered."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return
    userinfo, at, after = rest.rpartition("@")  # a password runs to the last '@'
    user, colon, password = userinfo.partition(":")
    names = [user] if at else []
    if colon:  # as a driver may quote it alone, decoded or not
        remember(password)
        remember(unquote(password))
    authority, path = _AUTHORITY_PATH.match(after).groups()  # type: ignore[union-attr]
    hosts = authority.split(",")  # libpq: h1:5432,h2:5432
    database = (path or "/")[1:]  # libpq's 'database "…" does not exist'
    if scheme.lower().startswith("sqlite"):
        remember(database)  # a file's path, also within a longer one (its run lock's)
    else:
        names.append(database)
    if "?" in after:  # libpq's ?host=…&hostaddr=…&user=…, and every other setting's value
        for key, value in parse_qsl(after.partition("?")[2].partition("#")[0]):
            if key in ("host", "hostaddr", "user"):  # no port: a socket path may hold ':'
                names += value.split(",")
            elif not (key.lower() in PUBLIC_SETTINGS or _public_value(value)):
                names.append(value)  # dbname=, application_name=, sslrootcert=/a/path, …
    for host in hosts:
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif ":" in host:
            host = host.rpartition(":")[0]
        names += (host, host.lower())  # redis-py names it as urllib reads it: lowercased
    remember_part(*names)


#: A number as a URL's setting writes it (``?socket_timeout=10.0``, ``connect_timeout=30``).
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _public_value(value: str) -> bool:
    return _NUMBER.fullmatch(value) is not None or value.lower() in PUBLIC_VALUES


def remember_part(*values: str) -> None:
    """Mask each of ``values`` (a secret URL's user name or host, as written and decoded) where it
    appears as a whole name (``remember_url``)."""
    global _parts, _parts_pattern
    forms = {form for value in values for form in (value, unquote(value))}
    new = {
        form for form in forms if len(form) >= MIN_REMEMBERED and form.lower() not in COMMON_USERS
    } - set(_parts)
    if new:
        _parts = tuple(sorted({*_parts, *new}, key=len, reverse=True))
        _parts_pattern = _whole_names(_parts)


def _whole_names(names: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(name) for name in names)
    return re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w-]|\.\w|://)")


#: (``_known``, ``_parts``, the parts that hold a remembered value, their pattern) as last built.
_holding: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], re.Pattern[str] | None] = (
    (),
    (),
    (),
    None,
)


def _mask_parts_holding_known(text: str) -> str:
    """``text`` with the parts that hold a remembered value masked (a password ``orders`` in
    the database ``orders_prod``): masked after the value, the part no longer matched and its
    rest was shown (``database "***_prod"``). Built again when either list changed."""
    global _holding
    known, parts, held, pattern = _holding
    if known is not _known or parts is not _parts:
        held = tuple(part for part in _parts if any(value in part for value in _known))
        pattern = _whole_names(held) if held else None
        _holding = (_known, _parts, held, pattern)
    if pattern is not None and any(part in text for part in held):
        text = pattern.sub(MASK, text)
    return text


def _mask_parts(text: str) -> str:
    if _parts_pattern is not None and any(part in text for part in _parts):
        text = _parts_pattern.sub(MASK, text)
    if '"***" (' in text:
        text = _MASKED_AT_ADDRESS.sub(MASK, text)
    return text


def redact_text(text: str) -> str:
    """``text`` with the passwords of every URL and every credential (``password=``, an
    ``Authorization:`` header, a ``"password": …`` key) and every ``remember``-ed value masked."""
    if _known:
        text = _mask_known(_mask_parts_holding_known(text))
    text = _mask_parts(text)
    if "://" in text:
        text = _USERINFO.sub(rf"\g<head>{MASK}@", text)
    if "=" not in text and ":" not in text and "<" not in text:
        return text
    lower = text.lower()
    if not any(hint in lower for hint in _HINTS):
        return text
    return _mask_secrets(text, lower)


class RedactingFilter(logging.Filter):
    """Masks passwords in every record a handler emits (message, arguments and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: left to logging's own handling,
            # which prints the message and its arguments ('--- Logging error ---'): masked
            record.msg = _masked_value(record.msg)
            if isinstance(record.args, dict):
                record.args = {k: _masked_value(v) for k, v in record.args.items()}
            elif isinstance(record.args, tuple):
                record.args = tuple(_masked_value(a) for a in record.args)
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.exc_info and record.exc_info[1] is not None:
            # for a formatter that reads the exception, not exc_text: Lambda's JSON log format
            # writes its errorMessage as str(exception)
            record.exc_info = (
                record.exc_info[0],
                _masked_exception(record.exc_info[1]),
                record.exc_info[2],
            )
        return True


def _masked_value(value: object) -> object:
    """``value`` itself, or its text masked when that shows a secret."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails: nothing shown, nothing to mask
        return value
    clean = redact_text(text)
    return value if clean == text else clean


def _masked_exception(exc: BaseException, depth: int = 0) -> BaseException:
    """``exc`` itself if its message and those of its chain show nothing to mask; else a stand-in
    of its class (a subclass: ``isinstance`` holds, the same name) whose message is masked, the
    chain's too."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a str() that fails: shown as Python shows it, nothing to mask
        return exc
    cause, context = exc.__cause__, exc.__context__
    if depth < 8:  # a chain's links (as Python's traceback, not endlessly)
        cause = _masked_exception(cause, depth + 1) if cause is not None else None
        context = _masked_exception(context, depth + 1) if context is not None else None
    clean = redact_text(text)
    if clean == text and cause is exc.__cause__ and context is exc.__context__:
        return exc
    cls = type(exc)
    attrs = {
        "__str__": lambda _: clean,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
    }
    try:
        masked: type[BaseException] = type(cls.__name__, (cls,), attrs)
        stand_in = masked.__new__(masked)
    except Exception:  # noqa: BLE001 - a class that cannot be subclassed or made without arguments
        stand_in = type(cls.__name__, (Exception,), attrs)()
    stand_in.__cause__, stand_in.__context__ = cause, context
    stand_in.__suppress_context__ = exc.__suppress_context__
    stand_in.__traceback__ = exc.__traceback__
    return stand_in


def install(handler_or_logger: logging.Handler | logging.Logger | None = None) -> None:
    """Add ``RedactingFilter`` to every handler of ``handler_or_logger`` (default: the root logger)."""
    target = handler_or_logger if handler_or_logger is not None else logging.getLogger()
    handlers = [target] if isinstance(target, logging.Handler) else target.handlers
    for h in handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())


def _write_masked(exc_type: type[BaseException], exc: BaseException, tb: object) -> None:
    text = "".join(traceback.format_exception(exc_type, exc, tb))  # type: ignore[arg-type]
    if sys.stderr is not None:
        sys.stderr.write(redact_text(text))
        sys.stderr.flush()


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    if sys.stderr is not None:
        name = args.thread.name if args.thread is not None else threading.get_ident()
        sys.stderr.write(f"Exception in thread {name}:\n")
    _write_masked(args.exc_type, args.exc_value, args.exc_traceback)


def _unraisable(args: object) -> None:
    """``sys.unraisablehook``: an exception Python could not raise (in a ``__del__``, in a
    generator closed by the garbage collector), printed as Python's own hook does, masked."""
    if sys.stderr is None:
        return
    obj = getattr(args, "object", None)
    head = getattr(args, "err_msg", None) or "Exception ignored in"
    if obj is not None:
        try:
            head += f": {obj!r}"
        except Exception:  # noqa: BLE001 - as Python's own hook: a repr that fails
            head += ": <object repr() failed>"
    sys.stderr.write(redact_text(head) + "\n")
    exc_type = getattr(args, "exc_type", None)
    if exc_type is not None:
        _write_masked(exc_type, args.exc_value, args.exc_traceback)  # type: ignore[attr-defined]


def mask_uncaught() -> None:
    """Print the traceback of an exception nobody caught (the process's, a thread's) or Python
    could not raise (``sys.unraisablehook``: a ``__del__``'s, a generator's closed by the garbage
    collector) masked, as log lines are: Python's own hooks printed it raw — a component's driver
    error escaping ``squall run`` named a secret URL's host and database. Only in place of
    Python's own hooks."""
    if sys.excepthook is sys.__excepthook__:  # not another's (a test runner's, a debugger's)
        sys.excepthook = _write_masked
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _uncaught_in_thread
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _unraisable


class RequestUrlFilter(logging.Filter):
    """httpx logs every request at INFO with its whole URL (``HTTP Request: POST https://…``), and
    a webhook's path or query is often its secret (Slack, Teams, Discord incoming webhooks, a
    signed URL). Keeps the scheme, host and port of every URL argument; the rest becomes ``/…``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_origin_only(a) for a in args)
        return True


def _origin_only(value: object) -> object:
    if not isinstance(value, str) and type(value).__name__ != "URL":  # httpx.URL
        return value
    text = str(value)
    if not text.startswith(("http://", "https://")):
        return value
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<url>"
    rest = "/…" if parts.path not in ("", "/") or parts.query or parts.fragment else "/"
    return f"{parts.scheme}://{netloc}{rest}"


def mask_request_urls() -> None:
    """Install ``RequestUrlFilter`` on httpx's logger, once (components that make HTTP requests call
    it when they open their client)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, RequestUrlFilter) for f in logger.filters):
        logger.addFilter(RequestUrlFilter())
