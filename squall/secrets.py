"""The values of a topology's secret references, read from AWS once per process.

``${ssm:NAME}`` is SSM Parameter Store's ``GetParameter`` with decryption (a SecureString comes
back as its text); ``${secretsmanager:ID}`` is Secrets Manager's ``GetSecretValue`` (its
``SecretString``), and ``#key`` takes one key of a secret holding a JSON object. The clients are
squall's (``squall.aws.client``): the process's shared session, botocore's standard retries, the
region of an ARN or ``AWS_REGION``, and ``AWS_ENDPOINT_URL_SSM`` /
``AWS_ENDPOINT_URL_SECRETS_MANAGER`` / ``AWS_ENDPOINT_URL`` for a local stand-in.

Each parameter or secret is fetched once per process and ``AWS_*`` settings (``aws_secrets()``
keeps one source): a Lambda container reads them at init, a KCL shard process at its start,
``squall run`` before it opens anything. A failure is a ``SecretUnavailable`` naming what went wrong — not found, access
denied, unreachable or throttled (an outage) — and never the value. A value the service does not
hold as a secret (a ``String`` parameter, ``DATABASE_FIELDS`` of a database secret) is ``Plain``:
the loader masks every other one wherever it appears.

``squall.aws`` and botocore are imported by the first reference read, not with this module:
every runner imports it, and a topology without references pays nothing for them at init
(23 M instructions, ~2 % of a Lambda init, issue 16).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from squall.redact import redact_text
from squall.topology.references import Plain, SecretRef, SecretUnavailable

#: IAM's name of each service's read, for the messages of a refused call.
ACTIONS = {"ssm": "ssm:GetParameter", "secretsmanager": "secretsmanager:GetSecretValue"}
_NOT_FOUND = frozenset(
    {"ParameterNotFound", "ParameterVersionNotFound", "ResourceNotFoundException"}
)
_DENIED = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "KMSAccessDeniedException",
    }
)
#: A key the caller may not use, or one disabled (Secrets Manager, SSM's KMS errors).
_UNDECRYPTABLE = frozenset(
    {"DecryptionFailure", "InvalidKeyId", "KMSDisabledException", "KMSInvalidStateException"}
)
_SERVICE_NAMES = {"ssm": "SSM Parameter Store", "secretsmanager": "Secrets Manager"}
#: Seconds per attempt (botocore's 3) to connect and to read an answer (a parameter or a secret
#: answers in tens of milliseconds): with the clients' defaults (5 s, 30 s) an endpoint that
#: accepted and never answered held a read 90 s, and one with no route 15 s — past Lambda's
#: 10 s init, whose timeout then showed instead of the located message.
CONNECT_TIMEOUT, READ_TIMEOUT = 2.0, 2.0


def arn_region(name: str) -> str | None:
    """The region of an ARN (``arn:aws:ssm:eu-west-1:…``), else None."""
    parts = name.split(":")
    return parts[3] or None if name.startswith("arn:") and len(parts) > 5 else None


class AwsSecrets:
    """A ``SecretSource`` reading SSM and Secrets Manager, each name once.

    ``client(service, region)`` makes the client (default: ``squall.aws.client``; a test's stub)."""

    def __init__(self, client: Callable[[str, str | None], Any] | None = None):
        self._client = client or _aws_client
        #: Keyed by the ``AWS_*`` settings too (``aws.environment_key``): after an endpoint, a
        #: profile or the credentials changed (a test's next stand-in), a name may be another
        #: parameter, and a client kept asked the endpoint it was made for.
        self._raw: dict[tuple[str, str, str], str] = {}  # a Plain one: an SSM String parameter
        #: One client per service and region: each made its own connection pool, so each
        #: reference of a cold start paid a client (~7 ms) and a TLS handshake of its own.
        self._clients: dict[tuple[str, str, str], Any] = {}

    def __call__(self, ref: SecretRef) -> str:
        from squall import aws

        env = aws.environment_key()
        raw = self._raw.get((ref.service, ref.name, env))
        if raw is None:
            raw = self._fetch(ref, env)
            self._raw[(ref.service, ref.name, env)] = raw
        return raw if ref.key is None else _json_key(ref, raw)

    def _fetch(self, ref: SecretRef, env: str) -> str:
        from botocore.exceptions import BotoCoreError, NoCredentialsError

        from squall import aws

        region = aws.resolve_region(None, arn_region(ref.name))
        what = _SERVICE_NAMES[ref.service]
        try:
            made = self._clients.get((ref.service, region, env))
            if made is None:
                made = self._clients[(ref.service, region, env)] = self._client(ref.service, region)
            with _answers_unlogged():
                answer = _read(made, ref)
        except aws.NETWORK_ERRORS as exc:
            raise SecretUnavailable(
                f"{what} unreachable in {region} ({type(exc).__name__}): an outage, "
                "try again when it answers",
                outage=True,
            ) from None
        except NoCredentialsError:
            raise SecretUnavailable(
                f"no AWS credentials to read {what} with (NoCredentialsError): run with a role, "
                "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ) from None
        except BotoCoreError as exc:  # an invalid name, a profile not found, a bad endpoint URL
            detail = redact_text(str(exc))[:300]
            raise SecretUnavailable(f"cannot read {what}: {type(exc).__name__}: {detail}") from None
        except Exception as exc:  # noqa: BLE001 - botocore's ClientError, classified by code
            code = aws.error_code(exc)
            if code is None:
                raise
            raise SecretUnavailable(
                _refused(ref, code, exc, what, region), outage=aws.is_retryable(exc)
            ) from None
        if ref.service == "ssm":
            value = answer["Parameter"]["Value"]
            return value if answer["Parameter"].get("Type") == "SecureString" else Plain(value)
        if "SecretString" in answer:
            return answer["SecretString"]
        try:
            return bytes(answer["SecretBinary"]).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            raise SecretUnavailable("the secret holds binary data, not text") from None


def _aws_client(service: str, region: str | None) -> Any:
    from squall import aws

    return aws.client(
        service,
        region=region,
        endpoint_url=None,
        read_timeout=READ_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
    )


def _read(made: Any, ref: SecretRef) -> dict[str, Any]:
    if ref.service == "ssm":
        return made.get_parameter(Name=ref.name, WithDecryption=True)
    return made.get_secret_value(SecretId=ref.name)


class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


#: botocore's loggers that write an answer's body (``-vv``: "Response body: b'{…"Value": …}'"),
#: before the loader can have the value masked (``redact.remember``).
_BODY_LOGGERS = ("botocore.parsers",)


@contextmanager
def _answers_unlogged() -> Iterator[None]:
    """No log record of botocore's parser during the read: its debug line quotes the answer."""
    drop = _Drop()
    loggers = [logging.getLogger(name) for name in _BODY_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def _refused(ref: SecretRef, code: str, exc: BaseException, what: str, region: str) -> str:
    from squall import aws

    kind = "parameter" if ref.service == "ssm" else "secret"
    if code in _NOT_FOUND:
        return f"{what} has no {kind} '{ref.name}' in {region} (not found)"
    if code in _DENIED or "AccessDenied" in code:
        return (
            f"access denied ({code}): the role needs {ACTIONS[ref.service]} on the {kind} "
            "(and kms:Decrypt on its key, if that is a customer managed key)"
        )
    if code in _UNDECRYPTABLE:
        return f"cannot decrypt ({code}): the role needs kms:Decrypt on the {kind}'s key"
    if aws.is_retryable(exc):
        return f"{what} throttled or failing in {region} ({code}): an outage, try again later"
    message = exc.response.get("Error", {}).get("Message", "")  # type: ignore[attr-defined]
    return f"{what} refused the read ({code}: {redact_text(str(message))[:200]})"


def _json_key(ref: SecretRef, raw: str) -> str:
    """One key of a secret holding a JSON object (what the console's "key/value" secrets are)."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SecretUnavailable(f"'#{ref.key}': the value is no JSON object, so it has no keys")
    if ref.key not in data:
        keys = ", ".join(sorted(str(k) for k in data)[:20])
        raise SecretUnavailable(f"the JSON object has no key '{ref.key}' (its keys: {keys})")
    value = data[ref.key]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SecretUnavailable(f"'#{ref.key}' holds no text or number")
    text = value if isinstance(value, str) else str(value)
    return Plain(text) if ref.key in DATABASE_FIELDS or isinstance(raw, Plain) else text


#: The fields of AWS's JSON structure of a database secret (RDS, Aurora, Redshift, DocumentDB)
#: that are no secret: ``#password`` is masked wherever it appears, ``#username``, ``#host``,
#: ``#port`` are not (every ``postgres``, ``5432`` of every log line would be).
DATABASE_FIELDS = frozenset(
    {
        "engine",
        "host",
        "port",
        "username",
        "dbname",
        "ssl",
        "masterarn",
        "dbInstanceIdentifier",
        "dbClusterIdentifier",
    }
)

_process: AwsSecrets | None = None


def aws_secrets() -> AwsSecrets:
    """The process's source: each parameter and secret is read once, whoever loads the topology."""
    global _process
    if _process is None:
        _process = AwsSecrets()
    return _process
