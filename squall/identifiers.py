"""Names squall puts into SQL or AWS requests, checked at load time by every component that takes one.

One place, so the warehouse, the dead-letter table, the subscription store and the checkpoint
stores accept and refuse the same names (components never import each other for this).
"""

from __future__ import annotations

import re

#: A SQL identifier squall creates: letters, digits and ``_``, at most 63 characters (PostgreSQL's limit).
SQL_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: A checkpoint namespace (KCL application name style); the topology name always fits.
APPLICATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
#: A DynamoDB table name (AWS: 3–255 of letters, digits, ``_``, ``-``, ``.``).
DYNAMODB_TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")


def check_identifier(name: str, what: str = "identifier") -> str:
    """Table, schema and column names: letters, digits, underscores; at most 63 characters."""
    if not isinstance(name, str) or not SQL_IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid {what} {name!r:.80}: use letters, digits and '_' (max 63, not starting with a "
            "digit)"
        )
    return name


def check_application(name: str, what: str = "application name") -> str:
    """A checkpoint namespace: letters, digits, ``_``, ``.``, ``-``; at most 255 characters."""
    if not isinstance(name, str) or not APPLICATION_NAME.fullmatch(name):
        raise ValueError(
            f"invalid {what} {name!r:.80}: use letters, digits, '_', '.' and '-' (max 255, starting "
            "with a letter or digit)"
        )
    return name


def check_dynamodb_table(name: str) -> str:
    """A DynamoDB table name, as AWS accepts it."""
    if not isinstance(name, str) or not DYNAMODB_TABLE.fullmatch(name):
        raise ValueError(
            f"invalid DynamoDB table name {name!r:.80}: use 3 to 255 letters, digits, '_', '.' and '-'"
        )
    return name
