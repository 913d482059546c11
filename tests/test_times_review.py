"""squall.times.parse_time on inputs the floor of 6 December (dd34a65) reads digit by digit."""

from __future__ import annotations

import pytest

from squall.times import parse_time


def test_epoch_text_with_leading_zeros_is_its_value() -> None:
    # float() read these; int() of the whole part refuses more than 4,300 digits, so a time that
    # parsed before the floor was refused with Python's "sys.set_int_max_str_digits()" advice.
    assert parse_time("0" * 5000 + "1714557600.5") == 1_714_557_600_500
    assert parse_time("0" * 5000 + "1714557600500") == 1_714_557_600_500


@pytest.mark.parametrize("text", ["1" * 5000, "9" * 5000 + ".5", "1" * 17])
def test_epoch_text_of_too_many_digits_is_after_9999_shortly(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_time(text)
    message = str(caught.value)
    assert message.startswith("time after the year 9999")
    assert "set_int_max_str_digits" not in message
    assert len(message) < 120  # the reason a dead letter carries names the value, shortened


class _Stamp(float):
    """A float subclass whose repr is not its number (numpy's float64 in numpy 2: np.float64(…))."""

    def __repr__(self) -> str:
        return f"Stamp({float(self)!r})"


def test_float_subclass_is_read_by_its_value() -> None:
    # the floor read the number from repr(value): "Stamp(…)" failed as "invalid literal for int()"
    assert parse_time(_Stamp(1714557600.9996)) == 1_714_557_600_999
    assert parse_time(_Stamp(1714557600999.5)) == 1_714_557_600_999


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1969-12-31T23:59:59.999Z", "time before 1970: '1969-12-31T23:59:59.999Z'"),
        (" 9999-12-31T23:30:00-01:00", "time after the year 9999: ' 9999-12-31T23:30:00-01:00'"),
    ],
)
def test_an_iso_time_out_of_range_is_named_as_given(text: str, message: str) -> None:
    # (the value's repr is made only for the error, no longer for every time read)
    with pytest.raises(ValueError) as caught:
        parse_time(text)
    assert str(caught.value) == message
    assert parse_time("1970-01-01T01:00:00.0015+01:00") == 1
    assert parse_time("2024-05-01T10:00:00") == 1_714_557_600_000  # naive: UTC


def test_a_long_text_that_is_no_time_is_named_shortened() -> None:
    """A reason names a text that is no ISO time as a number's reason names its digits
    (``_shown``): a value of 100,000 characters was repeated whole in its event's reason — a
    dead letter (and a log line) holding the value twice. A short one is named whole."""
    text = "2024-05-01T10:00:00" + "x" * 100_000
    with pytest.raises(ValueError) as caught:
        parse_time(text)
    assert str(caught.value) == (
        "not an ISO-8601 time: '2024-05-01T10:00:00…xxxxxxx' (100021 characters)"
    )
    with pytest.raises(ValueError, match=r"^not an ISO-8601 time: 'yesterday-'$"):
        parse_time("yesterday-")
