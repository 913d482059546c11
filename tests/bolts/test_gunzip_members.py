"""gunzip (the json bolt's gzip records, the Lambda producer's gzip bodies) read against
``gzip.decompress`` on generated streams: members with and without header fields (a name longer
than the first 64-byte window), empty members, zero padding after a member, trailing garbage, a
truncated end, a wrong ISIZE, and the size limit."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.bolts.json_decode import gunzip

FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT = 1, 2, 4, 8, 16


@st.composite
def members(draw) -> bytes:
    """One gzip member, its header fields drawn (FHCRC with the header's right CRC16)."""
    payload = draw(
        st.one_of(st.just(b""), st.binary(max_size=300), st.integers(0, 20_000).map(b"a".__mul__))
    )
    flags, fields = 0, b""
    if draw(st.booleans()):
        extra = draw(st.binary(max_size=200))
        flags, fields = flags | FEXTRA, fields + struct.pack("<H", len(extra)) + extra
    if draw(st.booleans()):  # 200 and 5,000: a header alone past the first window
        name = b"n" * draw(st.sampled_from([0, 1, 63, 64, 65, 200, 5000]))
        flags, fields = flags | FNAME, fields + name + b"\0"
    if draw(st.booleans()):
        flags, fields = flags | FCOMMENT, fields + b"c" * draw(st.integers(0, 300)) + b"\0"
    crc = draw(st.booleans())
    flags |= FHCRC if crc else 0
    head = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", 0) + b"\x00\xff" + fields
    if crc:
        head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    c = zlib.compressobj(draw(st.integers(0, 9)), zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = c.compress(payload) + c.flush()
    return head + deflated + struct.pack("<II", zlib.crc32(payload), len(payload))


def outcome(read, data: bytes, limit: int) -> tuple:
    try:
        out = read(data)
    except OverflowError:
        return ("over",)
    except (EOFError, ValueError, OSError, zlib.error):
        return ("error",)
    return ("over",) if len(out) > limit else ("ok", out)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    parts=st.lists(members(), min_size=1, max_size=6),
    copies=st.sampled_from([1, 1, 2, 40]),
    padding=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    tail=st.sampled_from(["", "zeros", "garbage", "cut", "isize"]),
    limit=st.sampled_from([0, 100, 30_000, 10**9]),
)
def test_gunzip_reads_what_gzip_decompress_reads(parts, copies, padding, tail, limit):
    """Zero bytes between two members were 'bytes after the end of the gzip stream' (a
    ValueError) where gzip.decompress and GzipFile skip them as the padding they are at the
    end."""
    data = b"".join(m + b"\0" * pad for m, pad in zip(parts, padding, strict=False)) * copies
    if tail == "zeros":
        data += b"\0" * 17
    elif tail == "garbage":
        data += b"\0\0{}"
    elif tail == "cut":
        data = data[: len(data) // 2]
    elif tail == "isize":  # a multi-GB length claimed
        data = data[:-4] + struct.pack("<I", 0xFFFFFFF0)
    expected = outcome(gzip.decompress, data, limit)
    if data == b"":
        expected = ("error",)  # an empty payload is a truncated stream, not an empty one
    got = outcome(lambda raw: gunzip(raw, limit), data, limit)
    # the limit can stop a stream that is an error further on (its end cut, garbage after it)
    assert got == expected or (expected == ("error",) and got == ("over",))


@pytest.mark.parametrize("gap", [1, 8, 100_000])
def test_zero_padding_between_gzip_members_is_skipped(gap):
    data = gzip.compress(b'{"a": ') + b"\0" * gap + gzip.compress(b"1}") + b"\0" * gap
    assert gunzip(data, 100) == gzip.decompress(data) == b'{"a": 1}'
    with pytest.raises(ValueError, match=f"^{gap + 3} bytes after the end of the gzip stream$"):
        gunzip(gzip.compress(b"1") + b"\0" * gap + b"{}\n", 100)


def test_a_zip_bomb_is_stopped_without_holding_more_than_its_limit():
    """256 MB of zeros in 260 kB: refused past 5 MB, never holding much more than the limit."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = c.compress(bytes(1 << 28)) + c.flush()
    tracemalloc.start()
    try:
        with pytest.raises(OverflowError, match="exceeds 5000000 bytes"):
            gunzip(bomb, 5_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * 5_000_000


@pytest.mark.parametrize("header", ["wrong FHCRC", "reserved flags"])
def test_a_header_zlib_refuses_is_an_error_where_gzip_decompress_skips_it(header):
    """The two differences from gzip.decompress its docstring names (zlib checks the header)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    trailer = c.compress(b"{}") + c.flush() + struct.pack("<II", zlib.crc32(b"{}"), 2)
    if header == "wrong FHCRC":
        data = b"\x1f\x8b\x08" + bytes([FHCRC]) + bytes(6) + b"\x00\x00" + trailer
    else:
        data = b"\x1f\x8b\x08\xe0" + bytes(6) + trailer
    assert gzip.decompress(data) == b"{}"
    with pytest.raises(zlib.error, match="header crc mismatch|unknown header flags set"):
        gunzip(data, 100)
