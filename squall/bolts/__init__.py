"""Generic bolts: decode, validate, filter, project, route, dedupe."""

from squall.bolts.base import Bolt, Output, RecordBolt
from squall.component import DEFAULT, ERROR, INVALID

__all__ = ["DEFAULT", "ERROR", "INVALID", "Bolt", "Output", "RecordBolt"]
