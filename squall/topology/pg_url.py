"""A PostgreSQL URL read as SQLAlchemy reads it, into psycopg2's connection keywords.

The plain driver (``pg_driver.py``) must connect where SQLAlchemy's engine would, so the URL is
not handed to libpq (which reads URIs its own way: ``+`` stays ``+`` in a query value, a bad
``%`` escape refuses the whole URL and quotes it, password included, in the error). It is split
as SQLAlchemy splits it — ``scheme://user:password@host:port/database?key=value`` with
``[ipv6]`` hosts, ``%``-escapes decoded in the user, password and database, the query read with
``parse_qsl`` — and given to ``psycopg2.connect`` as keywords, which psycopg2 quotes. A URL
SQLAlchemy would refuse is refused here with the reason; the multi-host query forms
(``?host=a:5432&host=b:5432``, ``?host=a,b&port=…``; one ``?host=/socket/dir`` is read here) and
repeated query keys are left to SQLAlchemy (``None``). No SQLAlchemy or psycopg2 import: ``squall validate`` uses it too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote

#: URL schemes the plain driver opens (``postgres://`` is not a SQLAlchemy dialect name).
SCHEMES = ("postgresql", "postgresql+psycopg2")

_URL = re.compile(
    r"""
    (?P<scheme>[\w+]+)://
    (?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6>[^/?]+)\]|(?P<host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.X,
)


def connect_args(url: str) -> dict[str, Any] | None:
    """``psycopg2.connect`` keywords for a ``postgresql[+psycopg2]://`` URL; None for another
    scheme or a form left to SQLAlchemy; ``ValueError`` (never quoting the URL) for a URL
    SQLAlchemy refuses too."""
    m = _URL.match(url)
    if m is None:
        if url.partition("://")[0].lower() in SCHEMES:
            raise ValueError("it has not the form postgresql://user:password@host:port/database")
        return None
    if m["scheme"].lower() not in SCHEMES:
        return None
    args: dict[str, Any] = {}
    for key, value in (
        ("user", m["user"]),
        ("password", m["password"]),
        ("host", m["host"] or m["ipv6"]),
        ("dbname", m["database"]),
    ):
        if value:  # SQLAlchemy leaves out empty parts
            args[key] = value if key == "host" else unquote(value)
    if m["port"] is not None:
        try:
            port = int(m["port"])  # as SQLAlchemy reads it (" 5432", "+5432" included)
        except ValueError:
            raise ValueError("the port is not a number") from None
        if port:  # SQLAlchemy leaves out port 0 too (libpq's default port)
            args["port"] = port
    if m["query"] is not None:
        seen: set[str] = set()
        for key, value in parse_qsl(m["query"]):
            if key in seen or key == "port" or (key == "host" and ("," in value or ":" in value)):
                return None  # repeated keys, multi-host forms: SQLAlchemy's own reading
            seen.add(key)
            args[key] = value
    return args


def netloc_host(url: str) -> str | None:
    """The host written before the path (not a ``?host=`` socket directory or host of the
    query), as ``connect_args`` reads it; None when there is none."""
    m = _URL.match(url)
    return (m["host"] or m["ipv6"]) if m is not None else None


def shown(args: dict[str, Any]) -> str:
    """The connection for messages, built from its keywords: never its password (the URL as
    written cannot always be masked by pattern: ``u:8/secret@`` reads as a port to ``urlsplit``)."""
    user = args.get("user", "")
    userinfo = f"{user}:***@" if "password" in args else (f"{user}@" if user else "")
    host, query = args.get("host", ""), ""
    if host.startswith("/"):  # a socket directory
        host, query = "", f"?host={host}"
    elif ":" in host:
        host = f"[{host}]"
    port = f":{args['port']}" if "port" in args else ""
    return f"postgresql://{userinfo}{host}{port}/{args.get('dbname', '')}{query}"
