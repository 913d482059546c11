"""Sinks: warehouse (SQLAlchemy; SQLite default, PostgreSQL COPY), Kinesis, dead letter, stdout."""

from squall.sinks.base import Prepared, Sink, WriteContext, WriteResult

__all__ = ["Prepared", "Sink", "WriteContext", "WriteResult"]
