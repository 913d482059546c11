"""An ``s3`` sink's ``float64`` column refuses NaN and infinities, as the warehouse's ``float``
does: a CSV-minded export's "NaN", an overflowing "1e999" or a Python bolt's ``0/0`` NaN was
written into the Parquet lake as NaN or inf while the warehouse dead-lettered the same record,
so the lake and the warehouse of one topology disagreed about it."""

from __future__ import annotations

import pytest

from squall.sinks.s3 import _convert


@pytest.mark.parametrize(
    "value", ["NaN", "nan", "inf", "-Infinity", "1e999", float("nan"), float("inf"), 10**400]
)
def test_a_float64_column_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(ValueError, match="is not a finite number|is not a number"):
        _convert(value, "float64", "s")


@pytest.mark.parametrize(
    ("value", "expected"), [("2.5", 2.5), (" 7 ", 7.0), (3, 3.0), (-1e300, -1e300)]
)
def test_a_float64_column_still_takes_finite_numbers_and_numeric_text(value, expected):
    assert _convert(value, "float64", "s") == expected
