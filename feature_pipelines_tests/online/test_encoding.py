"""Format 1 value encoding: lossless, compact, versioned; the column and scalar paths agree."""

from __future__ import annotations

import math
import struct

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines.online.encoding import (
    FORMAT_VERSION_BYTES,
    NULL,
    OnlineEncodingError,
    UnknownEncodingVersionError,
    check_version,
    conform_column,
    decode_column,
    decode_scalar,
    encode_column,
    encode_scalar,
    normalize_dtype,
    normalize_schema,
)
from feature_pipelines_tests.online.conftest import float_bits

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# Any 64-bit pattern, so NaNs with payloads, subnormals, -0.0 and infinities all occur.
FLOAT_BITS = st.integers(min_value=0, max_value=2**64 - 1).map(
    lambda bits: struct.unpack("<d", bits.to_bytes(8, "little"))[0]
)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), FLOAT_BITS)
TEXT = st.one_of(st.text(), st.sampled_from(["", "\x00", "\x00\x00a", "a\x00", "é😀"]))


def _round_trip(values: list[object], dtype: pl.DataType) -> None:
    series = pl.Series("v", values, dtype=dtype)
    encoded = encode_column(series, dtype)
    assert encoded == [encode_scalar(v, dtype) for v in values]
    assert all(isinstance(raw, bytes) for raw in encoded)
    decoded = decode_column(encoded, dtype, "v")
    scalars = [decode_scalar(raw, dtype) for raw in encoded]
    assert decoded.dtype == dtype
    if dtype == pl.Float64:
        assert float_bits(decoded.to_list()) == float_bits(values) == float_bits(scalars)
    else:
        assert decoded.to_list() == values == scalars


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), INT64), max_size=40))
def test_int64_round_trip(values: list[int | None]) -> None:
    _round_trip(values, pl.Int64())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), FLOATS), max_size=40))
def test_float64_round_trip_is_bit_exact(values: list[float | None]) -> None:
    _round_trip(values, pl.Float64())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=40))
def test_string_round_trip_keeps_empty_and_null_apart(values: list[str | None]) -> None:
    _round_trip(values, pl.String())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans()), max_size=40))
def test_boolean_round_trip(values: list[bool | None]) -> None:
    _round_trip(values, pl.Boolean())


def test_special_floats_and_their_bytes() -> None:
    nan_with_payload = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]
    values = [0.0, -0.0, math.inf, -math.inf, math.nan, nan_with_payload, 5e-324, None]
    _round_trip(values, pl.Float64())
    encoded = encode_column(pl.Series(values, dtype=pl.Float64), pl.Float64())
    assert encoded[0] == b"\x00" * 8  # a zero is 8 bytes, never confused with the null b""
    assert encoded[1] != encoded[0]
    assert encoded[-1] == NULL
    assert all(len(raw) == 8 for raw in encoded[:-1])


def test_compact_forms() -> None:
    assert encode_column(pl.Series([0, -42, None]), pl.Int64()) == [b"0", b"-42", b""]
    assert encode_column(pl.Series(["JFK", "", None]), pl.String()) == [b"JFK", b"\x00", b""]
    assert encode_column(pl.Series([True, False, None]), pl.Boolean()) == [b"1", b"0", b""]


def test_missing_field_reads_as_null() -> None:
    for dtype in (pl.Int64(), pl.Float64(), pl.String(), pl.Boolean()):
        assert decode_column([None, None], dtype).to_list() == [None, None]
        assert decode_scalar(None, dtype) is None


@pytest.mark.parametrize(
    ("raw", "dtype"),
    [(b"abc", pl.Int64()), (b"\x01\x02", pl.Float64()), (b"\xff\xfe", pl.String()), (b"2", pl.Boolean())],
)
def test_malformed_stored_values_are_errors(raw: bytes, dtype: pl.DataType) -> None:
    with pytest.raises(OnlineEncodingError):
        decode_column([raw], dtype)
    with pytest.raises(OnlineEncodingError):
        decode_scalar(raw, dtype)


def test_unknown_version_is_an_error_naming_view_and_entity() -> None:
    check_version(FORMAT_VERSION_BYTES, view="v", entity="(origin='JFK')")
    check_version(None, view="v", entity="(origin='JFK')")
    with pytest.raises(UnknownEncodingVersionError, match=r"'route_delay_stats'.*JFK.*'2'"):
        check_version(b"2", view="route_delay_stats", entity="(origin='JFK')")


def test_schema_dtypes_are_checked() -> None:
    assert normalize_dtype(pl.Int64, view="v", feature="f") == pl.Int64()
    assert normalize_dtype(pl.Utf8, view="v", feature="f") == pl.String()
    with pytest.raises(OnlineEncodingError, match=r"'v'.*'f'.*Date"):
        normalize_dtype(pl.Date, view="v", feature="f")
    with pytest.raises(OnlineEncodingError, match="reserved"):
        normalize_schema({"__ts": pl.Int64}, view="v")
    with pytest.raises(OnlineEncodingError, match="no features"):
        normalize_schema({}, view="v")


def test_conform_column_widens_losslessly_and_refuses_the_rest() -> None:
    widened = conform_column(pl.Series([1, None], dtype=pl.Int32), pl.Int64(), view="v", feature="f")
    assert widened.dtype == pl.Int64 and widened.to_list() == [1, None]
    nulls = conform_column(pl.Series([None, None]), pl.String(), view="v", feature="f")
    assert nulls.dtype == pl.String
    with pytest.raises(OnlineEncodingError, match=r"'v'.*'f'.*declared Int64.*Float64"):
        conform_column(pl.Series([1.5]), pl.Int64(), view="v", feature="f")
