"""A record's value in a text log line stays on that line: newlines, carriage returns and terminal
escapes from an event (its id, a reason quoting a field) are escaped, so a client of the producer
cannot forge log lines or recolour an operator's terminal."""

from __future__ import annotations

import io
import logging
import sys

from squall.observability.logs import TextFormatter, configure, log_context, one_line

FORGED = "x\nCRITICAL squall.engine: forged\r\x1b[31mred\u2028"


def test_a_text_log_line_escapes_a_records_newlines_and_terminal_escapes():
    stream = io.StringIO()
    configure("text", level=logging.INFO, stream=stream)
    try:
        with log_context(topology="t", shard=FORGED):
            logging.getLogger("squall.engine").warning(
                "b: record %s fails alone: %s", FORGED, "ValueError: bad\nERROR forged"
            )
    finally:
        configure("text", level=logging.WARNING, stream=sys.stderr)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "\x1b" not in lines[0] and "\r" not in lines[0] and "\u2028" not in lines[0]
    assert lines[0].startswith(
        "WARNING squall.engine: b: record x\\nCRITICAL squall.engine: forged\\r\\x1b[31mred\\u2028"
    )
    assert "bad\\nERROR forged" in lines[0] and "shard=x\\nCRITICAL" in lines[0]


def test_a_traceback_still_follows_its_line_and_tabs_stay():
    formatter = TextFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "squall", logging.ERROR, __file__, 1, "a\tb", None, sys.exc_info()
        )
    text = formatter.format(record)
    assert text.startswith("ERROR squall: a\tb\nTraceback (most recent call last):")
    assert text.rstrip().endswith("ValueError: boom")


def test_one_line_leaves_ordinary_text_alone_and_masks_before_it_escapes():
    assert one_line("café 東京 → ok") == "café 東京 → ok"
    stream = io.StringIO()
    configure("text", level=logging.INFO, stream=stream)
    try:
        logging.getLogger("squall").warning("dsn postgresql://u:hunter2@db\n/x")
    finally:
        configure("text", level=logging.WARNING, stream=sys.stderr)
    assert "hunter2" not in stream.getvalue() and len(stream.getvalue().splitlines()) == 1
