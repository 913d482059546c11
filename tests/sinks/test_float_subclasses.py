"""A ``float`` subclass in a payload — NumPy's ``float64``, which a Python bolt scoring events
with NumPy puts there — is a number. orjson writes subclasses of ``int`` and ``str`` as their
base type but hands a ``float`` subclass to ``default``: the JSON-lines sinks (S3 lake, stdout)
wrote it as the *text* ``"0.25"``, dead letters as text too (a replay then read a string), and
the Kinesis, Firehose, SQS, HTTP and push sinks refused it (each such event dead-lettered)."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from squall import exact_json, safe_json
from squall.bolts.base import Bolt, Output
from squall.bolts.dedupe import DedupeBolt
from squall.component import ComponentContext
from squall.event import Event, RecordMeta
from squall.observability.logs import JsonFormatter
from squall.sinks.s3 import _line
from squall.sinks.warehouse.columns import json_text
from squall.testing import records_from, run_topology


class Score(float):
    """Stands for ``numpy.float64`` (a ``float`` subclass with its own ``__repr__``)."""

    def __repr__(self) -> str:
        return f"np.float64({float.__repr__(self)})"

    __str__ = __repr__


def test_every_json_writer_writes_a_float_subclass_as_its_number():
    doc = {"score": Score(0.25), "parts": [Score(1.5)], "big": 2**70}
    expected = {"score": 0.25, "parts": [1.5], "big": 2**70}
    assert orjson.loads(exact_json.dumps(doc).replace(b"1180591620717411303424", b"0")) == {
        **expected,
        "big": 0,
    }  # the Kinesis, Firehose, SQS, HTTP, push sinks: before, a TypeError (dead-lettered)
    assert exact_json.loads(_line(doc)) == expected  # the S3 lake's JSON lines: before "0.25"
    assert exact_json.loads(safe_json.dumps(doc)) == expected  # dead letters: before text
    assert exact_json.loads(json_text(doc).encode()) == expected  # a warehouse json column
    assert orjson.loads(orjson.dumps(doc["parts"], default=exact_json.text_default)) == [1.5]
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        exact_json.dumps({"x": object()})  # anything else is refused as orjson refuses it


class Scoring(Bolt):
    """A user's bolt that scores each event with NumPy (here: a float subclass)."""

    summary = "scores events"

    def process(self, batch):
        out = Output(self.id)
        for ev in batch:
            ev.value["score"] = Score(ev.value["n"] / 4)
            ev.value["model"] = {"score": Score(ev.value["n"] / 8)}
            out.emit(ev)
        return out


def test_a_scored_event_reaches_stdout_and_a_json_column_as_a_number(tmp_path: Path, capsysbinary):
    db = tmp_path / "w.db"
    yaml_text = f"""
name: scored
resources:
  db: {{url: "sqlite:///{db}"}}
spout: {{type: 'squall.testing:ListSpout'}}
bolts:
  - {{id: decode, type: json}}
  - {{id: score, type: "{__name__}:Scoring"}}
sinks:
  - {{id: out, type: stdout}}
  - id: rows
    type: warehouse
    resource: db
    table: scored
    columns:
      n: {{path: n, type: integer}}
      doc: {{path: model, type: json}}
"""
    run_topology(yaml_text, records_from([{"n": 1}, {"n": 2}]))
    lines = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert [line["score"] for line in lines] == [0.25, 0.5]  # before: "np.float64(0.25)"
    with closing(sqlite3.connect(db)) as conn:
        docs = [orjson.loads(d) for (d,) in conn.execute("select doc from scored order by n")]
    assert [d["score"] for d in docs] == [0.125, 0.25]


def test_a_dead_letter_keeps_an_object_keyed_by_float_subclasses():
    # A Python bolt's pandas ``value_counts().to_dict()``: NumPy float64 keys. orjson writes a
    # float key (OPT_NON_STR_KEYS) but refuses a subclass's and asks no default for a key:
    # the whole object was a marked repr in the dead letter (not replayable), a plain float
    # key's its text.
    doc = {"id": 1, "counts": {Score(1.5): 2, Score(2.0): 1}, "top": [{Score(0.5): 3}]}
    expected = {"id": 1, "counts": {"1.5": 2, "2.0": 1}, "top": [{"0.5": 3}]}
    assert orjson.loads(safe_json.dumps(doc)) == expected
    assert orjson.loads(safe_json.dumps({1.5: 2, "id": 1})) == {"1.5": 2, "id": 1}  # as before
    marked = orjson.loads(safe_json.dumps({"a": {Score(1.5): 1}, "b": {object(): 1}}))
    assert marked["a"] == {"1.5": 1}  # another key orjson refuses is still marked alone
    assert marked["b"]["squall_truncated"] == safe_json.TRUNCATED


def test_a_dedupe_key_object_holding_a_float_subclass_is_the_plain_floats_key():
    # A key that is an object or a list is compared by its canonical JSON, which orjson wrote
    # without a default: the event failed ("Type is not JSON serializable"), dead-lettered.
    bolt = DedupeBolt(DedupeBolt.Config(id="d", type="dedupe", key="k"), ComponentContext("t"))
    keys = [
        {"s": Score(0.5), "p": [Score(1.0)]},
        {"p": [1.0], "s": 0.5},
        [Score(2.5)],
        [2.5],
        {"big": 2**70},  # orjson refused an integer beyond 64 bits too
        {"big": 2**70},
        {"s": 0.75},
    ]
    meta = RecordMeta("s", "shardId-000000000000", "1", 0, "pk")
    out = bolt.process([Event(b"", meta, None, i, {"k": k}) for i, k in enumerate(keys)])
    assert [e.origin for e in out.streams["default"]] == [0, 2, 4, 6]
    assert [e.origin for e in out.dropped] == [1, 3, 5]


def test_test_records_and_json_log_lines_write_a_float_subclass_as_its_number():
    # squall.testing's records_from refused one (TypeError); a JSON log line's field was the
    # text "np.float64(0.25)".
    [record] = records_from([{"score": Score(0.25), "parts": [Score(1.5)]}])
    assert orjson.loads(record.data) == {"score": 0.25, "parts": [1.5]}
    log = logging.LogRecord("squall", logging.INFO, __file__, 1, "scored", None, None)
    log.fields = {"score": Score(0.25), "model": {"parts": [Score(1.5)]}, "other": object}
    line = orjson.loads(JsonFormatter().format(log))
    assert (line["score"], line["model"]) == (0.25, {"parts": [1.5]})
    assert line["other"] == "<class 'object'>"  # anything else: its text, as before


def test_numpys_other_scalars_are_numbers_not_text_in_every_json_writer():
    """NumPy's ``int64``, ``float32``, ``bool_`` (a pandas or NumPy computation in a Python bolt
    gives them) are no subclass of Python's ``int``, ``float``, ``bool``: only ``float64`` was
    made a number. The S3 lake's and stdout's JSON lines wrote them as the text ``"3"``, ``"1.5"``
    and ``"True"`` (not even JSON's ``true``) — a column's type changed without a word —, dead
    letters as text, and the Kinesis, Firehose, SQS, HTTP and push sinks refused them."""
    np = pytest.importorskip("numpy")
    doc = {
        "n": np.int64(3),
        "share": np.float32(1.5),
        "ok": np.bool_(True),
        "small": np.uint8(7),
        "parts": [np.int32(-2), {"x": np.float16(0.5)}],
        "counts": {np.int64(1): 2},  # pandas' value_counts().to_dict() of integers
    }
    expected = {
        "n": 3,
        "share": 1.5,
        "ok": True,
        "small": 7,
        "parts": [-2, {"x": 0.5}],
        "counts": {"1": 2},
    }
    assert orjson.loads(safe_json.dumps(doc)) == expected  # dead letters, keys too
    # (a key that is not text is refused by the others, a plain int's too: that record's failure)
    values = {k: v for k, v in doc.items() if k != "counts"}
    expected.pop("counts")
    assert orjson.loads(_line(values)) == expected  # the S3 lake
    assert orjson.loads(exact_json.dumps(values)) == expected  # Kinesis, Firehose, SQS, HTTP…
    assert exact_json.dumps({"d": np.datetime64("2020-01-01")}, default=str) == (
        b'{"d":"2020-01-01"}'
    )  # anything else is the caller's default's, as before
