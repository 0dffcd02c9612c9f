"""Exact float sums as fixed-point integers: the one sum a batch window, an instant and a stream tile share.

Every finite float64 is an integer multiple of 2**-1074 (the smallest subnormal), so
`to_fixed(x) = x * 2**1074` is an exact Python integer, and a sum of such integers is the exact
sum of the floats, whatever the order or grouping of the additions: it is associative, so tiles
merge and prefix sums subtract without error. `round_fixed` turns it back into the nearest
float64 (ties to even) once, through CPython's int true division, which is correctly rounded.

A stream tile keeps this integer in Redis as base-2**32 limbs, each a signed 64-bit counter
(`HINCRBY`): a float touches at most 3 limbs, a limb gains less than 2**32 per event, so 2**31
events per tile fit without overflow, and `from_limbs` rebuilds the same integer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

FIXED_SHIFT = 1074  # 2**-1074 is the least positive float64
LIMB_BITS = 32
_LIMB_MASK = (1 << LIMB_BITS) - 1
_ONE = 1 << FIXED_SHIFT


class ExactSumError(ValueError):
    """A value with no exact fixed-point form (NaN or an infinity)."""


def to_fixed(value: float) -> int:
    """`value * 2**1074` exactly."""
    if not math.isfinite(value):
        raise ExactSumError(f"an exact sum needs finite values, got {value!r}")
    numerator, denominator = float(value).as_integer_ratio()  # denominator is a power of two <= 2**1074
    return numerator * (_ONE // denominator)


def round_fixed(total: int) -> float:
    """The float64 nearest the fixed-point `total` (ties to even); an exact zero is +0.0."""
    return total / _ONE


def exact_sum(values: Iterable[float]) -> float:
    """The exact sum of finite floats, rounded once."""
    return round_fixed(sum(to_fixed(v) for v in values))


def to_limbs(fixed: int) -> dict[int, int]:
    """Signed base-2**32 digits of `fixed` (only the non-zero ones): the Redis counters it adds to."""
    sign, magnitude = (-1, -fixed) if fixed < 0 else (1, fixed)
    limbs: dict[int, int] = {}
    position = 0
    while magnitude:
        digit = magnitude & _LIMB_MASK
        if digit:
            limbs[position] = sign * digit
        magnitude >>= LIMB_BITS
        position += 1
    return limbs


def from_limbs(limbs: Mapping[int, int]) -> int:
    """The integer whose limb counters are `limbs` (each limb any signed integer: carries resolve here)."""
    return sum(value << (LIMB_BITS * position) for position, value in limbs.items())


def window_exact_sums(values: np.ndarray, valid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per row, the exact sum of the valid float values of [lo, hi), rounded once (0.0 where none).

    Prefix sums of the fixed-point integers: exact, so a window is the difference of two prefixes.
    """
    fixed = np.zeros(values.shape[0] + 1, dtype=object)
    fixed[1:] = [to_fixed(v) if ok else 0 for v, ok in zip(values.tolist(), valid.tolist())]
    prefix = np.cumsum(fixed)
    return np.array([round_fixed(t) for t in (prefix[hi] - prefix[lo]).tolist()], dtype=np.float64)
