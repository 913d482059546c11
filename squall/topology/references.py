"""Secret references in a topology's values: ``${ssm:NAME}`` and ``${secretsmanager:ID}``.

The model layer only reads them: ``parse`` turns the text between ``${`` and ``}`` into a
``SecretRef``, and the loader asks the ``SecretSource`` it was given (a callable) for each value.
Where the values come from — SSM Parameter Store, Secrets Manager, through squall's AWS clients —
is the runners' business (``squall.secrets``), so the loader imports no AWS client.

Syntax: ``${ssm:/pistats/db_password}``, ``${secretsmanager:pistats/db}``, and a key of a secret
that holds a JSON object: ``${secretsmanager:pistats/db#password}`` (``#`` is in no SSM parameter
or Secrets Manager name). ``${ssm:-x}`` stays what it always was: the variable ``ssm`` with the
default ``x``; a ``:`` followed by anything but ``-`` was refused before references existed, so no
topology that loaded changes meaning. A reference's value is always text (a password ``0123`` is
not read as the number 83); in a URL's user info it is URL-encoded (``yamlsource.in_userinfo``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from squall.digests import small_sha256

#: The services a reference names, as written before the ``:``.
SERVICES = ("ssm", "secretsmanager")
#: What a name may hold: SSM's ``a-zA-Z0-9_.-/`` (and a ``:version`` or ``:label`` selector, an
#: ARN's ``:``), Secrets Manager's ``a-zA-Z0-9/_+=.@-``.
_NAME = re.compile(r"[A-Za-z0-9_.\-/+=@:]+")


@dataclass(frozen=True)
class SecretRef:
    """One reference: the service, the parameter's or secret's name (or ARN), a JSON key or None."""

    service: str
    name: str
    key: str | None = None

    def __str__(self) -> str:
        return "${" + f"{self.service}:{self.name}" + (f"#{self.key}" if self.key else "") + "}"


class SecretUnavailable(Exception):  # noqa: N818 - said as it reads: "the secret is unavailable"
    """A source could not give a reference's value. ``reason`` never holds the value;
    ``outage``: the service was unreachable or throttled (the same start may work later)."""

    def __init__(self, reason: str, *, outage: bool = False):
        super().__init__(reason)
        self.reason, self.outage = reason, outage


class Plain(str):
    """A value a source read that is no secret (an SSM ``String`` parameter, the ``host`` of a
    database secret): the loader does not have it masked wherever it appears, as it does every
    other value (``redact.remember``) — every ``postgres`` or ``5432`` of every log line would be."""

    __slots__ = ()


#: What the loader is given to resolve references: the value of one (a secret unless it is
#: ``Plain``), else ``SecretUnavailable``.
SecretSource = Callable[[SecretRef], str]


def parse(service: str, body: str) -> SecretRef:
    """The reference ``${service:body}``; ``ValueError`` (saying what is wrong) when it is none."""
    name, hash_, key = body.partition("#")
    if not name:
        raise ValueError(f"'${{{service}:…}}' names no {_what(service)}")
    if "${" in body:  # `${ssm:/pistats/${STAGE}/db}`: the name ended at the variable's '}'
        raise ValueError(
            f"'${{{service}:…}}': a {_what(service)} name holds no ${{VAR}} (a reference is read as "
            "written, once, and granted by that name): write the name itself, e.g. one topology "
            "file per stage"
        )
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"'${{{service}:…}}': a {_what(service)} name holds only letters, digits and "
            "_ . - / + = @ : (no spaces)"
        )
    if hash_ and not key:
        raise ValueError(f"'${{{service}:{name}#}}' names no JSON key after '#'")
    return SecretRef(service, name, key or None)


def _what(service: str) -> str:
    return "parameter" if service == "ssm" else "secret"


#: How every placeholder starts.
PLACEHOLDER = "SQUALLSECRET"


def is_placeholder(value: object) -> bool:
    """Whether ``value`` is a resource URL that a stand-in opens (which is not checked): the whole
    URL in a secret, or its start (``"${ssm:/db_url}?sslmode=require"``): its scheme is in it."""
    return isinstance(value, str) and value.startswith(PLACEHOLDER)


#: How the stand-in of a URL option a reference opens starts (``Placeholders.at``).
STAND_IN_URL = "https://squall-placeholder.invalid/"


def is_stand_in_url(value: object) -> bool:
    """Whether ``value`` is a URL option's stand-in for a whole URL in a secret: what the URL
    holds (a lookup's ``{key}``) is known only to the run that reads it, so it is not checked."""
    return (
        isinstance(value, str)
        and value.startswith(STAND_IN_URL + PLACEHOLDER)
        and ("/" not in value[len(STAND_IN_URL) :])
    )


class Placeholders:
    """A source of stand-ins, for loading without reading the references, as ``squall package``,
    ``graph`` and ``validate --skip-secrets`` do: the packager needs no right to the production
    secrets. A stand-in is letters and digits (valid in a URL's password, a header, a name); one
    opening an option named ``…url`` or ``…endpoint`` is an ``https://`` URL (a webhook kept as a
    secret, or a base URL: ``"${ssm:/hook_base}/events"``), and a resource URL a stand-in opens is
    taken unchecked (its scheme is in the secret)."""

    def __call__(self, ref: SecretRef) -> str:
        # The name's first 40 letters and digits (readable), then a digest of the whole
        # reference: `/org/production/analytics-pipeline/secrets/db` and `…/secrets/api` shared
        # their stand-in, and where one was written (a granted stream) both were said to be.
        tail = small_sha256(str(ref).encode()).hexdigest()[:8]
        return Plain(
            PLACEHOLDER + "".join(c for c in f"{ref.service}{ref.name}" if c.isalnum())[:40] + tail
        )

    def at(self, ref: SecretRef, path: tuple[str | int, ...], first: bool) -> str:
        """The stand-in of ``ref`` written at ``path``, at the start of its value (``first``) or not."""
        key = path[-1] if path else ""
        if (
            first
            and path[:1] != ("resources",)
            and isinstance(key, str)
            and key.lower().endswith(("url", "endpoint"))
        ):
            return Plain(f"{STAND_IN_URL}{self(ref)}")
        return self(ref)


#: The stand-ins of every load that reads no secret.
placeholder = Placeholders()
