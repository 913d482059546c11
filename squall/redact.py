"""Secrets out of logs and errors: the one helper every URL-like value goes through before it is shown.

``redact_url`` masks the password of one URL; ``redact_text`` masks every ``scheme://user:password@``
and ``password=…`` (``token=``, ``access_token=``, ``api_key=``, …) in free text — a driver's error message, a botocore log line. ``SquallError``
applies ``redact_text`` to every message, and ``RedactingFilter`` (installed by the CLI and the
Lambda handlers) to every log record, whatever library wrote it and at any verbosity.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# scheme://user:password@ — the password runs to the last '@' of the URL (an unescaped '@', '/',
# '#' or '?' in a password is still masked whole, as SQLAlchemy reads such a URL; a URL without a
# password but with an '@' in its path may lose a little more than its password).
# The scheme is at most 40 characters (the longest SQLAlchemy/libpq ones are ~20): unbounded, the
# pattern tried a scheme from every letter of a long run (a base64 blob in a message) to its end,
# quadratic in the run's length (seconds per 100 KB).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-_]{0,39}://[^\s:/@]*:)[^\s]*@")
# password=… in a query string or a libpq-style key/value string, also as the last word of a
# longer name (access_token=, client_secret=, X-Amz-Security-Token=, api_key=: a URL a team's own
# bolt calls, quoted by its HTTP client's error; SQUALL_PROD_EU_WAREHOUSE_DB_PASSWORD=): the
# keyword follows anything but a letter or digit, whatever the name before it (a pattern matching
# the name's words from a word boundary missed names of five words or one word over 40
# characters, and tried every word of a run like ``a-a-a-…``). ``key=`` alone is too common a
# name to mask; ``mytoken=``, ``max_tokens=`` are no secret. A quoted value (a Python repr,
# ``Lookup(api_key='…')``; libpq's ``password='a b'``) is masked to its closing quote, looked for
# within 1024 characters (a quote never closed costs no scan to the text's end per pair); past
# that, as an unquoted value, to the first space (a long token in quotes still is masked).
_KEYVALUE = re.compile(
    r"(?P<head>(?<![a-z0-9])"
    r"(?:password|passwd|pwd|secret|token|api[_-]?key|access_key|secret_key)=)"
    r"(?:'(?P<sq>)[^'\n]{0,1024}'|\"(?P<dq>)[^\"\n]{0,1024}\"|['\"]?[^&\s'\"]+)",
    re.IGNORECASE,
)


def _masked_value(match: re.Match[str]) -> str:
    quote = "'" if match["sq"] is not None else '"' if match["dq"] is not None else ""
    return f"{match['head']}{quote}{MASK}{quote}"


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
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


def redact_text(text: str) -> str:
    """``text`` with the passwords of every URL and every ``password=`` value masked."""
    if "://" not in text and "=" not in text:
        return text
    return _KEYVALUE.sub(_masked_value, _USERINFO.sub(rf"\g<head>{MASK}@", text))


class RedactingFilter(logging.Filter):
    """Masks passwords in every record a handler emits (message, arguments and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: leave it to logging's own handling
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def install(handler_or_logger: logging.Handler | logging.Logger | None = None) -> None:
    """Add ``RedactingFilter`` to every handler of ``handler_or_logger`` (default: the root logger)."""
    target = handler_or_logger if handler_or_logger is not None else logging.getLogger()
    handlers = [target] if isinstance(target, logging.Handler) else target.handlers
    for h in handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())


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
