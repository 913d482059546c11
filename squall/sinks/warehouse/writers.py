"""Per-dialect writers of the warehouse sink: create/extend the table, write rows idempotently."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from squall.sinks.warehouse.columns import SA_TYPES, ColumnSpec


class SqlWriter:
    """Any SQLAlchemy dialect with ``INSERT … ON CONFLICT (event_id) DO NOTHING`` (SQLite, PostgreSQL)."""

    def __init__(self, engine: sa.Engine, table: sa.Table):
        self.engine = engine
        self.table = table
        prep = engine.dialect.identifier_preparer
        cols = [c.name for c in table.columns]
        target = prep.format_table(table)
        marks = ", ".join(["?"] * len(cols)) if engine.dialect.paramstyle == "qmark" else ", ".join(
            ["%s"] * len(cols))
        self.insert_sql = (f"INSERT INTO {target} ({', '.join(prep.quote(c) for c in cols)}) VALUES ({marks}) "
                           f"ON CONFLICT ({prep.quote('event_id')}) DO NOTHING")

    def ensure_table(self, columns: dict[str, ColumnSpec]) -> None:
        """Create the table if missing; add columns that the YAML has and the table lacks."""
        self.table.metadata.create_all(self.engine, tables=[self.table], checkfirst=True)
        existing = {c["name"] for c in sa.inspect(self.engine).get_columns(self.table.name, schema=self.table.schema)}
        prep = self.engine.dialect.identifier_preparer
        with self.engine.begin() as conn:
            for name, spec in columns.items():
                if name not in existing:
                    col_type = SA_TYPES[spec.type](self.engine.dialect.name).compile(dialect=self.engine.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE {prep.format_table(self.table)} ADD COLUMN {prep.quote(name)} {col_type}")

    def write(self, conn: sa.Connection, rows: list[tuple]) -> None:
        if rows:
            conn.exec_driver_sql(self.insert_sql, rows)


#: dialect name → writer class; the PostgreSQL COPY writer registers itself here.
WRITERS: dict[str, Callable[[sa.Engine, sa.Table], SqlWriter]] = {}


def writer_for(dialect: str) -> Callable[[sa.Engine, sa.Table], SqlWriter]:
    if dialect == "postgresql" and "postgresql" not in WRITERS:
        try:
            import squall.sinks.warehouse.postgres  # noqa: F401 - registers the COPY writer
        except ImportError:
            pass
    return WRITERS.get(dialect, SqlWriter)
