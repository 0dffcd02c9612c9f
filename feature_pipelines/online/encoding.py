"""How feature values are stored as Redis hash field values, format version 1.

Every online hash carries `__v` (the format version) next to its features, so a reader built for
one layout never silently misreads bytes written by another: an unknown version is an error, not
a guess. The dtype of each field is not stored: the feature view's schema declares it, and
storing it per value would cost bytes on every entity for information the reader already has.

Format 1, per declared dtype (a null is always the empty value b"", for every dtype):

* Int64   ASCII decimal (b"-42"). Redis keeps such values as integers inside small hashes, and
          decimal is shorter than 8 packed bytes for the small counts features usually hold.
* Float64 the 8 IEEE-754 bytes, little-endian. Bit-exact for every value (-0.0, inf, NaN and its
          payload, subnormals) and never longer than 8 bytes, where a round-trip decimal of a
          computed mean is ~18 characters.
* String  UTF-8. The empty string and strings that begin with NUL get one NUL byte in front, so
          that b"" stays free to mean null; no other string pays anything.
* Boolean b"1" / b"0".

A field that is missing from the hash (a feature added to the view after the entity was last
published) reads as null, as a missing hash does.

Columns are encoded and decoded with polars/numpy kernels, not per value in Python: on 100k
values that is 8-25 ms per column to encode against 110-165 ms per value in Python, and 6-15 ms
to decode against 15-55 ms. Reads of a handful of entities take the scalar path
(`scalar_decoder`), because below a few hundred rows building polars expressions and Series
costs more than decoding the values in Python.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

FORMAT_VERSION = 1
FORMAT_VERSION_BYTES = str(FORMAT_VERSION).encode()
SUPPORTED_VERSIONS = frozenset({FORMAT_VERSION_BYTES})

TIMESTAMP_FIELD = "__ts"
VERSION_FIELD = "__v"
RESERVED_FIELDS = frozenset({TIMESTAMP_FIELD, VERSION_FIELD})

NULL = b""
_NUL = "\x00"
_NUL_BYTE = b"\x00"
_FLOAT = struct.Struct("<d")

SUPPORTED_DTYPES: tuple[pl.DataType, ...] = (pl.Int64(), pl.Float64(), pl.String(), pl.Boolean())


class OnlineEncodingError(ValueError):
    """A value or schema that format 1 cannot store or that stored bytes do not match."""


class UnknownEncodingVersionError(OnlineEncodingError):
    """A hash was written with a format version this code does not know how to read."""


_DTYPE_BY_CLASS: dict[type, pl.DataType] = {type(dtype): dtype for dtype in SUPPORTED_DTYPES}


def normalize_dtype(
    dtype: pl.DataType | type[pl.DataType], *, view: str, feature: str
) -> pl.DataType:
    """Accept `pl.Int64` and `pl.Int64()` alike; refuse dtypes format 1 has no encoding for."""
    # A dict lookup by class: polars DataType equality is slow Python and this runs per read.
    found = _DTYPE_BY_CLASS.get(dtype if isinstance(dtype, type) else type(dtype))
    if found is not None:
        return found
    raise OnlineEncodingError(
        f"feature view {view!r}: feature {feature!r} has dtype {dtype}, which the online "
        f"store cannot encode; supported: {', '.join(str(d) for d in SUPPORTED_DTYPES)}"
    )


def normalize_schema(
    schema: Mapping[str, pl.DataType | type[pl.DataType]], *, view: str
) -> dict[str, pl.DataType]:
    """Validate a feature schema once, so the hot paths can trust it."""
    if not schema:
        raise OnlineEncodingError(f"feature view {view!r}: the schema declares no features")
    out: dict[str, pl.DataType] = {}
    for name, dtype in schema.items():
        if name in RESERVED_FIELDS:
            raise OnlineEncodingError(
                f"feature view {view!r}: feature name {name!r} is reserved by the online store"
            )
        out[name] = normalize_dtype(dtype, view=view, feature=name)
    return out


def check_version(raw: bytes | None, *, view: str, entity: str) -> None:
    """Refuse to decode a hash whose `__v` this code does not understand.

    `raw` is None for a missing hash, which has nothing to decode.
    """
    if raw is not None and raw not in SUPPORTED_VERSIONS:
        shown = raw.decode("utf-8", "replace")
        raise UnknownEncodingVersionError(
            f"feature view {view!r}: entity {entity} was written with online encoding version "
            f"{shown!r}; this code reads version(s) "
            f"{sorted(v.decode() for v in SUPPORTED_VERSIONS)}. Upgrade the reader or republish."
        )


# -- column encoding (publish) ------------------------------------------------------------------


def conform_column(
    series: pl.Series, dtype: pl.DataType, *, view: str, feature: str
) -> pl.Series:
    """Bring a column to its declared dtype when that loses nothing; refuse otherwise.

    Narrower integers widen to Int64 and Float32 to Float64; an all-null column of dtype Null
    becomes a null column of the declared dtype. Anything else (a float column declared Int64, a
    string declared Float64) is a bug upstream that the online store must not paper over.
    """
    source = series.dtype
    if source == dtype:
        return series
    lossless = (
        source == pl.Null
        or (dtype == pl.Int64 and source.is_integer() and source != pl.UInt64)
        or (dtype == pl.Float64 and source == pl.Float32)
    )
    if not lossless:
        raise OnlineEncodingError(
            f"feature view {view!r}: feature {feature!r} is declared {dtype} but the frame to "
            f"publish has {source}"
        )
    return series.cast(dtype)


def encode_column(series: pl.Series, dtype: pl.DataType) -> list[bytes]:
    """The stored bytes of every value of a column already of dtype `dtype`, nulls as b""."""
    if dtype == pl.Float64:
        # The raw IEEE bytes: numpy hands each 8-byte element out as a bytes object ('V8' keeps
        # trailing zero bytes, which the 'S8' dtype would strip from 0.0 and small subnormals).
        values = np.ascontiguousarray(series.fill_null(0.0).to_numpy(), dtype="<f8")
        out: list[bytes] = values.view("V8").tolist()
        if series.null_count():
            for index in series.is_null().arg_true().to_list():
                out[index] = NULL
        return out
    if dtype == pl.Int64:
        expr = pl.col("v").cast(pl.String)
    elif dtype == pl.String:
        needs_escape = (pl.col("v") == "") | pl.col("v").str.starts_with(_NUL)
        expr = pl.when(needs_escape).then(pl.lit(_NUL) + pl.col("v")).otherwise(pl.col("v"))
    elif dtype == pl.Boolean:
        expr = pl.col("v").cast(pl.UInt8).cast(pl.String)
    else:
        raise OnlineEncodingError(f"no online encoding for dtype {dtype}")
    encoded = (
        pl.DataFrame({"v": series})
        .select(expr.cast(pl.Binary).fill_null(NULL))
        .to_series()
    )
    return encoded.to_list()


def encode_scalar(value: Any, dtype: pl.DataType) -> bytes:
    """One value's stored bytes; the reference the column encoder is tested against."""
    if value is None:
        return NULL
    if dtype == pl.Float64:
        return _FLOAT.pack(float(value))
    if dtype == pl.Int64:
        return str(int(value)).encode()
    if dtype == pl.String:
        text = str(value)
        if text == "" or text.startswith(_NUL):
            text = _NUL + text
        return text.encode("utf-8")
    if dtype == pl.Boolean:
        return b"1" if value else b"0"
    raise OnlineEncodingError(f"no online encoding for dtype {dtype}")


# -- decoding (read) ----------------------------------------------------------------------------


def _decode_float(raw: bytes | None) -> float | None:
    if not raw:
        return None
    if len(raw) != 8:
        raise OnlineEncodingError(f"a Float64 value must be 8 bytes, got {len(raw)}")
    return _FLOAT.unpack(raw)[0]  # type: ignore[no-any-return]


def _decode_int(raw: bytes | None) -> int | None:
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise OnlineEncodingError(f"an Int64 value must be ASCII decimal, got {raw!r}") from None


def _decode_str(raw: bytes | None) -> str | None:
    if not raw:
        return None
    if raw[:1] == _NUL_BYTE:
        raw = raw[1:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise OnlineEncodingError(f"a String value must be UTF-8: {error}") from None


def _decode_bool(raw: bytes | None) -> bool | None:
    if not raw:
        return None
    if raw == b"1":
        return True
    if raw == b"0":
        return False
    raise OnlineEncodingError(f"a Boolean value must be b'0' or b'1', got {raw!r}")


_SCALAR_DECODERS = {
    pl.Float64: _decode_float,
    pl.Int64: _decode_int,
    pl.String: _decode_str,
    pl.Boolean: _decode_bool,
}


def scalar_decoder(dtype: pl.DataType) -> Callable[[bytes | None], Any]:
    """The per-value decoder of a dtype, looked up once per column rather than per value."""
    try:
        return _SCALAR_DECODERS[type(dtype)]
    except KeyError:
        raise OnlineEncodingError(f"no online encoding for dtype {dtype}") from None


def decode_scalar(raw: bytes | None, dtype: pl.DataType) -> Any:
    """One stored value back to Python; None and b"" are null."""
    return scalar_decoder(dtype)(raw)


def decode_expr(column: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """Expressions over a Binary column of stored values: the decoded value, and a flag that is
    true where a stored value is malformed for `dtype`.

    Expressions rather than a function over a Series so that a reader decodes every column,
    masks expired rows and checks them in a single polars `select`, which is where the time of
    a vectorised read goes.
    """
    raw = pl.col(column)
    size = raw.bin.size()
    present = size > 0  # None (missing field or hash) and b"" (stored null) are both null
    value = pl.when(present).then(raw)
    if dtype == pl.Float64:
        decoded = value.bin.reinterpret(dtype=pl.Float64, endianness="little")
        invalid = present & (size != 8)
    elif dtype == pl.Int64:
        decoded = value.cast(pl.String).cast(pl.Int64, strict=True)
        invalid = pl.lit(False)
    elif dtype == pl.String:
        escaped = value.bin.starts_with(_NUL_BYTE)
        unescaped = pl.when(escaped).then(value.bin.slice(1)).otherwise(value)
        decoded = unescaped.cast(pl.String)
        invalid = pl.lit(False)
    elif dtype == pl.Boolean:
        decoded = value == pl.lit(b"1")
        invalid = present & ~raw.is_in([b"0", b"1"])
    else:
        raise OnlineEncodingError(f"no online encoding for dtype {dtype}")
    return decoded.cast(dtype).alias(column), invalid.fill_null(False)


def first_invalid(
    frame: pl.DataFrame, raw_columns: Sequence[tuple[str, pl.DataType]]
) -> tuple[str, int, str] | None:
    """(column, row, reason) of the first malformed stored value in a frame of raw Binary
    columns, or None; the slow path a reader takes only once it knows something is wrong."""
    for name, dtype in raw_columns:
        decode = scalar_decoder(dtype)
        for row, raw in enumerate(frame.get_column(name).to_list()):
            try:
                decode(raw)
            except ValueError as error:
                return name, row, str(error)
    return None


def decode_column(values: Sequence[bytes | None], dtype: pl.DataType, name: str = "") -> pl.Series:
    """A column of stored values back to a polars Series of `dtype`, vectorised."""
    frame = pl.DataFrame([pl.Series("raw", values, dtype=pl.Binary)])
    decoded, invalid = decode_expr("raw", dtype)
    try:
        out = frame.select(decoded, invalid.any().alias("__invalid"))
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
        out = None
    if out is None or (out.height and out["__invalid"][0]):
        found = first_invalid(frame, [("raw", dtype)])
        reason = found[2] if found else "unreadable"
        raise OnlineEncodingError(f"stored value is not a valid {dtype}: {reason}")
    return out.get_column("raw").alias(name)
