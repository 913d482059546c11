"""The PostgreSQL table of a warehouse sink: read it from the catalog, check it, create or extend it.

Every identifier is checked with ``check_identifier`` (letters, digits, ``_``) and then always
double-quoted, so names keep their case and reserved words work; no SQL is built from anything else
but those names, the fixed type names below and ISO dates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date

from squall.sinks.warehouse.columns import check_identifier
from squall.sinks.warehouse.copytext import partition_key_date
from squall.sinks.warehouse.writers import TableSpec, quote

#: YAML column type -> PostgreSQL type of a new column.
PG_TYPES = {
    "text": "text",
    "integer": "integer",
    "bigint": "bigint",
    "float": "double precision",
    "boolean": "boolean",
    "timestamp": "timestamp with time zone",
    "date": "date",
    "json": "jsonb",
}
#: YAML column type -> existing column types (pg_type.typname) that hold every value squall writes,
#: each with True when only its unconstrained form does (varchar, numeric without a length/precision).
ACCEPTED: dict[str, dict[str, bool]] = {
    "text": {"text": False, "varchar": True},
    "integer": {"int4": False, "int8": False, "numeric": True},
    "bigint": {"int8": False, "numeric": True},
    "float": {"float8": False, "numeric": True},
    "boolean": {"bool": False},
    "timestamp": {"timestamptz": False, "timestamp": False},
    "date": {"date": False},
    "json": {"jsonb": False, "json": False, "text": False},
}
ACCEPTED_SHOWN = {
    "text": "text or varchar",
    "integer": "integer, bigint or numeric",
    "bigint": "bigint or numeric",
    "float": "double precision or numeric",
    "boolean": "boolean",
    "timestamp": "timestamp with time zone (or timestamp, holding UTC)",
    "date": "date",
    "json": "jsonb, json or text",
}
_RELKINDS = {
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
    "i": "index",
    "I": "partitioned index",
    "c": "composite type",
    "t": "TOAST table",
}
# Advisory-lock class for squall's DDL (pg_advisory_xact_lock(int4, int4)): "SQ".
LOCK_CLASS = 0x5351


def lock_key(spec: TableSpec) -> int:
    """The advisory-lock key that serializes squall's DDL on one table across processes."""
    return int.from_bytes(bytes.fromhex(spec.digest("ddl"))[:4], "big", signed=True)


@dataclass
class ExistingColumn:
    name: str
    typname: str
    typmod: int
    shown: str
    not_null: bool
    has_default: bool


@dataclass
class ExistingTable:
    """What the catalog says about the target table."""

    relkind: str
    columns: dict[str, ExistingColumn] = field(default_factory=dict)
    unique_keys: list[frozenset[str]] = field(default_factory=list)
    leading_index_columns: set[str] = field(default_factory=set)
    partition_strategy: str | None = None
    partition_columns: list[str] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)


_TABLE = """
SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = COALESCE(%(schema)s, current_schema()) AND c.relname = %(name)s
"""
_COLUMNS = """
SELECT a.attname, COALESCE(b.typname, t.typname), a.atttypmod, format_type(a.atttypid, a.atttypmod),
       a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type b ON b.oid = t.typbasetype
WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
# Indexes that can arbitrate ON CONFLICT: unique, immediate, valid, no predicate, no expression.
_INDEXES = """
SELECT i.indisunique AND i.indimmediate AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL,
       ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)
FROM pg_index i WHERE i.indrelid = %(oid)s
"""
_PARTITIONING = """
SELECT p.partstrat::text,
       ARRAY(SELECT COALESCE(a.attname::text, '(expression)') FROM unnest(p.partattrs::int2[]) WITH ORDINALITY k(attnum, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.attnum ORDER BY k.ord),
       ARRAY(SELECT c.relname::text FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
             WHERE h.inhparent = p.partrelid)
FROM pg_partitioned_table p WHERE p.partrelid = %(oid)s
"""


def is_redshift(version: str) -> bool:
    """Whether ``SELECT version()`` came from Amazon Redshift (which speaks the protocol, not the SQL)."""
    return "Redshift" in version


def inspect_table(cur, spec: TableSpec) -> ExistingTable | None:
    """The table as it is in the database, or None when it does not exist."""
    cur.execute(_TABLE, {"schema": spec.schema, "name": spec.name})
    row = cur.fetchone()
    if row is None:
        return None
    oid, relkind = row
    table = ExistingTable(relkind)
    cur.execute(_COLUMNS, {"oid": oid})
    for name, typname, typmod, shown, not_null, has_default in cur.fetchall():
        table.columns[name] = ExistingColumn(name, typname, typmod, shown, not_null, has_default)
    cur.execute(_INDEXES, {"oid": oid})
    for can_arbitrate, columns in cur.fetchall():
        if columns:
            table.leading_index_columns.add(columns[0])
        if can_arbitrate and columns:
            table.unique_keys.append(frozenset(columns))
    cur.execute(_PARTITIONING, {"oid": oid})
    part = cur.fetchone()
    if part is not None:
        table.partition_strategy, table.partition_columns, table.partitions = part
    return table


def schema_exists(cur, schema: str) -> bool:
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return cur.fetchone() is not None


def accepts(column_type: str, existing: ExistingColumn) -> bool:
    """Whether an existing column can hold every value squall writes for this YAML type."""
    unconstrained_only = ACCEPTED[column_type].get(existing.typname)
    if unconstrained_only is None:
        return False
    return not unconstrained_only or existing.typmod == -1


def problems(spec: TableSpec, table: ExistingTable, *, create: bool) -> list[str]:
    """Every reason the existing table cannot take this sink's rows, one sentence each."""
    where = f"table {spec.shown}"
    if table.relkind not in ("r", "p"):
        return [f"{where} is a {_RELKINDS.get(table.relkind, 'relation')}, not a table"]
    out: list[str] = []
    out.extend(_partitioning_problems(spec, table, where))
    key = frozenset(spec.conflict_key)
    if key not in table.unique_keys:
        cols = ", ".join(spec.conflict_key)
        out.append(
            f"{where} has no primary key or unique constraint on exactly ({cols}); squall needs it to "
            f"make replays idempotent — add one (ALTER TABLE … ADD PRIMARY KEY ({cols})) or use a new table"
        )
    for name, col in spec.columns.items():
        existing = table.columns.get(name)
        if existing is None:
            if not create:
                out.append(
                    f"{where} has no column '{name}' (create: false, so squall does not add it)"
                )
            continue
        if not accepts(col.type, existing):
            out.append(
                f"{where}: column '{name}' is {existing.shown} in the table, but the YAML declares "
                f"{col.type}, which needs {ACCEPTED_SHOWN[col.type]}"
            )
        if name in spec.conflict_key or name == spec.version_column:
            continue  # required in every row; the version's stored NULLs (older rows) are older
        if not col.nullable and not existing.not_null:
            out.append(
                f"{where}: column '{name}' is nullable in the table but nullable: false in the YAML, "
                f"which the table would not enforce — run ALTER TABLE … ALTER COLUMN {name} SET NOT NULL "
                f"first, or remove nullable: false"
            )
        elif col.nullable and existing.not_null:
            out.append(
                f"{where}: column '{name}' is NOT NULL in the table but nullable in the YAML, so an "
                f"event without '{col.path}' would fail its whole batch — declare nullable: false "
                f"(such events then go to the dead letter)"
            )
    for name, existing in table.columns.items():
        if name not in spec.columns and existing.not_null and not existing.has_default:
            out.append(
                f"{where}: column '{name}' is NOT NULL without a default and not in the YAML, so no row "
                f"could be inserted — add it to columns or give it a default"
            )
    return out


def _partitioning_problems(spec: TableSpec, table: ExistingTable, where: str) -> list[str]:
    column = spec.partition_column
    if table.partition_strategy is None:
        if column:
            return [
                f"{where} is not partitioned, but partition_by asks for {column}: an existing table cannot "
                f"be partitioned in place — write to a new table, or remove partition_by"
            ]
        return []
    shown = ", ".join(table.partition_columns)
    if column is None:
        return [
            f"{where} is partitioned on ({shown}); set partition_by: {{column: {shown}}} in the YAML"
        ]
    if table.partition_strategy != "r" or table.partition_columns != [column]:
        return [
            f"{where} is partitioned on ({shown}) by {_STRATEGIES.get(table.partition_strategy, '?')}, "
            f"but partition_by asks for range partitions on ({column})"
        ]
    return []


_STRATEGIES = {"r": "range", "l": "list", "h": "hash"}


def create_table_sql(spec: TableSpec) -> str:
    cols = []
    for name, col in spec.columns.items():
        collate = ' COLLATE "C"' if name == "event_id" and col.type == "text" else ""
        not_null = " NOT NULL" if not col.nullable or name in spec.conflict_key else ""
        cols.append(f"{quote(name)} {PG_TYPES[col.type]}{collate}{not_null}")
    cols.append(f"PRIMARY KEY ({', '.join(quote(c) for c in spec.conflict_key)})")
    sql = f"CREATE TABLE IF NOT EXISTS {spec.qualified} (\n  " + ",\n  ".join(cols) + "\n)"
    if spec.partition_column:
        sql += f" PARTITION BY RANGE ({quote(spec.partition_column)})"
    return sql


def add_column_sql(spec: TableSpec, name: str) -> str:
    col = spec.columns[name]
    # A new version column is nullable: the stored rows have none (older than any version).
    not_null = "" if col.nullable or name == spec.version_column else " NOT NULL"
    return f"ALTER TABLE {spec.qualified} ADD COLUMN IF NOT EXISTS {quote(name)} {PG_TYPES[col.type]}{not_null}"


def index_sql(spec: TableSpec, name: str) -> str:
    index = f"ix_{spec.name}_{name}"
    if len(index) > 63:
        index = "ix_" + hashlib.blake2b(f"{spec.name}.{name}".encode(), digest_size=8).hexdigest()
    return f"CREATE INDEX IF NOT EXISTS {quote(index)} ON {spec.qualified} ({quote(name)})"


def partition_name(spec: TableSpec, key: str) -> str:
    return check_identifier(f"{spec.name}_p{key.replace('-', '')}", "partition name")


def partition_sql(spec: TableSpec, key: str) -> str:
    """CREATE the partition holding one day (``YYYY-MM-DD``) or month (``YYYY-MM``), if missing."""
    start = partition_key_date(key)
    end = _next(start, spec.granularity)
    column = spec.columns[spec.partition_column or ""]
    if column.type == "date":
        lo, hi = f"'{start.isoformat()}'", f"'{end.isoformat()}'"
    else:
        lo, hi = f"'{start.isoformat()} 00:00:00+00'", f"'{end.isoformat()} 00:00:00+00'"
    target = (
        f"{quote(spec.schema)}.{quote(partition_name(spec, key))}"
        if spec.schema
        else quote(partition_name(spec, key))
    )
    return f"CREATE TABLE IF NOT EXISTS {target} PARTITION OF {spec.qualified} FOR VALUES FROM ({lo}) TO ({hi})"


def _next(start: date, granularity: str) -> date:
    if granularity == "day":
        return date.fromordinal(start.toordinal() + 1)
    return date(start.year + 1, 1, 1) if start.month == 12 else date(start.year, start.month + 1, 1)


def partition_keys(spec: TableSpec, names: list[str]) -> set[str]:
    """Keys of the partitions that exist under squall's naming (``<table>_pYYYYMMDD`` / ``_pYYYYMM``)."""
    prefix = f"{spec.name}_p"
    width = 8 if spec.granularity == "day" else 6
    keys = set()
    for name in names:
        digits = name[len(prefix) :]
        if name.startswith(prefix) and len(digits) == width and digits.isdigit():
            keys.add(f"{digits[:4]}-{digits[4:6]}" + (f"-{digits[6:]}" if width == 8 else ""))
    return keys
